"""Run tables: accuracy, cost, headline and axes tables, the winners, the README headline block
and the failed cells, from ``bench.stats``'s summary (one row per configuration) and record frame."""

from __future__ import annotations

import pandas as pd

from bench.render.format import distinct, first_line, half_range, missing, number, pct, table
from bench.render.labels import settings, settings_column, weights_cell
from bench.stages import STAGES
from bench.stats import STAGE_ORDER, superseded_by_tuned, tied_with_best
from bench.time_spent import compute_minutes_by_seed

ACCURACY_EXPLANATION = (
    "Test accuracy: the mean over n seeds ± the half-width of its 95 % Student-t interval (n = 1: no interval). "
    "`tied best`: the interval overlaps the stage's best one, so the data cannot tell them apart."
)
ANON_EXPLANATION = (
    "Peak anon: the peak of the cell's anonymous (non-file-backed) resident memory, sampled every 50 ms: what it allocated itself. "
    "Peak RSS also counts pages of the memory-mapped caches, which the kernel drops when memory is short."
)


def trains_in_epochs(stage: str) -> bool:
    """Whether a stage has epochs (the linear stage's L-BFGS has none); unknown stages are assumed to."""
    return stage not in STAGES or STAGES[stage].by_epochs


def accuracy_cell(row) -> str:
    """Mean test accuracy, the 95 % t-interval's half-width where there are several seeds, and n."""
    interval = f" ± {100 * row.test_accuracy_ci95:.1f}" if row.seeds > 1 else ""
    return f"{100 * row.test_accuracy:.1f} %{interval} (n={row.seeds})"


def _tie_mark(summary: pd.DataFrame, row) -> str:
    # Only where another row of the stage is tied too: a clear winner is no tie.
    return " (tied best)" if row.tied_best and ((summary.stage == row.stage) & summary.tied_best).sum() > 1 else ""


def _anon_column(summary: pd.DataFrame, row) -> dict:
    """The ``peak anon MB`` cell, only where some record has it (older records render as before)."""
    if "peak_anon_mb" not in summary.columns:
        return {}
    return {"peak anon MB": number(row.peak_anon_mb)}


def _linear_column(summary: pd.DataFrame, row, name: str, header: str, text) -> dict:
    """A column of the linear stage's (``name`` in the summary), only where some row has it:
    reports without a linear row render as before."""
    if name not in summary.columns:
        return {}
    value = getattr(row, name)
    return {header: "" if missing(value) else text(value)}


def _summary_table(summary: pd.DataFrame, cells, brief: bool = False) -> str:
    """A table of one row per summary row: ``cells(row, setting)`` makes a row's cells, where
    ``setting`` is its settings cell (``brief``: its short form), or ``None`` where no row has
    settings (no such column)."""
    column = settings_column(summary, brief)
    return table([cells(row, column[index] if column else None) for index, row in enumerate(summary.itertuples())])


def _configuration(row, setting: str | None, weights_and_augment: bool) -> dict:
    """The cells naming a row's configuration: backbone, stage, (weights,) size, (augmentation,) settings."""
    cells = {"backbone": row.backbone, "stage": row.stage}
    if weights_and_augment:
        cells["weights"] = weights_cell(row)
    cells["size px"] = row.image_size
    if weights_and_augment:
        cells["augment"] = row.augment
    return cells if setting is None else {**cells, "settings": setting}


def accuracy_table(summary: pd.DataFrame) -> str:
    """Backbones x stages, test accuracy, with the write-up's number for each stage."""
    return _summary_table(
        summary,
        lambda row, setting: {
            **_configuration(row, setting, weights_and_augment=True),
            "test accuracy": accuracy_cell(row) + _tie_mark(summary, row),
            "val accuracy": pct(row.val_accuracy),
            "write-up": pct(row.writeup_accuracy),
            # L-BFGS has no epochs: the linear stage's rows show their chosen penalty instead.
            "epochs": row.epochs if trains_in_epochs(row.stage) else "",
            "unfrozen layers": "" if pd.isna(row.unfreeze_layers) else int(row.unfreeze_layers),
            **_linear_column(summary, row, "linear_l2_penalty", "L2 penalty", lambda value: f"{value:.3g}"),
            "path": row.path,
        },
    )


def _spread(row) -> str:
    """Min-max over seeds where there are several, else the timed repeats' relative spread."""
    if row.seeds > 1:
        return f" [{number(row.infer_images_per_second_min)}-{number(row.infer_images_per_second_max)}]"
    return half_range(row.infer_spread)


