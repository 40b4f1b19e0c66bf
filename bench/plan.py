"""Planning: a typed request in, the cells (or cost configurations) it asks for out.

Grid expansion, shards and weights resolution. Loads nothing and builds nothing, so every
name, number and path is checked before any download, decode or model build.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from backbones import get_backbone, list_backbones
from bench import pretrained
from bench.augment import POLICIES
from bench.errors import UsageError
from bench.grid import Cell
from bench.preflight import check_min_image_sizes, check_weights_file_fits
from bench.stages import LBFGS_OVERRIDABLE, STAGES, stage_defaults


def _from_args(cls, args):
    """``cls`` from the parsed options of the same names; lists become tuples (requests are frozen)."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """What a ``run`` command asks for, as typed values; ``None`` where the option was left out."""

    all: bool = False
    backbone: tuple[str, ...] | None = None
    stage: tuple[str, ...] | None = None
    data: str = "cifar10"
    profile: str = "full"
    epochs: int | None = None
    image_size: tuple[int, ...] | None = None
    augment: tuple[str, ...] | None = None
    batch_size: int | None = None
    unfreeze_layers: int | None = None
    weights: str | None = None
    seed: int = 0
    # One number: a count of seeds from ``seed``; several: exactly those seeds.
    seeds: tuple[int, ...] | None = None
    val_fraction: float = 0.1
    no_cache: bool = False
    precision: str | None = None  # None: each stage's recipe's own (``Stage.precision``)
    jit_compile: bool = False
    overrides: tuple[tuple[str, object], ...] | None = None
    recipes: Path | None = None  # a folder of tuned recipes (bench.recipes)
    fit_on: str = "train"

    @classmethod
    def from_args(cls, args) -> "RunRequest":
        return _from_args(cls, args)


@dataclasses.dataclass(frozen=True)
class CostRequest:
    """What a ``cost`` command asks for."""

    all: bool = False
    backbone: tuple[str, ...] | None = None
    image_size: tuple[int, ...] | None = None
    batch_size: tuple[int, ...] | None = None
    data: str = "synthetic"
    precision: str = "float32"
    jit_compile: bool = False
    runtime: tuple[str, ...] | None = None  # default: tensorflow

    @classmethod
    def from_args(cls, args) -> "CostRequest":
        return _from_args(cls, args)


# `cost --batch-size`'s default; applied here, not in the parser, so a repeated option extends
# what the user gave instead of this default.
DEFAULT_COST_BATCH_SIZES = (64,)


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` of ``count``; a finetune stays on the shard of the transfer
    cell whose head it starts from."""
    groups: list[str] = []
    for cell in cells:
        group = cell.head_source().key
        if group not in groups:
            groups.append(group)
    return [c for c in cells if groups.index(c.head_source().key) % count == index]


def grid_fingerprint(cells: list[Cell]) -> str:
    """A short hash of the whole grid's cell keys: shards planned from one grid share it."""
    return hashlib.sha256("\n".join(sorted(c.key for c in cells)).encode()).hexdigest()[:16]


def resolve_weights(option: str, spec, stage) -> tuple[str | None, str]:
    """(weights for the cell, or None when no pretrained weights are available; then why, and how to supply them).

    A pretrained stage never falls back to random initialisation by itself: frozen random
    features give an accuracy that says nothing about the backbone. ``--weights none`` asks for it.
    """
    if not STAGES[stage].pretrained or option == "none":
        return "none", ""
    if option == "imagenet":
        if spec.has_imagenet_weights:
            return pretrained.resolve_imagenet(spec)
        return None, f"no ImageNet weights exist for it; pass --weights DIR holding {spec.name}.weights.h5, or --weights none to run from random init"
    path = Path(option)
    if path.is_dir():
        candidates = [path / name for name in pretrained.folder_file_names(spec)]
        for candidate in filter(Path.is_file, candidates):
            pretrained.check_weights_file(candidate)
            return str(candidate.resolve()), ""
        missing = f"{candidates[0]} does not exist" if len(candidates) == 1 else f"neither {' nor '.join(map(str, candidates))} exists"
        return None, f"no pretrained weights ({missing}); put {'that file' if len(candidates) == 1 else 'one of them'} there, or pass --weights none to run from random init"
    if path.is_file():
        pretrained.check_weights_file(path)
        return str(path.resolve()), ""
    raise UsageError(f"--weights {option!r} is not imagenet, none, a directory or a file; pass one of those")


