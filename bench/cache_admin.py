"""``bench cache``: what the cache folder holds (entries by kind, sizes on disk, ages), and clearing it.

The cache's entries are what its manifest lists (``bench.cache_entries``): the files the
harness wrote, and nothing else. A folder without the cache's marker is not a cache, whatever
its subfolders are called (a Keras home has ``datasets/`` too): nothing in it is listed, and
``--clear`` refuses it. An entry's size counts its disk blocks (a sparse file counts what it
occupies), its age runs from its last modification.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from bench import cache_entries, cache_manifest
from bench.cache_manifest import MANIFEST_DIR, MARKER_NAME

SECONDS_PER_DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    kind: str
    path: Path
    size_bytes: int
    modified_at: float  # its modification time, seconds since the epoch (the record's where the file is gone)

    def age_days(self, now: float) -> float:
        return max(0.0, now - self.modified_at) / SECONDS_PER_DAY


@dataclasses.dataclass(frozen=True)
class CacheListing:
    folder: Path
    entries: tuple[CacheEntry, ...]
    marked: bool  # the folder carries the cache's marker
    unreadable_records: tuple[Path, ...] = ()
    exists: bool = True  # whether the folder was there when listed (its renderer touches no disk)

    @property
    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries)


def _disk_bytes(stat: os.stat_result) -> int:
    blocks = getattr(stat, "st_blocks", None)
    return blocks * 512 if blocks is not None else stat.st_size


def _record_time(record: dict, fallback: float) -> float:
    import datetime

    try:
        return datetime.datetime.fromisoformat(record["written_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return fallback


def list_cache(folder: Path) -> CacheListing:
    """Every entry the manifest of ``folder`` lists (none where the folder is not a marked cache)."""
    folder = Path(folder)
    if not cache_manifest.has_marker(folder):
        return CacheListing(folder, (), marked=False, exists=folder.exists())
    found, unreadable = cache_manifest.manifest_entries(folder)
    entries = []
    for kind, path, record in found:
        try:
            stat = path.lstat()
            size, modified = _disk_bytes(stat), stat.st_mtime
        except FileNotFoundError:  # its writer crashed before the rename, or a clear was cut short
            size, modified = 0, _record_time(record, time.time())
        entries.append(CacheEntry(kind, path, size, modified))
    return CacheListing(folder, tuple(entries), marked=True, unreadable_records=tuple(unreadable))


def select(listing: CacheListing, older_than_days: float | None = None, now: float | None = None) -> list[CacheEntry]:
    """The entries last written more than ``older_than_days`` ago (all of them without a bound)."""
    now = time.time() if now is None else now
    return [e for e in listing.entries if older_than_days is None or e.age_days(now) > older_than_days]


def remove(listing: CacheListing, entries: list[CacheEntry]) -> int:
    """Delete manifest entries of a marked cache, each with its record; returns the bytes freed.

    Raises:
        ValueError: the listing is not of a marked cache (nothing is removed).
        OSError: an entry could not be removed (those before it are gone, the rest are kept).
    """
    if entries and not listing.marked:
        raise ValueError(f"{listing.folder} has no {MARKER_NAME}: not a bench cache")
    freed = 0
    for entry in entries:
        cache_manifest.remove_entry(entry.path, listing.folder)
        freed += entry.size_bytes
    return freed


def unmarked_note(folder: Path) -> str:
    """Why an unmarked folder is left alone, and how an older bench cache is taken over."""
    return (
        f"{folder} has no {MARKER_NAME} marker: it is not a cache this version of bench wrote, so nothing in it is listed or removed; "
        f"if an older bench wrote it, `bench cache --adopt --cache-dir {folder}` takes over the entries it can prove it wrote"
    )


def adopt(folder: Path) -> tuple[list[Path], list[Path]]:
    """Take over the entries of a cache an older bench wrote: (adopted, left alone).

    Only ``<kind>/*.npy`` files with a ``.sha256`` beside them that matches their bytes are
    adopted: the harness wrote that pair and nothing else does, so a folder of foreign files
    adopts nothing. The marker is written once one entry is adopted; nothing is deleted but
    the adopted entries' old ``.sha256``/``.verified`` files.
    """
    folder = Path(folder)
    adopted, left = [], []
    kinds = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p.name != MANIFEST_DIR) if folder.is_dir() else []
    for kind in kinds:
        for path in sorted(kind.glob("*.npy")):
            checksum_file = cache_manifest.legacy_checksum_path(path)
            if not checksum_file.is_file() or cache_manifest.read_record(path, folder) is not None:
                continue
            if not path.is_file() or path.is_symlink() or cache_entries.file_sha256(path) != checksum_file.read_text().strip():
                left.append(path)
                continue
            # Through open_entry's own adoption (marker, record, under the writers' lock).
            if cache_entries.open_entry(path) is not None and cache_manifest.read_record(path, folder) is not None:
                adopted.append(path)
            else:
                left.append(path)
    return adopted, left
