"""Run records: one flat JSON line per cell in ``runs.jsonl``, appended crash-safely.

Appends are whole lines written under an exclusive ``flock`` and fsynced; a write that
fails part-way is cut back at the file-descriptor level, so two ``bench run`` processes can
share a folder and a kill or a full disk at any moment leaves every earlier line intact.
Readers skip (and count) a line that is torn, is not a JSON object, or does not fit the
schema (a wrong type, or an ``ok`` record missing a measured number).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
from pathlib import Path

from bench.errors import UsageError
from bench.keys import cell_key

RUNS_FILE = "runs.jsonl"
# 2: the key is a function of the identity alone (no folder name) and the identity has no
# "loader" (`bench perf --memory`'s own option now). Records of schema 1 are mapped on read.
SCHEMA_VERSION = 2


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
    dataset: str  # readable label, for display
    profile: str
    # outcome
    status: str  # ok | failed
    # Every setting that can change a number, as planned (``bench.grid.IDENTITY_FIELDS``); seeds
    # of one configuration are those whose identities differ in the seed alone.
    identity: dict = dataclasses.field(default_factory=dict)
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
    epochs: int | None = None  # epochs trained (fewer than planned if training diverged)
    batch_size: int | None = None  # the batch size used (half the planned one after an out-of-memory retry)
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
    data = dict(data)
    if "failure" not in data:
        error = data.get("error") or ""
        if data.get("status") == "failed":
            data["failure"] = next((kind for prefix, kind in _LEGACY_FAILURE_PREFIXES if error.startswith(prefix)), "exception")
        elif error.startswith("inline: "):
            data["notes"], data["error"] = error.removeprefix("inline: "), ""
    if not data.get("identity"):
        data["identity"] = _legacy_identity(data)
    if data.get("schema", 1) < 2:
        data["identity"] = {k: v for k, v in data["identity"].items() if not (k == "loader" and v == "batched")}
        # Schema 1 keys carried the data folder's name: the same images under another name
        # were another cell to --resume and a second seed to the report. Keyed by the
        # identity alone, and since the digest is unchanged (bench.keys), a record of
        # Keras's CIFAR-10 or the synthetic set keeps its key exactly.
        data["key"], data["schema"] = cell_key(data["identity"]), SCHEMA_VERSION
    return data


def _legacy_identity(data: dict) -> dict:
    """The identity of a record written before records carried one, from what it did record.

    Its readable labels stand in for content fingerprints, and what ran for what was planned
    (the two differ only for a diverged or retried cell); it left the validation fraction at
    its default and had no recipe overrides.
    """
    precision = data.get("precision") or "float32"
    return {
        "backbone": data.get("backbone"),
        "stage": data.get("stage"),
        "image_size": data.get("image_size"),
        "augment": data.get("augment"),
        "seed": data.get("seed"),
        "profile": data.get("profile"),
        "epochs": data.get("epochs"),
        "batch_size": data.get("batch_size"),
        "unfreeze_layers": data.get("unfreeze_layers"),
        "precision": "float32" if precision == "float32" else "mixed",
        "jit_compile": bool(data.get("jit_compile")),
        "path": data.get("path"),
        "val_fraction": 0.1,
        "train_images": {"quick": 1000, "perf": 5000}.get(data.get("profile")),
        "overrides": [],
        "dataset_id": f"label:{data.get('dataset')}",
        "weights_id": f"label:{data.get('weights')}",
    }


def append_record(out_dir: Path, record: Record) -> None:
    """Append one record to ``out_dir/runs.jsonl``; see ``append_line``."""
    append_line(Path(out_dir) / RUNS_FILE, record.to_json())


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


@dataclasses.dataclass(frozen=True)
class LoadedRecords:
    records: list[Record]
    bad_lines: int  # torn or malformed lines skipped


# An ok record without these numbers cannot be summarised: readers skip it as malformed.
# (Training throughput may be missing: a run of fewer steps than the meter's warm-up has none.)
OK_REQUIRED_NUMBERS = (
    "test_accuracy", "val_accuracy", "epochs", "train_seconds", "wall_seconds", "infer_images_per_second",
    "infer_batch_size", "latency_p50_ms", "latency_p95_ms", "peak_rss_mb", "total_params", "trainable_params",
)  # fmt: skip
STATUSES = ("ok", "failed")
_JSON_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,), "None": (type(None),)}
# Each field's accepted JSON types, from its annotation ("float | None" -> int, float, None).
_FIELD_TYPES = {f.name: tuple(t for part in str(f.type).split("|") for t in _JSON_TYPES[part.strip()]) for f in dataclasses.fields(Record)}


def parse_record(data) -> Record | None:
    """The record a parsed JSON line holds, or None when it is not one readers can use.

    A line may be valid JSON and still no record: not an object, a field of the wrong type,
    an unknown status, or an ``ok`` record missing a number every summary needs.
    """
    if not isinstance(data, dict):
        return None
    known = {k: v for k, v in data.items() if k in RECORD_FIELDS}
    if any(not isinstance(value, _FIELD_TYPES[name]) for name, value in known.items()):
        return None
    try:
        known = _upgrade(known)
    except KeyError:  # an identity without a field its key is made of
        return None
    if known.get("status") not in STATUSES or not all(isinstance(epoch, dict) for epoch in known.get("history", [])):
        return None
    if known["status"] == "ok" and not all(isinstance(known.get(name), (int, float)) and math.isfinite(known[name]) for name in OK_REQUIRED_NUMBERS):
        return None
    try:
        return Record(**known)
    except TypeError:  # a field without a default is missing
        return None


def read_records(path: Path) -> LoadedRecords:
    """Every well-formed record of a ``runs.jsonl`` file (or a folder holding one); the rest are counted."""
    path = Path(path)
    if path.is_dir():
        path = path / RUNS_FILE
    records, bad = [], 0
    if not path.exists():
        return LoadedRecords([], 0)
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}; fix its permissions or move it aside") from None
    with handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                record = parse_record(json.loads(raw))
            except ValueError:  # torn or not JSON (UnicodeDecodeError is a ValueError too)
                record = None
            if record is None:
                bad += 1
            else:
                records.append(record)
    return LoadedRecords(records, bad)


def latest_by_key(records: list[Record]) -> dict[str, Record]:
    """The last record of every cell: a re-run supersedes earlier attempts."""
    return {r.key: r for r in records}