def cost_table(summary: pd.DataFrame) -> str:
    """What each configuration cost: time, throughput, latency, memory, parameters, FLOPs."""
    return _summary_table(
        summary,
        lambda row, setting: {
            **_configuration(row, setting, weights_and_augment=False),
            "train s": number(row.train_seconds),
            **_linear_column(summary, row, "solver_seconds", "solver s", number),
            "overhead %": number(100 * row.overhead_seconds / row.wall_seconds if row.wall_seconds else None, 1),
            "cache s": number(row.cache_seconds),
            "train img/s": number(row.train_images_per_second),
            "infer img/s (batch)": f"{number(row.infer_images_per_second)} ({row.infer_batch_size})" + _spread(row),
            "latency p50/p95 ms": f"{number(row.latency_p50_ms, 1)} / {number(row.latency_p95_ms, 1)}"
            + (f" (p50 {number(row.latency_p50_ms_min, 1)}-{number(row.latency_p50_ms_max, 1)})" if row.seeds > 1 else ""),
            "peak RSS MB": number(row.peak_rss_mb),
            **_anon_column(summary, row),
            "peak GPU MB": number(row.peak_gpu_mb) or "n/a",
            "params (trainable)": f"{row.total_params / 1e6:.2f} M ({row.trainable_params / 1e6:.2f} M)",
            "GFLOPs/img": number(row.flops_per_image / 1e9 if row.flops_per_image else None, 2),
        },
    )


TIME_CURVE_EXPLANATION = (
    "The same recipe at several epoch budgets, its schedule scaled to each. Train min: the training loop's minutes (median over seeds). "
    "Training GFLOP/s: the rate the loop achieved, counting a training image as three forward passes "
    "(forward and backward) times the forward GFLOPs per image."
)


def time_curve_table(curves: pd.DataFrame) -> str:
    """One row per epoch budget of each accuracy-for-time curve (``bench.stats.time_curves``)."""
    return table(
        [
            {
                "backbone": row.backbone,
                "stage": row.stage,
                "size px": row.image_size,
                # Curves that differ in precision alone would read as one.
                **({"precision": row.precision} if curves["precision"].nunique() > 1 else {}),
                "epochs": row.epochs,
                "test accuracy": accuracy_cell(row),
                "train min": number(row.train_minutes, 1),
                "train img/s": number(row.train_images_per_second),
                "training GFLOP/s": number(row.train_gflops_per_second) or "n/a",
            }
            for row in curves.itertuples()
        ]
    )


def headline_table(summary: pd.DataFrame) -> str:
    """The few columns a reader compares first: accuracy against the write-up, then cost."""

    def cells(row, setting):
        stage = {
            "linear": f"linear (L2 {getattr(row, 'linear_l2_penalty', float('nan')):.3g})",
            "transfer": "transfer (frozen)",
            "finetune": f"finetune ({number(row.unfreeze_layers)} layers)",
        }.get(row.stage, row.stage)
        weights = weights_cell(row)
        return {
            "backbone": f"`{row.backbone}`",
            "stage": f"{stage}, {row.image_size} px" + (f" ({setting})" if setting else ""),
            # Bold where the row is not what its stage promises (random init, not pretrained).
            "weights": weights if weights == row.weights else f"**{weights}**",
            "test accuracy": accuracy_cell(row) + _tie_mark(summary, row),
            "write-up": pct(row.writeup_accuracy),
            f"infer img/s (batch {row.infer_batch_size})": number(row.infer_images_per_second),
            "peak RSS MB": number(row.peak_rss_mb),
            **_anon_column(summary, row),
            "train s (+ cache s)": number(row.train_seconds) + (f" (+ {number(row.cache_seconds)})" if row.cache_seconds >= 0.5 else ""),
        }

    return _summary_table(summary, cells, brief=True)


