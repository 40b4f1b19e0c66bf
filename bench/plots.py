"""Figures over the summary, the per-epoch histories, the cost and the deployment records, each returned laid out
and ready to save; ``bench.publish`` writes them (as PNG, at ``DPI``)."""

from __future__ import annotations

import math
from typing import Iterator

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bench import imagenet_transfer  # noqa: E402
from bench.render.format import missing  # noqa: E402

# Kornblith et al.'s Figure 1 on a report's records (ImageNet top-1 against CIFAR-10 accuracy).
IMAGENET_PLOT = "imagenet_vs_cifar10.png"
# Dots per inch of the saved PNGs: labels are placed for this resolution.
DPI = 110


# Where a label may sit around its point, nearest first: offsets in points at growing
# radii, in eight directions (right and above first, the usual reading position).
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (0, 1), (-1, 0), (0, -1))
_RADII_POINTS = (4, 10, 18, 28, 40, 55, 75, 100)
_LEADER_FROM_POINTS = 12  # labels placed farther away than this get a line to their point


def place_labels(figure, axis, points, texts, fontsize: float = 7) -> list:
    """Label each data point without any two labels overlapping.

    Greedy: each label takes the first candidate offset (nearest first) whose box stays
    inside the axes and overlaps no label placed before it and no point marker; a label
    placed away from its point gets a thin leader line. Call it once the layout is final
    (after ``tight_layout``), and lay out nothing after it: a later layout change would
    move points and labels by different amounts.

    Returns:
        The label ``Text`` artists, in the order of ``points``.
    """
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes_box = axis.get_window_extent(renderer)
    pixels_per_point = figure.dpi / 72
    marker = 3.5 * pixels_per_point
    taken = []
    for x, y in points:
        px, py = axis.transData.transform((x, y))
        taken.append(matplotlib.transforms.Bbox.from_extents(px - marker, py - marker, px + marker, py + marker))
    candidates = [(radius * dx / (math.sqrt(2) if dx and dy else 1), radius * dy / (math.sqrt(2) if dx and dy else 1)) for radius in _RADII_POINTS for dx, dy in _DIRECTIONS]
    labels = []
    for (x, y), text in zip(points, texts):
        for inside in (True, False):
            for dx, dy in candidates:
                label = axis.annotate(
                    text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                    ha="left" if dx > 0 else "right" if dx < 0 else "center", va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                )
                box = label.get_window_extent(renderer)
                fits = not inside or (axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 and axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1)
                if fits and not any(box.overlaps(other) for other in taken):
                    break
                label.remove()
            else:
                continue
            break
        else:
            # Nowhere free even outside the axes: the farthest candidate, with its line.
            dx, dy = candidates[-1]
            label = axis.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha="left", va="bottom")
            box = label.get_window_extent(renderer)
        taken.append(box)
        labels.append(label)
        if math.hypot(dx, dy) > _LEADER_FROM_POINTS:
            axis.annotate("", (x, y), xytext=(dx, dy), textcoords="offset points", arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 2})
    return labels


def accuracy_by_stage(summary: pd.DataFrame) -> Figure:
    """Grouped bars: test accuracy per stage, one bar per backbone configuration."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    labels = [f"{r.backbone}\n{r.image_size}px {r.augment}" for r in summary.itertuples()]
    colours = {"baseline": "tab:gray", "linear": "tab:purple", "transfer": "tab:blue", "finetune": "tab:orange"}
    if not (summary["stage"] == "linear").any():  # in the legend only where drawn: earlier figures stay as they were
        del colours["linear"]
    bars = axis.bar(range(len(summary)), 100 * summary["test_accuracy"], yerr=100 * summary["test_accuracy_ci95"], color=[colours.get(s, "tab:green") for s in summary["stage"]])
    for bar, value in zip(bars, summary["test_accuracy"]):
        axis.annotate(f"{100 * value:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    # The write-up's number for the same stage, as a black tick across each bar.
    for bar, reference in zip(bars, summary["writeup_accuracy"]):
        if reference is not None and not pd.isna(reference):
            axis.hlines(100 * reference, bar.get_x(), bar.get_x() + bar.get_width(), colors="black", linestyles="--")
    axis.set_xticks(range(len(summary)), labels, rotation=45, ha="right", fontsize=7)
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Test accuracy by backbone and stage")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()] + [plt.Line2D([], [], color="black", linestyle="--")]
    axis.legend(handles, [*colours.keys(), "write-up"], fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def _accuracy_scatter(summary: pd.DataFrame, x, label, xlabel: str, title: str, log_x: bool = False, by: str = "stage") -> Figure:
    """Test accuracy against ``x(group)``, a colour per value of column ``by``, each point labelled by ``label(row)``."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    points, texts = [], []
    for name, group in summary.groupby(by):
        xs = x(group)
        axis.scatter(xs, 100 * group["test_accuracy"], label=name)
        for row, value in zip(group.itertuples(), xs):
            points.append((value, 100 * row.test_accuracy))
            texts.append(label(row))
    if log_x:
        axis.set_xscale("log")
    axis.margins(0.15)  # room for labels beside the outermost points
    axis.set_xlabel(xlabel)
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(title)
    # Outside the axes: a legend inside could cover a label placed after it.
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    place_labels(figure, axis, points, texts)
    return figure


