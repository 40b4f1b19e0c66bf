"""Provenance: where, with what and by which command a record was made. Every record kind
carries one ``Provenance``; on disk its fields sit flat in the record's line, under the names
records have always used, so files written before it existed read unchanged."""

from __future__ import annotations

import dataclasses
import datetime


def now() -> str:
    """The current UTC time as records stamp it (ISO 8601, whole seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Software, machine, code version, start time and command line of one record."""

    tf_version: str = ""
    keras_version: str = ""
    python_version: str = ""
    cpu: str = ""
    gpu: str = ""
    hostname: str = ""
    git_commit: str = ""
    git_dirty: bool | None = None
    started_at: str = ""
    command: str = ""  # the `bench` command line that produced the record


def stamped(record, **changes):
    """``record`` with its provenance fields replaced (e.g. ``command=...``)."""
    return dataclasses.replace(record, provenance=dataclasses.replace(record.provenance, **changes))
