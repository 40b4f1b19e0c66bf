"""Provenance: where, with what and by which command a record was made. Every record kind
carries one ``Provenance``; on disk its fields sit flat in the record's line, under the names
records have always used, so files written before it existed read unchanged. ``machine()``
fills it without importing TensorFlow (a runtime's measuring process loads only its runtime)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path


def now(seconds_ago: float = 0.0) -> str:
    """The current UTC time (less ``seconds_ago``) as records stamp it (ISO 8601, whole seconds)."""
    return (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")


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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CODE_FILES = ("*.py", "*.toml", "*.cfg", "*.ini")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def package_version(package: str) -> str:
    """The installed version of a distribution ("" where it is not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def machine() -> Provenance:
    """The machine, the software installed (TensorFlow's and Keras's versions as installed, not
    imported) and the code, now; no GPU (``bench.measure.environment`` asks TensorFlow for it)."""
    commit = _git("rev-parse", "HEAD")
    return Provenance(
        tf_version=package_version("tensorflow"),
        keras_version=package_version("keras"),
        python_version=platform.python_version(),
        cpu=f"{_cpu_model()} ({os.cpu_count()} cores)",
        hostname=socket.gethostname(),
        git_commit=commit,
        # Code only: a run appending to committed records (results/) must not count as dirty.
        git_dirty=bool(_git("status", "--porcelain", "--untracked-files=no", "--", *CODE_FILES)) if commit else None,
        started_at=now(),
    )


def at_failure(wall_seconds: float | None = None, command: str = "") -> Provenance:
    """A failed record's provenance, written once the work has ended: this host, and the work's
    start (now, less its wall seconds where known), so that its span lines up with other
    records' (``bench.time_spent.overlapped``). What ran is not known here (a killed child may
    have said nothing)."""
    return Provenance(hostname=socket.gethostname(), started_at=now(wall_seconds or 0.0), command=command)