def accuracy_vs_throughput(summary: pd.DataFrame) -> Figure:
    return _accuracy_scatter(
        summary,
        lambda group: group["infer_images_per_second"],
        lambda row: f"{row.backbone} {row.image_size}px",
        "inference throughput (images/s, log scale)",
        "Accuracy against inference throughput",
        log_x=True,
    )


def _finish(figure: Figure, axis, xlabel: str, ylabel: str, title: str, **legend) -> Figure:
    """Axis labels, title and legend, then the layout: a line plot made ready to save."""
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(**legend)
    figure.tight_layout()
    return figure


def training_curves(frame: pd.DataFrame) -> Figure:
    """Validation accuracy per epoch, one line per ok cell."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in frame[frame["status"] == "ok"].itertuples():
        epochs = [h["epoch"] for h in row.history if "val_accuracy" in h]
        values = [100 * h["val_accuracy"] for h in row.history if "val_accuracy" in h]
        if epochs:
            axis.plot(epochs, values, marker="o", markersize=3, label=f"{row.backbone} {row.stage} {row.image_size}px s{row.seed}")
    return _finish(figure, axis, "epoch", "validation accuracy (%)", "Training curves", fontsize=6, ncol=2)


def linear_penalty_search(frame: pd.DataFrame) -> Figure:
    """The linear stage's search: validation accuracy against the L2 penalty, one line per ok
    cell, its chosen penalty ringed."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in frame[(frame["status"] == "ok") & frame["linear_l2_penalty"].notna()].itertuples():
        search = sorted((fit["l2_penalty"], 100 * fit["val_accuracy"]) for fit in row.linear_penalty_search if fit["phase"] != "final")
        (line,) = axis.plot(*zip(*search), marker="o", markersize=3, label=f"{row.backbone} {row.image_size}px s{row.seed}")
        chosen = max(accuracy for penalty, accuracy in search if penalty == row.linear_l2_penalty)
        axis.scatter([row.linear_l2_penalty], [chosen], s=80, facecolors="none", edgecolors=line.get_color())
    axis.set_xscale("log")
    return _finish(figure, axis, "L2 penalty (log scale)", "validation accuracy (%)", "Linear probe: the penalty chosen on validation (ringed)", fontsize=7)


def accuracy_vs_size(summary: pd.DataFrame) -> Figure:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    # One line per configuration apart from its size: other settings never share a line.
    columns = ["backbone", "stage", "augment", *(["settings"] if "settings" in summary else [])]
    for keys, group in summary.groupby(columns):
        group = group.sort_values("image_size")
        axis.plot(group["image_size"], 100 * group["test_accuracy"], marker="o", label=" ".join(str(k) for k in keys if k))
    return _finish(figure, axis, "input size (px)", "test accuracy (%)", "Accuracy against input size", fontsize=7)


def accuracy_vs_cost(summary: pd.DataFrame) -> Figure:
    return _accuracy_scatter(
        summary,
        lambda group: group["train_seconds"] + group["cache_seconds"].fillna(0),
        lambda row: f"{row.augment} {row.image_size}px",
        "training cost (s: training + activation caching)",
        "Accuracy against training cost, by augmentation policy",
    )


