"""``cost.jsonl``: what one ``bench cost`` measurement is (``CostConfig``) and what it found
(``CostRecord``), kept by ``bench.record_store`` (``COSTS``). Imports no TensorFlow.

A cost record measures a backbone without training and without pretrained weights (random
weights cost the same compute): its key holds every setting that changes the numbers, so
a re-run of the same configuration supersedes the earlier record.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench import record_store
from bench.provenance import Provenance
from bench.records import legacy_failure

COST_FILE = "cost.jsonl"
COST_SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class CostConfig:
    """One measurement: a backbone at one input size and batch size.

    Attributes:
        backbone: registry name.
        image_size: side in pixels the backbone runs at.
        batch_size: images per inference batch and per training step.
        native_size: side of the images the model is fed (it resizes them to ``image_size``).
        num_classes: width of the head's output.
        dataset: where ``native_size`` and ``num_classes`` came from (``synthetic``,
            ``cifar10`` or an image folder's name); the inputs are random either way.
        precision: ``float32`` or ``mixed``.
        jit_compile: XLA-compile the forward pass and the training steps.
        runtime: what runs the forward pass (``bench.runtimes.RUNTIMES``); only ``tensorflow``
            also times training steps. Records written before runtimes were measured are ``tensorflow``'s.
    """

    backbone: str
    image_size: int
    batch_size: int
    native_size: int = 32
    num_classes: int = 10
    dataset: str = "synthetic"
    precision: str = "float32"
    jit_compile: bool = False
    runtime: str = "tensorflow"

    @property
    def key(self) -> str:
        # The data's shape, not its name, changes the numbers (random inputs either way).
        key = f"{self.backbone}/{self.image_size}px/batch{self.batch_size}/in{self.native_size}px-{self.num_classes}classes"
        # TensorFlow's keys are those of the records written before there were other runtimes.
        return key + ("/mixed" if self.precision == "mixed" else "") + ("/xla" if self.jit_compile else "") + ("" if self.runtime == "tensorflow" else f"/{self.runtime}")

    @property
    def file_stem(self) -> str:
        return "cost__" + self.key.replace("/", "__")

    @property
    def label(self) -> str:
        """Short, for the live view's line of a running measurement."""
        return f"{self.backbone} cost {self.image_size}px" + ("" if self.runtime == "tensorflow" else f" {self.runtime}")

    def identity(self) -> dict:
        return {"key": self.key, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class CostRecord:
    """Everything measured for one ``CostConfig``; ``None`` where a figure does not apply.

    A runtime other than TensorFlow measures inference only (no training steps, ``stages`` empty),
    on a model converted in a process of its own and timed in another that imports only the runtime.

    ``<stage>_train_images_per_second`` is one training step of what that stage trains:
    the whole network (``baseline``), the head on pooled features (``transfer``), the
    unfrozen top on the cut's activations (``finetune``), as the cached path trains them;
    for ``linear``, rows x L-BFGS iterations per second on random pooled features
    (``bench.linear_probe.solver_images_per_second``).
    """

    # identity
    key: str
    backbone: str
    image_size: int
    batch_size: int
    native_size: int
    num_classes: int
    dataset: str
    precision: str  # the requested setting; ``dtype_policy`` is the Keras policy that ran
    jit_compile: bool
    # outcome
    status: str  # ok | failed
    runtime: str = "tensorflow"  # identity too (after the fields without a default)
    error: str = ""
    failure: str = ""  # for a failed record, one of ``records.FAILURES`` (a ``timeout`` under --cell-timeout)
    dtype_policy: str = ""
    stages: list = dataclasses.field(default_factory=list)  # the backbone's stages, measured
    # inference, of the model the backbone's last stage deploys
    infer_images_per_second: float | None = None
    infer_spread: float | None = None  # (max - min) / median over the timed repeats
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    flops_per_image: float | None = None
    total_params: int | None = None
    # one training step per stage
    baseline_train_images_per_second: float | None = None
    transfer_train_images_per_second: float | None = None
    finetune_train_images_per_second: float | None = None
    linear_train_images_per_second: float | None = None
    baseline_trainable_params: int | None = None
    transfer_trainable_params: int | None = None
    finetune_trainable_params: int | None = None
    linear_trainable_params: int | None = None
    # The machine's float matmul rate in the row's compute dtype (bench.measure.matmul_gflops), measured
    # beside the row: the peak a from-scratch training step's GFLOP/s is read against.
    matmul_gflops: float | None = None
    # memory of the measuring process (its own spawned process)
    peak_rss_mb: float | None = None
    peak_anon_mb: float | None = None  # where bench.measure can tell (anonymous memory: no file pages)
    peak_gpu_mb: float | None = None
    wall_seconds: float | None = None
    # the runtime and what it ran on: every runtime gets this many threads (the cores the process may use)
    runtime_version: str = ""
    threads: int | None = None
    cpu_flags: str = ""  # the CPU's vector-instruction flags (bench.runtimes.cpu_flags)
    model_file_mb: float | None = None  # a converted model's file (not tensorflow's)
    convert_seconds: float | None = None
    # environment: software, machine, code, start time and command line (flat on disk)
    provenance: Provenance = Provenance()
    schema: int = COST_SCHEMA_VERSION

    def to_json(self) -> str:
        return record_store.to_line(self)


COST_FIELDS = record_store.flat_fields(CostRecord)
STATUSES = ("ok", "failed")


def _upgrade(data: dict) -> dict:
    """A line written before cost records said why a measurement failed gets its ``failure``."""
    if data.get("status") == "failed" and "failure" not in data:
        return {**data, "failure": legacy_failure(data.get("error") or "")}
    return data


def _usable(data: dict) -> bool:
    return data.get("status") in STATUSES and all(isinstance(stage, str) for stage in data.get("stages", []))


COSTS = record_store.RecordKind("cost", CostRecord, COST_FILE, COST_SCHEMA_VERSION, upgrade=_upgrade, accepts=_usable)


def append_cost_record(out_dir: Path, record: CostRecord) -> None:
    """One whole line in ``out_dir/cost.jsonl`` (``record_store.append``: locked, fsynced)."""
    record_store.append(out_dir, COSTS, record)


def read_cost_records(path: Path) -> record_store.Loaded:
    """Every well-formed record of a ``cost.jsonl`` (or of the one in a folder); others counted."""
    return record_store.read(path, COSTS)
