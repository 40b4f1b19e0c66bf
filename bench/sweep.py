"""Run a list of cells, each in its own child process, appending a record as each finishes.

A cell's TensorFlow state, a segfault, an out-of-memory kill or a hang stays inside its
child: the parent only sees a record (or the lack of one, which becomes a ``failed``
record naming the signal or the timeout) and goes on with the next cell.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from bench.cell import Cell, failed_record, run_cell_safely
from bench.records import Record, append_record, latest_by_key, read_records

LOGS_DIR = "logs"


def _child_main(cell: Cell, out_dir: Path, cache_dir: Path, log_file: Path, conn) -> None:
    # TensorFlow writes to the C-level stdout/stderr: send both to the cell's log file.
    with open(log_file, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    record = run_cell_safely(cell, out_dir, cache_dir)
    conn.send(record)
    conn.close()


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "no exit code"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode} without a record"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_isolated(cell: Cell, out_dir: Path, cache_dir: Path, timeout_seconds: float | None) -> Record:
    """Run one cell in a spawned child; always returns a record, never raises for the cell's faults."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    log_file = Path(out_dir) / LOGS_DIR / (cell.file_stem + ".log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    child = context.Process(target=_child_main, args=(cell, out_dir, cache_dir, log_file, send), name=f"cell {cell.key}")
    start = time.perf_counter()
    child.start()
    send.close()
    record, timed_out = None, False
    try:
        if receive.poll(timeout_seconds):
            record = receive.recv()
        else:
            timed_out = True
    except (EOFError, OSError):
        pass  # the child died before sending: its exit code says how
    finally:
        if record is None and child.is_alive():
            child.kill()
        child.join(30)
    if record is not None:
        return record
    seconds = time.perf_counter() - start
    if timed_out:
        reason = f"timeout: no result after {timeout_seconds:.0f} s (--cell-timeout); the cell was killed"
    elif child.exitcode == -signal.SIGKILL:
        # The kernel's OOM killer sends SIGKILL; so the sweep retries at half the batch size.
        reason = f"out of memory (probably): {_describe_exit(child.exitcode)}"
    else:
        reason = _describe_exit(child.exitcode)
    tail = _tail(log_file)
    return failed_record(cell, reason + (f"\n{tail}" if tail else ""), wall_seconds=seconds)


def _is_oom(record: Record) -> bool:
    return record.status == "failed" and record.error.startswith("out of memory")


@dataclasses.dataclass(frozen=True)
class SweepResult:
    records: list[Record]
    skipped: int
    write_error: str = ""

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.records)


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LocalExecutor:
    """Cells one after another on this machine, each in its own child process."""

    def __init__(self, out_dir: Path, cache_dir: Path, timeout_seconds: float | None):
        self.out_dir, self.cache_dir, self.timeout_seconds = out_dir, cache_dir, timeout_seconds

    def run(self, cell: Cell) -> Record:
        return run_isolated(cell, self.out_dir, self.cache_dir, self.timeout_seconds)

    def map(self, cells: list[Cell], on_start=None):
        """Yield ``(cell, record)`` as each cell finishes, in order."""
        for cell in cells:
            if on_start:
                on_start(cell)
            yield cell, self.run(cell)


def make_executor(name: str, out_dir: Path, cache_dir: Path, timeout_seconds: float | None, ray_address: str | None = None):
    if name == "local":
        return LocalExecutor(out_dir, cache_dir, timeout_seconds)
    if name == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(out_dir, cache_dir, timeout_seconds, ray_address)
    raise ValueError(f"unknown executor {name!r}; choose local or ray")


def run_sweep(
    cells: list[Cell],
    out_dir: Path,
    cache_dir: Path,
    resume: bool = False,
    timeout_seconds: float | None = None,
    log=None,
    command: str = "",
    executor: str = "local",
    ray_address: str | None = None,
) -> SweepResult:
    """Run every cell not already done, appending its record as soon as it finishes.

    Args:
        cells: in run order (a ``transfer`` cell before its ``finetune``).
        out_dir: holds ``runs.jsonl``, ``artifacts/`` and ``logs/``.
        cache_dir: activation and decoded-dataset cache.
        resume: skip cells whose latest record is ``ok``.
        timeout_seconds: per-cell limit; a cell past it is killed and recorded ``failed``.
        log: where progress lines go (default stderr).
        command: the command line, stamped on every record so reports can name it.
        executor: ``local`` (one cell at a time here) or ``ray`` (a Ray task per cell).
        ray_address: cluster to join with ``executor="ray"``; none starts a local instance.
    """
    log = log or sys.stderr
    out_dir = Path(out_dir)
    done = {k for k, r in latest_by_key(read_records(out_dir).records).items() if r.status == "ok"} if resume else set()
    todo = [c for c in cells if c.key not in done]
    skipped = len(cells) - len(todo)
    if skipped:
        print(f"resume: {skipped} of {len(cells)} cells already have an ok record; running {len(todo)}", file=log, flush=True)
    records: list[Record] = []
    if not todo:
        return SweepResult(records, skipped)
    runner = make_executor(executor, out_dir, cache_dir, timeout_seconds, ray_address)
    sweep_start = time.perf_counter()
    started = iter(range(1, len(todo) + 1))
    on_start = lambda cell: print(f"[{next(started)}/{len(todo)}] {cell.key} ...", file=log, flush=True)  # noqa: E731
    for index, (cell, record) in enumerate(runner.map(todo, on_start), 1):
        if _is_oom(record) and cell.recipe().batch_size > 1:
            smaller = cell.recipe().batch_size // 2
            print(f"    out of memory: retrying once at batch size {smaller}", file=log, flush=True)
            record = runner.run(dataclasses.replace(cell, batch_size=smaller))
        record = dataclasses.replace(record, command=command)
        try:
            append_record(out_dir, record)
        except OSError as error:
            message = f"could not write the record of {cell.key} to {out_dir}: {error.strerror or error}; free space or fix permissions, then rerun with --resume"
            print(f"error: {message}", file=log, flush=True)
            return SweepResult(records + [record], skipped, write_error=message)
        records.append(record)
        elapsed = time.perf_counter() - sweep_start
        left = elapsed / index * (len(todo) - index)
        if record.status == "ok":
            outcome = f"ok  test {record.test_accuracy:.1%}  val {record.val_accuracy:.1%}  ({record.path})"
        else:
            outcome = f"{record.status.upper()}  {record.error.splitlines()[0][:160] if record.error else ''}"
        print(f"    {index}/{len(todo)} {cell.key}: {outcome}  in {_format_seconds(record.wall_seconds or 0)}; elapsed {_format_seconds(elapsed)}, about {_format_seconds(left)} left", file=log, flush=True)
    return SweepResult(records, skipped)
