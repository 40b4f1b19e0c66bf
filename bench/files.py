"""Atomic file writes: a file is written beside its destination and renamed into place.

A crash, a kill or a full disk then leaves either the old file or the whole new one, never
a fragment. The temporary file sits in the destination's folder (a rename is atomic only
within one file system) and ends with the destination's full name, so writers that pick
a format from the suffix (matplotlib's ``savefig``, Keras's ``save_weights``, which insists
on ``.weights.h5``) see the suffix they expect.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

TEMPORARY_PREFIX = ".tmp-"
# ``.tmp-<pid>-<hex>-<name>``: named by the writer's process, so a dead writer's leftovers can be found.
TEMPORARY_NAME = re.compile(r"^\.tmp-(?P<pid>\d+)-[0-9a-f]+-(?P<name>.+)$")


def _fsync_folder(folder: Path) -> None:
    # The rename itself lives in the folder's entry table: sync it too, where the OS allows.
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def temporary_path(path: Path) -> Path:
    """A fresh temporary beside ``path``, named by this process (``TEMPORARY_NAME`` parses it)."""
    return path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Raises:
        OSError: the temporary file could not be written or renamed (``path`` is untouched).
    """
    # Through a symbolic link, not over it: a linked README stays a link to the new text.
    path = Path(path).resolve() if Path(path).is_symlink() else Path(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        # Writers such as savefig close their own handle: flush the bytes to disk before the rename.
        handle = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
        with contextlib.suppress(FileNotFoundError):
            # A replaced file keeps its permissions (a README the user made group-writable stays so).
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.filename in (None, str(temporary)):
            # A write's error names no file, or only our temporary: name the file the caller asked for.
            error.filename = str(path)
        raise
    _fsync_folder(path.parent)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as temporary:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view) :]
        finally:
            os.close(handle)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    The kernel drops the lock when its holder dies, so a killed writer never leaves a folder
    locked. Where the lock file cannot be created (a read-only folder) no lock is taken:
    nothing can write there either, so there is nothing to exclude.
    """
    import fcntl

    handle = None
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        with contextlib.suppress(OSError):
            handle = os.open(path, flags, 0o644)
            break
    if handle is None:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def is_locked(path: Path) -> bool:
    """Whether a process holds an exclusive ``flock`` on ``path`` (``exclusive_lock``); a missing
    file is not locked. Since the kernel drops a dead process's locks, a free lock of a task
    that is still marked running says that its process died."""
    import fcntl

    try:
        handle = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
    return False
