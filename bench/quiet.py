"""A quiet terminal: what TensorFlow writes to this process's file descriptor 2 goes to a log file.

TensorFlow's C++ start-up and runtime lines (absl, oneDNN, CUDA probes) are written straight
to fd 2, below Python, and ignore ``TF_CPP_MIN_LOG_LEVEL`` before absl is initialised; only
moving the descriptor keeps them off the terminal. Cells do this in their child process
(``bench.isolation``); this module does it for the parent's own TensorFlow work (the CIFAR-10
download, the weights check, ``bench perf``'s in-process cells).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def native_output_to(log: BinaryIO, stdout: bool = False):
    """Point fd 2 (and fd 1 with ``stdout``) at ``log`` while inside; yields a text stream on
    the terminal's stderr.

    Python's ``sys.stderr`` (``sys.stdout``) writes to the same descriptor (TensorFlow's
    Python-side warnings too), so anything meant for the user inside the block goes to the
    yielded stream instead.
    """
    fds = (1, 2) if stdout else (2,)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    for fd in fds:
        os.dup2(log.fileno(), fd)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        terminal.close()


def keep_log(collected: BinaryIO, path: Path, header: str) -> None:
    """Append what ``collected`` (a temporary file) holds to ``path``, under a header line.

    Collected in a temporary file first and kept only once the run's checks pass, so bad
    input still writes nothing into OUT. A log is only read by people: a torn append costs
    at most its own last line.
    """
    collected.flush()
    collected.seek(0)
    text = collected.read()
    if not text:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as log:
            log.write(f"--- {header}\n".encode() + text + (b"" if text.endswith(b"\n") else b"\n"))
    except OSError:
        pass  # a full or read-only disk costs this log, not the run (the records' appends say so themselves)


def scratch_file() -> BinaryIO:
    """A temporary file to collect output in; the null device where none can be made (a full /tmp)."""
    try:
        return tempfile.TemporaryFile()
    except OSError:
        return open(os.devnull, "w+b")



def reopen_closed_standard_streams() -> None:
    """Put the null device on standard descriptors 0-2 that were closed at start (``2>&-``).

    Otherwise the next file opened takes the free number: TensorFlow's fd-2 lines, a child's
    output, or the fd-2 redirection of ``native_output_to`` would land in it (or fail), and
    Python, having set ``sys.stderr`` to None, would end on an error it cannot print.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, os.fdopen(os.dup(fd), mode, buffering=1 if mode == "w" else -1, encoding="utf-8", errors="replace"))
