"""``bench compare OLD NEW``: per-cell deltas, with regressions flagged only beyond the noise.

Cells match on their whole identity but the seed (``bench.grid``): a cell run with other
settings is another cell, never a match. Accuracy regresses when the new 95 % interval lies
wholly below the old one (with a single seed on either side there is no interval, so a drop
must exceed ``accuracy_threshold_points``). Throughput and memory regress past
``fail_threshold_percent``, like pytest-benchmark's ``--benchmark-compare-fail``. A cell
that failed in NEW where OLD was ok, or that NEW lacks, fails the comparison too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from bench.loading import load_apart
from bench.stats import records_frame, summarize

ENVIRONMENT_COLUMNS = ("cpu", "gpu", "tf_version", "keras_version")


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
    only_old: list[str]  # ok in OLD, no record at all in NEW
    only_new: list[str]
    failed_new: list[str]  # ok in OLD, only failed records in NEW
    environment_notes: list[str]  # how the two sides' machines or software differ

    @property
    def regressions(self) -> list[CellDelta]:
        return [d for d in self.deltas if d.regressed]

    @property
    def failures(self) -> list[str]:
        """Why NEW does not pass against OLD, one reason per kind; empty when it does."""
        reasons = []
        if self.regressions:
            reasons.append(f"{len(self.regressions)} regression(s) beyond the noise")
        if self.failed_new:
            reasons.append(f"{len(self.failed_new)} cell(s) failed in NEW where OLD was ok")
        if self.only_old:
            reasons.append(f"{len(self.only_old)} cell(s) of OLD missing from NEW")
        if not self.deltas:
            reasons.append("no cell of OLD matches a cell of NEW (same identity apart from the seed)")
        return reasons


def cell_label(row) -> str:
    """A configuration's readable name: its label columns, then its group digest."""
    return f"{row['backbone']}/{row['stage']}/{row['image_size']}px/{row['augment']}/{row['dataset']}/{row['profile']}/{row['group']}"


def _environments(frame: pd.DataFrame) -> dict[str, set[str]]:
    return {column: {str(v) for v in frame[column].dropna() if str(v)} for column in ENVIRONMENT_COLUMNS}


def compare(old: Path, new: Path, fail_threshold_percent: float = 5.0, accuracy_threshold_points: float = 1.0) -> Comparison:
    """Compare two output folders or ``runs.jsonl`` files cell by cell."""
    old_frame, new_frame = (records_frame(records) for records in load_apart([old, new]))
    old_summary, new_summary = summarize(old_frame), summarize(new_frame)
    old_rows = {r["group"]: r for _, r in old_summary.iterrows()} if not old_summary.empty else {}
    new_rows = {r["group"]: r for _, r in new_summary.iterrows()} if not new_summary.empty else {}
    new_groups = set(new_frame["group"])
    deltas = []
    for group in (g for g in old_rows if g in new_rows):
        a, b = old_rows[group], new_rows[group]
        if a.seeds > 1 and b.seeds > 1:
            accuracy_regressed = b.test_accuracy + b.test_accuracy_ci95 < a.test_accuracy - a.test_accuracy_ci95
        else:
            accuracy_regressed = (a.test_accuracy - b.test_accuracy) * 100 > accuracy_threshold_points
        slower = b.infer_images_per_second < a.infer_images_per_second * (1 - fail_threshold_percent / 100)
        # Outside the old min-max range too: one noisy repeat must not flag a regression.
        slower = slower and b.infer_images_per_second_max < a.infer_images_per_second_min
        bigger = b.peak_rss_mb > a.peak_rss_mb * (1 + fail_threshold_percent / 100)
        deltas.append(
            CellDelta(cell_label(a), a.test_accuracy, b.test_accuracy, bool(accuracy_regressed), a.infer_images_per_second, b.infer_images_per_second, bool(slower), a.peak_rss_mb, b.peak_rss_mb, bool(bigger))
        )
    old_env, new_env = _environments(old_frame), _environments(new_frame)
    notes = [f"{column}: {', '.join(sorted(old_env[column])) or '?'} -> {', '.join(sorted(new_env[column])) or '?'}" for column in ENVIRONMENT_COLUMNS if old_env[column] != new_env[column]]
    return Comparison(
        deltas,
        only_old=sorted(cell_label(r) for g, r in old_rows.items() if g not in new_groups),
        only_new=sorted(cell_label(r) for g, r in new_rows.items() if g not in old_rows),
        failed_new=sorted(cell_label(r) for g, r in old_rows.items() if g in new_groups and g not in new_rows),
        environment_notes=notes,
    )
