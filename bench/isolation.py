"""Process isolation: each cell runs in a spawned child; every way it can end becomes a record.

A cell's TensorFlow state, a segfault, an out-of-memory kill or a hang stays inside its
child: the parent only sees a record (or the lack of one, which becomes a ``failed``
record naming the signal or the timeout). ``classify`` is the one place that decides
which kind of failure an exception is. This module does not import Keras: the child
imports it before redirecting its output to the cell's log.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
import traceback
from pathlib import Path

from bench import progress
from bench.grid import Cell, failed_record
from bench.records import Record

LOGS_DIR = "logs"


def classify(error: BaseException) -> str:
    """The ``failure`` kind of an exception raised in a cell: ``oom`` or ``exception``."""
    if isinstance(error, MemoryError):
        return "oom"
    try:
        import tensorflow as tf

        if isinstance(error, tf.errors.ResourceExhaustedError):
            return "oom"
    except ImportError:
        pass
    return "exception"


def run_cell_safely(cell: Cell, out_dir: Path, cache_dir: Path) -> Record:
    """``run_cell`` with every exception turned into a failed record (the last traceback lines)."""
    from bench.cell import run_cell

    try:
        return run_cell(cell, out_dir, cache_dir)
    except Exception as error:
        tail = "".join(traceback.format_exception(error)[-3:]).strip()
        return failed_record(cell, classify(error), f"{type(error).__name__}: {error}"[:2000] + f"\n{tail[-1500:]}")


def _child_main(cell: Cell, out_dir: Path, cache_dir: Path, log_file: Path, conn) -> None:
    import os

    # TensorFlow writes to the C-level stdout/stderr: send both to the cell's log file.
    with open(log_file, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    # Progress events go to the parent on the pipe that carries the record last.
    progress.set_sink(conn.send)
    record = run_cell_safely(cell, out_dir, cache_dir)
    progress.set_sink(None)
    conn.send(record)
    conn.close()


def describe_exit(exitcode: int | None) -> str:
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


def run_isolated(cell: Cell, out_dir: Path, cache_dir: Path, timeout_seconds: float | None, on_progress=None) -> Record:
    """Run one cell in a spawned child; always returns a record, never raises for the cell's faults.

    ``on_progress(event)`` gets the child's ``bench.progress.Progress`` events as they come.
    """
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    log_file = Path(out_dir) / LOGS_DIR / (cell.file_stem + ".log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    child = context.Process(target=_child_main, args=(cell, out_dir, cache_dir, log_file, send), name=f"cell {cell.key}")
    start = time.perf_counter()
    child.start()
    send.close()
    if on_progress is not None:
        on_progress(progress.Progress("starting"))
    record, timed_out = None, False
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    try:
        while record is None:
            if not receive.poll(None if deadline is None else max(0.0, deadline - time.monotonic())):
                timed_out = True
                break
            message = receive.recv()
            if isinstance(message, Record):
                record = message
            elif on_progress is not None:
                on_progress(message)
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
        failure, reason = "timeout", f"timeout: no result after {timeout_seconds:.0f} s (--cell-timeout); the cell was killed"
    elif child.exitcode == -signal.SIGKILL:
        # The kernel's OOM killer sends SIGKILL; so the sweep retries at half the batch size.
        failure, reason = "oom", f"out of memory (probably): {describe_exit(child.exitcode)}"
    else:
        failure, reason = "signal" if (child.exitcode or 0) < 0 else "exception", describe_exit(child.exitcode)
    tail = _tail(log_file)
    return failed_record(cell, failure, reason + (f"\n{tail}" if tail else ""), wall_seconds=seconds)
