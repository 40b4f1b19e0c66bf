"""The grid cell: what one run of a (backbone, stage, size, policy, seed) is, and its identity.

A ``Cell`` is data: the settings a user asked for. ``recipe()`` resolves them against the
stage, the backbone and the profile into what will run. The key names the cell in records,
file names and ``--resume``. Nothing here imports Keras: the parent process and the
spawned cell process both import this module before TensorFlow may load.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from bench.records import Record
from bench.stages import PROFILES, STAGES, Stage, unfreeze_layers

ARTIFACTS_DIR = "artifacts"


@dataclasses.dataclass(frozen=True)
class Cell:
    """What to run. Fields left ``None`` take the stage's defaults."""

    backbone: str
    stage: str
    image_size: int
    augment: str
    seed: int
    data: str = "synthetic"
    profile: str = "full"
    weights: str = "none"  # imagenet | none | path to a .weights.h5 file
    epochs: int | None = None
    batch_size: int | None = None
    unfreeze_layers: int | None = None
    use_cache: bool = True
    val_fraction: float = 0.1
    precision: str = "float32"  # float32 | mixed (bfloat16 on CPU, float16 on GPU)
    jit_compile: bool = False  # XLA-compile training and inference
    train_images: int | None = None  # pool size before the validation split (default: the profile's); `bench perf --memory` sets it
    loader: str = "batched"  # batched | in-memory: the cached path's loader (in-memory only as `bench perf --memory`'s comparison)
    cpus: float = 1  # resources a distributed executor reserves for the cell
    gpus: float = 0

    @property
    def dataset_label(self) -> str:
        return self.data if self.data in ("cifar10", "synthetic") else Path(self.data).name

    @property
    def file_stem(self) -> str:
        """The key as one file name, for the cell's log and artifacts."""
        return self.key.replace("/", "__")

    @property
    def key(self) -> str:
        key = f"{self.backbone}/{self.stage}/{self.image_size}px/{self.augment}/seed{self.seed}/{self.dataset_label}/{self.profile}"
        # Options that change the numbers extend the key only when set, so default keys stay stable.
        if self.epochs:
            key += f"/epochs{self.epochs}"
        if self.unfreeze_layers is not None and self.stage == "finetune":
            key += f"/unfreeze{self.unfreeze_layers}"
        if self.train_images:
            key += f"/pool{self.train_images}"
        if self.loader != "batched":
            key += f"/{self.loader}-loader"
        return key + ("/mixed" if self.precision == "mixed" else "") + ("/xla" if self.jit_compile else "")

    def recipe(self) -> Stage:
        """The stage with the backbone's setting, this cell's overrides and its profile applied."""
        from backbones import get_backbone

        stage = STAGES[self.stage]
        epochs = self.epochs or stage.epochs
        cap = PROFILES[self.profile].max_epochs
        return dataclasses.replace(
            stage,
            epochs=min(epochs, cap) if cap else epochs,
            batch_size=self.batch_size or stage.batch_size,
            unfreeze_layers=unfreeze_layers(stage, get_backbone(self.backbone).unfreeze_layers, self.unfreeze_layers),
        )

    def counterpart(self, stage: str) -> Cell:
        """The same cell in another stage, with that stage's own epochs, batch size and depth."""
        return dataclasses.replace(self, stage=stage, epochs=None, batch_size=None, unfreeze_layers=None)

    def head_artifact(self, out_dir: Path) -> Path:
        """Where the trained head of this cell's ``transfer`` counterpart lives."""
        return Path(out_dir) / ARTIFACTS_DIR / (self.counterpart("transfer").file_stem + ".head.weights.h5")

    def identity(self) -> dict:
        """The record fields that name this cell."""
        return {
            "key": self.key,
            "backbone": self.backbone,
            "stage": self.stage,
            "image_size": self.image_size,
            "augment": self.augment,
            "seed": self.seed,
            "dataset": self.dataset_label,
            "profile": self.profile,
            "weights": self.weights,
        }


def failed_record(cell: Cell, failure: str, error: str, **extra) -> Record:
    """A ``failed`` record of ``cell``; ``failure`` is one of ``records.FAILURES``."""
    extra.setdefault("started_at", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return Record(**cell.identity(), status="failed", failure=failure, error=error, **extra)
