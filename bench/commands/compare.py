"""``bench compare OLD NEW``: per-cell deltas, regressions flagged beyond the noise."""

from __future__ import annotations

from bench.errors import UsageError


def handle(args, command: str) -> int:
    from bench.compare import compare
    from bench.render.compare import render_comparison

    for path in (args.old, args.new):
        if not path.exists():
            raise UsageError(f"{path} does not exist; pass two output folders or runs.jsonl files")
    comparison = compare(args.old, args.new, args.fail_threshold, args.accuracy_threshold)
    print(render_comparison(comparison))
    return 1 if args.fail_on_regression and comparison.failures else 0