def throughput_vs_gflops(cost: pd.DataFrame) -> Figure:
    """Inference images/s against GFLOPs per image, one point per ok cost record; a colour per
    backbone, or per runtime where records ran on several."""
    ok = cost[cost["status"] == "ok"].dropna(subset=["flops_per_image", "infer_images_per_second"])
    by_runtime = "runtime" in ok and ok["runtime"].nunique() > 1
    figure, axis = plt.subplots(figsize=(7, 4.5))
    points, texts = [], []
    for name, group in ok.groupby("runtime" if by_runtime else "backbone", sort=True):
        axis.scatter(group["flops_per_image"] / 1e9, group["infer_images_per_second"], label=name)
        for row in group.itertuples():
            points.append((row.flops_per_image / 1e9, row.infer_images_per_second))
            texts.append(f"{row.backbone} {row.image_size}px" if by_runtime else f"{row.image_size}px b{row.batch_size}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.margins(0.15)
    axis.set_xlabel("GFLOPs per image (log scale)")
    axis.set_ylabel("inference throughput (images/s, log scale)")
    axis.set_title("Throughput against compute, without training (random weights)")
    if points:
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    place_labels(figure, axis, points, texts)
    return figure


def tuning_history(trials: pd.DataFrame) -> Figure:
    """Validation accuracy over trials, one colour per study: complete trials filled, pruned
    ones hollow, and the best complete trial so far as a step line."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    ended = trials[trials["status"] == "ok"]
    for (study, group), colour in zip(ended.groupby("study", sort=True), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10):
        pruned = group["pruned"].astype(bool)
        axis.scatter(group["trial"][~pruned], 100 * group["val_accuracy"][~pruned], color=colour, label=study)
        axis.scatter(group["trial"][pruned], 100 * group["val_accuracy"][pruned], facecolors="none", edgecolors=colour)
        # Pruned trials leave gaps the line carries the best so far across.
        best = (100 * group["val_accuracy"].where(~pruned)).cummax().ffill()
        axis.step(group["trial"], best, where="post", color=colour, linewidth=1)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("trial")
    axis.set_ylabel("validation accuracy (%)")
    axis.set_title("Validation accuracy by trial (hollow: pruned; line: best so far)")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    return figure


def accuracy_vs_latency(summary: pd.DataFrame) -> Figure:
    """Test accuracy against batch-1 latency, a colour per runtime, one point per ``bench.stats.deploy_summary`` row."""
    return _accuracy_scatter(
        summary,
        lambda group: group["latency_p50_ms"],
        lambda row: f"{row.backbone} {row.stage}",
        "batch-1 latency p50 (ms, log scale)",
        "Accuracy against latency per runtime (trained cells, converted)",
        log_x=True,
        by="runtime",
    )


def accuracy_for_time(summary: pd.DataFrame, curves: pd.DataFrame) -> Figure:
    """Test accuracy (with its 95 % interval) against training minutes: each accuracy-for-time
    curve (``bench.stats.time_curves``) a line through its epoch budgets, every other
    configuration a point whose minutes include its activation extraction."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    points, texts = [], []
    for _, curve in curves.groupby("curve", sort=False):
        first = curve.iloc[0]
        axis.errorbar(curve["train_minutes"], 100 * curve["test_accuracy"], yerr=100 * curve["test_accuracy_ci95"], marker="o", markersize=4, capsize=2, label=f"{first.backbone} {first.stage} {first.image_size}px" + (f" {first.precision}" if first.precision != "float32" else ""))
        points += list(zip(curve["train_minutes"], 100 * curve["test_accuracy"]))
        texts += [f"{epochs} ep" for epochs in curve["epochs"]]
    others = summary[~summary["group"].isin(curves["group"])]
    for (backbone, stage), group in others.groupby(["backbone", "stage"], sort=True):
        minutes = (group["train_seconds"] + group["cache_seconds"].fillna(0)) / 60
        axis.errorbar(minutes, 100 * group["test_accuracy"], yerr=100 * group["test_accuracy_ci95"], fmt="s", markersize=4, capsize=2, label=f"{backbone} {stage}")
        points += list(zip(minutes, 100 * group["test_accuracy"]))
        texts += [f"{row.image_size}px" for row in group.itertuples()]
    axis.set_xscale("log")
    axis.margins(0.1)
    # Plain minutes at 1-2-5 steps: the log axis's own labels overlap at its minor ticks.
    low, high = axis.get_xlim()
    axis.set_xticks([t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if low <= t <= high], minor=False)
    axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel("training minutes (log scale; pretrained: + activation extraction)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Accuracy for training time (a line: one recipe, several epoch budgets)", fontsize=10)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    place_labels(figure, axis, points, texts)
    return figure


def imagenet_vs_cifar10(points: pd.DataFrame, correlations: pd.DataFrame) -> Figure:
    """Kornblith et al.'s Figure 1 on this report's records: ImageNet top-1 (x) against CIFAR-10
    test accuracy (y, with its 95 % interval over seeds), one panel per stage
    (``bench.imagenet_transfer``), each titled with its correlations."""
    stages = [stage for stage in imagenet_transfer.STAGES if (points["stage"] == stage).any()]
    figure, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 4.2), squeeze=False, sharex=True)
    by_stage = correlations.set_index("stage") if len(correlations) else None
    placed = []
    for axis, stage in zip(axes[0], stages):
        at_stage = points[points["stage"] == stage]
        axis.errorbar(at_stage["imagenet_top1"], 100 * at_stage["test_accuracy"], yerr=100 * at_stage["test_accuracy_ci95"], fmt="o", markersize=5, capsize=3)
        axis.margins(0.2)
        axis.set_xlabel("ImageNet top-1 (%)")
        axis.set_ylabel("CIFAR-10 test accuracy (%)")
        title = stage
        if by_stage is not None and stage in by_stage.index:
            row = by_stage.loc[stage]
            seeds = "" if missing(row["r_seed_low"]) else f" [{row['r_seed_low']:.2f}, {row['r_seed_high']:.2f}]"
            title += f"\nr = {row['pearson_r']:.2f}{seeds}, \u03c1 = {row['spearman_rho']:.2f}"
        axis.set_title(title, fontsize=10)
        placed.append((axis, list(zip(at_stage["imagenet_top1"], 100 * at_stage["test_accuracy"])), [b.replace("efficientnet_", "") for b in at_stage["backbone"]]))
    figure.suptitle("Does the better ImageNet model transfer better? (r: log-odds, [95 % over seeds])", fontsize=10)
    figure.tight_layout()
    for axis, xy, texts in placed:
        place_labels(figure, axis, xy, texts)
    return figure


