"""``bench tune``: a study per (backbone, stage), every one with the same budget; then the report."""

from __future__ import annotations

import importlib.util
import sys

from bench.errors import UsageError
from bench.plan import RunRequest, plan_cells
from bench.preflight import check_out_dir, preflight_cells, validate_data


def handle(args, command: str) -> int:
    from bench import quiet
    from bench.commands.report import write_report
    from bench.executors import make_executor
    from bench.grid import RunOptions
    from bench.isolation import LOGS_DIR
    from bench.search_space import tunable
    from bench.stages import PROFILES
    from bench.study import open_studies, plan_studies, run_study

    if args.all and args.stage:
        raise UsageError("--all tunes each backbone's own stages; drop --stage, or name backbones with --backbone")
    untunable = [stage for stage in args.stage or [] if not tunable(stage)]
    if untunable:
        raise UsageError(f"stage {untunable[0]} has no search space (it chooses what it needs on validation itself); tune another stage")
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("--executor ray needs Ray: pip install ray (or pip install -e '.[ray]')")
    request = RunRequest(all=args.all, backbone=tuple(args.backbone or ()) or None, stage=tuple(args.stage or ()) or None, data=args.data, profile=args.profile, weights=args.weights, seed=args.seed)
    # Names, stages and weights first (on a stand-in native size), before any data is read.
    planned, lines = plan_cells(request, native_size=32)
    if not any(tunable(cell.stage) for cell in planned):
        raise UsageError("nothing to tune: " + ("; ".join(lines) or "no stage of these backbones has a search space"))
    check_out_dir(args.out, create=False)
    with quiet.scratch_file() as tf_log:
        with quiet.native_output_to(tf_log):
            # A trial never loads the test split; neither does this check.
            native_size = validate_data(request.data, args.cache_dir, request.seed, 0.1, request.profile, with_test=False)
            cells, lines = plan_cells(request, native_size)
            preflight_cells(cells)
        check_out_dir(args.out)
        quiet.keep_log(tf_log, args.out / LOGS_DIR / "parent.log", command)
    # Equal budget: one trial count and one epoch cap for every study.
    cap = min(args.max_epochs, PROFILES[args.profile].max_epochs or args.max_epochs)
    plans, notes = plan_studies(cells, args.trials, cap, args.seed)
    lines += notes
    open_studies(plans, args.out)
    for line in lines:
        print(line, file=sys.stderr)
    print(f"tuning {len(plans)} studies into {args.out}/, {args.trials} finished trials each, at most {cap} epochs a trial (data: {request.data})", file=sys.stderr, flush=True)
    runner = make_executor(args.executor, args.out, args.cache_dir, args.ray_address)
    options = RunOptions(timeout_seconds=args.cell_timeout)
    results = [run_study(plan, args.out, runner, options, command, sys.stderr) for plan in plans]
    for result in results:
        chosen = f"recipe: {result.recipe}" if result.recipe else "no recipe written"
        print(f"{result.name}: {result.finished} finished trials ({result.pruned} pruned); {chosen}", file=sys.stderr)
    paths = write_report(args.out)
    if paths is None:
        return 1
    print(f"report: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    failed = [result for result in results if result.failed is not None]
    for result in failed:
        log = f"{args.out}/logs/{result.failed.key.replace('/', '__')}.log"
        line = f"error: {result.write_error}" if result.write_error else f"{result.name}: trial {result.failed.trial} failed; see {log}, fix it and rerun: the study resumes"
        print(line, file=sys.stderr)
    return 1 if failed else 0
