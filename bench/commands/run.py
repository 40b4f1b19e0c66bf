"""``bench run``: plan the grid, check everything cheap, run the cells, write the report."""

from __future__ import annotations

import importlib.util
import sys

from bench.commands.report import write_report
from bench.errors import UsageError
from bench.options import check_image_sizes
from bench.plan import RunRequest, grid_fingerprint, plan_cells, shard_cells
from bench.preflight import check_out_dir, preflight_cells, validate_data


def handle(args, command: str) -> int:
    from bench import quiet
    from bench.grid import RunOptions
    from bench.isolation import LOGS_DIR
    from bench.sweep import run_sweep

    if args.all and args.stage:
        raise UsageError("--all runs each backbone's own stages; drop --stage, or name backbones with --backbone")
    request = RunRequest.from_args(args)
    # Cheap checks first: names, stages, sizes, seeds, weights paths (planned on a stand-in
    # native size) and the output folder, before any download, decode or model build.
    check_image_sizes(request.image_size or [], args.allow_large_images)
    planned, lines = plan_cells(request, native_size=32)
    skips = [line for line in lines if line.startswith("skipped ")]
    if not planned and skips:
        raise UsageError("every cell was skipped: " + "; ".join(skips))
    check_out_dir(args.out, create=False)
    if args.executor == "ray":
        # Found, not imported: Ray reads its node-address setting when first imported (bench.ray_executor).
        if importlib.util.find_spec("ray") is None:
            raise UsageError("--executor ray needs Ray: pip install ray (or pip install -e '.[ray]')")
    with quiet.scratch_file() as tf_log:
        # TensorFlow's own lines (the CIFAR-10 download, the weights check) go to OUT/logs/,
        # kept only once every check passed: bad input writes nothing.
        with quiet.native_output_to(tf_log):
            healed: list[str] = []
            native_size = validate_data(request.data, args.cache_dir, request.seed, request.val_fraction, request.profile, healed)
            cells, lines = plan_cells(request, native_size)
            # A stage at the images' own size (baseline) can be over the limit without --image-size.
            check_image_sizes([c.image_size for c in cells if c.image_size == native_size], args.allow_large_images, "the images' own size in --data, {size} px,")
            preflight_cells(cells)
        check_out_dir(args.out)
        quiet.keep_log(tf_log, args.out / LOGS_DIR / "parent.log", command)
    if args.shard:
        cells = _shard(args.out, cells, *args.shard)
        if cells is None:
            return 1
    # Lines for the user: damaged cache entries healed while loading (their native-output
    # block sent them to the log), weights skips and setting notes.
    for line in [f"note: {message}" for message in healed] + lines:
        print(line, file=sys.stderr)
    print(f"running {len(cells)} cells into {args.out}/ (data: {request.data}, profile: {request.profile})", file=sys.stderr, flush=True)
    # How to execute the cells, apart from what they are: none of it enters a key.
    options = RunOptions(cpus=args.cpus_per_cell, gpus=args.gpus_per_cell, timeout_seconds=args.cell_timeout)
    result = run_sweep(cells, args.out, args.cache_dir, resume=args.resume, options=options, command=command, executor=args.executor, ray_address=args.ray_address)
    if result.write_error:
        return 1
    paths = write_report(args.out)
    if paths is None:
        return 1
    print(f"report: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if result.failed:
        print(f"{result.failed} of {len(result.records)} cells failed; see the error column in {args.out}/README.md and logs in {args.out}/logs/", file=sys.stderr)
        return 1
    return 0


def _shard(out, cells, index: int, count: int):
    """Shard ``index`` of ``count`` of ``cells``, its plan kept in OUT (see ``bench.shard_plans``); None when that cannot be written."""
    from bench.shard_plans import write_shard_plan

    mine = shard_cells(cells, index, count)
    try:
        write_shard_plan(out, index, count, grid_fingerprint(cells), [c.key for c in cells], [c.key for c in mine])
    except OSError as error:
        print(f"error: could not write {error.filename or out}: {error.strerror or error}; nothing ran; free space or pick another --out", file=sys.stderr)
        return None
    return mine
