"""A results folder's README.md: notes, provenance, winners, accuracy, cost, the grid's time, accuracy for time,
ImageNet against CIFAR-10, axes, cost without
training, tuning, deployment, failed cells and plots, in that order."""

from __future__ import annotations

from pathlib import PurePath

import pandas as pd

from bench.render.provenance import provenance
from bench.render.runs import ACCURACY_EXPLANATION, ANON_EXPLANATION, TIME_CURVE_EXPLANATION, accuracy_table, axes_tables, cost_table, failures_table, time_curve_table, winners

COST_EXPLANATION = (
    "Inference: compiled forward pass, warm-up excluded, median of 5 repeats (± half their range; [min-max] over seeds). "
    "Latency at batch 1. Peak RSS: the cell's process high-water mark, kept by the kernel at no cost to the timings. "
    "Overhead: share of the cell's wall time outside model compute. "
    "Train s: the training loop's seconds (median over seeds); cache s: the seconds spent extracting activations into the cache, "
    "paid once by the first cell of a backbone, size and weights (the largest over seeds; later seeds read the cache); "
    "train img/s: training images (or their cached activations) per second."
)


def render_markdown(
    frame: pd.DataFrame, summary: pd.DataFrame, bad_lines: int, plots: list[str], notes: str = "", cost_block: str = "", tuning_block: str = "", deploy_block: str = "",
    curves: pd.DataFrame | None = None, imagenet_block: str = "", grid_time_block: str = "",
) -> str:
    """The README text of a results folder.

    Args:
        frame: every record, one row each (``bench.stats.records_frame``).
        summary: one row per configuration (``bench.stats.summarize``, labels distinguished).
        bad_lines: malformed lines skipped in ``runs.jsonl``.
        plots: file names of the plots beside the README.
        notes: hand-written text that heads the report.
        cost_block: the cost-without-training section, or empty.
        tuning_block: the tuning studies' section, or empty.
        deploy_block: the deployment section, or empty.
        curves: the accuracy-for-time curves (``bench.stats.time_curves``), or None.
        imagenet_block: the section on ImageNet accuracy against CIFAR-10 accuracy, or empty.
        grid_time_block: the sections on where the latest whole grid's time went and on what one seed of the grid costs, or empty.
    """
    sections = ["# Benchmark results", ""]
    if notes.strip():
        sections += [notes.strip(), ""]
    if len(frame):
        sections += [*provenance(frame, bad_lines), ""]
    if not summary.empty:
        sections += ["## Winners", "", *winners(summary), ""]
        sections += ["## Accuracy", "", "Validation-tuned only; the test split is never used for a choice. `write-up` is the seed write-up's number for the same stage. " + ACCURACY_EXPLANATION, "", accuracy_table(summary), ""]
        anon = " " + ANON_EXPLANATION if "peak_anon_mb" in summary.columns else ""
        sections += ["## Cost", "", COST_EXPLANATION + anon, "", cost_table(summary), ""]
        if grid_time_block:
            sections += [grid_time_block.strip(), ""]
        if curves is not None and len(curves):
            sections += ["## Accuracy for training time", "", TIME_CURVE_EXPLANATION, "", time_curve_table(curves), ""]
        if imagenet_block:
            sections += [imagenet_block.strip(), ""]
        axes = axes_tables(summary)
        if axes:
            sections += ["## Augmentation and input size", "", axes, ""]
    if cost_block:
        sections += [cost_block.strip(), ""]
    if tuning_block:
        sections += [tuning_block.strip(), ""]
    if deploy_block:
        sections += [deploy_block.strip(), ""]
    if (frame["status"] != "ok").any():
        sections += ["## Failed cells", "", failures_table(frame), ""]
    if plots:
        sections += ["## Plots", "", *[f"![{PurePath(p).stem}]({PurePath(p).name})" for p in plots], ""]
    return "\n".join(sections)
