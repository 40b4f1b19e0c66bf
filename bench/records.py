"""Run records: one flat JSON line per cell in ``runs.jsonl``, appended crash-safely.

Appends are whole lines written with one ``write`` call under an exclusive ``flock``, then
flushed and fsynced, so two ``bench run`` processes can share a folder and a kill at any
moment leaves every earlier line intact. Readers skip (and count) a torn or malformed line.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
from pathlib import Path

RUNS_FILE = "runs.jsonl"
SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Record:
    """Everything measured for one (backbone, stage, image size, augmentation, seed) cell."""

    # identity of the cell
    key: str
    backbone: str
    stage: str
    image_size: int
    augment: str
    seed: int
    dataset: str
    profile: str
    # outcome
    status: str  # ok | failed
    failure: str = ""  # for a failed record, one of FAILURES
    error: str = ""  # for a failed record, what went wrong (the message and the last traceback lines)
    notes: str = ""  # remarks on an ok record, e.g. that a finetune cell trained its own head
    # accuracy
    test_accuracy: float | None = None
    test_loss: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    train_accuracy: float | None = None
    # recipe actually run
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    unfreeze_layers: int | None = None
    weights: str = "none"  # imagenet | a file path | none
    path: str = ""  # cached | uncached: which training path ran
    tta_flip: bool = False
    precision: str = "float32"  # Keras dtype policy
    jit_compile: bool = False
    train_images: int | None = None
    val_images: int | None = None
    test_images: int | None = None
    # cost
    wall_seconds: float | None = None
    train_seconds: float | None = None
    cache_seconds: float | None = None  # running the frozen prefix once (0 on a warm cache)
    eval_seconds: float | None = None
    measure_seconds: float | None = None  # throughput, latency and FLOP passes
    overhead_seconds: float | None = None  # the rest: data loading, building, bookkeeping
    train_images_per_second: float | None = None
    infer_images_per_second: float | None = None
    infer_batch_size: int | None = None
    infer_spread: float | None = None  # (max - min) / median over the timed repeats
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    peak_rss_mb: float | None = None  # the kernel's high-water mark: counts memory-mapped cache pages too
    peak_anon_mb: float | None = None  # peak anonymous (non-file-backed) resident memory, sampled; None in older records
    peak_gpu_mb: float | None = None
    total_params: int | None = None
    trainable_params: int | None = None
    flops_per_image: float | None = None
    # training curves: one dict per epoch (loss, accuracy, val_loss, val_accuracy)
    history: list = dataclasses.field(default_factory=list)
    # environment
    tf_version: str = ""
    keras_version: str = ""
    python_version: str = ""
    cpu: str = ""
    gpu: str = ""
    hostname: str = ""
    git_commit: str = ""
    git_dirty: bool | None = None
    started_at: str = ""
    command: str = ""  # the `bench run` command line that produced the record
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        # JSON has no NaN: a diverged loss is written as null, so every line stays parseable.
        return json.dumps(_finite(dataclasses.asdict(self)), allow_nan=False, default=str)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record))
# Why a cell failed: the sweep retries only "oom", at half the batch size.
FAILURES = ("oom", "timeout", "signal", "diverged", "exception")
# How records written before the ``failure`` field said it: a prefix of ``error``.
_LEGACY_FAILURE_PREFIXES = (("out of memory", "oom"), ("timeout", "timeout"), ("killed by signal", "signal"), ("diverged", "diverged"))


def _upgrade(data: dict) -> dict:
    """Fields of a record written by an older version, mapped onto today's."""
    if "failure" in data:
        return data
    data = dict(data)
    error = data.get("error") or ""
    if data.get("status") == "failed":
        data["failure"] = next((kind for prefix, kind in _LEGACY_FAILURE_PREFIXES if error.startswith(prefix)), "exception")
    elif error.startswith("inline: "):
        data["notes"], data["error"] = error.removeprefix("inline: "), ""
    return data


def append_record(out_dir: Path, record: Record) -> None:
    """Append one record as a whole line, under a lock, flushed and fsynced.

    Raises:
        OSError: the folder is not writable or the disk is full; the file keeps every
            earlier line (a partial write is truncated away).
    """
    line = (record.to_json() + "\n").encode()
    path = Path(out_dir) / RUNS_FILE
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            start = handle.seek(0, os.SEEK_END)
            try:
                # A torn last line (a writer killed mid-write) must not swallow this record.
                if start and os.pread(handle.fileno(), 1, start - 1) != b"\n":
                    line = b"\n" + line
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                # Never leave half a line behind for the next append to glue onto.
                handle.truncate(start)
                raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class LoadedRecords:
    records: list[Record]
    bad_lines: int  # torn or malformed lines skipped


def read_records(path: Path) -> LoadedRecords:
    """Every well-formed record of a ``runs.jsonl`` file (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RUNS_FILE
    records, bad = [], 0
    if not path.exists():
        return LoadedRecords([], 0)
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                data = _upgrade(json.loads(raw))
                known = {k: v for k, v in data.items() if k in RECORD_FIELDS}
                records.append(Record(**known))
            except (ValueError, TypeError):
                bad += 1
    return LoadedRecords(records, bad)


def latest_by_key(records: list[Record]) -> dict[str, Record]:
    """The last record of every cell: a re-run supersedes earlier attempts."""
    return {r.key: r for r in records}
