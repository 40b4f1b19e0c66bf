"""``bench perf``: the cached and uncached training paths, timed side by side in one process.

Both paths run the same cell (same data, seed, epochs, policy) with a cold activation
cache, so the cached path pays for running the frozen part of the network once per
variant. Speed-up = uncached training seconds / (cached caching + training seconds).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from bench.cell import run_cell
from bench.grid import Cell
from bench.records import Record


@dataclasses.dataclass(frozen=True)
class PathComparison:
    stage: str
    uncached: Record
    cached: Record

    @property
    def uncached_seconds(self) -> float:
        return self.uncached.train_seconds

    @property
    def cached_seconds(self) -> float:
        return self.cached.cache_seconds + self.cached.train_seconds

    @property
    def speedup(self) -> float:
        return self.uncached_seconds / self.cached_seconds


def compare_paths(data: str, backbone: str, image_size: int, epochs: int, augment: str, weights: str, cache_dir: Path, log=sys.stderr) -> list[PathComparison]:
    """Run transfer then finetune, each uncached and cached, cold cache; returns the pairs."""
    comparisons = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as scratch:
        scratch = Path(scratch)
        for stage in ("transfer", "finetune"):
            pair = {}
            for use_cache in (False, True):
                cell = Cell(backbone, stage, image_size, augment, 0, data=data, profile="perf", weights=weights, epochs=epochs, use_cache=use_cache)
                print(f"perf: {stage} {'cached' if use_cache else 'uncached'} ({cell.key}) ...", file=log, flush=True)
                # A fresh activation cache per run: the cached path pays for its own extraction
                # (the decoded dataset is shared: both paths read the same images).
                record = run_cell(cell, scratch / "out", cache_dir, features_dir=scratch / f"features-{stage}-{use_cache}")
                if record.status != "ok":
                    raise RuntimeError(f"perf cell {cell.key} failed: {record.error}")
                pair[use_cache] = record
            comparisons.append(PathComparison(stage, uncached=pair[False], cached=pair[True]))
    return comparisons