def report_figures(frame: pd.DataFrame, summary: pd.DataFrame, curves: pd.DataFrame | None = None, imagenet: tuple | None = None) -> Iterator[tuple[str, Figure]]:
    """The report's figures with their file names, drawn one at a time as they are asked for:
    a caller that stops (a full disk) leaves none drawn and unsaved. Size and cost plots only
    where the summary varies in size or augmentation; the accuracy-for-time plot only where
    ``curves`` (``bench.stats.time_curves``) has a curve; the ImageNet figure only where
    ``imagenet`` (points and correlations, ``bench.imagenet_transfer``) has a correlation."""
    yield "accuracy_by_stage.png", accuracy_by_stage(summary)
    yield "accuracy_vs_throughput.png", accuracy_vs_throughput(summary)
    # Only where a cell trained in epochs: the linear stage's L-BFGS has no curve (its search has a figure of its own).
    if frame.loc[frame["status"] == "ok", "history"].map(len).any():
        yield "training_curves.png", training_curves(frame)
    if frame["linear_l2_penalty"].notna().any():
        yield "linear_penalty_search.png", linear_penalty_search(frame)
    if summary["image_size"].nunique() > 1 or summary["augment"].nunique() > 1:
        yield "accuracy_vs_size.png", accuracy_vs_size(summary)
        yield "accuracy_vs_cost.png", accuracy_vs_cost(summary)
    if curves is not None and len(curves):
        yield "accuracy_for_time.png", accuracy_for_time(summary, curves)
    if imagenet is not None and len(imagenet[1]):
        yield IMAGENET_PLOT, imagenet_vs_cifar10(*imagenet)
