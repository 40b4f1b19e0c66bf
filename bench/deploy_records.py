"""``deploy.jsonl``: what ``bench deploy`` found for one trained cell under one runtime
(``DeployRecord``), kept by ``bench.record_store`` (``DEPLOYS``). Imports no TensorFlow.

The key is the cell's key and the runtime: a re-run of the same cell under the same runtime
supersedes the earlier record.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench import record_store
from bench.provenance import Provenance
from bench.records import FAILURES

DEPLOY_FILE = "deploy.jsonl"
DEPLOY_SCHEMA_VERSION = 1
# Besides a cell's ways to fail: the converter raised ("conversion"), or a float runtime's
# accuracy is further from TensorFlow's than bench.runtimes.FLOAT_TOLERANCE_POINTS ("accuracy").
DEPLOY_FAILURES = (*FAILURES, "conversion", "accuracy")


@dataclasses.dataclass(frozen=True)
class DeployRecord:
    """One trained cell's classifier under one runtime; ``None`` where a figure was not reached.

    Accuracy is on the cell's own test split, evaluated as the cell was (its flip test-time
    augmentation where its recipe has it); ``agreement`` is the share of those images whose
    predicted class is TensorFlow's. Timings are of the runtime alone, in a process that
    loaded only it: throughput at ``infer_batch_size``, latency at batch 1, warm-up excluded.
    """

    # identity: the cell and the runtime
    key: str
    cell_key: str
    backbone: str
    stage: str
    image_size: int
    augment: str
    seed: int
    dataset: str
    runtime: str
    # outcome
    status: str  # ok | failed
    identity: dict = dataclasses.field(default_factory=dict)  # the cell's (bench.grid.IDENTITY_FIELDS): seeds of one configuration differ in the seed alone
    failure: str = ""  # for a failed record, one of DEPLOY_FAILURES
    error: str = ""
    # accuracy
    test_accuracy: float | None = None
    reference_accuracy: float | None = None  # TensorFlow's, on the same images
    agreement: float | None = None
    test_images: int | None = None
    tta_flip: bool = False
    calibration_images: int | None = None  # training images an int8 conversion was calibrated on
    # the converted model
    model_file: str = ""  # relative to the output folder
    model_file_mb: float | None = None
    convert_seconds: float | None = None
    # cost
    infer_images_per_second: float | None = None
    infer_batch_size: int | None = None
    infer_spread: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    peak_rss_mb: float | None = None
    peak_anon_mb: float | None = None
    eval_seconds: float | None = None
    wall_seconds: float | None = None
    # the runtime and what it ran on
    runtime_version: str = ""
    threads: int | None = None
    cpu_flags: str = ""
    provenance: Provenance = Provenance()
    schema: int = DEPLOY_SCHEMA_VERSION


DEPLOY_FIELDS = record_store.flat_fields(DeployRecord)
STATUSES = ("ok", "failed")


def _usable(data: dict) -> bool:
    if data.get("status") not in STATUSES:
        return False
    return data["status"] != "ok" or all(isinstance(data.get(name), (int, float)) for name in ("test_accuracy", "agreement", "infer_images_per_second", "latency_p50_ms"))


DEPLOYS = record_store.RecordKind("deploy", DeployRecord, DEPLOY_FILE, DEPLOY_SCHEMA_VERSION, accepts=_usable)


def deploy_key(cell_key: str, runtime: str) -> str:
    return f"{cell_key}/{runtime}"


def append_deploy_record(out_dir: Path, record: DeployRecord) -> None:
    """One whole line in ``out_dir/deploy.jsonl`` (``record_store.append``: locked, fsynced)."""
    record_store.append(out_dir, DEPLOYS, record)
