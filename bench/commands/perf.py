"""``bench perf``: cached against uncached training paths; with ``--memory``, memory against training-set size."""

from __future__ import annotations

import sys

from backbones import get_backbone
from bench.errors import UsageError
from bench.options import check_image_sizes
from bench.plan import resolve_weights
from bench.preflight import check_min_image_sizes, check_out_dir, check_weights_file_fits, validate_data

# `perf --memory`'s runs of each loader: single runs on this shared 2-core machine spread by up
# to 63 %, and three could not resolve the 10 % target (results/perf-memory-5k-20k).
MEMORY_TIMING_RUNS = 5
# `perf --memory`'s training-set sizes when --train-images is left out.
MEMORY_TRAIN_IMAGES = (5000, 20000)
DEFAULT_BACKBONE = "mobilenet_v2"


def handle(args, command: str) -> int:
    # Both modes build the backbones at this side: the same bound as `run`.
    check_image_sizes([args.image_size] if args.image_size else [], args.allow_large_images)
    backbones = args.backbone or [DEFAULT_BACKBONE]
    if args.memory:
        return _perf_memory(args, backbones, command)
    from bench import publish, quiet
    from bench.isolation import LOGS_DIR
    from bench.render.perf import render_perf

    if len(backbones) > 1:
        raise UsageError("perf times one backbone's paths; pass one --backbone, or several with --memory")
    if args.train_images:
        raise UsageError("--train-images sizes the --memory benchmark; add --memory, or drop it")
    if args.timing_runs:
        raise UsageError("--timing-runs repeats the --memory benchmark's timed cells; add --memory, or drop it")
    spec, epochs = get_backbone(backbones[0]), args.epochs or 10
    if not {"transfer", "finetune"} <= set(spec.stages):
        raise UsageError(f"perf times transfer and finetune; {spec.name} runs only {', '.join(spec.stages)}; pick another --backbone")
    check_out_dir(args.out)
    size = args.image_size or spec.default_image_size
    check_min_image_sizes(spec, [size])
    (args.out / LOGS_DIR).mkdir(exist_ok=True)
    # The cells run in this process: TensorFlow's lines and the cells' own go to OUT/logs/perf.log.
    with open(args.out / LOGS_DIR / "perf.log", "ab") as tf_log, quiet.native_output_to(tf_log, stdout=True) as terminal:
        from bench import perf  # imports TensorFlow

        # Decodes (and caches) the images once, before any timing.
        validate_data(args.data, args.cache_dir, 0, 0.1, "perf")
        comparisons = perf.compare_paths(args.data, spec.name, size, epochs, args.augment, args.weights, args.cache_dir, log=terminal)
    text = render_perf(comparisons)
    print(text)
    try:
        publish.write_markdown(args.out / "perf.md", text)
    except OSError as error:
        print(f"error: could not write {args.out / 'perf.md'}: {error.strerror or error}; the ratios are printed above; free space and rerun", file=sys.stderr)
        return 1
    return 0


def _perf_memory(args, names: list[str], command: str) -> int:
    """``bench perf --memory``: checks, decoding the data once here (its peak measured), then the cells."""
    from bench import memory
    from bench.data import load_raw, pool_images_for, prepare

    specs = [get_backbone(name) for name in names]
    for spec in specs:
        if not {"transfer", "finetune"} <= set(spec.stages):
            raise UsageError(f"perf --memory runs transfer and finetune; {spec.name} runs only {', '.join(spec.stages)}; pick another --backbone")
    for spec in specs:
        check_min_image_sizes(spec, [args.image_size or spec.default_image_size])
    sizes = sorted(set(args.train_images or MEMORY_TRAIN_IMAGES))
    if len(sizes) < 2:
        raise UsageError(f"--train-images needs two sizes or more to measure growth, got {sizes[0]}; pass e.g. --train-images 5000 20000")
    check_weights_file_fits(args.weights, specs)
    backbones = []
    for spec in specs:
        weights, reason = resolve_weights(args.weights, spec, "transfer")
        if weights is None:
            # Memory and time do not depend on the weights' values: random ones measure the same.
            weights = "none"
            print(f"note: {spec.name}: {reason.split(';')[0]}; measuring with random weights", file=sys.stderr)
        backbones.append((spec.name, args.image_size or spec.default_image_size, weights))
    check_out_dir(args.out)
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
    text = render_perf_memory(perf.MemoryBenchmark(growths, parent_peak, command))
    print(text)
    publish.write_markdown(args.out / "perf-memory.md", text)
    return 0
