"""The grid cell: what one run of a (backbone, stage, size, policy, seed) is, and its identity.

A ``Cell`` holds the settings a user asked for that can change a number; ``recipe()``
resolves them against the stage, the backbone and the profile into what will run.
``identity()`` is the one definition of what makes two cells different: every such setting,
resolved to the value that will run (``IDENTITY_FIELDS``). The key (``bench.keys``),
``--resume``, report grouping, ``compare`` matching, shards, the head a finetune starts from
and the activation cache all derive from it. How a cell is executed (resources, timeout, an
out-of-memory retry, ``bench perf --memory``'s loader) is a ``RunOptions`` passed alongside
it, never part of it. Nothing here imports Keras.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.keys import cell_key, digest
from bench.provenance import at_failure
from bench.recipes import Recipe
from bench.records import Record
from bench.stages import PROFILES, STAGES, Stage, stage_defaults, unfreeze_layers
from bench.trial_link import TrialLink

ARTIFACTS_DIR = "artifacts"
MODELS_DIR = "models"  # each trained cell's whole classifier, for `bench deploy`

# Every setting that can change a number, each resolved to what will run.
IDENTITY_FIELDS = (
    "backbone",
    "stage",
    "image_size",
    "augment",
    "seed",
    "profile",
    "epochs",  # after the profile's cap
    "batch_size",  # as planned (a retry after running out of memory is recorded beside it)
    "unfreeze_layers",  # finetune only
    "precision",
    "jit_compile",
    "path",  # cached or uncached training
    "val_fraction",
    "train_images",  # the pool carved into train and validation (the profile's, or bench perf --memory's)
    "overrides",  # recipe fields set with --set, as sorted (field, value) pairs
    "dataset_id",  # the data's content
    "weights_id",  # the weights' content
    "recipes",  # the hash of what tuned recipes change (its own stage's and its head's), or None
    "fit_on",  # "train", or "train+val": the final fit on train and validation together
)
# Fields of a ``Cell`` that are not themselves in the identity, and why.
EXEMPT_FIELDS = {
    "data": "where the images are read from; their content is dataset_id",
    "weights": "where the weights are read from; their content is weights_id",
    "use_cache": "a request; the path it resolves to is in the identity",
}
# What a cell trains on: its training split, or (Kornblith et al.'s final fit, once the
# recipe is chosen on validation) training and validation together.
FIT_ON = ("train", "train+val")
# What determines a cached activation, besides the input images and the cut.
ACTIVATION_FIELDS = ("backbone", "weights_id", "image_size", "precision")


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
    overrides: tuple = ()  # (recipe field, value) pairs from --set, sorted
    dataset_id: str = ""  # content fingerprint; computed from ``data`` when empty
    weights_id: str = ""  # content fingerprint; computed from ``weights`` when empty
    train_images: int | None = None  # pool size before the validation split (default: the profile's); `bench perf --memory` sets it
    recipes: tuple[Recipe, ...] = ()  # tuned values per stage (--recipes, or a tuning trial's draw)
    fit_on: str = "train"  # one of FIT_ON

    @property
    def dataset_label(self) -> str:
        """The data's readable name (display only): only Keras's own CIFAR-10 is ``cifar10``."""
        return dataset_label(self.data)

    def recipe(self) -> Stage:
        """The stage (or the backbone's own baseline recipe) with the backbone's setting, this
        cell's tuned recipe, its overrides and its profile applied (in that order: a ``--set``
        beats a tuned value)."""
        from backbones import get_backbone

        spec, tuned = get_backbone(self.backbone), self.tuned_values()
        stage = dataclasses.replace(stage_defaults(self.stage, spec.baseline_recipe), **{**tuned, **dict(self.overrides)})
        epochs = self.epochs or stage.epochs
        cap = PROFILES[self.profile].max_epochs
        return dataclasses.replace(
            stage,
            epochs=min(epochs, cap) if cap else epochs,
            batch_size=self.batch_size or stage.batch_size,
            unfreeze_layers=unfreeze_layers(stage, spec.unfreeze_layers, self.unfreeze_layers or tuned.get("unfreeze_layers")),
        )

    def own_recipe(self) -> Recipe | None:
        """The tuned recipe of this cell's own stage, if it carries one."""
        return next((recipe for recipe in self.recipes if recipe.stage == self.stage), None)

    def tuned_values(self) -> dict:
        recipe = self.own_recipe()
        return dict(recipe.values) if recipe else {}

    def recipe_changes(self) -> dict:
        """The fields this cell's own tuned recipe sets to other values than the default would
        run, under its stage's name; empty for a cell whose recipe changes nothing (none, or one
        a ``--set`` or the profile overrules). Its head is the default's (``head_source``)."""
        tuned, default = self.recipe(), dataclasses.replace(self, recipes=()).recipe()
        changed = {name: getattr(tuned, name) for name in self.tuned_values() if getattr(tuned, name) != getattr(default, name)}
        return {self.stage: changed} if changed else {}

    def recipe_record(self) -> dict:
        """What a record says of the recipe: its source (the stage's default, or the study and
        trial that chose it) and, for a tuned one, its values beside the defaults."""
        recipe = self.own_recipe()
        about = {"source": recipe.source if recipe else "default"}
        if recipe:
            default = dataclasses.replace(self, recipes=()).recipe()
            about.update(study=recipe.study, trial=recipe.trial, values=dict(recipe.values), defaults={name: getattr(default, name) for name, _ in recipe.values})
        return about

    def cached(self) -> bool:
        """Whether the cell trains on cached activations of its frozen part.

        A cache is exact only for a policy's deterministic variants, and a shift needs a
        spatial cut (finetune's): pooled features cannot move. The ``linear`` stage (L-BFGS)
        fits on the cached pooled features alone, always.
        """
        from bench.augment import get_policy

        recipe = self.recipe()
        if recipe.solver == "lbfgs":
            return True
        exact = get_policy(self.augment).cache_variants is not None
        return self.use_cache and recipe.trainable != "all" and exact and (recipe.trainable == "top" or not recipe.shift_fraction)

    def identity(self) -> dict:
        """Every setting that can change this cell's numbers, as it will run (``IDENTITY_FIELDS``)."""
        recipe, changes = self.recipe(), self.recipe_changes()
        return {
            "backbone": self.backbone,
            "stage": self.stage,
            "image_size": self.image_size,
            "augment": self.augment,
            "seed": self.seed,
            "profile": self.profile,
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "unfreeze_layers": recipe.unfreeze_layers if recipe.trainable == "top" else None,
            "precision": self.precision,
            "jit_compile": self.jit_compile,
            "path": "cached" if self.cached() else "uncached",
            "val_fraction": self.val_fraction,
            "train_images": self.train_images or PROFILES[self.profile].train_images,
            "overrides": [list(pair) for pair in self.overrides],
            "dataset_id": self.dataset_id or dataset_fingerprint(self.data),
            "weights_id": self.weights_id or weights_fingerprint(self.weights),
            "recipes": digest(changes) if changes else None,
            "fit_on": self.fit_on,
        }

    @property
    def key(self) -> str:
        """A function of the identity alone (``bench.keys.cell_key``): the folder's name is a label, not part of it."""
        return cell_key(self.identity())

    @property
    def file_stem(self) -> str:
        """The key as one file name, for the cell's log and artifacts."""
        return self.key.replace("/", "__")

    def counterpart(self, stage: str) -> Cell:
        """The same request in another stage (its identity then resolves to that stage's recipe)."""
        return dataclasses.replace(self, stage=stage)

    def head_source(self) -> Cell:
        """The cell whose trained head this one starts from (itself where it starts from none):
        its counterpart in that stage at the stage's default recipe, tuned or not. A finetune
        study tunes on that head (its trials carry their own stage's recipe alone), so the
        chosen recipe runs as it was measured, and the head's width is the one it was built for."""
        starts_from = STAGES[self.stage].starts_from
        return dataclasses.replace(self.counterpart(starts_from), recipes=()) if starts_from else self

    def head_artifact(self, out_dir: Path) -> Path:
        """Where the head that ``head_source()`` trains is saved."""
        return Path(out_dir) / ARTIFACTS_DIR / (self.head_source().file_stem + ".head.weights.h5")

    def model_file(self) -> str:
        """Where, relative to the output folder, this cell's trained classifier is saved (``.keras``)."""
        return f"{MODELS_DIR}/{self.file_stem}.keras"

    def activation_identity(self) -> dict:
        """What determines this cell's cached activations, besides input and cut (``ACTIVATION_FIELDS``)."""
        identity = self.identity()
        key = {name: identity[name] for name in ACTIVATION_FIELDS}
        if identity["weights_id"] == "none":
            # Random initial weights differ per seed; the activations they give do too.
            key["seed"] = self.seed
        return key

    def record_fields(self) -> dict:
        """The record fields that name this cell: its identity, and the readable columns."""
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
            "identity": self.identity(),
        }


