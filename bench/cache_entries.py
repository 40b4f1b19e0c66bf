"""Cache entries on disk: ``.npy`` files that are written beside and renamed into place, checked on
every open, checksummed when written and verified the first time they are opened.

Both caches (activations under ``features/``, decoded image folders under ``datasets/``) store
their arrays through this module. On every open the ``.npy`` header's shape must account for
the file's size exactly; the first open also hashes the file against the checksum stored
beside it at write time, and leaves a marker so later opens skip the hashing (about a second
per gigabyte). A damaged entry is moved aside into ``damaged/`` and reported in one line; the
caller then recomputes it. Temporaries of dead processes are removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bench import files
from bench.errors import UsageError

CHECKSUM_SUFFIX = ".sha256"  # beside each entry: the sha256 of the whole file, written before the entry appears
VERIFIED_SUFFIX = ".verified"  # beside each entry: "size mtime_ns sha256" of the content last verified
DAMAGED_DIR = "damaged"
TEMPORARY_SUFFIX = ".tmp.npy"
# A temporary this old is stale even if its writer cannot be checked (another host, an old name).
STALE_TEMPORARY_SECONDS = 24 * 3600
NO_CHECKSUM = "no checksum"
_HOST = socket.gethostname().replace("/", "_")
_TEMPORARY = re.compile(r"^(?P<stem>.+?)\.(?P<pid>\d+)(?:@(?P<host>.+))?\.tmp\.npy$")
# Checksums and markers being written by code before ``files.write_text`` wrote them: ``X.<pid>.tmp``.
_LEGACY_SIDECAR_TEMPORARY = re.compile(r"^(?P<stem>.+)\.(?P<pid>\d+)\.tmp$")


def checksum_path(entry: Path) -> Path:
    return entry.with_name(entry.name + CHECKSUM_SUFFIX)


def verified_path(entry: Path) -> Path:
    return entry.with_name(entry.name + VERIFIED_SUFFIX)


def temporary_path(entry: Path) -> Path:
    """Where ``entry`` is written before the rename: named by this process, so leftovers can be traced."""
    return entry.with_name(f"{entry.stem}.{os.getpid()}@{_HOST}{TEMPORARY_SUFFIX}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporaries left by dead writers (a killed extraction or decode); returns them.

    A temporary of this host is stale when its process is gone; one of another host (a shared
    cache on a cluster) only when it is older than a day.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    # Entries' temporaries, and ``files.write_text``'s (checksums, markers: this host's, by process).
    for path in [*folder.glob(f"*{TEMPORARY_SUFFIX}"), *folder.glob(f"{files.TEMPORARY_PREFIX}*"), *folder.glob("*.tmp")]:
        match = _TEMPORARY.match(path.name) or files.TEMPORARY_NAME.match(path.name) or _LEGACY_SIDECAR_TEMPORARY.match(path.name)
        try:
            age_seconds = now - path.stat().st_mtime
        except FileNotFoundError:
            continue  # its writer renamed or removed it meanwhile
        # Only entries' temporaries name their host; the others are this host's.
        local = match is not None and match.groupdict().get("host") in (None, _HOST)
        if (local and not _alive(int(match.group("pid")))) or age_seconds > STALE_TEMPORARY_SECONDS:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_free_space(folder: Path, need_bytes: int, what: str) -> None:
    """Fail early, in one line, when ``need_bytes`` more will not fit on ``folder``'s disk."""
    folder = Path(folder)
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    # A margin for the checksums, the markers and everything else on the disk.
    if need_bytes > 0.95 * free:
        raise UsageError(
            f"{what} needs {need_bytes / 1e9:.2f} GB in {folder} but only {free / 1e9:.2f} GB is free there; "
            "free space, or pass --cache-dir on a disk with room"
        )


def write_entries(entries: list[Path], shapes: list[tuple[int, ...]], dtype, fill: Callable[[list[np.ndarray]], None]) -> None:
    """Create each of ``entries`` as a ``.npy`` of its shape: ``fill(arrays)`` writes memory maps of
    temporaries beside them (one pass can fill several); each checksum is stored, then each
    temporary is renamed into place.

    Nothing is left behind when ``fill`` or the disk fails: the temporaries are removed and the
    error propagates.
    """
    entries = [Path(e) for e in entries]
    temporaries = [temporary_path(e) for e in entries]
    try:
        for entry in entries:
            entry.parent.mkdir(parents=True, exist_ok=True)
        arrays = [np.lib.format.open_memmap(t, mode="w+", dtype=dtype, shape=tuple(s)) for t, s in zip(temporaries, shapes)]
        fill(arrays)
        for array in arrays:
            array.flush()
        del arrays
        for entry, temporary in zip(entries, temporaries):
            # The checksum lands before the entry: an entry never exists without one.
            files.write_text(checksum_path(entry), file_sha256(temporary) + "\n")
            verified_path(entry).unlink(missing_ok=True)
            os.replace(temporary, entry)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def write_entry(entry: Path, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]) -> None:
    """``write_entries`` for one entry: ``fill(array)`` writes it."""
    write_entries([entry], [shape], dtype, lambda arrays: fill(arrays[0]))


