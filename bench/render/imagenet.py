"""The results README's section "Does the better ImageNet model transfer better?": the points and
the correlations of ``bench.imagenet_transfer``, as tables."""

from __future__ import annotations

import pandas as pd

from bench.render.format import missing, table
from bench.render.runs import accuracy_cell

EXPLANATION = (
    "Kornblith et al. (2019)'s question on these records: per stage, each pretrained backbone's CIFAR-10 test accuracy "
    "against its published ImageNet top-1 (at the weights' own resolution; here every backbone runs at the size in the table). "
    "`r`: Pearson's correlation of the log-odds of both accuracies, as Kornblith computes it (they report 0.99 for logistic "
    "regression and 0.96 for fine-tuning over 16 networks at 224 px). `over seeds`: the 95 % bootstrap interval of r when each "
    "backbone's seeds are resampled (how much seed noise moves r for these networks; none with one seed). `over networks`: "
    "the 95 % interval of r over the choice of networks (Fisher's z; none below 4 networks). `ρ`: the rank correlation; "
    "`p(ρ)`: its exact one-sided permutation p, the share of all orderings of the networks that correlate at least as well "
    "(with 4 networks even a perfect order has p = 1/24 = 0.042)."
)


def _interval(low, high) -> str:
    return "" if missing(low) else f"[{low:.2f}, {high:.2f}]"


def points_table(points: pd.DataFrame) -> str:
    return table(
        [
            {
                "stage": row.stage,
                "backbone": row.backbone,
                "ImageNet top-1": f"{row.imagenet_top1:.1f} %",
                "size": f"{row.image_size}px",
                "recipe": "tuned" if row.tuned else "default",
                "CIFAR-10 test": accuracy_cell(row),
            }
            for row in points.itertuples()
        ]
    )


def correlations_table(correlations: pd.DataFrame) -> str:
    return table(
        [
            {
                "stage": row.stage,
                "networks": str(row.networks),
                "seeds per point (fewest)": str(row.seeds),
                "r (log-odds)": f"{row.pearson_r:.2f}",
                "over seeds": _interval(row.r_seed_low, row.r_seed_high),
                "over networks": _interval(row.r_networks_low, row.r_networks_high),
                "ρ": f"{row.spearman_rho:.2f}",
                "p(ρ)": "" if missing(row.permutation_p) else f"{row.permutation_p:.3f}",
            }
            for row in correlations.itertuples()
        ]
    )


def imagenet_section(points: pd.DataFrame, correlations: pd.DataFrame, plot_name: str) -> str:
    """The section, or "" where no stage has the 3 networks a correlation needs."""
    if correlations.empty:
        return ""
    return "\n".join(
        [
            "## Does the better ImageNet model transfer better?",
            "",
            EXPLANATION,
            "",
            correlations_table(correlations),
            "",
            points_table(points),
            "",
            f"The figure: [{plot_name}]({plot_name}) (one panel per stage, each point with its 95 % interval over seeds).",
        ]
    )
