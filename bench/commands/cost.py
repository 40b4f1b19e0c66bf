"""``bench cost``: what each backbone costs without training, each configuration in its own process."""

from __future__ import annotations

import sys

from bench.commands import run_then_report
from bench.options import check_image_sizes
from bench.plan import CostRequest, cost_runtimes, plan_costs
from bench.preflight import check_out_dir


def handle(args, command: str) -> int:
    from bench import publish
    from bench.cost import run_costs
    from bench.render.cost import render_cost_progress

    request = CostRequest.from_args(args)
    check_image_sizes(request.image_size or [], args.allow_large_images)
    plan_costs(request)  # every name and size checked before a runtime's skip line is said
    configs = plan_costs(cost_runtimes(request, sys.stderr))
    # A backbone that trains from scratch runs at an image folder's own size, which can be over the limit.
    check_image_sizes([c.image_size for c in configs if c.image_size == c.native_size], args.allow_large_images, "the images' own size in --data, {size} px,")
    check_out_dir(args.out)
    print(f"measuring {len(configs)} configuration(s), each in its own process, into {args.out}/cost.jsonl (logs in {args.out}/logs/)", file=sys.stderr, flush=True)
    return run_then_report(
        args.out, lambda: run_costs(configs, args.out, command, args.resume, args.cell_timeout, describe=render_cost_progress).records,
        lambda: publish.write_cost_report(args.out), "cost", "measurements", "cost.md",
    )
