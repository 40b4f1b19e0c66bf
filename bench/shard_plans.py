"""A shard's plan, kept beside its records: which grid it was cut from and which cells are its own.

``run --shard I/N`` writes ``OUT/shard-I-of-N.json``; ``report`` reads those of the folders it
merges, so shards planned from different grids (another ``--seeds``, another backbone list)
are not merged without a word: the cells that fall in no merged shard are named.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import files


def plan_path(out: Path, index: int, count: int) -> Path:
    return Path(out) / f"shard-{index}-of-{count}.json"


def write_shard_plan(out: Path, index: int, count: int, fingerprint: str, grid_keys: list[str], shard_keys: list[str]) -> Path:
    """Record shard ``index`` of ``count`` of the grid ``fingerprint`` (all its cell keys) and its own cells.

    Raises:
        OSError: the file could not be written (an earlier one is kept whole).
    """
    plan = {"grid": fingerprint, "shard": [index, count], "grid_cells": sorted(grid_keys), "cells": sorted(shard_keys)}
    return files.write_text(plan_path(out, index, count), json.dumps(plan, indent=1) + "\n")


def _plans(folder: Path) -> list[dict]:
    plans = []
    for path in sorted(Path(folder).glob("shard-*-of-*.json")):
        try:
            plan = json.loads(path.read_text())
            plans.append({"grid": str(plan["grid"]), "grid_cells": list(plan["grid_cells"]), "cells": list(plan["cells"])})
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged plan costs this check, never the report
    return plans


def shard_warnings(folders: list[Path], shown: int = 10) -> list[str]:
    """Lines to print when the shards found in ``folders`` were planned from different grids.

    Names the cells that belong to a merged shard's grid but to none of the merged shards.
    """
    plans = [plan for folder in folders for plan in _plans(folder)]
    grids = sorted({plan["grid"] for plan in plans})
    if len(grids) < 2:
        return []
    planned = {key for plan in plans for key in plan["grid_cells"]}
    merged = {key for plan in plans for key in plan["cells"]}
    missing = sorted(planned - merged)
    head = f"warning: these shards were planned from {len(grids)} different grids ({', '.join(grids)})"
    if not missing:
        return [f"{head}; every planned cell is in a merged shard, but the shards' cells were chosen from different grids"]
    lines = [f"{head}; {len(missing)} cell(s) fall in no merged shard; run them, e.g. replan every shard from one grid:"]
    lines += [f"  missing: {key}" for key in missing[:shown]]
    if len(missing) > shown:
        lines.append(f"  ... and {len(missing) - shown} more")
    return lines
