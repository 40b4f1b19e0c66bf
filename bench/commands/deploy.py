"""``bench deploy``: the trained cells of an output folder, each converted to each runtime, checked
against TensorFlow on its own test split and timed there."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.commands import run_then_report
from bench.errors import UsageError
from bench.preflight import check_out_dir


def deployable_cells(out: Path, data: str | None, backbones=None, stages=None) -> tuple[list, list[str]]:
    """(the ok cells of ``out/runs.jsonl`` with a saved classifier, trained on the data ``data`` names, lines about the others).

    Args:
        data: where the cells' images are (``--data``); ``None``: CIFAR-10 or the synthetic set, as each cell's record says.
        backbones, stages: only these, where given.
    """
    from bench.grid import dataset_fingerprint
    from bench.loading import load

    records, _ = load([out])
    picked = [r for r in records if r.status == "ok" and (not backbones or r.backbone in backbones) and (not stages or r.stage in stages)]
    unsaved = [r for r in picked if not r.model_file or not (out / r.model_file).is_file()]
    fingerprint = dataset_fingerprint(data) if data else None
    cells, elsewhere = [], []
    for record in (r for r in picked if r not in unsaved):
        trained_on = record.identity.get("dataset_id")
        if trained_on == (fingerprint or (trained_on if trained_on in ("cifar10", "synthetic") else None)):
            cells.append(record)
        else:
            elsewhere.append(record)
    lines = []
    if unsaved:
        lines.append(f"skipped {len(unsaved)} cell(s) without a saved classifier in {out}/models/ (trained before cells saved it, or moved): rerun them with `bench run` to deploy them")
    for record in elsewhere:
        lines.append(f"skipped {record.key}: trained on {record.dataset}, which --data {data or '(not given)'} is not; pass --data with the images it trained on")
    return cells, lines


def handle(args, command: str) -> int:
    from bench import publish, runtimes
    from bench.deploy import Deployment, run_deploys
    from bench.render.deploy import render_deploy_progress

    if not (args.out / "runs.jsonl").is_file():
        raise UsageError(f"{args.out}/runs.jsonl does not exist; pass the --out folder of a `bench run` whose cells to deploy")
    if args.data not in (None, "cifar10", "synthetic") and not Path(args.data).is_dir():
        raise UsageError(f"--data {args.data!r} is neither cifar10, synthetic nor a directory; pass the images the cells trained on")
    check_out_dir(args.out)
    names = runtimes.check_names(args.runtime or list(runtimes.RUNTIMES))
    cells, lines = deployable_cells(args.out, args.data, args.backbone, args.stage)
    for line in lines:
        print(line, file=sys.stderr)
    if not cells:
        raise UsageError(f"no trained cell in {args.out} can be deployed{' (see above)' if lines else ''}; train cells with `bench run --out {args.out}` first")
    names = runtimes.installed(names, sys.stderr)
    print(f"deploying {len(cells)} cell(s) to {', '.join(names)} ({runtimes.REFERENCE} is the reference), each step in its own process, into {args.out}/deploy.jsonl", file=sys.stderr, flush=True)
    where = Deployment(args.out, args.data, args.cache_dir, command, args.cell_timeout)
    return run_then_report(
        args.out, lambda: run_deploys(cells, names, where, args.resume, describe=render_deploy_progress),
        lambda: publish.write_deploy_report(args.out)[0], "deploy", "deployments", "deploy.md",
    )
