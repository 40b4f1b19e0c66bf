"""Command line: ``bench list``, ``bench run``, ``bench report``, ``bench compare``, ``bench perf``, ``bench cache``.

Everything the user gets wrong is caught here, before any cell runs: the message names the
problem and the fix, the exit code is 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

from backbones import BackboneLookupError, get_backbone, list_backbones
from bench import pretrained
from bench.augment import POLICIES
from bench.grid import Cell
from bench.data import DEFAULT_CACHE_DIR
from bench.errors import UsageError
from bench.stages import PROFILES, STAGES


# Inputs past this side make the activation cache and the batches huge (10,000 px: about
# 90 GB of temporary files per variant) for no benchmark purpose; --allow-large-images lifts it.
MAX_IMAGE_SIZE = 1024
# `perf --memory`'s runs of each loader: single runs on this shared 2-core machine spread by up
# to 63 %, and three could not resolve the 10 % target (results/perf-memory-5k-20k).
MEMORY_TIMING_RUNS = 5


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other error of the harness."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def _int_at_least(minimum: int, wanted: str):
    """An argparse type: an integer of at least ``minimum`` (``wanted`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return parse


_non_negative_int = _int_at_least(0, "an integer of 0 or more")
_positive_int = _int_at_least(1, "a positive integer")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    # nan compares false with everything: without this check it would disable the limit.
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}; leave the option out for no limit")
    return value


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of days of 0 or more, got {text!r}")
    return value


def _data_source(text: str) -> str:
    """``cifar10``, ``synthetic``, or a folder's resolved path, so ``--data .`` records the folder's real name."""
    if text in ("cifar10", "synthetic") or not Path(text).is_dir():
        return text
    return str(Path(text).resolve())


def _check_image_sizes(sizes, allowed: bool, what: str = "--image-size {size}") -> None:
    too_large = [size for size in sizes if size > MAX_IMAGE_SIZE]
    if too_large and not allowed:
        raise UsageError(
            f"{what.format(size=too_large[0])} is over the {MAX_IMAGE_SIZE:,} px limit (activations and batches grow with the square of the side); "
            f"pass {MAX_IMAGE_SIZE} or less, or --allow-large-images to run it anyway"
        )


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {value}")
    return value


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 0/4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` of ``count``; a finetune stays on the shard of the transfer
    cell whose head it starts from."""
    groups: list[str] = []
    for cell in cells:
        group = cell.head_source().key
        if group not in groups:
            groups.append(group)
    return [c for c in cells if groups.index(c.head_source().key) % count == index]


def _override(text: str) -> tuple[str, object]:
    """One ``--set FIELD=VALUE``, parsed by the recipe field's type."""
    from bench.grid import OVERRIDABLE

    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    structural = {"trainable", "pretrained", "resize", "starts_from", "name", "description"}
    if not sep or not value.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE (e.g. epochs=20), got {text!r}")
    if name in structural:
        raise argparse.ArgumentTypeError(f"{name} defines the stage itself and cannot be set; pick another --stage (settable: {', '.join(OVERRIDABLE)})")
    if name not in OVERRIDABLE:
        raise argparse.ArgumentTypeError(f"unknown recipe field {name!r}; settable: {', '.join(OVERRIDABLE)}")
    default = getattr(STAGES["transfer"], name)
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            parsed = value.lower() in ("true", "1", "yes")
        elif isinstance(default, int):
            parsed = int(value)
        elif isinstance(default, float):
            parsed = float(value)
        else:
            parsed = value
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes a {type(default).__name__}, got {value!r}") from None
    problem = _override_problem(name, parsed)
    if problem:
        raise argparse.ArgumentTypeError(f"{name}={value}: {problem}")
    return name, parsed


def _override_problem(name: str, value) -> str:
    if name == "augment":
        return "" if value in POLICIES else f"unknown policy; choose from {', '.join(POLICIES)}"
    if isinstance(value, bool):
        return ""
    if not math.isfinite(value):
        return "must be finite"
    if name in ("epochs", "batch_size", "unfreeze_layers") and value < 1:
        return "must be at least 1"
    if name == "learning_rate" and value <= 0:
        return "must be above 0"
    if name in ("head_dropout", "label_smoothing") and not 0 <= value < 1:
        return "must be in [0, 1)"
    if name == "shift_fraction" and not 0 <= value < 0.5:
        return "must be in [0, 0.5)"
    if value < 0:
        return "must be 0 or more"
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench", description="Transfer-learning benchmark harness for CIFAR-10: backbones x training stages, with accuracy, speed and memory.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run,report,compare,perf,cost,prefetch,cache}")

    commands.add_parser("list", help="list backbones, stages and augmentation policies", description="List registered backbones (with their stages and default sizes), stages and augmentation policies.")

    run = commands.add_parser("run", help="run a grid of cells and write records and reports", description="Run each (backbone, stage, image size, augmentation, seed) cell in its own process, append its record to OUT/runs.jsonl, then write the report.")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every registered backbone with each of its stages, at default settings")
    which.add_argument("--backbone", nargs="+", metavar="NAME", help="backbones to run (see `python -m bench list`)")
    run.add_argument("--stage", nargs="+", metavar="NAME", choices=list(STAGES), help=f"stages to run, of {', '.join(STAGES)} (default: each backbone's own)")
    run.add_argument("--data", type=_data_source, default="cifar10", help="cifar10 (Keras download, default), synthetic, or an image-folder DIR with train/<class>/* and test/<class>/*")
    run.add_argument("--profile", choices=sorted(PROFILES), default="full", help="quick: a few-minute pass on a data subset, 1 epoch; full: the stages' own recipe (default)")
    run.add_argument("--epochs", type=_positive_int, help="override every stage's epoch count")
    run.add_argument("--image-size", type=_positive_int, nargs="+", metavar="PX", help=f"sizes the resizing stages run at, each its own cell (default: the backbone's; at most {MAX_IMAGE_SIZE} unless --allow-large-images)")
    run.add_argument("--allow-large-images", action="store_true", help=f"allow image sizes over {MAX_IMAGE_SIZE} px (memory and the activation cache grow with the square of the side)")
    run.add_argument("--augment", nargs="+", metavar="POLICY", choices=sorted(POLICIES), help=f"augmentation policies, each its own cell, of {', '.join(POLICIES)} (default: each stage's own)")
    run.add_argument("--batch-size", type=_positive_int, help="override every stage's batch size")
    run.add_argument("--unfreeze-layers", type=_positive_int, metavar="N", help="finetune: how many of the backbone's last weight layers train (default: the backbone's own setting, see `bench list`, else 4)")
    run.add_argument("--weights", help="imagenet, none, a DIR holding <backbone>.weights.h5, or one .weights.h5 FILE for a single backbone (default: imagenet; none with --data synthetic, whose images are not natural ones)")
    run.add_argument("--seed", type=_non_negative_int, default=0, help="first seed, 0 or more (default 0)")
    run.add_argument("--seeds", type=int, nargs="+", default=[1], metavar="N", help="one number N: run each cell with seeds --seed, --seed+1, ... (N of them; default 1); several numbers: exactly those seeds")
    run.add_argument("--val-fraction", type=_fraction, default=0.1, help="share of train carved out, stratified, for validation (default 0.1)")
    run.add_argument("--out", type=Path, default=Path("out"), help="output folder for runs.jsonl and the report (default ./out)")
    run.add_argument("--resume", action="store_true", help="skip cells that already have an ok record in OUT")
    run.add_argument("--cell-timeout", type=_positive_seconds, metavar="SECONDS", help="kill a cell that runs longer and record it failed (default: no limit)")
    run.add_argument("--no-cache", action="store_true", help="train frozen stages on images end to end instead of on cached activations")
    run.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"activation and dataset cache (default {DEFAULT_CACHE_DIR}, or $BENCH_CACHE_DIR)")
    run.add_argument("--executor", choices=["local", "ray"], default="local", help="local: cells one after another here (default); ray: one Ray task per cell")
    run.add_argument("--ray-address", metavar="HOST:PORT", help="Ray cluster to join with --executor ray (default: start a local instance for the run)")
    run.add_argument("--cpus-per-cell", type=float, default=1, help="CPUs a Ray task reserves for a cell (default 1)")
    run.add_argument("--gpus-per-cell", type=float, default=0, help="GPUs a Ray task reserves for a cell (default 0)")
    run.add_argument("--shard", type=_shard, metavar="I/N", help="run only shard I (0-based) of N of the grid, for job arrays (e.g. $SLURM_ARRAY_TASK_ID/4); merge with `report --out DIR SHARD_DIR...`")
    run.add_argument("--precision", choices=["float32", "mixed"], default="float32", help="mixed: bfloat16 compute on CPU, float16 on GPU (default float32)")
    run.add_argument("--jit-compile", action="store_true", help="XLA-compile training and inference")
    run.add_argument(
        "--set",
        nargs="+",
        type=_override,
        metavar="FIELD=VALUE",
        help="recipe overrides for every stage of the run that has the field, e.g. --set epochs=20 head_units=1024 "
        "(learning_rate, weight_decay, warmup_epochs, label_smoothing, head_units, head_dropout, shift_fraction, tta_flip, epochs, batch_size, unfreeze_layers, augment)",
    )

    compare = commands.add_parser("compare", help="per-cell deltas between two runs, regressions flagged beyond the noise", description="Compare two output folders (or runs.jsonl files) cell by cell: accuracy, inference throughput, peak memory. A regression is flagged only outside the noise.")
    compare.add_argument("old", type=Path, metavar="OLD", help="baseline output folder or runs.jsonl")
    compare.add_argument("new", type=Path, metavar="NEW", help="candidate output folder or runs.jsonl")
    compare.add_argument("--fail-threshold", type=float, default=5.0, metavar="PCT", help="throughput drop or memory growth, in percent, that counts as a regression (default 5)")
    compare.add_argument("--accuracy-threshold", type=float, default=1.0, metavar="POINTS", help="accuracy drop, in points, that counts with a single seed on a side (default 1.0); with several seeds the 95 %% intervals decide")
    compare.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any regression is found")

    perf = commands.add_parser(
        "perf",
        help="time cached against uncached training paths (or, with --memory, memory against training-set size) and print ratios",
        description="In one process, on the same data, time the uncached and cached paths of transfer and finetune (cold cache) and print each speed-up as a ratio; "
        "also writes OUT/perf.md. With --memory: run each backbone's transfer and finetune cells at each --train-images size, each in its own process, and print "
        "each stage's peak anonymous memory growth (largest size against smallest) and its training time against the old in-memory loader; also writes OUT/perf-memory.md.",
    )
    perf.add_argument("--memory", action="store_true", help="measure peak memory against training-set size instead of the paths' speed-ups")
    perf.add_argument("--data", type=_data_source, default="cifar10", help="cifar10 (default), synthetic, or an image-folder DIR")
    perf.add_argument("--backbone", nargs="+", default=["mobilenet_v2"], metavar="NAME", help="backbone to time (default mobilenet_v2); with --memory, one or more")
    perf.add_argument("--image-size", type=_positive_int, help=f"side the backbone runs at (default: the backbone's; with --memory, every backbone's; at most {MAX_IMAGE_SIZE} unless --allow-large-images)")
    perf.add_argument("--allow-large-images", action="store_true", help=f"allow an image size over {MAX_IMAGE_SIZE} px")
    perf.add_argument("--train-images", type=_positive_int, nargs="+", metavar="N", help="--memory: training-set sizes, images trained on after the validation split (default 5000 20000)")
    perf.add_argument("--epochs", type=_positive_int, help="epochs of each training (default 10; with --memory 3)")
    perf.add_argument("--timing-runs", type=_positive_int, metavar="N",
                      help=f"--memory: runs of each loader at the largest size, alternating, whose median training times give the time ratio (default {MEMORY_TIMING_RUNS}: single runs on a shared machine spread widely)")
    perf.add_argument("--augment", choices=sorted(POLICIES), default="none", help="policy for both paths (default none, the write-up's recipe; flip doubles what the cache computes)")
    perf.add_argument("--weights", default="none", help="imagenet, none (default: timing and memory do not depend on the weights' values), a weights FILE, or (with --memory) a DIR holding <backbone>.weights.h5")
    perf.add_argument("--out", type=Path, default=Path("out"), help="folder for perf.md or perf-memory.md (default ./out)")
    perf.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"decoded-dataset cache (default {DEFAULT_CACHE_DIR}); activations go to a fresh temporary folder per perf command")

    cost = commands.add_parser(
        "cost",
        help="what each backbone costs without training: throughput, latency, training-step speed, memory, parameters, FLOPs",
        description="For each backbone x image size x batch size, with random weights and without training, each in its own process: "
        "inference images/s, batch-1 latency, one training step of each stage's trainable part, peak memory, parameters, GFLOPs. "
        "Appends OUT/cost.jsonl and writes OUT/cost.md and OUT/cost_throughput_vs_gflops.png.",
    )
    cost_which = cost.add_mutually_exclusive_group(required=True)
    cost_which.add_argument("--all", action="store_true", help="every registered backbone")
    cost_which.add_argument("--backbone", nargs="+", metavar="NAME", help="backbones to measure (see `python -m bench list`)")
    cost.add_argument("--image-size", type=_positive_int, nargs="+", metavar="PX", help="sizes the backbones run at, each its own row (default: each backbone's own; the data's native size for a backbone that only trains from scratch)")
    cost.add_argument("--batch-size", type=_positive_int, nargs="+", default=[64], metavar="N", help="batch sizes, each its own row, for inference and for the training steps (default 64)")
    cost.add_argument("--data", default="synthetic", help="what the inputs are shaped like: synthetic or cifar10 (random 32 px images, 10 classes; default), or an image-folder DIR, whose classes and image size are used (nothing is decoded, nothing downloaded)")
    cost.add_argument("--precision", choices=["float32", "mixed"], default="float32", help="mixed: bfloat16 compute on CPU, float16 on GPU (default float32)")
    cost.add_argument("--jit-compile", action="store_true", help="XLA-compile the forward pass and the training steps")
    cost.add_argument("--out", type=Path, default=Path("out"), help="folder for cost.jsonl, cost.md and the plot (default ./out)")
    cost.add_argument("--resume", action="store_true", help="skip configurations that already have an ok record in OUT")
    cost.add_argument("--cell-timeout", type=_positive_seconds, metavar="SECONDS", help="kill a measurement that runs longer and record it failed (default: no limit)")

    prefetch = commands.add_parser(
        "prefetch",
        help="download CIFAR-10 and ImageNet weight files into a Keras cache folder for machines without internet",
        description="Fetch CIFAR-10 and the ImageNet weight files the named backbones need at the named sizes, through Keras's own loaders, "
        "into DIR in Keras's cache layout (DIR/datasets, DIR/models). On machines without internet, set KERAS_HOME=DIR and run unchanged.",
    )
    prefetch.add_argument("--to", type=Path, required=True, metavar="DIR", help="the folder to fill; becomes KERAS_HOME on the offline machines (it must be writable there too: Keras falls back to /tmp/.keras otherwise)")
    prefetch.add_argument("--backbone", nargs="+", metavar="NAME", help="backbones whose ImageNet weights to fetch (default: every backbone that has them)")
    prefetch.add_argument("--image-size", type=_positive_int, nargs="+", metavar="PX", help="sizes they will run at (default: each backbone's own); MobileNetV2 keeps one file per size")
    cache = commands.add_parser(
        "cache",
        help="show the cache's size and entries; clear it",
        description="Show the cache folder's total size and the entries its manifest lists, by kind (datasets/, features/), with sizes on disk and ages. "
        "--clear lists what it would remove (all entries, or those --older-than DAYS) and removes them only with --yes. Only entries the "
        "cache's manifest lists are ever removed, and only in a folder that carries its marker (bench-cache.json).",
    )
    cache.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"the cache folder (default {DEFAULT_CACHE_DIR}, or $BENCH_CACHE_DIR)")
    # A dry run by default rather than a prompt: the command runs in scripts and batch jobs, where
    # a prompt hangs or reads end-of-file; the list comes first and the deletion is a second,
    # deliberate command, so a mistyped --cache-dir costs nothing.
    cache.add_argument("--clear", action="store_true", help="list the entries to remove: all of them, or with --older-than only those (a dry run: add --yes to remove them)")
    cache.add_argument("--yes", action="store_true", help="with --clear: remove the listed entries")
    cache.add_argument("--older-than", type=_days, metavar="DAYS", help="only entries last written more than DAYS days ago (listed, or removed with --clear --yes)")
    cache.add_argument("--adopt", action="store_true", help="take over a cache written by an older bench (before the manifest): only .npy entries whose .sha256 file matches their bytes")

    report = commands.add_parser("report", help="write tables, CSV and plots from runs.jsonl", description="Write README.md, summary.csv and PNG plots into OUT from the records alone.")
    report.add_argument("--out", type=Path, default=Path("out"), help="folder to write the report into (default ./out); its runs.jsonl is read too")
    report.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="more folders or runs.jsonl files to merge (e.g. shards of a job array)")
    report.add_argument("--readme", type=Path, metavar="FILE", help="also write the headline table and winners into FILE (e.g. README.md), between its '<!-- bench report: start -->' and '<!-- bench report: end -->' lines")
    return parser


