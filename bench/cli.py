"""Command line: ``bench list``, ``bench run``, ``bench report``.

Everything the user gets wrong is caught here, before any cell runs: the message names the
problem and the fix, the exit code is 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import warnings
from pathlib import Path

from backbones import BackboneLookupError, get_backbone, list_backbones
from bench.augment import POLICIES
from bench.cache_entries import write_text
from bench.grid import Cell
from bench.data import DEFAULT_CACHE_DIR
from bench.errors import UsageError
from bench.stages import PROFILES, STAGES


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 0/4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` of ``count``; a finetune stays on its transfer's shard."""
    groups: list[tuple] = []
    for cell in cells:
        group = (cell.backbone, cell.image_size, cell.augment, cell.seed)
        if group not in groups:
            groups.append(group)
    return [c for c in cells if groups.index((c.backbone, c.image_size, c.augment, c.seed)) % count == index]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Transfer-learning benchmark harness for CIFAR-10: backbones x training stages, with accuracy, speed and memory.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run,report,compare,perf}")

    commands.add_parser("list", help="list backbones, stages and augmentation policies", description="List registered backbones (with their stages and default sizes), stages and augmentation policies.")

    run = commands.add_parser("run", help="run a grid of cells and write records and reports", description="Run each (backbone, stage, image size, augmentation, seed) cell in its own process, append its record to OUT/runs.jsonl, then write the report.")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every registered backbone with each of its stages, at default settings")
    which.add_argument("--backbone", nargs="+", metavar="NAME", help="backbones to run (see `python -m bench list`)")
    run.add_argument("--stage", nargs="+", metavar="NAME", choices=list(STAGES), help=f"stages to run, of {', '.join(STAGES)} (default: each backbone's own)")
    run.add_argument("--data", default="cifar10", help="cifar10 (Keras download, default), synthetic, or an image-folder DIR with train/<class>/* and test/<class>/*")
    run.add_argument("--profile", choices=sorted(PROFILES), default="full", help="quick: a few-minute pass on a data subset, 1 epoch; full: the stages' own recipe (default)")
    run.add_argument("--epochs", type=_positive_int, help="override every stage's epoch count")
    run.add_argument("--image-size", type=_positive_int, nargs="+", metavar="PX", help="sizes the resizing stages run at, each its own cell (default: the backbone's)")
    run.add_argument("--augment", nargs="+", metavar="POLICY", choices=sorted(POLICIES), help=f"augmentation policies, each its own cell, of {', '.join(POLICIES)} (default: each stage's own)")
    run.add_argument("--batch-size", type=_positive_int, help="override every stage's batch size")
    run.add_argument("--unfreeze-layers", type=_positive_int, metavar="N", help="finetune: how many of the backbone's last weight layers train (default: the backbone's own setting, see `bench list`, else 4)")
    run.add_argument("--weights", help="imagenet, none, a DIR holding <backbone>.weights.h5, or one .weights.h5 FILE for a single backbone (default: imagenet; none with --data synthetic, whose images are not natural ones)")
    run.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    run.add_argument("--seeds", type=int, nargs="+", default=[1], metavar="N", help="one number N: run each cell with seeds --seed, --seed+1, ... (N of them; default 1); several numbers: exactly those seeds")
    run.add_argument("--val-fraction", type=float, default=0.1, help="share of train carved out, stratified, for validation (default 0.1)")
    run.add_argument("--out", type=Path, default=Path("out"), help="output folder for runs.jsonl and the report (default ./out)")
    run.add_argument("--resume", action="store_true", help="skip cells that already have an ok record in OUT")
    run.add_argument("--cell-timeout", type=float, metavar="SECONDS", help="kill a cell that runs longer and record it failed (default: no limit)")
    run.add_argument("--no-cache", action="store_true", help="train frozen stages on images end to end instead of on cached activations")
    run.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"activation and dataset cache (default {DEFAULT_CACHE_DIR}, or $BENCH_CACHE_DIR)")
    run.add_argument("--executor", choices=["local", "ray"], default="local", help="local: cells one after another here (default); ray: one Ray task per cell")
    run.add_argument("--ray-address", metavar="HOST:PORT", help="Ray cluster to join with --executor ray (default: start a local instance for the run)")
    run.add_argument("--cpus-per-cell", type=float, default=1, help="CPUs a Ray task reserves for a cell (default 1)")
    run.add_argument("--gpus-per-cell", type=float, default=0, help="GPUs a Ray task reserves for a cell (default 0)")
    run.add_argument("--shard", type=_shard, metavar="I/N", help="run only shard I (0-based) of N of the grid, for job arrays (e.g. $SLURM_ARRAY_TASK_ID/4); merge with `report --out DIR SHARD_DIR...`")
    run.add_argument("--precision", choices=["float32", "mixed"], default="float32", help="mixed: bfloat16 compute on CPU, float16 on GPU (default float32)")
    run.add_argument("--jit-compile", action="store_true", help="XLA-compile training and inference")

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
    perf.add_argument("--data", default="cifar10", help="cifar10 (default), synthetic, or an image-folder DIR")
    perf.add_argument("--backbone", nargs="+", default=["mobilenet_v2"], metavar="NAME", help="backbone to time (default mobilenet_v2); with --memory, one or more")
    perf.add_argument("--image-size", type=_positive_int, help="side the backbone runs at (default: the backbone's; with --memory, every backbone's)")
    perf.add_argument("--train-images", type=_positive_int, nargs="+", metavar="N", help="--memory: training-set sizes, images trained on after the validation split (default 5000 20000)")
    perf.add_argument("--epochs", type=_positive_int, help="epochs of each training (default 10; with --memory 3)")
    perf.add_argument("--augment", choices=sorted(POLICIES), default="none", help="policy for both paths (default none, the write-up's recipe; flip doubles what the cache computes)")
    perf.add_argument("--weights", default="none", help="imagenet, none (default: timing and memory do not depend on the weights' values), a weights FILE, or (with --memory) a DIR holding <backbone>.weights.h5")
    perf.add_argument("--out", type=Path, default=Path("out"), help="folder for perf.md or perf-memory.md (default ./out)")
    perf.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"decoded-dataset cache (default {DEFAULT_CACHE_DIR}); activations go to a fresh temporary folder per perf command")

    report = commands.add_parser("report", help="write tables, CSV and plots from runs.jsonl", description="Write README.md, summary.csv and PNG plots into OUT from the records alone.")
    report.add_argument("--out", type=Path, default=Path("out"), help="folder to write the report into (default ./out); its runs.jsonl is read too")
    report.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="more folders or runs.jsonl files to merge (e.g. shards of a job array)")
    report.add_argument("--readme", type=Path, metavar="FILE", help="also write the headline table and winners into FILE (e.g. README.md), between its '<!-- bench report: start -->' and '<!-- bench report: end -->' lines")
    return parser


