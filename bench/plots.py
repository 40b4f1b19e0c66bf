"""PNG plots over the summary and the per-epoch histories."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench import files  # noqa: E402


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    try:
        with files.atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110)
    finally:
        plt.close(figure)
    return path


def accuracy_by_stage(summary: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: test accuracy per stage, one bar per backbone configuration."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    labels = [f"{r.backbone}\n{r.image_size}px {r.augment}" for r in summary.itertuples()]
    colours = {"baseline": "tab:gray", "transfer": "tab:blue", "finetune": "tab:orange"}
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
    return _save(figure, path)


def _accuracy_scatter(summary: pd.DataFrame, x, label, xlabel: str, title: str, path: Path, log_x: bool = False) -> Path:
    """Test accuracy against ``x(group)`` per stage, each point labelled by ``label(row)``."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for stage, group in summary.groupby("stage"):
        xs = x(group)
        axis.scatter(xs, 100 * group["test_accuracy"], label=stage)
        for row, value in zip(group.itertuples(), xs):
            axis.annotate(label(row), (value, 100 * row.test_accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if log_x:
        axis.set_xscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(title)
    axis.legend(fontsize=8)
    return _save(figure, path)


def accuracy_vs_throughput(summary: pd.DataFrame, path: Path) -> Path:
    return _accuracy_scatter(
        summary,
        lambda group: group["infer_images_per_second"],
        lambda row: f"{row.backbone} {row.image_size}px",
        "inference throughput (images/s, log scale)",
        "Accuracy against inference throughput",
        path,
        log_x=True,
    )


def training_curves(frame: pd.DataFrame, path: Path) -> Path:
    """Validation accuracy per epoch, one line per ok cell."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in frame[frame["status"] == "ok"].itertuples():
        epochs = [h["epoch"] for h in row.history if "val_accuracy" in h]
        values = [100 * h["val_accuracy"] for h in row.history if "val_accuracy" in h]
        if epochs:
            axis.plot(epochs, values, marker="o", markersize=3, label=f"{row.backbone} {row.stage} {row.image_size}px s{row.seed}")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy (%)")
    axis.set_title("Training curves")
    axis.legend(fontsize=6, ncol=2)
    return _save(figure, path)


def accuracy_vs_size(summary: pd.DataFrame, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for (backbone, stage, augment), group in summary.groupby(["backbone", "stage", "augment"]):
        group = group.sort_values("image_size")
        axis.plot(group["image_size"], 100 * group["test_accuracy"], marker="o", label=f"{backbone} {stage} {augment}")
    axis.set_xlabel("input size (px)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Accuracy against input size")
    axis.legend(fontsize=7)
    return _save(figure, path)


def accuracy_vs_cost(summary: pd.DataFrame, path: Path) -> Path:
    return _accuracy_scatter(
        summary,
        lambda group: group["train_seconds"] + group["cache_seconds"].fillna(0),
        lambda row: f"{row.augment} {row.image_size}px",
        "training cost (s: training + activation caching)",
        "Accuracy against training cost, by augmentation policy",
        path,
    )


def write_plots(frame: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    paths = [
        accuracy_by_stage(summary, out_dir / "accuracy_by_stage.png"),
        accuracy_vs_throughput(summary, out_dir / "accuracy_vs_throughput.png"),
        training_curves(frame, out_dir / "training_curves.png"),
    ]
    if summary["image_size"].nunique() > 1 or summary["augment"].nunique() > 1:
        paths += [accuracy_vs_size(summary, out_dir / "accuracy_vs_size.png"), accuracy_vs_cost(summary, out_dir / "accuracy_vs_cost.png")]
    return paths
