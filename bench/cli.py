"""Command line: what the user can say (``build_parser``) and which command answers (``main``).

Everything the user gets wrong is caught before any cell runs: the message names the problem
and the fix, the exit code is 2, and nothing is written. Option values are checked by
``bench.options``; each command's handler is its own module in ``bench.commands``, imported
only when that command is given, so ``list``, ``--help`` and argument errors load no TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
from pathlib import Path

from backbones import BackboneLookupError
from bench import concurrent_runs, options
from bench.augment import POLICIES
from bench.commands.perf import MEMORY_TIMING_RUNS
from bench.data import DEFAULT_CACHE_DIR
from bench.errors import UsageError
from bench.grid import FIT_ON
from bench.quiet import reopen_closed_standard_streams
from bench.runtimes import RUNTIMES
from bench.stages import PROFILES, STAGES



class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other error of the harness."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench", description="Transfer-learning benchmark harness for CIFAR-10: backbones x training stages, with accuracy, speed and memory.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run,tune,report,compare,perf,cost,deploy,prefetch,cache}")

    commands.add_parser("list", help="list backbones, stages and augmentation policies", description="List registered backbones (with their stages and default sizes), stages and augmentation policies.")

    run = commands.add_parser("run", help="run a grid of cells and write records and reports", description="Run each (backbone, stage, image size, augmentation, seed) cell in its own process, append its record to OUT/runs.jsonl, then write the report.")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every registered backbone with each of its stages, at default settings")
    which.add_argument("--backbone", nargs="+", action="extend", metavar="NAME", help="backbones to run (see `python -m bench list`)")
    run.add_argument("--stage", nargs="+", action="extend", metavar="NAME", choices=list(STAGES), help=f"stages to run, of {', '.join(STAGES)} (default: each backbone's own)")
    run.add_argument("--data", type=options.data_source, default="cifar10", help="cifar10 (Keras download, default), synthetic, or an image-folder DIR with train/<class>/* and test/<class>/*")
    run.add_argument("--profile", choices=sorted(PROFILES), default="full", help="quick: a few-minute pass on a data subset, 1 epoch; full: the stages' own recipe (default)")
    run.add_argument("--epochs", type=options.positive_int, help="override every stage's epoch count")
    run.add_argument("--image-size", type=options.positive_int, nargs="+", action="extend", metavar="PX", help=f"sizes the resizing stages run at, each its own cell (default: the backbone's; at most {options.MAX_IMAGE_SIZE} unless --allow-large-images)")
    run.add_argument("--allow-large-images", action="store_true", help=f"allow image sizes over {options.MAX_IMAGE_SIZE} px (memory and the activation cache grow with the square of the side)")
    run.add_argument("--augment", nargs="+", action="extend", metavar="POLICY", choices=sorted(POLICIES), help=f"augmentation policies, each its own cell, of {', '.join(POLICIES)} (default: each stage's own)")
    run.add_argument("--batch-size", type=options.positive_int, help="override every stage's batch size")
    run.add_argument("--unfreeze-layers", type=options.positive_int, metavar="N", help="finetune: how many of the backbone's last weight layers train (default: the backbone's own setting, see `bench list`, else 4)")
    run.add_argument("--weights", help="imagenet, none, a DIR holding <backbone>.weights.h5, or one .weights.h5 FILE for a single backbone (default: imagenet; none with --data synthetic, whose images are not natural ones)")
    run.add_argument("--seed", type=options.non_negative_int, default=0, help="first seed, 0 or more (default 0)")
    run.add_argument("--seeds", type=int, nargs="+", action=options.GivenOnce, metavar="N", help="one number N: run each cell with seeds --seed, --seed+1, ... (N of them; default 1); several numbers: exactly those seeds")
    run.add_argument("--val-fraction", type=options.fraction, default=0.1, help="share of train carved out, stratified, for validation (default 0.1)")
    run.add_argument("--out", type=Path, default=Path("out"), help="output folder for runs.jsonl and the report (default ./out)")
    run.add_argument("--resume", action="store_true", help="skip cells that already have an ok record in OUT")
    run.add_argument("--cell-timeout", type=options.positive_seconds, metavar="SECONDS", help="kill a cell that runs longer and record it failed (default: no limit)")
    run.add_argument("--no-cache", action="store_true", help="train frozen stages on images end to end instead of on cached activations")
    run.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"activation and dataset cache (default {DEFAULT_CACHE_DIR}, or $BENCH_CACHE_DIR)")
    run.add_argument("--executor", choices=["local", "ray"], default="local", help="local: cells one after another here (default); ray: one Ray task per cell")
    run.add_argument("--ray-address", metavar="HOST:PORT", help="Ray cluster to join with --executor ray (default: start a local instance for the run)")
    run.add_argument("--cpus-per-cell", type=options.resource_share, default=1, help="CPUs a Ray task reserves for a cell (default 1)")
    run.add_argument("--gpus-per-cell", type=options.resource_share, default=0, help="GPUs a Ray task reserves for a cell (default 0)")
    run.add_argument("--shard", type=options.shard, metavar="I/N", help="run only shard I (0-based) of N of the grid, for job arrays (e.g. $SLURM_ARRAY_TASK_ID/4); merge with `report --out DIR SHARD_DIR...`")
    run.add_argument("--precision", choices=["float32", "mixed"], help="mixed: bfloat16 compute on CPU, float16 on GPU (default: each recipe's own: float32, but mixed for the from-scratch small_cnn and airbench94, faster in bfloat16 on CPUs with AVX512-BF16)")
    run.add_argument("--jit-compile", action="store_true", help="XLA-compile training and inference")
    run.add_argument("--recipes", type=Path, metavar="DIR", help="train with the tuned recipes in DIR (<backbone>-<stage>.json, written by `bench tune` into OUT/recipes); stages without one run their default")
    run.add_argument("--fit-on", choices=FIT_ON, default="train", help="train+val: the final fit on train and validation together, once a recipe is chosen (Kornblith et al.); no validation accuracy then (default train)")
    run.add_argument(
        "--set",
        nargs="+",
        action="extend",
        dest="overrides",
        type=options.override,
        metavar="FIELD=VALUE",
        help="recipe overrides for every stage of the run that has the field, e.g. --set epochs=20 head_units=1024 "
        "(learning_rate, weight_decay, warmup_epochs, label_smoothing, head_units, head_dropout, shift_fraction, tta_flip, epochs, batch_size, unfreeze_layers, augment)",
    )

    tune = commands.add_parser(
        "tune",
        help="tune each (backbone, stage)'s recipe on validation: an Optuna study per pair, all with one budget",
        description="For each (backbone, stage), an Optuna study (seeded TPE, median pruning on each epoch's validation accuracy) in OUT/tuning-journal.log: "
        "each trial is a cell with the drawn recipe, in its own process, recorded in OUT/trials.jsonl; it never loads the test split. A killed study resumes "
        "and several workers may share one. Each study writes its best recipe to OUT/recipes/<backbone>-<stage>.json (for `bench run --recipes`), then the report.",
    )
    tune_which = tune.add_mutually_exclusive_group(required=True)
    tune_which.add_argument("--all", action="store_true", help="every registered backbone with each of its stages that has a search space")
    tune_which.add_argument("--backbone", nargs="+", action="extend", metavar="NAME", help="backbones to tune (see `python -m bench list`)")
    tune.add_argument("--stage", nargs="+", action="extend", metavar="NAME", choices=list(STAGES), help="stages to tune (default: each backbone's own)")
    tune.add_argument("--trials", type=options.positive_int, default=20, help="finished trials (complete or pruned) each study ends with (default 20)")
    tune.add_argument("--max-epochs", type=options.positive_int, default=20, help="cap on every trial's epochs, the same for every study (default 20)")
    tune.add_argument("--data", type=options.data_source, default="cifar10", help="cifar10 (default), synthetic, or an image-folder DIR with train/<class>/* (test/ is never read)")
    tune.add_argument("--weights", help="as for run: imagenet, none, a DIR holding <backbone>.weights.h5, or one FILE")
    tune.add_argument("--profile", choices=sorted(PROFILES), default="full", help="as for run (default full)")
    tune.add_argument("--seed", type=options.non_negative_int, default=0, help="the cells' seed and the sampler's (default 0)")
    tune.add_argument("--out", type=Path, default=Path("out"), help="folder for the journal, trials.jsonl, recipes/ and the report (default ./out)")
    tune.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"activation and dataset cache (default {DEFAULT_CACHE_DIR})")
    tune.add_argument("--executor", choices=["local", "ray"], default="local", help="where each trial's cell runs: here (default) or as a Ray task")
    tune.add_argument("--ray-address", metavar="HOST:PORT", help="Ray cluster to join with --executor ray")
    tune.add_argument("--cell-timeout", type=options.positive_seconds, metavar="SECONDS", help="kill a trial that runs longer and fail it (default: no limit)")

    compare = commands.add_parser("compare", help="per-cell deltas between two runs, regressions flagged beyond the noise", description="Compare two output folders (or runs.jsonl files) cell by cell: accuracy, inference throughput, peak memory. A regression is flagged only outside the noise.")
    compare.add_argument("old", type=Path, metavar="OLD", help="baseline output folder or runs.jsonl")
    compare.add_argument("new", type=Path, metavar="NEW", help="candidate output folder or runs.jsonl")
    compare.add_argument("--fail-threshold", type=options.percent, default=5.0, metavar="PCT", help="throughput drop or memory growth, in percent, that counts as a regression (default 5)")
    compare.add_argument("--accuracy-threshold", type=options.accuracy_points, default=1.0, metavar="POINTS", help="accuracy drop, in points, that counts with a single seed on a side (default 1.0); with several seeds the 95 %% intervals decide")
    compare.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any regression is found")

    perf = commands.add_parser(
        "perf",
        help="time cached against uncached training paths (or, with --memory, memory against training-set size) and print ratios",
        description="In one process, on the same data, time the uncached and cached paths of transfer and finetune (cold cache) and print each speed-up as a ratio; "
        "also writes OUT/perf.md. With --memory: run each backbone's transfer and finetune cells at each --train-images size, each in its own process, and print "
        "each stage's peak anonymous memory growth (largest size against smallest) and its training time against the old in-memory loader; also writes OUT/perf-memory.md.",
    )
    perf.add_argument("--memory", action="store_true", help="measure peak memory against training-set size instead of the paths' speed-ups")
    perf.add_argument("--data", type=options.data_source, default="cifar10", help="cifar10 (default), synthetic, or an image-folder DIR")
    perf.add_argument("--backbone", nargs="+", action="extend", metavar="NAME", help="backbone to time (default mobilenet_v2); with --memory, one or more")
    perf.add_argument("--image-size", type=options.positive_int, help=f"side the backbone runs at (default: the backbone's; with --memory, every backbone's; at most {options.MAX_IMAGE_SIZE} unless --allow-large-images)")
    perf.add_argument("--allow-large-images", action="store_true", help=f"allow an image size over {options.MAX_IMAGE_SIZE} px")
    perf.add_argument("--train-images", type=options.positive_int, nargs="+", action="extend", metavar="N", help="--memory: training-set sizes, images trained on after the validation split (default 5000 20000)")
    perf.add_argument("--epochs", type=options.positive_int, help="epochs of each training (default 10; with --memory 3)")
    perf.add_argument("--timing-runs", type=options.positive_int, metavar="N",
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
    cost_which.add_argument("--backbone", nargs="+", action="extend", metavar="NAME", help="backbones to measure (see `python -m bench list`)")
    cost.add_argument("--image-size", type=options.positive_int, nargs="+", action="extend", metavar="PX", help="sizes the backbones run at, each its own row (default: each backbone's own; the data's native size for a backbone that only trains from scratch)")
    cost.add_argument("--batch-size", type=options.positive_int, nargs="+", action="extend", metavar="N", help="batch sizes, each its own row, for inference and for the training steps (default 64)")
    cost.add_argument("--allow-large-images", action="store_true", help=f"allow image sizes over {options.MAX_IMAGE_SIZE} px")
    cost.add_argument("--data", default="synthetic", help="what the inputs are shaped like: synthetic or cifar10 (random 32 px images, 10 classes; default), or an image-folder DIR, whose classes and image size are used (nothing is decoded, nothing downloaded)")
    cost.add_argument("--precision", choices=["float32", "mixed"], default="float32", help="mixed: bfloat16 compute on CPU, float16 on GPU (default float32)")
    cost.add_argument("--jit-compile", action="store_true", help="XLA-compile the forward pass and the training steps")
    cost.add_argument("--runtime", nargs="+", action="extend", metavar="NAME", choices=list(RUNTIMES), help=f"what runs the forward pass, each its own row, of {', '.join(RUNTIMES)} (default tensorflow; the others time inference only, need pip install -e \".[deploy]\" and get every usable core as TensorFlow does)")
    cost.add_argument("--out", type=Path, default=Path("out"), help="folder for cost.jsonl, cost.md and the plot (default ./out)")
    cost.add_argument("--resume", action="store_true", help="skip configurations that already have an ok record in OUT")
    cost.add_argument("--cell-timeout", type=options.positive_seconds, metavar="SECONDS", help="kill a measurement that runs longer and record it failed (default: no limit)")

    deploy = commands.add_parser(
        "deploy",
        help="convert each trained cell to each runtime (ONNX Runtime, OpenVINO, LiteRT, LiteRT int8): accuracy, agreement with TensorFlow, size, speed",
        description="For each ok cell of OUT/runs.jsonl with a saved classifier (OUT/models/), each step in its own process: convert it to each runtime, evaluate it on the cell's "
        "test split (agreement: the share of images whose class is TensorFlow's; a float runtime more than 0.1 point off TensorFlow's accuracy is a failed conversion), "
        "then time it on every usable core. int8 is calibrated on the cell's training images. Appends OUT/deploy.jsonl; writes OUT/deploy.md and its plot.",
    )
    deploy.add_argument("--out", type=Path, default=Path("out"), help="the `bench run` output folder whose cells to deploy (default ./out)")
    deploy.add_argument("--runtime", nargs="+", action="extend", metavar="NAME", choices=list(RUNTIMES), help=f"runtimes, of {', '.join(RUNTIMES)} (default all; tensorflow, the reference, always runs)")
    deploy.add_argument("--backbone", nargs="+", action="extend", metavar="NAME", help="only these backbones' cells")
    deploy.add_argument("--stage", nargs="+", action="extend", metavar="NAME", choices=list(STAGES), help="only these stages' cells")
    deploy.add_argument("--data", type=options.data_source, help="the image folder the cells trained on (default: cifar10 or synthetic, as each cell's record says)")
    deploy.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"decoded-dataset cache (default {DEFAULT_CACHE_DIR})")
    deploy.add_argument("--resume", action="store_true", help="skip the cells and runtimes that already have an ok record in OUT")
    deploy.add_argument("--cell-timeout", type=options.positive_seconds, metavar="SECONDS", help="kill a step (conversion, evaluation) that runs longer and record it failed (default: no limit)")

    prefetch = commands.add_parser(
        "prefetch",
        help="download CIFAR-10 and ImageNet weight files into a Keras cache folder for machines without internet",
        description="Fetch CIFAR-10 and the ImageNet weight files the named backbones need at the named sizes, through Keras's own loaders, "
        "into DIR in Keras's cache layout (DIR/datasets, DIR/models). On machines without internet, set KERAS_HOME=DIR and run unchanged.",
    )
    prefetch.add_argument("--to", type=Path, required=True, metavar="DIR", help="the folder to fill; becomes KERAS_HOME on the offline machines (it must be writable there too: Keras falls back to /tmp/.keras otherwise)")
    prefetch.add_argument("--backbone", nargs="+", action="extend", metavar="NAME", help="backbones whose ImageNet weights to fetch (default: every backbone that has them)")
    prefetch.add_argument("--image-size", type=options.positive_int, nargs="+", action="extend", metavar="PX", help="sizes they will run at (default: each backbone's own); MobileNetV2 keeps one file per size")
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
    cache.add_argument("--older-than", type=options.days, metavar="DAYS", help="only entries last written more than DAYS days ago (listed, or removed with --clear --yes)")
    cache.add_argument("--adopt", action="store_true", help="take over a cache written by an older bench (before the manifest): only .npy entries whose .sha256 file matches their bytes")

    report = commands.add_parser("report", help="write tables, CSV and plots from runs.jsonl", description="Write README.md, summary.csv and PNG plots into OUT from the records alone.")
    report.add_argument("--out", type=Path, default=Path("out"), help="folder to write the report into (default ./out); its runs.jsonl is read too")
    report.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="more folders or runs.jsonl files to merge (e.g. shards of a job array)")
    report.add_argument("--readme", type=Path, metavar="FILE", help="also write the headline table and winners into FILE (e.g. README.md), between its '<!-- bench report: start -->' and '<!-- bench report: end -->' lines")
    return parser



def command_line(argv: list[str] | None) -> str:
    """The command as typed, stamped on records and reports so they can name what made them."""
    return "python -m bench " + " ".join(shlex.quote(str(a)) for a in (argv if argv is not None else sys.argv[1:]))


def main(argv: list[str] | None = None) -> int:
    reopen_closed_standard_streams()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    handler = importlib.import_module(f"bench.commands.{args.command}")
    command = command_line(argv)
    try:
        with concurrent_runs.measuring(command) if args.command in concurrent_runs.MEASURING_COMMANDS else contextlib.nullcontext():
            return handler.handle(args, command)
    except (UsageError, BackboneLookupError) as error:
        message = error.args[0] if error.args else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "the same command: its studies resume" if args.command == "tune" else "with --resume to continue"
        print(f"interrupted: every finished {'trial is in trials.jsonl' if args.command == 'tune' else 'cell is in runs.jsonl'}; rerun {again}", file=sys.stderr)
        return 130