def _resolve_weights(option: str, spec, stage) -> tuple[str, str]:
    """(weights for the cell, a note when it fell back to none)."""
    if not STAGES[stage].pretrained or option == "none":
        return "none", ""
    if option == "imagenet":
        if spec.has_imagenet_weights:
            return "imagenet", ""
        return "none", f"{spec.name}: no ImageNet weights exist; running from none"
    path = Path(option)
    if path.is_dir():
        candidate = path / f"{spec.name}.weights.h5"
        if candidate.is_file():
            return str(candidate.resolve()), ""
        return "none", f"{spec.name}: no {candidate} found; running from none (random init)"
    if path.is_file():
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


def plan_cells(args, native_size: int) -> tuple[list[Cell], list[str]]:
    """The cells a ``run`` command asks for, in run order, and notes on weight fallbacks."""
    names = list_backbones() if args.all else args.backbone
    specs = [get_backbone(name) for name in names]
    # Synthetic images are not natural ones: pretrained weights buy nothing there.
    weights_option = args.weights or ("none" if args.data == "synthetic" else "imagenet")
    if weights_option not in ("imagenet", "none") and Path(weights_option).is_file() and len(specs) > 1:
        raise UsageError("--weights FILE fits a single backbone; with several, pass a DIR holding <backbone>.weights.h5")
    cells, notes, checked = [], [], set()
    if min(args.seeds) < (1 if len(args.seeds) == 1 else 0):
        raise UsageError(f"--seeds takes a count of at least 1 or a list of seeds of 0 or more, got {' '.join(map(str, args.seeds))}")
    seeds = range(args.seed, args.seed + args.seeds[0]) if len(args.seeds) == 1 else sorted(set(args.seeds))
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
            weights, note = _resolve_weights(weights_option, spec, stage_name)
            if note and note not in notes:
                notes.append(note)
            if weights != "none" and (spec.name, weights) not in checked:
                _preflight_weights(spec, weights, sizes[0])
                checked.add((spec.name, weights))
            for size in sizes:
                for policy in args.augment or [stage.augment]:
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
                                epochs=args.epochs,
                                batch_size=args.batch_size,
                                unfreeze_layers=args.unfreeze_layers,
                                use_cache=not args.no_cache,
                                val_fraction=args.val_fraction,
                                precision=args.precision,
                                jit_compile=args.jit_compile,
                                cpus=args.cpus_per_cell,
                                gpus=args.gpus_per_cell,
                            )
                        )
    # STAGES lists transfer before finetune, which starts from its transfer's saved head.
    order = {name: i for i, name in enumerate(STAGES)}
    cells.sort(key=lambda c: (names.index(c.backbone), order[c.stage]))
    return cells, notes


def _check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out folder {out}: {error.strerror}; pick a writable folder") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out folder {out} is not writable; pick a writable folder or fix its permissions")


