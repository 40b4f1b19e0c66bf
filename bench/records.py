"""Run records: one flat JSON line per cell in ``runs.jsonl``, kept by ``bench.record_store``.

This module says what a run record is (``Record``), how a line written by an earlier
version maps onto today's fields, and which lines are no usable record (an unknown status,
an ``ok`` record missing a measured number); appending and reading are the store's.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from bench import record_store
from bench.keys import cell_key
from bench.provenance import Provenance

RUNS_FILE = "runs.jsonl"
TRIALS_FILE = "trials.jsonl"
# 2: the key is a function of the identity alone (no folder name) and the identity has no
# "loader" (`bench perf --memory`'s own option now). 3: the identity names its tuned recipes
# and what the cell fits on ("recipes", "fit_on"). Records of earlier schemas are mapped on read.
SCHEMA_VERSION = 3


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
    # The recipe's source ("default", or the study and trial that chose it) and, for a tuned
    # one, its values beside the defaults (``bench.grid.Cell.recipe_record``); empty in older records.
    recipe: dict = dataclasses.field(default_factory=dict)
    # A tuning trial's place in its study (trials.jsonl only): the study, the trial's number,
    # whether the pruner stopped it, and ``tuning``: the study's budget (``trials``,
    # ``max_epochs``), whether the trial ran the stage's default recipe (``default_recipe``) and
    # which trial it retries (``retry_of``, one whose worker stopped).
    study: str = ""
    trial: int | None = None
    pruned: bool = False
    tuning: dict = dataclasses.field(default_factory=dict)
    model_file: str = ""  # the trained classifier, relative to the output folder ("": not saved, as before it was)
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
    # the linear stage (bench.linear_probe): the chosen L2 penalty, the L-BFGS fits' seconds
    # summed, and every fit (l2_penalty, phase, val_accuracy, iterations, converged, solver_seconds)
    linear_l2_penalty: float | None = None
    solver_seconds: float | None = None
    linear_penalty_search: list = dataclasses.field(default_factory=list)
    # environment: software, machine, code, start time and command line (flat on disk)
    provenance: Provenance = Provenance()
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return record_store.to_line(self)


RECORD_FIELDS = record_store.flat_fields(Record)
# Why a cell failed: the sweep retries only "oom", at half the batch size.
FAILURES = ("oom", "timeout", "signal", "diverged", "exception")
# How records written before the ``failure`` field said it: a prefix of ``error``.
_LEGACY_FAILURE_PREFIXES = (("out of memory", "oom"), ("timeout", "timeout"), ("killed by signal", "signal"), ("diverged", "diverged"))


def legacy_failure(error: str) -> str:
    """The ``failure`` kind of a failed record written before records said it, from its ``error``."""
    return next((kind for prefix, kind in _LEGACY_FAILURE_PREFIXES if error.startswith(prefix)), "exception")


def _upgrade(data: dict) -> dict:
    """Fields of a record written by an older version, mapped onto today's."""
    data = dict(data)
    if "failure" not in data:
        error = data.get("error") or ""
        if data.get("status") == "failed":
            data["failure"] = legacy_failure(error)
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
        data["key"] = cell_key(data["identity"])
    if data.get("schema", 1) < 3:
        # Earlier cells had no tuned recipe and fit on train alone; the key's digest leaves
        # both out at those values (bench.keys), so every key stays as it was.
        data["identity"] = {**data["identity"], "recipes": None, "fit_on": "train"}
        data["schema"] = SCHEMA_VERSION
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


# An ok record without these numbers cannot be summarised: readers skip it as malformed.
# (Training throughput may be missing: a run of fewer steps than the meter's warm-up has none.)
OK_REQUIRED_NUMBERS = (
    "test_accuracy", "val_accuracy", "epochs", "train_seconds", "wall_seconds", "infer_images_per_second",
    "infer_batch_size", "latency_p50_ms", "latency_p95_ms", "peak_rss_mb", "total_params", "trainable_params",
)  # fmt: skip
# A tuning trial never touches the test split and measures no cost: it needs fewer.
TRIAL_REQUIRED_NUMBERS = ("val_accuracy", "epochs", "train_seconds", "wall_seconds")
STATUSES = ("ok", "failed")


def _has_numbers(data: dict, names) -> bool:
    return all(isinstance(data.get(name), (int, float)) and math.isfinite(data[name]) for name in names)


def _usable(data: dict) -> bool:
    if data.get("status") not in STATUSES or not all(isinstance(epoch, dict) for epoch in data.get("history", [])):
        return False
    # A final fit on train + validation has no held-out validation accuracy.
    required = [name for name in OK_REQUIRED_NUMBERS if not (name == "val_accuracy" and data["identity"].get("fit_on") == "train+val")]
    return data["status"] != "ok" or _has_numbers(data, required)


def _usable_trial(data: dict) -> bool:
    if data.get("status") not in STATUSES or not data.get("study") or not isinstance(data.get("trial"), int):
        return False
    return data["status"] != "ok" or _has_numbers(data, TRIAL_REQUIRED_NUMBERS)


RUNS = record_store.RecordKind("run", Record, RUNS_FILE, SCHEMA_VERSION, upgrade=_upgrade, accepts=_usable)
# Tuning trials: run records of their own file, so no report of runs mistakes one for a cell.
TRIALS = record_store.RecordKind("trial", Record, TRIALS_FILE, SCHEMA_VERSION, upgrade=_upgrade, accepts=_usable_trial)
latest_by_key = record_store.latest_by_key  # a re-export: callers predate the store


def append_record(out_dir: Path, record: Record) -> None:
    """Append one record to ``out_dir/runs.jsonl`` (``record_store.append``)."""
    record_store.append(out_dir, RUNS, record)


def read_records(path: Path) -> record_store.Loaded:
    """Every well-formed record of a ``runs.jsonl`` file (or a folder holding one); the rest are counted."""
    return record_store.read(path, RUNS)
