"""``bench perf``: the cached and uncached training paths, timed side by side in one process;
``bench perf --memory``: how each cell's memory grows with the training set.

Both paths run the same cell (same data, seed, epochs, policy) with a cold activation
cache, so the cached path pays for running the frozen part of the network once per
variant. Speed-up = uncached training seconds / (cached caching + training seconds).

The memory benchmark runs each backbone's transfer and finetune cells at each training-set
size, each cell in its own process (so each peak is that cell's alone), then the same cells
at the largest size with the in-memory loader the per-batch one replaced, for its time. One
run per loader cannot resolve 10 % on a shared machine (two runs of the same command gave
1.31x and 1.09x), so the two loaders run alternately several times, all with a warm cache, and
the medians are compared.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

from bench.grid import Cell, RunOptions
from bench.isolation import run_isolated
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
    from bench.cell import run_cell

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


@dataclasses.dataclass(frozen=True)
class MemoryGrowth:
    """One backbone's stage at every training-set size (per-batch loader), and its timed runs at
    the largest size with each loader."""

    backbone: str
    stage: str
    batched: tuple[Record, ...]  # by training-set size, smallest first
    # The timed runs, all at the largest size with a warm cache: the size run itself is not
    # one, since its transfer cell extracted the cache in the same process just before.
    timed_batched: tuple[Record, ...]  # per-batch loader
    in_memory: tuple[Record, ...]  # in-memory loader, run alternately with those

    @property
    def smallest(self) -> Record:
        return self.batched[0]

    @property
    def largest(self) -> Record:
        return self.batched[-1]

    @property
    def growth(self) -> float:
        """Peak anonymous memory at the largest size over that at the smallest."""
        return self.largest.peak_anon_mb / self.smallest.peak_anon_mb

    @property
    def batched_median_seconds(self) -> float:
        return statistics.median(r.train_seconds for r in self.timed_batched)

    @property
    def in_memory_median_seconds(self) -> float:
        return statistics.median(r.train_seconds for r in self.in_memory)

    @property
    def time_ratio(self) -> float:
        """Median training seconds of the per-batch loader over the in-memory one's, at the largest size."""
        return self.batched_median_seconds / self.in_memory_median_seconds


@dataclasses.dataclass(frozen=True)
class MemoryBenchmark:
    growths: list[MemoryGrowth]
    parent_peak_anon_mb: float | None  # this process, decoding and checking the data
    command: str


def memory_plan(pool_sizes: list[int], timing_runs: int) -> list[tuple[int, str]]:
    """The (pool size, loader) of each run, in order: the per-batch loader at every size, then at
    the largest the in-memory and per-batch loaders alternately, ``timing_runs`` runs of each,
    so slow spells of a shared machine fall on both."""
    largest = max(pool_sizes)
    return [(pool, "batched") for pool in sorted(pool_sizes)] + [(largest, loader) for _ in range(timing_runs) for loader in ("in-memory", "batched")]


def memory_growth(
    data: str,
    backbones: list[tuple[str, int, str]],
    pool_sizes: list[int],
    epochs: int,
    cache_dir: Path,
    timing_runs: int,
    timeout_seconds: float | None = None,
    log=sys.stderr,
) -> list[MemoryGrowth]:
    """Run every ``(backbone, image size, weights)``'s transfer and finetune cells at each pool size (before
    the validation split), each in its own process, with a fresh activation cache; then both at
    the largest size with each loader in turn (``memory_plan``). A failed cell raises ``RuntimeError``."""
    growths = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-memory-") as scratch:
        scratch = Path(scratch)
        # A fresh activation cache: every size's transfer cell extracts, as a first run would.
        features = scratch / "cache"
        features.mkdir()
        # The decoded dataset is shared: the parent decoded it once before any cell.
        (Path(cache_dir) / "datasets").mkdir(parents=True, exist_ok=True)
        (features / "datasets").symlink_to(Path(cache_dir).resolve() / "datasets", target_is_directory=True)
        for backbone, image_size, weights in backbones:
            runs: dict[tuple[str, str], list[Record]] = {}
            for pool, loader in memory_plan(pool_sizes, timing_runs):
                for stage in ("transfer", "finetune"):
                    cell = Cell(backbone, stage, image_size, "none", 0, data=data, profile="full", weights=weights, epochs=epochs, train_images=pool)
                    # The loader is this benchmark's own option: the same cell, fed two ways.
                    print(f"perf --memory: {cell.key} ({loader} loader) ...", file=log, flush=True)
                    record = run_isolated(cell, scratch / "out", features, RunOptions(timeout_seconds=timeout_seconds, loader=loader))
                    if record.status != "ok":
                        raise RuntimeError(f"perf cell {cell.key} failed: {(record.error or '').splitlines()[0] if record.error else record.failure}")
                    print(f"    {record.train_images} training images: peak anon {record.peak_anon_mb or 0:,.0f} MB, train {record.train_seconds:.1f} s", file=log, flush=True)
                    runs.setdefault((stage, loader), []).append(record)
            for stage in ("transfer", "finetune"):
                batched = runs[(stage, "batched")]
                sizes, timed = tuple(batched[: len(pool_sizes)]), tuple(batched[len(pool_sizes):])
                growths.append(MemoryGrowth(backbone, stage, sizes, timed, tuple(runs[(stage, "in-memory")])))
    return growths
