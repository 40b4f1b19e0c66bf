"""Cache entries on disk: ``.npy`` files written beside and renamed into place, each listed in the
cache's manifest with its checksum, and verified by content every time it is opened.

Both caches (activations under ``features/``, decoded image folders under ``datasets/``) store
their arrays through this module, in one layout under the cache folder (the *root*)::

    root/bench-cache.json                 the marker: this folder is a bench cache
    root/manifest/<kind>/<name>.json      one record per entry: kind, name, sha256, bytes, written_at
    root/<kind>/<name>                    the entry (``kind`` is ``datasets``, ``features``, ...)

The manifest is what the cache knows it wrote: ``bench cache --clear`` removes those entries
and nothing else, and refuses a folder without the marker (``bench.cache_admin``). One record
per entry, each written atomically (``files.write_text``), lets several cells add entries at
once without sharing a file; an exclusive lock on ``manifest/.lock`` pairs each record with
its entry (a record is written, then its entry renamed into place, with no reader between).

On every open the ``.npy`` header's shape must account for the file's size exactly, and the
bytes are hashed against the record's checksum: size and modification time prove nothing (a
flipped bit, or a damaged copy restored with ``cp -p``, keeps both). Measured on this
project's 2-core machine: sha256 (hashlib, SHA-NI) runs at about 1.2 s per GB, 0.19 s for the
decoded CIFAR-10 training set (50,000x32x32x3, 154 MB) and 0.29 s for MobileNetV2's pooled
features of it (50,000x1,280 float32, 256 MB); blake2b took twice as long, crc32 saved under
20 %. The hashing also reads the entry into the page cache that training then reads from.
The array handed back maps the very file that was hashed (the open handle), so an entry
replaced in between is never used unverified.

A damaged entry is moved aside into ``damaged/`` (listed in the manifest there, so ``--clear``
removes it too) and reported in one line; the caller then recomputes it. Entries of caches
written before the manifest carry a ``.sha256`` file beside them: one whose bytes match it is
adopted into the manifest when opened. Temporaries of dead processes are removed.
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
from bench.cache_manifest import (MARKER_NAME, cache_root, legacy_checksum_path, legacy_verified_path, manifest_lock, read_record, record_path,
                                  write_marker, write_record)
from bench.errors import UsageError

DAMAGED_DIR = "damaged"
TEMPORARY_SUFFIX = ".tmp.npy"
# A temporary this old is stale even if its writer cannot be checked (another host, an old name).
STALE_TEMPORARY_SECONDS = 24 * 3600
NO_CHECKSUM = "no checksum"
_HOST = socket.gethostname().replace("/", "_")
_TEMPORARY = re.compile(r"^(?P<stem>.+?)\.(?P<pid>\d+)(?:@(?P<host>.+))?\.tmp\.npy$")
# Checksums and markers being written by code before ``files.write_text`` wrote them: ``X.<pid>.tmp``.
_LEGACY_SIDECAR_TEMPORARY = re.compile(r"^(?P<stem>.+)\.(?P<pid>\d+)\.tmp$")


def temporary_path(entry: Path) -> Path:
    """Where ``entry`` is written before the rename: named by this process, so leftovers can be traced."""
    return entry.with_name(f"{entry.stem}.{os.getpid()}@{_HOST}{TEMPORARY_SUFFIX}")


def _sha256(handle) -> str:
    """The sha256 of a whole open file, read in 4 MB blocks (as fast as Python 3.11's
    ``hashlib.file_digest``, which Python 3.10 lacks)."""
    handle.seek(0)
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 22), b""):
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return _sha256(file)


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
    root = cache_root(folder / "entry")
    # Entries' temporaries, and ``files.write_text``'s (manifest records here and under manifest/,
    # markers: this host's, by process).
    candidates = [*folder.glob(f"*{TEMPORARY_SUFFIX}"), *folder.glob(f"{files.TEMPORARY_PREFIX}*"), *folder.glob("*.tmp")]
    candidates += [*record_path(folder / "entry", root).parent.glob(f"{files.TEMPORARY_PREFIX}*"), *root.glob(f"{files.TEMPORARY_PREFIX}*-{MARKER_NAME}")]
    for path in candidates:
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
    temporaries beside them (one pass can fill several); each is hashed, its manifest record
    written (the cache's marker first), then it is renamed into place.

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
        # Hashed before the lock is taken: the lock is held only for the small writes and the renames.
        digests = [file_sha256(t) for t in temporaries]
        for entry, temporary, digest in zip(entries, temporaries, digests):
            root = cache_root(entry)
            # The marker before any record, the record before its entry: an entry never exists
            # unlisted, and a listed one never in an unmarked folder.
            write_marker(root)
            record_path(entry, root).parent.mkdir(parents=True, exist_ok=True)
            with manifest_lock(root):
                write_record(entry, root, digest, temporary.stat().st_size)
                for sidecar in (legacy_checksum_path(entry), legacy_verified_path(entry)):
                    sidecar.unlink(missing_ok=True)
                os.replace(temporary, entry)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def write_entry(entry: Path, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]) -> None:
    """``write_entries`` for one entry: ``fill(array)`` writes it."""
    write_entries([entry], [shape], dtype, lambda arrays: fill(arrays[0]))


def _header(handle) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a ``.npy`` header; ``ValueError`` if it is unreadable."""
    handle.seek(0)
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(handle)
    if fortran:
        raise ValueError("Fortran order")
    return tuple(shape), dtype, handle.tell()


