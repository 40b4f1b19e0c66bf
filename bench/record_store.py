"""The record store: one append-only JSONL file per record kind in an output folder, written
crash-safely and read tolerantly. Run records, cost records and every later kind go through it.

A record kind (``RecordKind``) declares its frozen dataclass, its file name, its schema
version and how to map a line written by an earlier version onto today's fields; the store
does the rest, once for every kind:

- Appends are whole lines written under an exclusive ``flock`` and fsynced; a write that fails
  part-way is cut back at the file-descriptor level, so two processes can share a folder and
  a kill or a full disk at any moment leaves every earlier line intact.
- A field whose type is a dataclass (the ``Provenance`` every kind carries) is written flat, its
  fields among the record's own: lines keep the names they always had.
- Readers skip and count a line that is torn, is not a JSON object, has a field of the wrong
  type, lacks a required field, or fails the kind's own check; ``load`` (what commands call)
  says so on stderr, and refuses a non-empty file of which no line is a record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import sys
import types
import typing
from pathlib import Path
from typing import Callable

from bench.errors import UsageError


def _as_is(data: dict) -> dict:
    return data


def _always(data: dict) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class RecordKind:
    """What the store needs to know of one kind of record.

    Attributes:
        name: what messages call one record (``run``, ``cost``).
        record_type: a frozen dataclass with a ``key`` field (later records of a key supersede
            earlier ones) and a ``schema`` field.
        file_name: the JSONL file in an output folder (``runs.jsonl``).
        schema_version: today's ``schema``; a line with a larger one (a newer version's) is skipped.
        upgrade: maps the fields of a line (after type checks) onto today's; a line it changes
            counts as written by an earlier version.
        accepts: the kind's own checks on the upgraded fields, beyond their types (a known
            status, the numbers an ``ok`` record must have).
    """

    name: str
    record_type: type
    file_name: str
    schema_version: int
    upgrade: Callable[[dict], dict] = _as_is
    accepts: Callable[[dict], bool] = _always


@dataclasses.dataclass(frozen=True)
class Loaded:
    """Records read from one or more files, with what was skipped or mapped on the way."""

    records: list
    bad_lines: int  # torn or malformed lines skipped
    upgraded: int = 0  # records written by an earlier version, mapped onto today's fields
    paths: tuple = ()  # the files read


# ---------------------------------------------------------------------------- schema


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    types: tuple  # accepted JSON value types
    part: type | None = None  # a dataclass written flat (its fields are in ``part_fields``)
    part_fields: tuple = ()


def _json_types(annotation) -> tuple:
    is_union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    accepted = ()
    for part in typing.get_args(annotation) if is_union else (annotation,):
        # JSON has one number type: a float field may hold a whole number.
        accepted += (int, float) if part is float else (typing.get_origin(part) or part,)
    return accepted


@functools.lru_cache(maxsize=None)
def _schema(record_type: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(record_type)
    fields = []
    for field in dataclasses.fields(record_type):
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            fields.append(_Field(field.name, (), annotation, _schema(annotation)))
        else:
            fields.append(_Field(field.name, _json_types(annotation)))
    return tuple(fields)


def flat_fields(record_type: type) -> tuple[str, ...]:
    """The field names of ``record_type``'s lines on disk, in order (parts written flat)."""
    return tuple(name for field in _schema(record_type) for name in ([f.name for f in field.part_fields] if field.part else [field.name]))


def as_flat_dict(record) -> dict:
    """``record`` as the flat dict its line holds (what tables and frames are made from)."""
    flat = {}
    for field in _schema(type(record)):
        value = getattr(record, field.name)
        flat.update(dataclasses.asdict(value) if field.part else {field.name: _copy(value)})
    return flat


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_line(record) -> str:
    """One record as its JSON line (without the newline).

    JSON has no NaN: a diverged loss is written as null, so every line stays parseable.
    """
    return json.dumps(_finite(as_flat_dict(record)), allow_nan=False, default=str)


def parse(data, kind: RecordKind):
    """(record, upgraded) for a parsed JSON line; record is None when the line is no record of ``kind``."""
    if not isinstance(data, dict):
        return None, False
    schema = _schema(kind.record_type)
    names = set(flat_fields(kind.record_type))
    types_by_name = {f.name: f.types for field in schema for f in (field.part_fields if field.part else (field,))}

    def typed(fields: dict) -> bool:
        return all(isinstance(value, types_by_name[name]) for name, value in fields.items())

    known = {k: v for k, v in data.items() if k in names}
    # Checked before upgrading too: an upgrade may read any known field and trusts its type.
    if not typed(known):
        return None, False
    if isinstance(known.get("schema"), int) and known["schema"] > kind.schema_version:
        return None, False  # a newer version's line: its fields may mean something else
    # The whole line goes to the upgrade: a field an earlier version named otherwise is among the unknown keys.
    try:
        upgraded = {k: v for k, v in kind.upgrade(dict(data)).items() if k in names}
    except (KeyError, TypeError, ValueError):  # a line the upgrade cannot map (an identity missing a key field)
        return None, False
    if not typed(upgraded) or not kind.accepts(upgraded):
        return None, False
    arguments = {}
    for field in schema:
        if field.part:
            arguments[field.name] = field.part(**{f.name: upgraded[f.name] for f in field.part_fields if f.name in upgraded})
        elif field.name in upgraded:
            arguments[field.name] = upgraded[field.name]
    try:
        return kind.record_type(**arguments), upgraded != known
    except TypeError:  # a field without a default is missing
        return None, False