def _validate_data(args):
    """Load (and so check) the data once in the parent; returns its native image size."""
    from bench.data import load_raw, prepare

    raw = load_raw(args.data, args.cache_dir)
    profile = PROFILES[args.profile]
    prepare(raw, args.seed, args.val_fraction, profile.train_images, profile.test_images)
    return int(raw.x_train.shape[1])


def cmd_list(args) -> int:
    from bench import report

    print(report.render_listing([get_backbone(n) for n in list_backbones()], STAGES, POLICIES))
    return 0


def cmd_run(args, argv=None) -> int:
    from bench import report
    from bench.sweep import run_sweep

    if args.all and args.stage:
        raise UsageError("--all runs each backbone's own stages; drop --stage, or name backbones with --backbone")
    native_size = _validate_data(args)
    cells, notes = plan_cells(args, native_size)
    if args.shard:
        cells = shard_cells(cells, *args.shard)
    _check_out_dir(args.out)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"running {len(cells)} cells into {args.out}/ (data: {args.data}, profile: {args.profile})", file=sys.stderr, flush=True)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install ray (or pip install -e '.[ray]')") from None
    result = run_sweep(
        cells, args.out, args.cache_dir, resume=args.resume, timeout_seconds=args.cell_timeout, command=command, executor=args.executor, ray_address=args.ray_address
    )
    if result.write_error:
        return 1
    paths = report.write_report(args.out)
    print(f"report: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if result.failed:
        print(f"{result.failed} of {len(result.records)} cells failed; see the error column in {args.out}/README.md and logs in {args.out}/logs/", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from bench import report

    for path in args.inputs:
        if not path.exists():
            raise UsageError(f"report input {path} does not exist; pass output folders or runs.jsonl files")
    _check_out_dir(args.out)
    if args.readme is not None:
        # Checked before anything is written, so a bad README leaves the report untouched too.
        if not args.readme.is_file():
            raise UsageError(f"--readme {args.readme} does not exist; pass the markdown file whose results section to update")
        try:
            report.splice_readme(args.readme.read_text(), "")
        except ValueError as error:
            raise UsageError(f"--readme {args.readme}: {error}") from None
    paths = report.write_report(args.out, extra_inputs=args.inputs, project_readme=args.readme)
    print(f"report: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from bench import report
    from bench.compare import compare

    for path in (args.old, args.new):
        if not path.exists():
            raise UsageError(f"{path} does not exist; pass two output folders or runs.jsonl files")
    comparison = compare(args.old, args.new, args.fail_threshold, args.accuracy_threshold)
    print(report.render_comparison(comparison))
    return 1 if args.fail_on_regression and comparison.regressions else 0


def cmd_perf(args, argv=None) -> int:
    if args.memory:
        return _perf_memory(args, argv)
    from bench import perf, report

    if len(args.backbone) > 1:
        raise UsageError("perf times one backbone's paths; pass one --backbone, or several with --memory")
    if args.train_images:
        raise UsageError("--train-images sizes the --memory benchmark; add --memory, or drop it")
    args.backbone, args.epochs = args.backbone[0], args.epochs or 10
    spec = get_backbone(args.backbone)
    if not {"transfer", "finetune"} <= set(spec.stages):
        raise UsageError(f"perf times transfer and finetune; {spec.name} runs only {', '.join(spec.stages)}; pick another --backbone")
    _check_out_dir(args.out)
    size = args.image_size or spec.default_image_size
    if size < spec.min_image_size:
        raise UsageError(f"--image-size {size} is below {spec.name}'s minimum of {spec.min_image_size} px; pass {spec.min_image_size} or more")
    args.seed, args.val_fraction, args.profile = 0, 0.1, "perf"
    # Decodes (and caches) the images once, before any timing.
    _validate_data(args)
    comparisons = perf.compare_paths(args.data, spec.name, size, args.epochs, args.augment, args.weights, args.cache_dir, log=sys.stderr)
    text = report.render_perf(comparisons)
    print(text)
    (args.out / "perf.md").write_text(text + "\n")
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
        weights, note = _resolve_weights(args.weights, spec, "transfer")
        if note:
            print(f"note: {note}", file=sys.stderr)
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

    from bench import perf, report

    try:
        growths = perf.memory_growth(args.data, backbones, pools, args.epochs or 3, args.cache_dir, log=sys.stderr)
    except RuntimeError as error:
        print(f"error: {error}; see the cell's log above, fix it, and rerun", file=sys.stderr)
        return 1
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    text = report.render_perf_memory(perf.MemoryBenchmark(growths, parent_peak, command))
    print(text)
    write_text(args.out / "perf-memory.md", text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("run", "perf"):
            return {"run": cmd_run, "perf": cmd_perf}[args.command](args, argv)
        return {"list": cmd_list, "report": cmd_report, "compare": cmd_compare}[args.command](args)
    except (UsageError, BackboneLookupError) as error:
        message = error.args[0] if error.args else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every finished cell is in runs.jsonl; rerun with --resume to continue", file=sys.stderr)
        return 130
