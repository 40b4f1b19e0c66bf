"""Process isolation: each cell (and each ``bench cost`` measurement) runs in a spawned child
(``run_in_child``); every way it can end becomes a record (``why_no_result`` names the ways
that send none).

A cell's TensorFlow state, a segfault, an out-of-memory kill or a hang stays inside its
child: the parent only sees a record (or the lack of one, which becomes a ``failed``
record naming the signal or the timeout), and a child never outlives its parent.
``classify`` is the one place that decides which kind of failure an exception is. This
module does not import Keras: the child imports it before redirecting its output to the
cell's log.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import sys
import time
import traceback
from pathlib import Path

from bench import progress
from bench.grid import Cell, RunOptions, failed_record
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


def run_cell_safely(cell: Cell, out_dir: Path, cache_dir: Path, options: RunOptions = RunOptions()) -> Record:
    """``run_cell`` with every exception turned into a failed record (the last traceback lines)."""
    from bench.cell import run_cell

    try:
        return run_cell(cell, out_dir, cache_dir, options=options)
    except Exception as error:
        return failed_record(cell, classify(error), failure_text(error))


def failure_text(error: BaseException) -> str:
    """An exception for a failed record: its first line, then the traceback's last lines."""
    tail = "".join(traceback.format_exception(error)[-3:]).strip()
    return f"{type(error).__name__}: {error}"[:2000] + f"\n{tail[-1500:]}"


def die_with_parent(use_prctl: bool = sys.platform.startswith("linux")) -> None:
    """Make this child process (a cell, a cost measurement) end when the process that spawned it ends, even by kill -9.

    Without it an orphaned cell runs on under init: it writes artifacts, its record is lost,
    and ``--cell-timeout`` no longer applies. Linux's ``PR_SET_PDEATHSIG`` has the kernel
    send SIGKILL (even to a cell stuck in native code); elsewhere a watchdog thread waits on
    the sentinel pipe multiprocessing keeps to the parent, which closes when the parent dies.
    """
    import os
    import threading

    parent = multiprocessing.parent_process()
    if use_prctl:
        import ctypes

        PR_SET_PDEATHSIG = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent is None:
        return
    # The parent may have died before prctl ran: then nothing would ever signal us.
    if os.getppid() != parent.pid:
        os._exit(1)

    def watch() -> None:
        parent.join()  # returns once the parent's end of the sentinel pipe closes
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

    threading.Thread(target=watch, name="parent watchdog", daemon=True).start()


@dataclasses.dataclass(frozen=True)
class _Result:
    """The child's last message: what its work returned (progress events come before it)."""

    value: object


@dataclasses.dataclass(frozen=True)
class ChildEnd:
    """How a child ended: what its work returned, or (``result`` None) why nothing came."""

    result: object | None
    timed_out: bool
    exitcode: int | None
    oom_kills_before: int | None
    oom_kills_after: int | None
    seconds: float