def winners(summary: pd.DataFrame) -> list[str]:
    """One line each: best accuracy (with its interval and the rows it cannot be told from),
    fastest inference, smallest memory (anonymous where recorded, the figure a user can act on)."""
    if summary.empty:
        return []
    tied = tied_with_best(summary)
    best = summary.loc[summary["test_accuracy"].idxmax()]
    fastest = summary.loc[summary["infer_images_per_second"].idxmax()]
    # Anonymous memory only where every row has it: older records (RSS alone) would drop out of the ranking.
    has_anon = "peak_anon_mb" in summary.columns and summary["peak_anon_mb"].notna().all()
    leanest = summary.loc[summary["peak_anon_mb" if has_anon else "peak_rss_mb"].idxmin()]

    def name(row):
        return f"`{row.backbone}` {row.stage} ({row.image_size} px, {row.augment}, weights {row.weights})"

    others = [name(row) for index, row in summary[tied].iterrows() if index != best.name]
    memory = f"{number(leanest.peak_anon_mb)} MB peak anonymous ({number(leanest.peak_rss_mb)} MB RSS)" if has_anon else f"{number(leanest.peak_rss_mb)} MB peak RSS"
    return [
        f"- **Accuracy**: {name(best)}: {accuracy_cell(best)} test" + (f"; tied within the 95 % intervals: {'; '.join(others)}." if others else "."),
        f"- **Inference throughput**: {name(fastest)}: {number(fastest.infer_images_per_second)} images/s at batch {fastest.infer_batch_size}.",
        f"- **Memory**: {name(leanest)}: {memory}.",
    ]


def axes_tables(summary: pd.DataFrame) -> str:
    """Per backbone: stages x (augmentation, size), where a sweep covered more than one."""
    parts = []
    for backbone, group in summary.groupby("backbone"):
        # The linear stage's own policy (none, beside transfer's flip) is no sweep: it counts only
        # where it covered more than one itself.
        by_epochs = group[group["stage"].map(trains_in_epochs)]
        per_stage = [len(rows[["augment", "image_size"]].drop_duplicates()) for _, rows in group.groupby("stage")]
        if len(by_epochs[["augment", "image_size"]].drop_duplicates()) < 2 and max(per_stage) < 2:
            continue
        # One row per stage and configuration: different settings are never averaged together.
        varying = [c for c in ("weights", "dataset", "profile") if group[c].nunique() > 1] + (["epochs"] if by_epochs["epochs"].nunique() > 1 else [])
        labels = []
        for row in group.itertuples():
            shown = [c for c in varying if c != "epochs" or trains_in_epochs(row.stage)]
            extra = ", ".join(part for part in [settings(row), *(f"{c} {getattr(row, c)}" for c in shown)] if part)
            labels.append(row.stage + (f" ({extra})" if extra else ""))
        group = group.assign(row_label=labels)
        clash = group.duplicated(["row_label", "augment", "image_size"], keep=False)
        group.loc[clash, "row_label"] = group.loc[clash, "row_label"] + " [" + group.loc[clash, "group"] + "]"
        cells = {(row.row_label, row.augment, row.image_size): accuracy_cell(row) for row in group.itertuples()}
        columns = sorted({(row.augment, row.image_size) for row in group.itertuples()}, key=lambda c: (c[0], c[1]))
        order = dict(zip(group["row_label"], group["stage"]))
        rows = []
        for label in sorted(set(group["row_label"]), key=lambda r: (STAGE_ORDER.get(order[r], 9), r)):
            rows.append({"stage": label, **{f"{aug} @ {size} px": cells.get((label, aug, size), "") for aug, size in columns}})
        parts.append(f"### {backbone}\n\n{table(rows)}")
    return "\n\n".join(parts)


def render_headline(frame: pd.DataFrame, summary: pd.DataFrame) -> str:
    """For a project README: the headline table, the winners, and where the numbers come from."""
    # Compute, not the span from first start to last end: a grid resumed across sessions has gaps.
    compute_minutes = sum(compute_minutes_by_seed(frame).values())
    context = (
        f"{len(frame)} cells of `{distinct(frame, 'dataset')}` on {distinct(frame, 'cpu')}, "
        f"{compute_minutes:.0f} min of compute (the cells' wall times summed); generated by `python -m bench report` from the records."
    )
    explanation = [ACCURACY_EXPLANATION, "", *([ANON_EXPLANATION, ""] if "peak_anon_mb" in summary.columns else [])]
    # A default row with fewer seeds than its tuned counterpart stays in the results folder only.
    superseded = superseded_by_tuned(summary)
    if superseded.any():
        context += f" {superseded.sum()} default-recipe row(s) with fewer seeds than their tuned counterpart are in the results folder's tables only."
    return "\n".join([headline_table(summary[~superseded]), "", *explanation, *winners(summary[~superseded]), "", context])


def failures_table(frame: pd.DataFrame) -> str:
    failed = frame[frame["status"] != "ok"]
    return table([{"cell": r.key, "failure": r.failure, "error": first_line(r.error)} for r in failed.itertuples()])
