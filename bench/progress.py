"""Progress of a running cell: the one hook cell code calls, ``report(phase, done, total, **metrics)``.

It does nothing until a sink is set. A cell's child process (``bench.isolation``) sets one
that sends each event to the parent, where ``bench.live`` shows it; ``run_cell`` called in
process (tests, ``bench perf``) reports into the void. Events are throttled here, in the
cell, so a fast loop costs a clock read per call. Importing this module loads nothing heavy.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

# The phases a cell goes through, in order ("starting" is the parent's, while the child imports TensorFlow).
PHASES = ("starting", "loading data", "building model", "extracting", "training", "converting", "evaluating", "measuring")
# At most two events a second reach the parent, besides phase changes, phase ends and milestones.
MIN_INTERVAL_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class Progress:
    """One progress event of a cell.

    Attributes:
        phase: one of ``PHASES``.
        done, total: units of the phase done so far and in all (images extracted, training
            steps over all epochs), or ``None`` for a phase that is not counted.
        metrics: numbers to show (``epoch``, ``epochs``, ``loss``, ``accuracy``, ``val_*``).
        milestone: an event worth a line of its own (an epoch's end).
    """

    phase: str
    done: int | None = None
    total: int | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    milestone: bool = False


class _Throttle:
    def __init__(self, sink: Callable[[Progress], None], min_interval_seconds: float):
        self.sink, self.min_interval_seconds = sink, min_interval_seconds
        self.last_phase, self.last_sent = None, float("-inf")

    def __call__(self, phase, done, total, milestone, metrics) -> None:
        now = time.monotonic()
        due = milestone or phase != self.last_phase or done == total or now - self.last_sent >= self.min_interval_seconds
        if not due:
            return
        self.last_phase, self.last_sent = phase, now
        # float() only for events that go out: a Keras metric may be a tensor, and reading it waits for the device.
        numbers = {key: float(value) for key, value in metrics.items() if value is not None}
        self.sink(Progress(phase, done, total, numbers, milestone))


_throttle: _Throttle | None = None


def set_sink(sink: Callable[[Progress], None] | None, min_interval_seconds: float = MIN_INTERVAL_SECONDS) -> None:
    """Send this process's events to ``sink`` (``None``: drop them again)."""
    global _throttle
    _throttle = _Throttle(sink, min_interval_seconds) if sink is not None else None


def report(phase: str, done: int | None = None, total: int | None = None, *, milestone: bool = False, **metrics) -> None:
    """Tell the parent where the cell is. Never raises: a lost parent must not fail the cell."""
    global _throttle
    if _throttle is None:
        return
    try:
        _throttle(phase, done, total, milestone, metrics)
    except (OSError, ValueError, TypeError):
        # A closed pipe (the parent is gone) or an unreadable metric: stop reporting, keep training.
        _throttle = None


def keras_callback(epoch: int, epochs: int, steps_per_epoch: int):
    """A Keras callback reporting each training step of epoch ``epoch`` (0-based) as ``training``
    progress over all ``epochs``."""
    import keras

    class StepProgress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            report("training", epoch * steps_per_epoch + batch + 1, epochs * steps_per_epoch, epoch=epoch + 1, epochs=epochs, loss=logs.get("loss"), accuracy=logs.get("accuracy"))

    return StepProgress()
