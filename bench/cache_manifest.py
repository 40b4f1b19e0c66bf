"""The cache's own account of what it wrote: the marker that says a folder is a bench cache, and
one manifest record per entry (kind, name, sha256, bytes, written_at).

Layout, locking and why are in ``bench.cache_entries``, which writes entries and their records;
``bench.cache_admin`` lists and removes what the manifest names, and nothing else.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from bench import files

MARKER_NAME = "bench-cache.json"
MANIFEST_DIR = "manifest"
RECORD_SUFFIX = ".json"
MANIFEST_LOCK = ".lock"
# Written before the manifest existed, beside each entry: its sha256, and a "size mtime_ns sha256"
# stamp of its last verification. Read only to adopt such an entry; removed once it is adopted.
LEGACY_CHECKSUM_SUFFIX = ".sha256"
LEGACY_VERIFIED_SUFFIX = ".verified"


def cache_root(entry: Path) -> Path:
    """The cache folder an entry belongs to: entries live in ``root/<kind>/``."""
    return Path(entry).parent.parent


def record_path(entry: Path, root: Path | None = None) -> Path:
    """Where ``entry``'s manifest record lives: ``root/manifest/<kind>/<name>.json``."""
    entry = Path(entry)
    root = cache_root(entry) if root is None else Path(root)
    return root / MANIFEST_DIR / entry.parent.relative_to(root) / (entry.name + RECORD_SUFFIX)


def legacy_checksum_path(entry: Path) -> Path:
    return entry.with_name(entry.name + LEGACY_CHECKSUM_SUFFIX)


def legacy_verified_path(entry: Path) -> Path:
    return entry.with_name(entry.name + LEGACY_VERIFIED_SUFFIX)


def manifest_lock(root: Path):
    """The lock that pairs each manifest record with its entry (see the module's docstring)."""
    return files.exclusive_lock(Path(root) / MANIFEST_DIR / MANIFEST_LOCK)


def has_marker(root: Path) -> bool:
    return (Path(root) / MARKER_NAME).is_file()


def write_marker(root: Path) -> None:
    """Mark ``root`` as a bench cache (once; concurrent writers write the same text atomically)."""
    if not has_marker(root):
        Path(root).mkdir(parents=True, exist_ok=True)
        text = {"bench cache": 1, "about": f"written by bench; the entries it wrote are listed in {MANIFEST_DIR}/, and bench cache --clear removes only those"}
        files.write_text(Path(root) / MARKER_NAME, json.dumps(text) + "\n")


def write_record(entry: Path, root: Path, sha256: str | None, size: int, **extra) -> None:
    record = {"kind": entry.parent.relative_to(root).as_posix(), "name": entry.name, "sha256": sha256, "bytes": size,
              "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **extra}
    path = record_path(entry, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(path, json.dumps(record) + "\n")


def read_record(entry: Path, root: Path | None = None) -> dict | None:
    """``entry``'s manifest record, or ``None`` where it has none (or an unreadable one)."""
    try:
        record = json.loads(record_path(entry, root).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def manifest_entries(root: Path) -> tuple[list[tuple[str, Path, dict]], list[Path]]:
    """((kind, entry path, record) for every readable manifest record, unreadable record files).

    An entry's path comes from where its record lies, never from the record's text, and must
    agree with the kind and name written in it: a damaged or hand-edited record cannot point
    ``--clear`` at a file outside the cache.
    """
    root = Path(root)
    manifest = root / MANIFEST_DIR
    found, unreadable = [], []
    for folder, subfolders, names in os.walk(manifest):  # symbolic links to folders are not followed
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if not name.endswith(RECORD_SUFFIX) or name.startswith(files.TEMPORARY_PREFIX):
                continue
            kind = path.parent.relative_to(manifest).as_posix()
            entry = root / kind / name[: -len(RECORD_SUFFIX)]
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                unreadable.append(path)
                continue
            if not isinstance(record, dict) or record.get("kind") != kind or record.get("name") != entry.name or kind in (".", ""):
                unreadable.append(path)
                continue
            found.append((kind, entry, record))
    return found, unreadable


def remove_entry(entry: Path, root: Path) -> None:
    """Delete a manifest entry: the file, then its record (a crash between leaves a record
    without a file, which the next ``--clear`` removes; never a file the manifest forgot)."""
    with manifest_lock(root):
        if entry.is_dir() and not entry.is_symlink():
            raise IsADirectoryError(21, "a folder where the manifest lists a file; remove it by hand", str(entry))
        entry.unlink(missing_ok=True)
        for sidecar in (legacy_checksum_path(entry), legacy_verified_path(entry)):
            sidecar.unlink(missing_ok=True)
        record_path(entry, root).unlink(missing_ok=True)