# ---------------------------------------------------------------------------- writing


def append(folder: Path, kind: RecordKind, record) -> None:
    """Append ``record`` to ``folder/<kind.file_name>``; see ``append_line``."""
    append_line(Path(folder) / kind.file_name, to_line(record))


def append_line(path: Path, text: str) -> None:
    """Append ``text`` as one whole line, under a lock, fsynced.

    The line goes out through unbuffered ``os.write`` calls, so a short write (a full disk,
    a file-size limit) is seen where it happens, and the file is cut back to its old length
    with ``os.ftruncate``: a buffered file would try to flush the fragment again first.

    Raises:
        OSError: the folder is not writable or the disk is full; the file keeps every
            earlier line and nothing of this one.
    """
    line = (text + "\n").encode()
    handle = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        start = os.fstat(handle).st_size
        try:
            # A torn last line (a writer killed mid-write) must not swallow this record.
            if start and os.pread(handle, 1, start - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(handle, view) :]
            os.fsync(handle)
        except OSError:
            # Never leave half a line behind for the next append to glue onto.
            with contextlib.suppress(OSError):
                os.ftruncate(handle, start)
                os.fsync(handle)
            raise
    finally:
        os.close(handle)  # closing releases the lock


# ---------------------------------------------------------------------------- reading


def read(source: Path, kind: RecordKind) -> Loaded:
    """Every record of ``kind`` in a file (or in a folder's ``kind.file_name``); the rest are counted.

    Raises:
        UsageError: the file exists but cannot be read.
    """
    path = Path(source)
    if path.is_dir():
        path = path / kind.file_name
    if not path.exists():
        return Loaded([], 0, 0, ())
    records, bad, upgraded = [], 0, 0
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}; fix its permissions or move it aside") from None
    with handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                record, was_upgraded = parse(json.loads(raw), kind)
            except ValueError:  # torn or not JSON (UnicodeDecodeError is a ValueError too)
                record, was_upgraded = None, False
            if record is None:
                bad += 1
            else:
                records.append(record)
                upgraded += was_upgraded
    return Loaded(records, bad, upgraded, (path,))


def _say(log, text: str) -> None:
    # A closed or broken stream must not cost the records their report.
    with contextlib.suppress(OSError, ValueError):
        print(text, file=log, flush=True)


def load_each(sources, kind: RecordKind, log=None) -> list[Loaded]:
    """The records of ``kind`` in each folder or file apart, as every command reads them.

    Every source is read and checked before anything is said, so an unreadable one is the
    only line its command prints; then skipped and mapped lines are said on ``log`` (default
    stderr), one line per file.

    Raises:
        UsageError: a file has lines but none of them is a record of ``kind`` (exit 2: its
            records would otherwise vanish from every table in silence).
    """
    log = log or sys.stderr
    each = [read(source, kind) for source in sources]
    for loaded in each:
        for path in loaded.paths:
            if loaded.bad_lines and not loaded.records:
                raise UsageError(
                    f"{path}: none of its {loaded.bad_lines} line(s) is a readable {kind.name} record (malformed, or written by an "
                    "incompatible version); repair the lines or move the file aside, then rerun"
                )
    for loaded in each:
        for path in loaded.paths:
            if loaded.bad_lines:
                _say(log, f"warning: {path}: skipped {loaded.bad_lines} malformed line(s); read {len(loaded.records)} {kind.name} record(s)")
            if loaded.upgraded:
                _say(log, f"note: {path}: {loaded.upgraded} {kind.name} record(s) written by an earlier version, mapped onto today's fields")
    return each


def load(sources, kind: RecordKind, log=None) -> Loaded:
    """``load_each``'s records of every source together."""
    each = load_each(sources, kind, log)
    return Loaded([r for loaded in each for r in loaded.records], sum(loaded.bad_lines for loaded in each),
                  sum(loaded.upgraded for loaded in each), tuple(path for loaded in each for path in loaded.paths))


def latest_by_key(records: list) -> dict:
    """The last record of every key: a re-run supersedes earlier attempts."""
    return {r.key: r for r in records}


def done_keys(folder: Path, kind: RecordKind, log=None) -> set[str]:
    """Keys whose latest record in ``folder`` is ``ok``: what ``--resume`` skips."""
    return {key for key, record in latest_by_key(load([folder], kind, log).records).items() if record.status == "ok"}


def still_to_do(jobs: list, folder: Path, kind: RecordKind, resume: bool, log, noun: str) -> list:
    """The jobs (anything with a ``key``) that ``--resume`` does not skip, saying how many it skips.

    Args:
        noun: what the jobs are called in that line ("cells", "measurements").
    """
    done = done_keys(folder, kind, log) if resume else set()
    todo = [job for job in jobs if job.key not in done]
    if len(todo) < len(jobs):
        print(f"resume: {len(jobs) - len(todo)} of {len(jobs)} {noun} already have an ok record; running {len(todo)}", file=log, flush=True)
    return todo