# Dedicated flags and the recipe fields they set: giving both is a contradiction.
_FLAG_FIELDS = {"epochs": "epochs", "batch_size": "batch_size", "unfreeze_layers": "unfreeze_layers", "augment": "augment"}


def _requested(request: RunRequest) -> tuple[dict, tuple]:
    """(the cell fields the flags and ``--set`` ask for, the remaining recipe overrides)."""
    overrides = {}
    for name, value in request.overrides or []:
        if name in overrides and overrides[name] != value:
            raise UsageError(f"--set {name} given twice ({overrides[name]} and {value}); keep one")
        overrides[name] = value
    for flag, field in _FLAG_FIELDS.items():
        if getattr(request, flag) is not None and field in overrides:
            raise UsageError(f"--{flag.replace('_', '-')} and --set {field}= both set {field}; keep one of them")
    requested = {
        "epochs": request.epochs or overrides.pop("epochs", None),
        "batch_size": request.batch_size or overrides.pop("batch_size", None),
        "unfreeze_layers": request.unfreeze_layers or overrides.pop("unfreeze_layers", None),
        "policies": request.augment or ([overrides.pop("augment")] if "augment" in overrides else None),
    }
    return requested, tuple(sorted(overrides.items()))


def _seeds(request: RunRequest):
    seeds = request.seeds or (1,)
    if min(seeds) < (1 if len(seeds) == 1 else 0):
        raise UsageError(f"--seeds takes a count of at least 1 or a list of seeds of 0 or more, got {' '.join(map(str, seeds))}")
    return range(request.seed, request.seed + seeds[0]) if len(seeds) == 1 else sorted(set(seeds))


def plan_cells(request: RunRequest, native_size: int) -> tuple[list[Cell], list[str]]:
    """The cells a ``run`` command asks for, in run order, and the lines to print about them:
    one per backbone whose pretrained stages are skipped for want of weights, one note per
    setting that applies to some cells only (a setting that applies to none is refused).

    Each cell's identity holds the settings that apply to it. Loads nothing and builds
    nothing (the data's content is hashed, which reads the files once per process).
    """
    from bench.grid import dataset_fingerprint, weights_fingerprint

    names = list_backbones() if request.all else list(request.backbone)
    specs = [get_backbone(name) for name in names]
    requested, overrides = _requested(request)
    # Synthetic images are not natural ones: pretrained weights buy nothing there.
    weights_option = request.weights or ("none" if request.data == "synthetic" else "imagenet")
    check_weights_file_fits(weights_option, specs)
    cells, skipped = [], {}
    seeds = _seeds(request)
    dataset_id = dataset_fingerprint(request.data)
    tuned = _tuned_recipes(request.recipes, specs)
    for spec in specs:
        stages = request.stage or list(spec.stages)
        unsupported = [s for s in stages if s not in spec.stages]
        if unsupported and not request.all:
            raise UsageError(f"backbone {spec.name} does not support stage(s) {', '.join(unsupported)}; it runs: {', '.join(spec.stages)}")
        stages = [s for s in STAGES if s in stages and s in spec.stages]
        for stage_name in stages:
            stage = stage_defaults(stage_name, spec.baseline_recipe)
            sizes = (request.image_size or [spec.default_image_size]) if stage.resize else [native_size]
            check_min_image_sizes(spec, sizes)
            weights, reason = resolve_weights(weights_option, spec, stage_name)
            if weights is None:
                skipped.setdefault((spec.name, reason), []).append(stage_name)
                continue
            by_epochs = stage.by_epochs  # the recipe flags below mean nothing to L-BFGS
            for size in sizes:
                for policy in requested["policies"] or [stage.augment]:
                    if not by_epochs and POLICIES[policy].cache_variants is None:
                        exact = ", ".join(name for name, p in POLICIES.items() if p.cache_variants)
                        raise UsageError(f"--augment {policy} cannot apply to the {stage_name} stage, which fits fixed cached features; pick {exact} or drop --stage {stage_name}")
                    for seed in seeds:
                        cells.append(
                            Cell(
                                backbone=spec.name,
                                stage=stage_name,
                                image_size=size,
                                augment=policy,
                                seed=seed,
                                data=request.data,
                                profile=request.profile,
                                weights=weights,
                                epochs=requested["epochs"] if by_epochs else None,
                                batch_size=requested["batch_size"] if by_epochs else None,
                                unfreeze_layers=requested["unfreeze_layers"],
                                use_cache=not request.no_cache,
                                val_fraction=request.val_fraction,
                                precision=request.precision or stage.precision,
                                jit_compile=request.jit_compile,
                                overrides=overrides if by_epochs else tuple(pair for pair in overrides if pair[0] in LBFGS_OVERRIDABLE),
                                dataset_id=dataset_id,
                                weights_id=weights_fingerprint(weights),
                                recipes=tuned[spec.name],
                                fit_on=request.fit_on,
                            )
                        )
    # STAGES lists transfer before finetune, which starts from its transfer's saved head.
    order = {name: i for i, name in enumerate(STAGES)}
    cells.sort(key=lambda c: (names.index(c.backbone), order[c.stage]))
    skip_lines = [f"skipped {name} {', '.join(stages)}: {reason}" for (name, reason), stages in skipped.items()]
    return cells, skip_lines + _scope_notes(request, cells, requested, overrides, weights_skipped=bool(skipped)) + _recipe_notes(request, cells)