def _child_main(work, args: tuple, log_file: Path, conn) -> None:
    import os

    die_with_parent()
    # TensorFlow writes to the C-level stdout/stderr: send both to the log file.
    with open(log_file, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    # Progress events go to the parent on the pipe that carries the result last.
    progress.set_sink(conn.send)
    result = work(*args)
    progress.set_sink(None)
    conn.send(_Result(result))
    conn.close()


def run_in_child(work, args: tuple, log_file: Path, name: str, timeout_seconds: float | None = None, on_progress=None) -> ChildEnd:
    """``work(*args)`` in a spawned child whose output goes to ``log_file``; waits at most
    ``timeout_seconds`` for its result (then kills it) and passes its progress events to
    ``on_progress``. ``work`` must be a module-level function (spawn pickles it by name)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    child = context.Process(target=_child_main, args=(work, args, log_file, send), name=name)
    start = time.perf_counter()
    oom_kills_before = oom_kill_count()
    child.start()
    send.close()
    result, timed_out = None, False
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    try:
        while result is None:
            if not receive.poll(None if deadline is None else max(0.0, deadline - time.monotonic())):
                timed_out = True
                break
            message = receive.recv()
            if isinstance(message, _Result):
                result = message
            elif on_progress is not None:
                on_progress(message)
    except (EOFError, OSError):
        pass  # the child died before sending: its exit code says how
    finally:
        if result is None and child.is_alive():
            child.kill()
        child.join(30)
        if child.is_alive():  # sent its result but hangs on the way out
            child.kill()
            child.join(30)
    seconds = time.perf_counter() - start
    if result is not None:
        return ChildEnd(result.value, False, child.exitcode, oom_kills_before, None, seconds)
    return ChildEnd(None, timed_out, child.exitcode, oom_kills_before, oom_kill_count(), seconds)


def _read_counter(path: Path, name: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            field, _, value = line.partition(" ")
            if field == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def oom_kill_count(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup.

    cgroup v2: ``oom_kill`` in ``memory.events``; v1: in ``memory.oom_control``. Tried at the
    cgroup's own path and at the mount's root (a container sees its own cgroup there). None
    where neither exists (no cgroups, macOS): a SIGKILL then counts as of unknown cause.
    """
    candidates = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, group = line.split(":", 2)
        group = group.lstrip("/")
        if controllers == "":
            candidates += [root / group / "memory.events", root / "unified" / group / "memory.events", root / "memory.events"]
        elif "memory" in controllers.split(","):
            candidates += [root / "memory" / group / "memory.oom_control", root / "memory" / "memory.oom_control"]
    for path in candidates:
        count = _read_counter(path, "oom_kill")
        if count is not None:
            return count
    return None


def exit_failure(exitcode: int | None, oom_kills_before: int | None, oom_kills_after: int | None) -> tuple[str, str]:
    """(failure kind, reason) of a child that ended without a record.

    Only a SIGKILL the kernel counted as an OOM kill is ``oom`` (which the sweep retries at a
    smaller batch); a SIGKILL of unknown cause, a user's ``kill -9`` say, is ``signal``.
    """
    reason = describe_exit(exitcode)
    if exitcode == -signal.SIGKILL and None not in (oom_kills_before, oom_kills_after) and oom_kills_after > oom_kills_before:
        return "oom", f"out of memory: {reason}; the kernel's OOM killer ran (cgroup oom_kill {oom_kills_before} -> {oom_kills_after})"
    return ("signal" if (exitcode or 0) < 0 else "exception"), reason


def why_no_result(end: ChildEnd, timeout_seconds: float | None, what: str) -> tuple[str, str]:
    """(failure kind, reason) of a child (running a ``what``: a cell, a measurement) that sent no result."""
    if end.timed_out:
        return "timeout", f"timeout: no result after {timeout_seconds:.0f} s (--cell-timeout); the {what} was killed"
    return exit_failure(end.exitcode, end.oom_kills_before, end.oom_kills_after)


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


def run_isolated(cell: Cell, out_dir: Path, cache_dir: Path, options: RunOptions = RunOptions(), on_progress=None) -> Record:
    """Run one cell in a spawned child; always returns a record, never raises for the cell's faults.

    The child is killed past ``options.timeout_seconds``. ``on_progress(event)`` gets the
    child's ``bench.progress.Progress`` events as they come.
    """
    timeout_seconds = options.timeout_seconds
    log_file = Path(out_dir) / LOGS_DIR / (cell.file_stem + ".log")
    if on_progress is not None:
        on_progress(progress.Progress("starting"))
    end = run_in_child(run_cell_safely, (cell, out_dir, cache_dir, options), log_file, f"cell {cell.key}", timeout_seconds, on_progress)
    if end.result is not None:
        return end.result
    failure, reason = why_no_result(end, timeout_seconds, "cell")
    tail = _tail(log_file)
    return failed_record(cell, failure, reason + (f"\n{tail}" if tail else ""), wall_seconds=end.seconds)
