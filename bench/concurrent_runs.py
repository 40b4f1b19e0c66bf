"""Other ``bench`` measurements running on this machine at the same time.

A timing is a measurement's own only when it has the cores to itself: on 2 cores, two runs
each slow the other (the EfficientNet-Lite rows of the first published cost table were
measured that way, at a third of their speed). Each measuring command holds a marker while
it runs, a file named by its process id in a per-user folder, holding the process's start time
and command line; a command starting lists the live markers of others, every user's, and
warns. Accuracies are unaffected, only timings. Reports find the overlaps afterwards from the
records' own spans (``bench.time_spent.overlapped``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

# The commands whose records carry timings.
MEASURING_COMMANDS = ("run", "cost", "deploy", "tune", "perf")
# Where the markers live; the test suite points it at a folder of its own, so that a run in
# the background does not change what the suite's commands print.
FOLDER_ENV_VAR = "BENCH_MEASURING_DIR"


FOLDER_PREFIX = "bench-measuring-"


def marker_folder() -> Path:
    """Where this process writes its marker: a folder of this user's (another user's markers
    cannot be removed once their process ends, so each user keeps their own)."""
    return Path(os.environ.get(FOLDER_ENV_VAR) or Path(tempfile.gettempdir()) / f"{FOLDER_PREFIX}{os.getuid()}")


def marker_folders() -> list[Path]:
    """Where markers are read: this user's folder and every other user's beside it, since
    another user's run shares the cores as much as one's own (only ``FOLDER_ENV_VAR``'s folder
    where it is set)."""
    own = marker_folder()
    if os.environ.get(FOLDER_ENV_VAR):
        return [own]
    # Users' folders end in their user id (the test suite's own folders do not).
    return [own, *sorted(p for p in own.parent.glob(f"{FOLDER_PREFIX}*") if p != own and p.name[len(FOLDER_PREFIX) :].isdigit())]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process by that number: alive
        return True
    return True


def start_ticks(pid: int) -> str:
    """The process's start time in clock ticks after boot (``/proc/PID/stat``'s 22nd field), or
    "" where it cannot be read (no ``/proc``, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The fields after the command name (which may hold spaces and parentheses) start at the 3rd.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def marker_text(pid: int, command: str) -> str:
    """A marker's content: the process's start (``start_ticks``) on the first line, then its command line."""
    return f"{start_ticks(pid)}\n{command}"


def _parse(text: str) -> tuple[str, str]:
    """(start time, command line) of a marker; a marker of an earlier version holds the command alone."""
    first, newline, rest = text.partition("\n")
    return (first, rest.strip()) if newline and (first.isdigit() or not first) else ("", text.strip())


def running_others(*folders: Path) -> list[tuple[int, str]]:
    """(process id, command line) of every other live measuring command; markers of ended
    processes (a run killed with -9 leaves its marker) are removed as they are found. A process
    that has the marker's number but started at another time is a later one that reused the
    number: its marker is an ended one's."""
    others = []
    # (pathlib's glob passes over a folder it may not list, such as another user's private one.)
    for marker in [m for folder in folders if folder.is_dir() for m in sorted(folder.glob("[0-9]*"))]:
        pid = int(marker.name) if marker.name.isdigit() else None
        if pid is None or pid == os.getpid():
            continue
        try:
            marker_ticks, command = _parse(marker.read_text())
        except OSError:  # removed as it ended, between the listing and the read
            continue
        process_ticks = start_ticks(pid)
        if not _alive(pid) or (marker_ticks and process_ticks and marker_ticks != process_ticks):
            with contextlib.suppress(OSError):  # a folder we may not write: the marker stays, unheeded
                marker.unlink(missing_ok=True)
            continue
        others.append((pid, command))
    return others


@contextlib.contextmanager
def measuring(command: str):
    """Hold this process's marker while the body runs, after a warning line per other live
    measuring command. A marker is advice: where the folder cannot be written, the command
    runs without one."""
    folder = marker_folder()
    # Our marker first, then the others': two commands starting together each see the other.
    marker = folder / str(os.getpid())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(marker_text(os.getpid(), command))
    except OSError:
        marker = None
    try:
        others = running_others(*marker_folders())
    except OSError:  # a folder that cannot be listed: no advice
        others = []
    for pid, other in others:
        print(
            f"warning: another bench measurement is running on this machine (pid {pid}: {other}); both share the cores, "
            "so both record slower timings than alone (accuracies are unaffected): for timings to publish, let it finish first",
            file=sys.stderr,
        )
    try:
        yield
    finally:
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink(missing_ok=True)