def _tuned_recipes(folder: Path | None, specs) -> dict:
    """Each backbone's recipes in ``--recipes`` ``folder`` (none without it); a bad file is refused."""
    from bench.recipes import find_recipes

    if folder is not None and not Path(folder).is_dir():
        raise UsageError(f"--recipes {folder} is not a folder; pass the recipes folder a study wrote (OUT/recipes of `bench tune`)")
    return {spec.name: find_recipes(folder, spec.name, STAGES) if folder is not None else () for spec in specs}


def _recipe_notes(request: RunRequest, cells: list[Cell]) -> list[str]:
    """With ``--recipes``: a note naming the cells it has no recipe for (they run their stage's
    default); refused when it has none for any cell."""
    if request.recipes is None or not cells:
        return []
    default = sorted({f"{c.backbone} {c.stage}" for c in cells if c.own_recipe() is None})
    if len(default) == len({f"{c.backbone} {c.stage}" for c in cells}):
        raise UsageError(f"--recipes {request.recipes} has no recipe for any cell of this run (no <backbone>-<stage>.json for them); drop it or tune them first")
    return [f"note: --recipes {request.recipes} has no recipe for {', '.join(default)}: {'it runs' if len(default) == 1 else 'they run'} the stage's default"] if default else []


def _scope_notes(request: RunRequest, cells: list[Cell], requested: dict, overrides: tuple = (), weights_skipped: bool = False) -> list[str]:
    """One note per setting that applies to some cells only; a setting that applies to none is refused.

    ``weights_skipped``: cells were planned for ``--weights`` and skipped for want of a file,
    which their own lines already say.
    """
    resized = [c for c in cells if STAGES[c.stage].resize]
    pretrained = [c for c in cells if STAGES[c.stage].pretrained]
    top = [c for c in cells if STAGES[c.stage].trainable == "top"]
    by_epochs = [c for c in cells if STAGES[c.stage].by_epochs]
    frozen = [c for c in by_epochs if STAGES[c.stage].trainable != "all"]
    scopes = [
        ("--image-size", request.image_size, resized, "the stages that resize (linear, transfer, finetune); the others run at the data's native size"),
        ("--weights", request.weights, pretrained, "the pretrained stages (linear, transfer, finetune); the others train from scratch"),
        ("--unfreeze-layers / --set unfreeze_layers", requested["unfreeze_layers"], top, "finetune"),
        ("--no-cache", request.no_cache or None, frozen, "transfer and finetune; baseline always trains end to end, linear always on cached features"),
        ("--epochs / --set epochs", requested["epochs"], by_epochs, "the stages trained in epochs (baseline, transfer, finetune); linear fits by L-BFGS"),
        ("--batch-size / --set batch_size", requested["batch_size"], by_epochs, "the stages trained in batches (baseline, transfer, finetune); linear fits by L-BFGS"),
        *[(f"--set {name}", value, by_epochs, "the stages trained by AdamW (baseline, transfer, finetune); linear fits by L-BFGS") for name, value in overrides if name not in LBFGS_OVERRIDABLE],
    ]
    notes = []
    for flag, value, applies, where in scopes:
        if value is None or not cells or (flag == "--weights" and weights_skipped):
            continue
        if not applies:
            raise UsageError(f"{flag} applies to no cell of this run (it changes {where}); drop it or add such a stage")
        if len(applies) < len(cells):
            notes.append(f"note: {flag} applies to {len(applies)} of {len(cells)} cells: {where}")
    if requested["epochs"]:
        capped = sorted({c.recipe().epochs for c in by_epochs if c.recipe().epochs < requested["epochs"]})
        if capped:
            notes.append(f"note: --epochs {requested['epochs']} is capped at {capped[0]} by --profile {request.profile}; cells run (and are keyed by) {capped[0]}")
    return notes


