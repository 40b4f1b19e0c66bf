"""``bench cache``: what the cache folder holds (entries by kind, sizes on disk, ages), and clearing it.

It knows nothing of the cache's file formats: a kind is a subfolder of the cache folder
(``datasets/``, ``features/``), an entry is whatever sits directly inside one, file or
folder. An entry's size counts the disk blocks of every file below it (a sparse file
counts what it occupies), its age runs from the last time anything in it was written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

# The kinds the harness writes; a folder holding none of them is not cleared (a mistyped
# --cache-dir pointing at a home folder must not lose its contents).
KNOWN_KINDS = ("datasets", "features")
TOP_LEVEL = "(top level)"
SECONDS_PER_DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    kind: str
    path: Path
    size_bytes: int
    modified_at: float  # the newest modification time below it, seconds since the epoch

    def age_days(self, now: float) -> float:
        return max(0.0, now - self.modified_at) / SECONDS_PER_DAY


@dataclasses.dataclass(frozen=True)
class CacheListing:
    folder: Path
    entries: tuple[CacheEntry, ...]
    exists: bool = True  # whether the folder was there when listed (its renderer touches no disk)

    @property
    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries)

    @property
    def looks_like_a_cache(self) -> bool:
        return any((self.folder / kind).is_dir() for kind in KNOWN_KINDS)


def _disk_bytes(stat: os.stat_result) -> int:
    blocks = getattr(stat, "st_blocks", None)
    return blocks * 512 if blocks is not None else stat.st_size


def _measure(path: Path) -> tuple[int, float]:
    """(bytes on disk, newest mtime) of a file or a whole folder, symbolic links not followed."""
    stat = path.lstat()
    size, newest = _disk_bytes(stat), stat.st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, _, names in os.walk(path):
            for name in names:
                try:
                    inner = os.lstat(os.path.join(folder, name))
                except FileNotFoundError:  # removed by a running cell meanwhile
                    continue
                size += _disk_bytes(inner)
                newest = max(newest, inner.st_mtime)
    return size, newest


def list_cache(folder: Path) -> CacheListing:
    """Every entry of every kind in ``folder`` (empty where the folder does not exist)."""
    folder = Path(folder)
    entries = []
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            kind, members = (child.name, sorted(child.iterdir())) if child.is_dir() and not child.is_symlink() else (TOP_LEVEL, [child])
            for member in members:
                try:
                    size, modified = _measure(member)
                except FileNotFoundError:
                    continue
                entries.append(CacheEntry(kind, member, size, modified))
    return CacheListing(folder, tuple(entries), folder.exists())


def select(listing: CacheListing, older_than_days: float | None = None, now: float | None = None) -> list[CacheEntry]:
    """The entries last written more than ``older_than_days`` ago (all of them without a bound)."""
    now = time.time() if now is None else now
    return [e for e in listing.entries if older_than_days is None or e.age_days(now) > older_than_days]


def remove(entries: list[CacheEntry]) -> int:
    """Delete the entries; returns the bytes freed. An entry already gone is skipped."""
    freed = 0
    for entry in entries:
        try:
            if entry.path.is_dir() and not entry.path.is_symlink():
                shutil.rmtree(entry.path)
            else:
                entry.path.unlink()
        except FileNotFoundError:
            continue
        freed += entry.size_bytes
    return freed