def _problem(handle, entry: Path, rows: int | None, dtype, row_shape: tuple[int, ...] | None, recorded: str | None) -> str:
    """What is wrong with the open ``entry`` (empty when nothing): the header against the file,
    then its bytes against the ``recorded`` checksum."""
    try:
        shape, found_dtype, offset = _header(handle)
    except (ValueError, OSError, EOFError) as error:
        return f"unreadable .npy header: {error}"
    size = os.fstat(handle.fileno()).st_size
    expected_size = offset + int(np.prod(shape, dtype=np.int64)) * found_dtype.itemsize
    if size != expected_size:
        return f"{'truncated' if size < expected_size else 'too long'}: {size:,} bytes where its header {shape} says {expected_size:,}"
    if (rows is not None and shape[:1] != (rows,)) or (row_shape is not None and shape[1:] != tuple(row_shape)) or (dtype is not None and found_dtype != np.dtype(dtype)):
        return f"holds {found_dtype} {shape} where {np.dtype(dtype) if dtype else found_dtype} ({rows}, {', '.join(map(str, row_shape or ()))}) was expected"
    if recorded is None:
        return NO_CHECKSUM + " for it in the manifest (written by an older version, or its record was lost)"
    if _sha256(handle) != recorded:
        return "checksum mismatch: its content changed after it was written"
    return ""


def _same_file(entry: Path, handle) -> bool:
    """Whether ``entry`` still names the file open in ``handle`` (a writer may have replaced it)."""
    try:
        now, opened = os.stat(entry), os.fstat(handle.fileno())
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _set_aside(entry: Path, root: Path, problem: str, recorded: str | None, unverifiable: bool) -> None:
    """Remove an entry that cannot be verified, or move a damaged one into ``damaged/`` (listed in
    the manifest first, so ``--clear`` can remove it); its record and old sidecars go."""
    if unverifiable:
        # Not evidence of damage, only of an older cache: nothing worth keeping for inspection.
        entry.unlink()
    else:
        aside = entry.parent / DAMAGED_DIR / entry.name
        aside.parent.mkdir(exist_ok=True)
        write_record(aside, root, recorded, entry.stat().st_size, problem=problem)
        # The latest damaged copy of each entry is kept for inspection; older ones are replaced.
        os.replace(entry, aside)
    for sidecar in (legacy_checksum_path(entry), legacy_verified_path(entry), record_path(entry, root)):
        sidecar.unlink(missing_ok=True)


def open_entry(entry: Path, rows: int | None = None, dtype=None, row_shape: tuple[int, ...] | None = None, notes: list[str] | None = None) -> np.ndarray | None:
    """``entry`` memory-mapped read-only after the checks, or ``None`` when it is missing or damaged.

    A damaged entry (truncated, too long, an unreadable header, another shape than
    ``(rows, *row_shape)`` or ``dtype``, no checksum, or a checksum mismatch) is moved into
    ``damaged/`` beside it and one line says so on stderr (and in ``notes``): the caller
    recomputes it. An entry of an older cache whose bytes match the ``.sha256`` beside it is
    adopted into the manifest.
    """
    entry = Path(entry)
    root = cache_root(entry)
    # Twice at most: a concurrent writer may replace the entry between our open and our verdict.
    for _ in range(2):
        # The file and its record are read under the writers' lock: never a new record with an old file.
        with manifest_lock(root):
            try:
                handle = open(entry, "rb")
            except FileNotFoundError:
                return None
            except OSError as error:
                raise UsageError(f"cannot read cache entry {entry}: {error.strerror}; fix its permissions, or pass another --cache-dir") from None
            record = read_record(entry, root)
        with handle:
            recorded = record["sha256"] if record else None
            if recorded is None:
                try:
                    recorded = legacy_checksum_path(entry).read_text().strip() or None
                except OSError:
                    pass
            problem = _problem(handle, entry, rows, dtype, row_shape, recorded)
            if not problem:
                shape, found_dtype, offset = _header(handle)
                if record is None:
                    _adopt(entry, root, handle, recorded)
                # Mapped from the handle that was hashed: the bytes verified are the bytes used.
                return np.memmap(handle, dtype=found_dtype, mode="r", offset=offset, shape=shape)
            unverifiable = problem.startswith(NO_CHECKSUM)
            try:
                with manifest_lock(root):
                    if not _same_file(entry, handle):
                        continue  # replaced (or removed) meanwhile: judge the new file, not the old one
                    _set_aside(entry, root, problem, recorded, unverifiable)
            except OSError as error:
                raise UsageError(f"cache entry {entry} cannot be used ({problem}) nor moved aside ({error.strerror}); delete it, or pass another --cache-dir") from None
        where = "removed" if unverifiable else f"moved to {DAMAGED_DIR}/"
        message = f"cache entry {entry.name} in {entry.parent} {'cannot be verified' if unverifiable else 'is damaged'} ({problem}): {where}, recomputing it"
        print(f"note: {message}", file=sys.stderr, flush=True)
        if notes is not None:
            notes.append(message)
        return None
    return None


def _adopt(entry: Path, root: Path, handle, checksum: str) -> None:
    """List an older cache's verified entry in the manifest (its ``.sha256`` proved bench wrote
    it); a read-only cache is left as it is, and verified by that file again next time."""
    try:
        write_marker(root)
        record_path(entry, root).parent.mkdir(parents=True, exist_ok=True)
        with manifest_lock(root):
            if _same_file(entry, handle) and read_record(entry, root) is None:
                write_record(entry, root, checksum, os.fstat(handle.fileno()).st_size, adopted=True)
                legacy_checksum_path(entry).unlink(missing_ok=True)
                legacy_verified_path(entry).unlink(missing_ok=True)
    except OSError:
        pass
