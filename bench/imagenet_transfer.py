"""Does the better ImageNet model transfer better? Kornblith et al. (2019)'s question over a
report's records: per stage, each pretrained backbone's CIFAR-10 test accuracy beside its
published ImageNet top-1, and their correlation, computed as Kornblith computes it (Pearson r
on the log-odds of both accuracies) with the rank correlation beside it. Nothing here formats text.

Two kinds of uncertainty, kept apart: the bootstrap over seeds says how much the seeds' noise
moves r for these networks; the interval over networks (Fisher's z) and the exact permutation
p of the rank correlation say what so few networks can show at all (with four, a perfect rank
order still has a one-sided p of 1/24).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from bench.stats import tuned_rows

# The settings Kornblith et al. compare, in their order: fixed features with a linear
# classifier, fixed features with a trained head, fine-tuning.
STAGES = ("linear", "transfer", "finetune")
# Resamples of the seed bootstrap; seeded, so a report is byte-stable.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# The exact permutation test enumerates n! orderings: up to 8 networks (40,320).
PERMUTATION_MAX_NETWORKS = 8


def imagenet_top1(backbone: str) -> float | None:
    """The backbone's published ImageNet top-1 in percent, from the registry (None for a
    backbone without pretrained weights or not registered here)."""
    from backbones.registry import find_pretrained

    pretrained = find_pretrained(backbone)
    return None if pretrained is None else pretrained.top1


def points(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (stage, backbone) with pretrained weights and a published top-1: the summary
    row that stands for it, with ``imagenet_top1``.

    Which row, where a backbone has several at a stage: the stage's most common input size
    (the size most backbones ran at, so that every point has the same one), then each
    backbone's tuned recipe where every backbone at the stage has one (the fair comparison),
    else each one's default recipe, then the row with the most seeds. Never the most accurate:
    that would pick the noise.
    """
    columns = ["stage", "backbone", "imagenet_top1", "image_size", "seeds", "test_accuracy", "test_accuracy_ci95", "group", "tuned"]
    if summary.empty:
        return pd.DataFrame(columns=columns)
    rows = summary[summary["stage"].isin(STAGES) & (summary["weights"] != "none")]
    rows = rows.assign(imagenet_top1=rows["backbone"].map(imagenet_top1))
    rows = rows[rows["imagenet_top1"].notna()]
    rows = rows.assign(tuned=tuned_rows(rows))
    chosen = []
    for stage in STAGES:
        at_stage = rows[rows["stage"] == stage]
        if at_stage.empty:
            continue
        backbones_per_size = at_stage.groupby("image_size")["backbone"].nunique()
        size = backbones_per_size[backbones_per_size == backbones_per_size.max()].index.min()
        at_size = at_stage[at_stage["image_size"] == size]
        # Tuned rows only where every backbone has one: a tuned row beside default ones would
        # compare recipes, not backbones.
        all_tuned = bool(at_size.groupby("backbone")["tuned"].any().all())
        at_size = at_size.assign(_preferred=at_size["tuned"] == all_tuned)
        for _, candidates in at_size.groupby("backbone", sort=True):
            chosen.append(candidates.sort_values(["_preferred", "seeds"], ascending=False, kind="stable").iloc[0])
    return pd.DataFrame(chosen, columns=rows.columns)[columns].reset_index(drop=True) if chosen else pd.DataFrame(columns=columns)


def log_odds(percent_or_fraction, scale: float = 1.0):
    """logit(p) of accuracies given as fractions of ``scale`` (100 for percentages)."""
    p = np.asarray(percent_or_fraction, dtype=float) / scale
    return np.log(p / (1 - p))


def pearson(x, y) -> float:
    """Pearson's r (NaN where either side is constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / denominator) if denominator > 0 else math.nan


def spearman(x, y) -> float:
    """Spearman's rank correlation: Pearson's r of the ranks (ties share their mean rank)."""
    return pearson(pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy())


def permutation_p(x, y) -> float | None:
    """The exact one-sided p of the rank correlation: the share of all orderings of ``y``
    whose rank correlation with ``x`` is at least the observed one (None above
    ``PERMUTATION_MAX_NETWORKS``, or below 3 networks)."""
    n = len(x)
    if not 3 <= n <= PERMUTATION_MAX_NETWORKS:
        return None
    observed = spearman(x, y)
    y = list(y)
    at_least = sum(spearman(x, order) >= observed - 1e-12 for order in itertools.permutations(y))
    return at_least / math.factorial(n)


def fisher_interval(r: float, networks: int) -> tuple[float, float] | None:
    """The 95 % interval of r over the choice of networks (Fisher's z; None below 4 networks)."""
    if networks < 4 or math.isnan(r) or abs(r) >= 1:
        return None
    z, half = math.atanh(r), 1.96 / math.sqrt(networks - 3)
    return math.tanh(z - half), math.tanh(z + half)


def seed_bootstrap(top1: np.ndarray, seed_accuracies: list[np.ndarray]) -> tuple[float, float] | None:
    """The 95 % percentile interval of the log-odds r when each backbone's seeds are resampled
    with replacement (None where no backbone has two seeds: nothing to resample)."""
    if all(len(a) < 2 for a in seed_accuracies):
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    # Each backbone's mean accuracy in every resample: (backbones, resamples).
    means = np.stack([a[rng.integers(0, len(a), size=(BOOTSTRAP_RESAMPLES, len(a)))].mean(axis=1) for a in seed_accuracies])
    x = log_odds(top1, 100)
    rs = np.array([pearson(x, log_odds(means[:, b])) for b in range(BOOTSTRAP_RESAMPLES)])
    low, high = np.nanpercentile(rs, [2.5, 97.5])
    return float(low), float(high)


def correlations(frame: pd.DataFrame, stage_points: pd.DataFrame) -> pd.DataFrame:
    """Per stage with at least 3 networks: ``networks``, the fewest ``seeds`` of a point,
    ``pearson_r`` (log-odds, Kornblith's), ``r_seed_low``/``r_seed_high`` (the seed bootstrap),
    ``r_networks_low``/``r_networks_high`` (Fisher), ``spearman_rho`` and ``permutation_p``."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for stage in STAGES:
        at_stage = stage_points[stage_points["stage"] == stage]
        if len(at_stage) < 3:
            continue
        top1 = at_stage["imagenet_top1"].to_numpy(dtype=float)
        accuracy = at_stage["test_accuracy"].to_numpy(dtype=float)
        r = pearson(log_odds(top1, 100), log_odds(accuracy))
        by_seed = [ok.loc[ok["group"] == group, "test_accuracy"].to_numpy(dtype=float) for group in at_stage["group"]]
        seed_interval = seed_bootstrap(top1, by_seed)
        network_interval = fisher_interval(r, len(at_stage))
        rows.append(
            {
                "stage": stage,
                "networks": len(at_stage),
                "seeds": int(at_stage["seeds"].min()),
                "pearson_r": r,
                "r_seed_low": None if seed_interval is None else seed_interval[0],
                "r_seed_high": None if seed_interval is None else seed_interval[1],
                "r_networks_low": None if network_interval is None else network_interval[0],
                "r_networks_high": None if network_interval is None else network_interval[1],
                "spearman_rho": spearman(top1, accuracy),
                "permutation_p": permutation_p(top1, accuracy),
            }
        )
    return pd.DataFrame(rows)