def _resolve_weights(option: str, spec, stage) -> tuple[str | None, str]:
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


def _preflight_weights(spec, weights: str, image_size: int) -> None:
    """Build the backbone with its weights once, before any cell runs.

    A weights file for another architecture, or ImageNet weights that cannot be downloaded,
    then stops the run with one clear line. A successful download lands in Keras's cache,
    where the cells find it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spec.builder(input_shape=(image_size, image_size, 3), weights=weights)
        # Keras may load a partly matching file with only a warning: treat that as a mismatch.
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message) or "could not be loaded" in str(w.message)]
        if skipped:
            raise ValueError(skipped[0])
    except Exception as error:
        text = str(error).strip()
        if weights == "imagenet":
            url = re.search(r"https?://\S+?\.h5", text)
            what = f"{url.group(0).rsplit('/', 1)[-1]} from {url.group(0)}" if url else "its weights file"
            raise UsageError(
                f"could not download ImageNet weights for {spec.name} (offline?): place {what} in ~/.keras/models/, "
                f"or pass --weights DIR holding {spec.name}.weights.h5, or --weights none"
            ) from None
        first = text.splitlines()[0][:200] if text else type(error).__name__
        raise UsageError(f"weights file {weights} does not fit {spec.name} ({first}); pass that backbone's own weights or --weights none") from None


# Dedicated flags and the recipe fields they set: giving both is a contradiction.
_FLAG_FIELDS = {"epochs": "epochs", "batch_size": "batch_size", "unfreeze_layers": "unfreeze_layers", "augment": "augment"}


def _requested(args) -> tuple[dict, tuple]:
    """(the cell fields the flags and ``--set`` ask for, the remaining recipe overrides)."""
    overrides = {}
    for name, value in args.set or []:
        if name in overrides and overrides[name] != value:
            raise UsageError(f"--set {name} given twice ({overrides[name]} and {value}); keep one")
        overrides[name] = value
    for flag, field in _FLAG_FIELDS.items():
        if getattr(args, flag) is not None and field in overrides:
            raise UsageError(f"--{flag.replace('_', '-')} and --set {field}= both set {field}; keep one of them")
    requested = {
        "epochs": args.epochs or overrides.pop("epochs", None),
        "batch_size": args.batch_size or overrides.pop("batch_size", None),
        "unfreeze_layers": args.unfreeze_layers or overrides.pop("unfreeze_layers", None),
        "policies": args.augment or ([overrides.pop("augment")] if "augment" in overrides else None),
    }
    return requested, tuple(sorted(overrides.items()))


def plan_cells(args, native_size: int) -> tuple[list[Cell], list[str]]:
    """The cells a ``run`` command asks for, in run order, and the lines to print about them:
    one per backbone whose pretrained stages are skipped for want of weights, one note per
    setting that applies to some cells only (a setting that applies to none is refused).

    Each cell's identity holds the settings that apply to it. Loads nothing and builds
    nothing, so every name, number and path is checked before any download, decode or model
    build (the data's content is hashed, which reads the files once per process).
    """
    from bench.grid import dataset_fingerprint, weights_fingerprint

    names = list_backbones() if args.all else args.backbone
    specs = [get_backbone(name) for name in names]
    requested, overrides = _requested(args)
    # Synthetic images are not natural ones: pretrained weights buy nothing there.
    weights_option = args.weights or ("none" if args.data == "synthetic" else "imagenet")
    if weights_option not in ("imagenet", "none") and Path(weights_option).is_file() and len(specs) > 1:
        raise UsageError("--weights FILE fits a single backbone; with several, pass a DIR holding <backbone>.weights.h5")
    cells, skipped = [], {}
    if min(args.seeds) < (1 if len(args.seeds) == 1 else 0):
        raise UsageError(f"--seeds takes a count of at least 1 or a list of seeds of 0 or more, got {' '.join(map(str, args.seeds))}")
    seeds = range(args.seed, args.seed + args.seeds[0]) if len(args.seeds) == 1 else sorted(set(args.seeds))
    dataset_id = dataset_fingerprint(args.data)
    for spec in specs:
        stages = args.stage or list(spec.stages)
        unsupported = [s for s in stages if s not in spec.stages]
        if unsupported and not args.all:
            raise UsageError(f"backbone {spec.name} does not support stage(s) {', '.join(unsupported)}; it runs: {', '.join(spec.stages)}")
        stages = [s for s in STAGES if s in stages and s in spec.stages]
        for stage_name in stages:
            stage = STAGES[stage_name]
            sizes = (args.image_size or [spec.default_image_size]) if stage.resize else [native_size]
            for size in sizes:
                if size < spec.min_image_size:
                    raise UsageError(f"--image-size {size} is below {spec.name}'s minimum of {spec.min_image_size} px; pass {spec.min_image_size} or more")
            weights, reason = _resolve_weights(weights_option, spec, stage_name)
            if weights is None:
                skipped.setdefault((spec.name, reason), []).append(stage_name)
                continue
            for size in sizes:
                for policy in requested["policies"] or [stage.augment]:
                    for seed in seeds:
                        cells.append(
                            Cell(
                                backbone=spec.name,
                                stage=stage_name,
                                image_size=size,
                                augment=policy,
                                seed=seed,
                                data=args.data,
                                profile=args.profile,
                                weights=weights,
                                epochs=requested["epochs"],
                                batch_size=requested["batch_size"],
                                unfreeze_layers=requested["unfreeze_layers"],
                                use_cache=not args.no_cache,
                                val_fraction=args.val_fraction,
                                precision=args.precision,
                                jit_compile=args.jit_compile,
                                overrides=overrides,
                                dataset_id=dataset_id,
                                weights_id=weights_fingerprint(weights),
                            )
                        )
    # STAGES lists transfer before finetune, which starts from its transfer's saved head.
    order = {name: i for i, name in enumerate(STAGES)}
    cells.sort(key=lambda c: (names.index(c.backbone), order[c.stage]))
    skip_lines = [f"skipped {name} {', '.join(stages)}: {reason}" for (name, reason), stages in skipped.items()]
    return cells, skip_lines + _scope_notes(args, cells, requested, weights_skipped=bool(skipped))


def _scope_notes(args, cells: list[Cell], requested: dict, weights_skipped: bool = False) -> list[str]:
    """One note per setting that applies to some cells only; a setting that applies to none is refused.

    ``weights_skipped``: cells were planned for ``--weights`` and skipped for want of a file,
    which their own lines already say.
    """
    resized = [c for c in cells if STAGES[c.stage].resize]
    pretrained = [c for c in cells if STAGES[c.stage].pretrained]
    top = [c for c in cells if STAGES[c.stage].trainable == "top"]
    frozen = [c for c in cells if STAGES[c.stage].trainable != "all"]
    scopes = [
        ("--image-size", args.image_size, resized, "the stages that resize (transfer, finetune); the others run at the data's native size"),
        ("--weights", args.weights, pretrained, "the pretrained stages (transfer, finetune); the others train from scratch"),
        ("--unfreeze-layers / --set unfreeze_layers", requested["unfreeze_layers"], top, "finetune"),
        ("--no-cache", args.no_cache or None, frozen, "the stages with a frozen part (transfer, finetune); the others always train end to end"),
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
        capped = sorted({c.recipe().epochs for c in cells if c.recipe().epochs < requested["epochs"]})
        if capped:
            notes.append(f"note: --epochs {requested['epochs']} is capped at {capped[0]} by --profile {args.profile}; cells run (and are keyed by) {capped[0]}")
    return notes


def _preflight(cells: list[Cell]) -> None:
    """Check each (backbone, weights) the cells use once (see ``_preflight_weights``)."""
    checked = set()
    for cell in cells:
        if cell.weights != "none" and (cell.backbone, cell.weights) not in checked:
            _preflight_weights(get_backbone(cell.backbone), cell.weights, cell.image_size)
            checked.add((cell.backbone, cell.weights))


def _check_out_dir(out: Path, flag: str = "--out", create: bool = True) -> None:
    if not create:
        # Whether it could be created, without creating it: bad input writes nothing.
        existing = next(p for p in (out, *out.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"cannot create {flag} folder {out}: {existing} is not a writable folder; pick a writable folder")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {flag} folder {out}: {error.strerror}; pick a writable folder") from None
    # Create a file rather than ask os.access: root passes every permission check, and
    # /proc or a read-only mount refuse files whatever the mode bits say.
    try:
        probe, name = tempfile.mkstemp(dir=out, prefix=".bench-write-probe-")
        os.close(probe)
        os.unlink(name)
    except OSError as error:
        raise UsageError(f"{flag} folder {out} is not writable ({error.strerror}); pick a writable folder or fix its permissions") from None


def _validate_data(args, notes: list[str] | None = None):
    """Load (and so check) the data once in the parent; returns its native image size.

    ``notes`` collects a line per damaged cache entry healed on the way."""
    from bench.data import load_raw, prepare

    raw = load_raw(args.data, args.cache_dir, notes)
    profile = PROFILES[args.profile]
    prepare(raw, args.seed, args.val_fraction, profile.train_images, profile.test_images)
    return int(raw.x_train.shape[1])


def cmd_list(args) -> int:
    from bench.render.listing import render_listing

    print(render_listing([get_backbone(n) for n in list_backbones()], STAGES, POLICIES))
    return 0


def cmd_run(args, argv=None) -> int:
    from bench import quiet
    from bench.grid import RunOptions
    from bench.isolation import LOGS_DIR
    from bench.sweep import run_sweep

    if args.all and args.stage:
        raise UsageError("--all runs each backbone's own stages; drop --stage, or name backbones with --backbone")
    # Cheap checks first: names, stages, sizes, seeds, weights paths (planned on a stand-in
    # native size) and the output folder, before any download, decode or model build.
    _check_image_sizes(args.image_size or [], args.allow_large_images)
    planned, lines = plan_cells(args, native_size=32)
    skips = [line for line in lines if line.startswith("skipped ")]
    if not planned and skips:
        raise UsageError("every cell was skipped: " + "; ".join(skips))
    _check_out_dir(args.out, create=False)
    if args.executor == "ray":
        # Found, not imported: Ray reads its node-address setting when first imported (bench.ray_executor).
        if importlib.util.find_spec("ray") is None:
            raise UsageError("--executor ray needs Ray: pip install ray (or pip install -e '.[ray]')")
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    with quiet.scratch_file() as tf_log:
        # TensorFlow's own lines (the CIFAR-10 download, the weights check) go to OUT/logs/,
        # kept only once every check passed: bad input writes nothing.
        with quiet.native_output_to(tf_log):
            healed: list[str] = []
            native_size = _validate_data(args, healed)
            cells, lines = plan_cells(args, native_size)
            # A stage at the images' own size (baseline) can be over the limit without --image-size.
            _check_image_sizes([c.image_size for c in cells if c.image_size == native_size], args.allow_large_images, "the images' own size in --data, {size} px,")
            _preflight(cells)
        _check_out_dir(args.out)
        quiet.keep_log(tf_log, args.out / LOGS_DIR / "parent.log", command)
    if args.shard:
        cells = shard_cells(cells, *args.shard)
    # Lines for the user: damaged cache entries healed while loading (their native-output
    # block sent them to the log), weights skips and setting notes.
    for line in [f"note: {message}" for message in healed] + lines:
        print(line, file=sys.stderr)
    print(f"running {len(cells)} cells into {args.out}/ (data: {args.data}, profile: {args.profile})", file=sys.stderr, flush=True)
    # How to execute the cells, apart from what they are: none of it enters a key.
    options = RunOptions(cpus=args.cpus_per_cell, gpus=args.gpus_per_cell, timeout_seconds=args.cell_timeout)
    result = run_sweep(cells, args.out, args.cache_dir, resume=args.resume, options=options, command=command, executor=args.executor, ray_address=args.ray_address)
    if result.write_error:
        return 1
    paths = _write_report(args.out)
    if paths is None:
        return 1
    print(f"report: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if result.failed:
        print(f"{result.failed} of {len(result.records)} cells failed; see the error column in {args.out}/README.md and logs in {args.out}/logs/", file=sys.stderr)
        return 1
    return 0


def _write_report(out: Path, **options) -> list[Path] | None:
    """``publish.write_report``; a full disk or a read-only folder is one line on stderr and None."""
    from bench import publish

    try:
        return publish.write_report(out, **options)
    except OSError as error:
        # Every file is replaced whole or not at all (bench.files): say so, not a traceback.
        print(
            f"error: could not write the report into {out}: {error.strerror or error}; every file keeps its old or its whole new text "
            f"and runs.jsonl is intact; free space or fix permissions, then rerun `python -m bench report --out {out}`",
            file=sys.stderr,
        )
        return None


def cmd_report(args) -> int:
    from bench import publish

    for path in args.inputs:
        if not path.exists():
            raise UsageError(f"report input {path} does not exist; pass output folders or runs.jsonl files")
    _check_out_dir(args.out)
    if args.readme is not None:
        # Checked before anything is written, so a bad README leaves the report untouched too.
        if not args.readme.is_file():
            raise UsageError(f"--readme {args.readme} does not exist; pass the markdown file whose results section to update")
        try:
            publish.splice_readme(args.readme.read_text(), "")
        except ValueError as error:
            raise UsageError(f"--readme {args.readme}: {error}") from None
    paths = _write_report(args.out, extra_inputs=args.inputs, project_readme=args.readme)
    if paths is None:
        return 1
    print(f"report: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from bench.compare import compare
    from bench.render.compare import render_comparison

    for path in (args.old, args.new):
        if not path.exists():
            raise UsageError(f"{path} does not exist; pass two output folders or runs.jsonl files")
    comparison = compare(args.old, args.new, args.fail_threshold, args.accuracy_threshold)
    print(render_comparison(comparison))
    return 1 if args.fail_on_regression and comparison.failures else 0


def cmd_perf(args, argv=None) -> int:
    if args.memory:
        return _perf_memory(args, argv)
    from bench import publish, quiet
    from bench.isolation import LOGS_DIR
    from bench.render.perf import render_perf

    if len(args.backbone) > 1:
        raise UsageError("perf times one backbone's paths; pass one --backbone, or several with --memory")
    if args.train_images:
        raise UsageError("--train-images sizes the --memory benchmark; add --memory, or drop it")
    if args.timing_runs:
        raise UsageError("--timing-runs repeats the --memory benchmark's timed cells; add --memory, or drop it")
    args.backbone, args.epochs = args.backbone[0], args.epochs or 10
    spec = get_backbone(args.backbone)
    _check_image_sizes([args.image_size] if args.image_size else [], args.allow_large_images)
    if not {"transfer", "finetune"} <= set(spec.stages):
        raise UsageError(f"perf times transfer and finetune; {spec.name} runs only {', '.join(spec.stages)}; pick another --backbone")
    _check_out_dir(args.out)
    size = args.image_size or spec.default_image_size
    if size < spec.min_image_size:
        raise UsageError(f"--image-size {size} is below {spec.name}'s minimum of {spec.min_image_size} px; pass {spec.min_image_size} or more")
    args.seed, args.val_fraction, args.profile = 0, 0.1, "perf"
    (args.out / LOGS_DIR).mkdir(exist_ok=True)
    # The cells run in this process: TensorFlow's lines and the cells' own go to OUT/logs/perf.log.
    with open(args.out / LOGS_DIR / "perf.log", "ab") as tf_log, quiet.native_output_to(tf_log, stdout=True) as terminal:
        from bench import perf  # imports TensorFlow

        # Decodes (and caches) the images once, before any timing.
        _validate_data(args)
        comparisons = perf.compare_paths(args.data, spec.name, size, args.epochs, args.augment, args.weights, args.cache_dir, log=terminal)
    text = render_perf(comparisons)
    print(text)
    try:
        publish.write_markdown(args.out / "perf.md", text)
    except OSError as error:
        print(f"error: could not write {args.out / 'perf.md'}: {error.strerror or error}; the ratios are printed above; free space and rerun", file=sys.stderr)
        return 1
    return 0


def cmd_cache(args) -> int:
    import time

    from bench import cache_admin
    from bench.render.cache import render_cache

    if args.cache_dir.exists() and not args.cache_dir.is_dir():
        raise UsageError(f"--cache-dir {args.cache_dir} is a file, not a folder; pass the cache folder (default {DEFAULT_CACHE_DIR})")
    if args.yes and not args.clear:
        raise UsageError("--yes confirms --clear and does nothing alone; add --clear (without --yes, --clear lists what it would remove)")
    if args.adopt:
        if args.clear:
            raise UsageError("--adopt and --clear are separate steps; adopt first, then list with --clear")
        adopted, left = cache_admin.adopt(args.cache_dir)
        print(f"adopted {len(adopted)} entr{'y' if len(adopted) == 1 else 'ies'} into the manifest of {args.cache_dir}" + (f"; left alone {len(left)} whose .sha256 does not match: {', '.join(p.name for p in left)}" if left else ""))
        return 0
    listing, now = cache_admin.list_cache(args.cache_dir), time.time()
    if args.cache_dir.is_dir() and not listing.marked:
        if args.clear:
            raise UsageError(cache_admin.unmarked_note(args.cache_dir))
        print(render_cache(listing, [], now))
        print(f"note: {cache_admin.unmarked_note(args.cache_dir)}")
        return 0
    if listing.unreadable_records:
        print(f"note: {len(listing.unreadable_records)} unreadable manifest record(s) left alone, with what they describe (first: {listing.unreadable_records[0]})", file=sys.stderr)
    chosen = cache_admin.select(listing, args.older_than, now)
    print(render_cache(listing, chosen, now))
    if not args.clear:
        return 0
    if not args.yes:
        print(f"dry run: --clear would remove the {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} listed above and nothing else; add --yes to remove them")
        return 0
    print(f"removing the {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} listed above", flush=True)
    try:
        cache_admin.remove(listing, chosen)
    except OSError as error:
        raise UsageError(f"cannot remove {error.filename}: {error.strerror}; fix its permissions or remove it by hand") from None
    print(render_cache(cache_admin.list_cache(args.cache_dir), [], now, removed=chosen))
    return 0


def _cost_input_shape(data: str) -> tuple[int, int, str]:
    """(native size, classes, label) of what ``bench cost`` feeds: CIFAR-10's shape, or a folder's."""
    if data in ("synthetic", "cifar10"):
        return 32, 10, data
    from bench.data import image_folder_shape

    path = Path(data)
    if not path.is_dir():
        raise UsageError(f"--data {data!r} is neither 'synthetic', 'cifar10' nor a directory; pass one of those")
    classes, (width, height) = image_folder_shape(path)
    if width != height:
        raise UsageError(f"images in {path} are {width}x{height}, not square; crop them square (the harness feeds square images)")
    return width, len(classes), path.resolve().name


def plan_costs(args) -> list:
    """The ``CostConfig``s a ``cost`` command asks for, in run order."""
    from bench.cost_records import CostConfig

    specs = [get_backbone(name) for name in (list_backbones() if args.all else args.backbone)]
    native_size, num_classes, label = _cost_input_shape(args.data)
    configs = []
    for spec in specs:
        # A backbone that only trains from scratch runs at the data's native size, as in `bench run`.
        resizes = any(STAGES[name].resize for name in spec.stages)
        sizes = args.image_size or [spec.default_image_size if resizes else native_size]
        for size in sizes:
            if size < spec.min_image_size:
                raise UsageError(f"--image-size {size} is below {spec.name}'s minimum of {spec.min_image_size} px; pass {spec.min_image_size} or more")
        for size in sizes:
            for batch_size in args.batch_size:
                configs.append(CostConfig(spec.name, size, batch_size, native_size, num_classes, label, args.precision, args.jit_compile))
    return configs


def cmd_cost(args, argv=None) -> int:
    from bench import publish
    from bench.cost import run_costs
    from bench.render.cost import render_cost_progress

    configs = plan_costs(args)
    _check_out_dir(args.out)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"measuring {len(configs)} configuration(s), each in its own process, into {args.out}/cost.jsonl (logs in {args.out}/logs/)", file=sys.stderr, flush=True)
    try:
        records = run_costs(configs, args.out, command, args.resume, args.cell_timeout, describe=render_cost_progress).records
        paths = publish.write_cost_report(args.out)
    except OSError as error:
        # Appends and the table are all-or-nothing writes: what was there before is intact.
        print(f"error: could not write to {args.out}/ ({error.strerror or error}); every earlier record is kept; free space or pick another --out", file=sys.stderr)
        return 1
    print(f"cost: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    failed = sum(r.status != "ok" for r in records)
    if failed:
        print(f"{failed} of {len(records)} measurements failed; see {args.out}/cost.md and the logs in {args.out}/logs/", file=sys.stderr)
        return 1
    return 0


def cmd_prefetch(args) -> int:
    from bench.prefetch import prefetch

    names = args.backbone or [n for n in list_backbones() if get_backbone(n).has_imagenet_weights]
    specs = [get_backbone(name) for name in names]
    for spec in specs:
        if not spec.has_imagenet_weights:
            print(f"note: {spec.name} has no ImageNet weights; it needs CIFAR-10 only", file=sys.stderr)
    wanted = []
    for spec in specs:
        if spec.has_imagenet_weights:
            for size in args.image_size or [spec.default_image_size]:
                if size < spec.min_image_size:
                    raise UsageError(f"--image-size {size} is below {spec.name}'s minimum of {spec.min_image_size} px; pass {spec.min_image_size} or more")
                wanted.append((spec.name, size))
    _check_out_dir(args.to, "--to")
    print(f"fetching CIFAR-10 and the ImageNet weights of {len(wanted)} backbone x size pair(s) through Keras into {args.to}/ (log: {args.to}/prefetch.log) ...", file=sys.stderr, flush=True)
    fetched = prefetch(args.to, wanted)
    for path in fetched:
        print(f"  {path.relative_to(args.to.resolve())}", file=sys.stderr)
    print(f"export KERAS_HOME={shlex.quote(str(args.to.resolve()))}")
    return 0


def _perf_memory(args, argv=None) -> int:
    """``bench perf --memory``: checks, decoding the data once here (its peak measured), then the cells."""
    from bench import memory
    from bench.data import load_raw, pool_images_for, prepare

    specs = [get_backbone(name) for name in args.backbone]
    for spec in specs:
        if not {"transfer", "finetune"} <= set(spec.stages):
            raise UsageError(f"perf --memory runs transfer and finetune; {spec.name} runs only {', '.join(spec.stages)}; pick another --backbone")
    for spec in specs:
        if (args.image_size or spec.default_image_size) < spec.min_image_size:
            raise UsageError(f"--image-size {args.image_size} is below {spec.name}'s minimum of {spec.min_image_size} px; pass {spec.min_image_size} or more")
    sizes = sorted(set(args.train_images or [5000, 20000]))
    if len(sizes) < 2:
        raise UsageError(f"--train-images needs two sizes or more to measure growth, got {sizes[0]}; pass e.g. --train-images 5000 20000")
    if args.weights not in ("imagenet", "none") and Path(args.weights).is_file() and len(specs) > 1:
        raise UsageError("--weights FILE fits a single backbone; with several, pass a DIR holding <backbone>.weights.h5")
    backbones = []
    for spec in specs:
        weights, reason = _resolve_weights(args.weights, spec, "transfer")
        if weights is None:
            # Memory and time do not depend on the weights' values: random ones measure the same.
            weights = "none"
            print(f"note: {spec.name}: {reason.split(';')[0]}; measuring with random weights", file=sys.stderr)
        backbones.append((spec.name, args.image_size or spec.default_image_size, weights))
    _check_out_dir(args.out)
    # The run process's own cost: decoding (once, into the cache) and checking the data.
    memory.start_anon_peak()
    raw = load_raw(args.data, args.cache_dir)
    pools = [pool_images_for(n, len(raw.class_names), 0.1) for n in sizes]
    if pools[-1] > len(raw.y_train):
        raise UsageError(f"--train-images {sizes[-1]} needs {pools[-1]:,} training images before the validation split, but {args.data} has {len(raw.y_train):,}; pass smaller sizes")
    prepare(raw, 0, 0.1, pools[-1], None)
    parent_peak = memory.peak_anon_mb()
    del raw

    from bench import perf, publish
    from bench.render.perf import render_perf_memory

    try:
        growths = perf.memory_growth(args.data, backbones, pools, args.epochs or 3, args.cache_dir, args.timing_runs or MEMORY_TIMING_RUNS, log=sys.stderr)
    except RuntimeError as error:
        print(f"error: {error}; see the cell's log above, fix it, and rerun", file=sys.stderr)
        return 1
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    text = render_perf_memory(perf.MemoryBenchmark(growths, parent_peak, command))
    print(text)
    publish.write_markdown(args.out / "perf-memory.md", text)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("run", "perf", "cost"):
            return {"run": cmd_run, "perf": cmd_perf, "cost": cmd_cost}[args.command](args, argv)
        return {"list": cmd_list, "report": cmd_report, "compare": cmd_compare, "prefetch": cmd_prefetch, "cache": cmd_cache}[args.command](args)
    except (UsageError, BackboneLookupError) as error:
        message = error.args[0] if error.args else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every finished cell is in runs.jsonl; rerun with --resume to continue", file=sys.stderr)
        return 130