# The loaders of the cached path: per batch (every cell), or the in-memory one it replaced,
# kept only as `bench perf --memory`'s point of comparison. Both draw the same batches in the
# same order (tests/test_batches.py): they change time and memory, never what is trained.
LOADERS = ("batched", "in-memory")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a cell is executed, passed alongside it: where, with what, for how long.

    Nothing here is in the identity, so nothing here changes a key, a report row or a
    ``--resume`` skip. What it does change is recorded beside the identity: the batch size
    a retry ran (``Record.batch_size``) and the loader (``Record.path``, ``cached-in-memory``).
    """

    cpus: float = 1  # resources a distributed executor reserves for the cell
    gpus: float = 0
    timeout_seconds: float | None = None  # past it the cell is killed and recorded failed; None: no limit
    # The batch size of the one out-of-memory retry, decided while the sweep runs; the
    # identity keeps the planned one, so the retry is the same cell.
    retry_batch_size: int | None = None
    loader: str = "batched"  # one of LOADERS; only `bench perf --memory` asks for "in-memory"
    # A tuning trial's link to its study: the cell then never loads the test split, reports
    # each epoch's validation accuracy to the study's pruner and stops when it says so.
    trial: TrialLink | None = None

    def __post_init__(self):
        if self.loader not in LOADERS:
            raise ValueError(f"unknown loader {self.loader!r}; choose from {', '.join(LOADERS)}")

    def recipe(self, cell: Cell) -> Stage:
        """The recipe this run trains with: the cell's, at the retry's batch size if there is one."""
        recipe = cell.recipe()
        return dataclasses.replace(recipe, batch_size=self.retry_batch_size) if self.retry_batch_size else recipe


def group_identity(identity: dict) -> dict:
    """An identity without its seed: the configuration whose seeds are averaged together."""
    return {k: v for k, v in identity.items() if k != "seed"}


def dataset_label(source: str) -> str:
    if source in ("cifar10", "synthetic"):
        return source
    name = Path(source).resolve().name or str(Path(source).resolve())
    # A folder is never mistaken for Keras's own CIFAR-10 (or the synthetic set).
    return f"folder:{name}" if name in ("cifar10", "synthetic") else name


_FINGERPRINTS: dict = {}


def dataset_fingerprint(source: str) -> str:
    """The data's content: Keras's CIFAR-10 (hash-checked by Keras), the synthetic set, or a
    folder's relative file paths and bytes, so a renamed copy keeps its identity."""
    from bench.image_files import content_fingerprint

    if source in ("cifar10", "synthetic"):
        return source
    key = ("data", str(Path(source).resolve()))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = content_fingerprint(Path(source))
    return _FINGERPRINTS[key]


def weights_fingerprint(weights: str) -> str:
    """``none``, ``imagenet`` (Keras checks those files' hashes), or a weights file's content hash."""
    if weights in ("none", "imagenet"):
        return weights
    key = ("weights", str(Path(weights).resolve()))
    if key not in _FINGERPRINTS:
        from backbones.registry import file_sha256

        # The content, not the path or timestamp: a copy, a re-mount or a `touch` keeps it.
        _FINGERPRINTS[key] = "sha256:" + file_sha256(weights)[:16]
    return _FINGERPRINTS[key]


def failed_record(cell: Cell, failure: str, error: str, **extra) -> Record:
    """A ``failed`` record of ``cell``; ``failure`` is one of ``records.FAILURES``. It names the
    cell's recipe as an ok record does: a tuning trial that timed out still says what it tried."""
    extra.setdefault("provenance", at_failure(extra.get("wall_seconds")))
    extra.setdefault("recipe", cell.recipe_record())
    return Record(**cell.record_fields(), status="failed", failure=failure, error=error, **extra)
