"""``bench cost``: what each backbone costs without training, each configuration in its own process."""

from __future__ import annotations

import sys

from bench.options import check_image_sizes
from bench.plan import CostRequest, plan_costs
from bench.preflight import check_out_dir


def handle(args, command: str) -> int:
    from bench import publish
    from bench.cost import run_costs
    from bench.render.cost import render_cost_progress

    request = CostRequest.from_args(args)
    check_image_sizes(request.image_size or [], args.allow_large_images)
    configs = plan_costs(request)
    # A backbone that trains from scratch runs at an image folder's own size, which can be over the limit.
    check_image_sizes([c.image_size for c in configs if c.image_size == c.native_size], args.allow_large_images, "the images' own size in --data, {size} px,")
    check_out_dir(args.out)
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