def _header(entry: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a ``.npy`` header; ``ValueError`` if it is unreadable."""
    with open(entry, "rb") as file:
        version = np.lib.format.read_magic(file)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(file)
        if fortran:
            raise ValueError("Fortran order")
        return tuple(shape), dtype, file.tell()


def _problem(entry: Path, rows: int | None, dtype, row_shape: tuple[int, ...] | None) -> str:
    """What is wrong with ``entry`` (empty when nothing): the header against the file, then the checksum."""
    try:
        shape, found_dtype, offset = _header(entry)
    except (ValueError, OSError, EOFError) as error:
        return f"unreadable .npy header: {error}"
    size = entry.stat().st_size
    expected_size = offset + int(np.prod(shape, dtype=np.int64)) * found_dtype.itemsize
    if size != expected_size:
        return f"{'truncated' if size < expected_size else 'too long'}: {size:,} bytes where its header {shape} says {expected_size:,}"
    if (rows is not None and shape[:1] != (rows,)) or (row_shape is not None and shape[1:] != tuple(row_shape)) or (dtype is not None and found_dtype != np.dtype(dtype)):
        return f"holds {found_dtype} {shape} where {np.dtype(dtype) if dtype else found_dtype} ({rows}, {', '.join(map(str, row_shape or ()))}) was expected"
    try:
        recorded = checksum_path(entry).read_text().strip()
    except OSError:
        return NO_CHECKSUM + " beside it (written by an older version, or its checksum was lost)"
    stat = entry.stat()
    stamp = f"{stat.st_size} {stat.st_mtime_ns} {recorded}"
    try:
        if verified_path(entry).read_text().strip() == stamp:
            return ""
    except OSError:
        pass
    if file_sha256(entry) != recorded:
        return "checksum mismatch: its content changed after it was written"
    try:
        files.write_text(verified_path(entry), stamp + "\n")
    except OSError:
        pass  # a read-only cache is verified again next time
    return ""


def open_entry(entry: Path, rows: int | None = None, dtype=None, row_shape: tuple[int, ...] | None = None, notes: list[str] | None = None) -> np.ndarray | None:
    """``entry`` memory-mapped read-only after the checks, or ``None`` when it is missing or damaged.

    A damaged entry (truncated, too long, an unreadable header, another shape than
    ``(rows, *row_shape)`` or ``dtype``, no checksum, or a checksum mismatch) is moved into
    ``damaged/`` beside it and one line says so on stderr (and in ``notes``): the caller
    recomputes it.
    """
    entry = Path(entry)
    if not entry.exists():
        return None
    problem = _problem(entry, rows, dtype, row_shape)
    if not problem:
        return np.load(entry, mmap_mode="r")
    unverifiable = problem.startswith(NO_CHECKSUM)
    aside = entry.parent / DAMAGED_DIR / entry.name
    try:
        if unverifiable:
            # Not evidence of damage, only of an older cache: nothing worth keeping for inspection.
            entry.unlink()
        else:
            aside.parent.mkdir(exist_ok=True)
            # The latest damaged copy of each entry is kept for inspection; older ones are replaced.
            os.replace(entry, aside)
        for sidecar in (checksum_path(entry), verified_path(entry)):
            sidecar.unlink(missing_ok=True)
    except OSError as error:
        raise UsageError(f"cache entry {entry} cannot be used ({problem}) nor moved aside ({error.strerror}); delete it, or pass another --cache-dir") from None
    where = "removed" if unverifiable else f"moved to {DAMAGED_DIR}/"
    message = f"cache entry {entry.name} in {entry.parent} {'cannot be verified' if unverifiable else 'is damaged'} ({problem}): {where}, recomputing it"
    print(f"note: {message}", file=sys.stderr, flush=True)
    if notes is not None:
        notes.append(message)
    return None