def cost_input_shape(data: str) -> tuple[int, int, str]:
    """(native size, classes, label) of what ``bench cost`` feeds: CIFAR-10's shape, or a folder's."""
    if data in ("synthetic", "cifar10"):
        return 32, 10, data
    from bench.image_files import image_folder_shape

    path = Path(data)
    if not path.is_dir():
        raise UsageError(f"--data {data!r} is neither 'synthetic', 'cifar10' nor a directory; pass one of those")
    classes, (width, height) = image_folder_shape(path)
    if width != height:
        raise UsageError(f"images in {path} are {width}x{height}, not square; crop them square (the harness feeds square images)")
    return width, len(classes), path.resolve().name


def cost_runtimes(request: CostRequest, log) -> CostRequest:
    """``request`` with only the runtimes that can run here, one line on ``log`` for each dropped:
    one not installed, or one that the TensorFlow-only settings (``--precision mixed``, ``--jit-compile``) cannot apply to.

    Raises:
        UsageError: none is left.
    """
    from bench import runtimes

    names = runtimes.check_names(request.runtime or ["tensorflow"])
    if request.precision != "float32" or request.jit_compile:
        for name in [n for n in names if n != "tensorflow"]:
            print(f"skipped runtime {name}: --precision mixed and --jit-compile are TensorFlow's settings; measure it without them", file=log, flush=True)
        names = [n for n in names if n == "tensorflow"]
    names = runtimes.installed(names, log)
    if not names:
        raise UsageError(f"no runtime asked for can be measured here; install them (pip install -e \".[{runtimes.EXTRA}]\") or add --runtime tensorflow")
    return dataclasses.replace(request, runtime=tuple(names))


def plan_costs(request: CostRequest) -> list:
    """The ``CostConfig``s a ``cost`` command asks for, in run order (``cost_runtimes`` has checked its runtimes)."""
    from bench.cost_records import CostConfig

    specs = [get_backbone(name) for name in (list_backbones() if request.all else request.backbone)]
    native_size, num_classes, label = cost_input_shape(request.data)
    configs = []
    for spec in specs:
        # A backbone that only trains from scratch runs at the data's native size, as in `bench run`.
        resizes = any(STAGES[name].resize for name in spec.stages)
        sizes = request.image_size or [spec.default_image_size if resizes else native_size]
        check_min_image_sizes(spec, sizes)
        for size in sizes:
            for batch_size in request.batch_size or DEFAULT_COST_BATCH_SIZES:
                for runtime in request.runtime or ("tensorflow",):
                    configs.append(CostConfig(spec.name, size, batch_size, native_size, num_classes, label, request.precision, request.jit_compile, runtime))
    return configs
