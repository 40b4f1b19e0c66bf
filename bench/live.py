"""The terminal during a sweep: each running cell's phase, counts, metrics and ETA, and the sweep's ETA.

On a terminal the view is redrawn in place, one line per running cell and one for the sweep,
with rich's Live display: it refreshes four times a second (so clocks move between events),
keeps lines that belong in the scroll-back (each cell's start and end, each epoch's metrics)
above the redrawn part, and cuts lines to the terminal's width. Anywhere else (CI, ``nohup``,
a pipe) the same states become plain lines: each phase change, each epoch's end, and a
running count at most every ``PLAIN_INTERVAL_SECONDS``.

ETAs extrapolate. A counted phase (extracting images, training steps over all epochs) runs
at the rate seen since its first event, which leaves out tracing. A cell's ETA is its
training's: evaluation and measurement after it take a few percent more; before training
only the current phase has one. The sweep's ETA adds the mean wall time of its finished
cells for every cell still to come (divided among the cells running at once); there is none
until a cell has finished.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import threading
import time

from bench.progress import Progress

PLAIN_INTERVAL_SECONDS = 30.0


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclasses.dataclass
class _Running:
    """What the view knows of one running cell (mutable: it follows the cell's events)."""

    index: int
    label: str  # short: the full key is in the cell's start line
    started: float
    event: Progress = Progress("starting")
    # (done, time) of the current counted phase's first event: its rate is measured from there.
    reference: tuple[int, float] | None = None
    rate: float | None = None
    last_line: float = float("-inf")


class SweepView:
    """Shows a sweep's cells as they start, progress and finish; a context manager.

    Args:
        total: cells the sweep will run.
        stream: where the view writes (a terminal or not decides how).
        terminal: force redrawing in place (``True``) or plain lines (``False``); default: ask the stream.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, total: int, stream=None, terminal: bool | None = None, clock=time.monotonic, plain_interval_seconds: float = PLAIN_INTERVAL_SECONDS):
        self.total, self.stream, self.clock = total, stream or sys.stderr, clock
        self.plain_interval_seconds = plain_interval_seconds
        self.running: dict[str, _Running] = {}
        self.durations: list[float] = []
        self.finished_count, self.failed_count, self.next_index = 0, 0, 0
        self.sweep_started = clock()
        self.lock = threading.RLock()
        self.live, self.closed = None, False
        self.terminal = terminal
        self.console = None

    # ------------------------------------------------------------------ output

    def __enter__(self) -> SweepView:
        from rich.console import Console
        from rich.live import Live

        # markup and highlighting off: cell keys and "[2/7]" are plain text, not rich markup.
        self.console = Console(file=self.stream, force_terminal=self.terminal, markup=False, highlight=False, emoji=False)
        if self.terminal is None:
            self.terminal = self.console.is_interactive
        if self.terminal:
            self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=4, transient=True)
            self.live.start()
            # Rich hides the cursor while live; a parent killed with -9 could not show it again.
            self.console.show_cursor(True)
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def say(self, text: str) -> None:
        """A line for the scroll-back (above the redrawn lines on a terminal)."""
        if self.closed:
            return
        try:
            if self.live is not None:
                self.console.print(text, soft_wrap=True)
            else:
                print(text, file=self.stream, flush=True)
        except OSError:
            # A closed terminal or pipe (`| head`): the sweep goes on without a view.
            self.closed = True

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        with self.lock:
            lines = [f"[{r.index}/{self.total}] {r.label}: {self.describe(key)}" for key, r in self.running.items()]
            lines.append(self.sweep_line())
        return Group(*(Text(line, no_wrap=True, overflow="ellipsis") for line in lines))

    # ------------------------------------------------------------------ events

    def started(self, cell) -> None:
        with self.lock:
            if cell.key in self.running:
                return
            self.next_index += 1
            # A job that is no cell (a cost measurement) names itself.
            self.running[cell.key] = _Running(self.next_index, getattr(cell, "label", None) or f"{cell.backbone} {cell.stage}", self.clock())
            index = self.next_index
        self.say(f"[{index}/{self.total}] {cell.key} ...")

    def update(self, cell, event: Progress) -> None:
        if cell.key not in self.running:
            self.started(cell)
        # Lines are written outside the lock: rich's refresh thread holds its own lock while it
        # waits for ours in _render, and printing needs rich's.
        with self.lock:
            state, now = self.running[cell.key], self.clock()
            previous = state.event
            new_phase = event.phase != previous.phase
            if event.done is None:
                state.reference, state.rate = None, None
            elif new_phase or state.reference is None or (previous.done is not None and event.done < previous.done):
                # A new phase, or a new array to extract: measure the rate afresh from here.
                state.reference, state.rate = (event.done, now), None
            elif event.done > state.reference[0] and now > state.reference[1]:
                state.rate = (event.done - state.reference[0]) / (now - state.reference[1])
            state.event = event
            wants_line = new_phase or event.milestone or now - state.last_line >= self.plain_interval_seconds
            if self.live is None and wants_line or self.live is not None and event.milestone:
                state.last_line = now
                line = f"    [{state.index}/{self.total}] {self.describe(cell.key)}"
            else:
                line = None
        if line:
            self.say(line)

    def finished(self, cell, record) -> None:
        with self.lock:
            state = self.running.pop(cell.key, None)
            if state is not None:
                self.durations.append(self.clock() - state.started)
            self.finished_count += 1
            self.failed_count += record.status != "ok"

    # ------------------------------------------------------------------ estimates

    def phase_seconds_left(self, key: str) -> float | None:
        """Time left in the cell's current counted phase, at its rate so far."""
        state = self.running.get(key)
        if state is None or not state.rate or state.event.done is None or state.event.total is None:
            return None
        return max(0.0, (state.event.total - state.event.done) / state.rate)

    def cell_seconds_left(self, key: str) -> float | None:
        """Time left in the cell: known once it trains (its training's remainder), else ``None``."""
        state = self.running.get(key)
        if state is None:
            return None
        if state.event.phase == "training":
            return self.phase_seconds_left(key)
        return 0.0 if state.event.phase in ("evaluating", "measuring") else None

    def sweep_seconds_left(self) -> float | None:
        with self.lock:
            now = self.clock()
            waiting = self.total - self.finished_count - len(self.running)
            if not self.durations:
                if waiting == 0 and len(self.running) == 1:
                    return self.cell_seconds_left(next(iter(self.running)))
                return None
            mean = statistics.mean(self.durations)
            running = 0.0
            for key, state in self.running.items():
                known = self.cell_seconds_left(key)
                running += known if known is not None else max(0.0, mean - (now - state.started))
            return (running + waiting * mean) / max(1, len(self.running))

    # ------------------------------------------------------------------ text

    def describe(self, key: str) -> str:
        """The cell's state in one line: phase, counts, metrics, time in the cell, ETA."""
        state = self.running[key]
        event, metrics = state.event, state.event.metrics
        if event.phase == "starting":
            text = "starting (loading TensorFlow)"
        elif event.phase == "extracting" and event.total:
            text = f"extracting {event.done:,}/{event.total:,} images"
        elif event.phase == "training" and "epoch" in metrics:
            text = f"epoch {int(metrics['epoch'])}/{int(metrics['epochs'])}" + ("" if event.milestone else f", step {event.done:,}/{event.total:,}")
            shown = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in metrics]
            text += ": " + ", ".join(f"{k} {metrics[k]:.1%}" if "accuracy" in k else f"{k} {metrics[k]:.3f}" for k in shown) if shown else ""
        elif event.phase == "training" and "l2_penalty" in metrics:
            text = f"L-BFGS fit {event.done}: L2 penalty {metrics['l2_penalty']:.3g}" + (f", val_accuracy {metrics['val_accuracy']:.1%}" if "val_accuracy" in metrics else "")
        else:
            text = event.phase
        text += f" · {format_seconds(self.clock() - state.started)}"
        cell_left, phase_left = self.cell_seconds_left(key), self.phase_seconds_left(key)
        # Nothing at 0 s: the phase is over, and its next event says what comes.
        if cell_left and event.phase == "training":
            text += f" · cell ~{format_seconds(cell_left)} left"
        elif phase_left:
            text += f" · {event.phase} ~{format_seconds(phase_left)} left"
        return text

    def sweep_line(self) -> str:
        text = f"sweep: {self.finished_count}/{self.total} cells done"
        if self.failed_count:
            text += f" ({self.failed_count} failed)"
        text += f", {format_seconds(self.clock() - self.sweep_started)} elapsed"
        left = self.sweep_seconds_left()
        return text + (f", ~{format_seconds(left)} left" if left is not None else ", ETA once a cell has finished")
