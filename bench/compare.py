"""``bench compare OLD NEW``: per-cell deltas, with regressions flagged only beyond the noise.

Accuracy regresses when the new 95 % interval lies wholly below the old one (with a single
seed on either side there is no interval, so a drop must exceed ``accuracy_threshold_points``).
Throughput and memory regress past ``fail_threshold_percent``, like pytest-benchmark's
``--benchmark-compare-fail``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from bench.stats import GROUP_COLUMNS, load, records_frame, summarize

ENVIRONMENT_COLUMNS = ("cpu", "gpu", "tf_version", "keras_version")
# Cells match on what was run, not on where: weights, data and profile are part of it.
MATCH_COLUMNS = GROUP_COLUMNS


@dataclasses.dataclass(frozen=True)
class CellDelta:
    cell: str
    old_accuracy: float
    new_accuracy: float
    accuracy_regressed: bool
    old_images_per_second: float
    new_images_per_second: float
    throughput_regressed: bool
    old_peak_rss_mb: float
    new_peak_rss_mb: float
    memory_regressed: bool

    @property
    def regressed(self) -> bool:
        return self.accuracy_regressed or self.throughput_regressed or self.memory_regressed


@dataclasses.dataclass(frozen=True)
class Comparison:
    deltas: list[CellDelta]
    only_old: list[str]
    only_new: list[str]
    environment_notes: list[str]  # how the two sides' machines or software differ

    @property
    def regressions(self) -> list[CellDelta]:
        return [d for d in self.deltas if d.regressed]


def _environments(frame: pd.DataFrame) -> dict[str, set[str]]:
    return {column: {str(v) for v in frame[column].dropna() if str(v)} for column in ENVIRONMENT_COLUMNS}


def compare(old: Path, new: Path, fail_threshold_percent: float = 5.0, accuracy_threshold_points: float = 1.0) -> Comparison:
    """Compare two output folders or ``runs.jsonl`` files cell by cell."""
    old_frame, new_frame = (records_frame(load([path])[0]) for path in (old, new))
    old_summary, new_summary = summarize(old_frame), summarize(new_frame)
    name = lambda row: "/".join(str(row[c]) for c in MATCH_COLUMNS)  # noqa: E731
    old_rows = {name(r): r for _, r in old_summary.iterrows()} if not old_summary.empty else {}
    new_rows = {name(r): r for _, r in new_summary.iterrows()} if not new_summary.empty else {}
    deltas = []
    for cell in (c for c in old_rows if c in new_rows):
        a, b = old_rows[cell], new_rows[cell]
        if a.seeds > 1 and b.seeds > 1:
            accuracy_regressed = b.test_accuracy + b.test_accuracy_ci95 < a.test_accuracy - a.test_accuracy_ci95
        else:
            accuracy_regressed = (a.test_accuracy - b.test_accuracy) * 100 > accuracy_threshold_points
        slower = b.infer_images_per_second < a.infer_images_per_second * (1 - fail_threshold_percent / 100)
        # Outside the old min-max range too: one noisy repeat must not flag a regression.
        slower = slower and b.infer_images_per_second_max < a.infer_images_per_second_min
        bigger = b.peak_rss_mb > a.peak_rss_mb * (1 + fail_threshold_percent / 100)
        deltas.append(
            CellDelta(cell, a.test_accuracy, b.test_accuracy, bool(accuracy_regressed), a.infer_images_per_second, b.infer_images_per_second, bool(slower), a.peak_rss_mb, b.peak_rss_mb, bool(bigger))
        )
    old_env, new_env = _environments(old_frame), _environments(new_frame)
    notes = [f"{column}: {', '.join(sorted(old_env[column])) or '?'} -> {', '.join(sorted(new_env[column])) or '?'}" for column in ENVIRONMENT_COLUMNS if old_env[column] != new_env[column]]
    return Comparison(deltas, sorted(set(old_rows) - set(new_rows)), sorted(set(new_rows) - set(old_rows)), notes)
