"""Rendering: every table, CSV and README is text made from the statistics in ``bench.stats``.

``write_report(out_dir)`` reads ``runs.jsonl`` (plus any merged inputs), keeps the latest
record per cell, aggregates seeds, and writes ``README.md``, ``summary.csv`` and PNG plots.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import files
from bench.stages import unfreeze_layers
from bench.stats import STAGE_ORDER, compute_minutes_by_seed, grid_wall_minutes, load, load_cost, records_frame, summarize, tied_with_best, weights_label

# --------------------------------------------------------------------------- formatting


def _pct(value) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:.1f} %"


def _accuracy_cell(row) -> str:
    """Mean test accuracy, the 95 % t-interval's half-width where there are several seeds, and n."""
    interval = f" ± {100 * row.test_accuracy_ci95:.1f}" if row.seeds > 1 else ""
    return f"{100 * row.test_accuracy:.1f} %{interval} (n={row.seeds})"


ACCURACY_EXPLANATION = (
    "Test accuracy: the mean over n seeds ± the half-width of its 95 % Student-t interval (n = 1: no interval). "
    "`tied best`: the interval overlaps the stage's best one, so the data cannot tell them apart."
)


def _tie_mark(summary: pd.DataFrame, row) -> str:
    # Only where another row of the stage is tied too: a clear winner is no tie.
    return " (tied best)" if row.tied_best and ((summary.stage == row.stage) & summary.tied_best).sum() > 1 else ""


def _number(value, digits: int = 0) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value:,.{digits}f}"


def _table(rows: list[dict]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True) if rows else "_no rows_"


def _weights_cell(row) -> str:
    # A transfer or finetune row without pretrained weights says so in the row itself.
    return row.weights + (" (random init, not pretrained)" if row.weights == "none" and row.stage != "baseline" else "")


def settings(row) -> str:
    """How a configuration differs from its stage's defaults beyond the table's own columns."""
    import json

    from bench.stages import STAGES

    parts = []
    if row.batch_size is not None and not pd.isna(row.batch_size) and row.stage in STAGES and int(row.batch_size) != STAGES[row.stage].batch_size:
        parts.append(f"batch {int(row.batch_size)}")
    if row.batch_size_used is not None and not pd.isna(row.batch_size_used) and row.batch_size_used != row.batch_size:
        parts.append(f"batch {int(row.batch_size_used)} after an out-of-memory retry")
    if row.precision == "mixed":
        parts.append("mixed precision")
    if row.jit_compile:
        parts.append("XLA")
    if row.val_fraction is not None and not pd.isna(row.val_fraction) and row.val_fraction != 0.1:
        parts.append(f"validation {row.val_fraction:g}")
    parts += [f"{name}={value}" for name, value in json.loads(row.overrides or "[]")]
    return ", ".join(parts)


def _settings_column(summary: pd.DataFrame) -> list[str] | None:
    """Each row's settings, or ``None`` where every row runs its stage's defaults (no column)."""
    values = [settings(row) for row in summary.itertuples()]
    return values if any(values) else None


def distinguish_labels(summary: pd.DataFrame) -> pd.DataFrame:
    """Dataset and weights labels, extended by their content id where one label covers several contents."""
    summary = summary.copy()
    for label, content in (("dataset", "dataset_id"), ("weights", "weights_id")):
        if summary.empty or content not in summary:
            continue
        ids = summary.groupby(label)[content].nunique()
        ambiguous = summary[label].isin(ids[ids > 1].index)
        summary.loc[ambiguous, label] = summary.loc[ambiguous, label] + " (" + summary.loc[ambiguous, content].astype(str) + ")"
    return summary


def accuracy_table(summary: pd.DataFrame) -> str:
    """Backbones x stages, test accuracy, with the write-up's number for each stage."""
    rows = []
    extra = _settings_column(summary)
    for index, row in enumerate(summary.itertuples()):
        rows.append(
            {
                "backbone": row.backbone,
                "stage": row.stage,
                "weights": _weights_cell(row),
                "size px": row.image_size,
                "augment": row.augment,
                **({"settings": extra[index]} if extra else {}),
                "test accuracy": _accuracy_cell(row) + _tie_mark(summary, row),
                "val accuracy": _pct(row.val_accuracy),
                "write-up": _pct(row.writeup_accuracy),
                "epochs": row.epochs,
                "unfrozen layers": "" if pd.isna(row.unfreeze_layers) else int(row.unfreeze_layers),
                "path": row.path,
            }
        )
    return _table(rows)


def _spread(row) -> str:
    """Min-max over seeds where there are several, else the timed repeats' relative spread."""
    if row.seeds > 1:
        return f" [{_number(row.infer_images_per_second_min)}-{_number(row.infer_images_per_second_max)}]"
    return f" ±{100 * row.infer_spread / 2:.0f} %" if row.infer_spread is not None and not pd.isna(row.infer_spread) else ""


ANON_EXPLANATION = (
    "Peak anon: the peak of the cell's anonymous (non-file-backed) resident memory, sampled every 50 ms: what it allocated itself. "
    "Peak RSS also counts pages of the memory-mapped caches, which the kernel drops when memory is short."
)


def _anon_column(summary: pd.DataFrame, row) -> dict:
    """The ``peak anon MB`` cell, only where some record has it (older records render as before)."""
    if "peak_anon_mb" not in summary.columns:
        return {}
    return {"peak anon MB": _number(row.peak_anon_mb)}


def cost_table(summary: pd.DataFrame) -> str:
    rows = []
    extra = _settings_column(summary)
    for index, row in enumerate(summary.itertuples()):
        rows.append(
            {
                "backbone": row.backbone,
                "stage": row.stage,
                "size px": row.image_size,
                **({"settings": extra[index]} if extra else {}),
                "train s": _number(row.train_seconds),
                "overhead %": _number(100 * row.overhead_seconds / row.wall_seconds if row.wall_seconds else None, 1),
                "cache s": _number(row.cache_seconds),
                "train img/s": _number(row.train_images_per_second),
                "infer img/s (batch)": f"{_number(row.infer_images_per_second)} ({row.infer_batch_size})" + _spread(row),
                "latency p50/p95 ms": f"{_number(row.latency_p50_ms, 1)} / {_number(row.latency_p95_ms, 1)}"
                + (f" (p50 {_number(row.latency_p50_ms_min, 1)}-{_number(row.latency_p50_ms_max, 1)})" if row.seeds > 1 else ""),
                "peak RSS MB": _number(row.peak_rss_mb),
                **_anon_column(summary, row),
                "peak GPU MB": _number(row.peak_gpu_mb) or "n/a",
                "params (trainable)": f"{row.total_params / 1e6:.2f} M ({row.trainable_params / 1e6:.2f} M)",
                "GFLOPs/img": _number(row.flops_per_image / 1e9 if row.flops_per_image else None, 2),
            }
        )
    return _table(rows)


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
    memory = f"{_number(leanest.peak_anon_mb)} MB peak anonymous ({_number(leanest.peak_rss_mb)} MB RSS)" if has_anon else f"{_number(leanest.peak_rss_mb)} MB peak RSS"
    return [
        f"- **Accuracy**: {name(best)}: {_accuracy_cell(best)} test" + (f"; tied within the 95 % intervals: {'; '.join(others)}." if others else "."),
        f"- **Inference throughput**: {name(fastest)}: {_number(fastest.infer_images_per_second)} images/s at batch {fastest.infer_batch_size}.",
        f"- **Memory**: {name(leanest)}: {memory}.",
    ]


def axes_tables(summary: pd.DataFrame) -> str:
    """Per backbone: stages x (augmentation, size), where a sweep covered more than one."""
    parts = []
    for backbone, group in summary.groupby("backbone"):
        combos = group[["augment", "image_size"]].drop_duplicates()
        if len(combos) < 2:
            continue
        # One row per stage and configuration: different settings are never averaged together.
        varying = [c for c in ("weights", "dataset", "profile", "epochs") if group[c].nunique() > 1]
        labels = []
        for row in group.itertuples():
            extra = ", ".join(part for part in [settings(row), *(f"{c} {getattr(row, c)}" for c in varying)] if part)
            labels.append(row.stage + (f" ({extra})" if extra else ""))
        group = group.assign(row_label=labels)
        clash = group.duplicated(["row_label", "augment", "image_size"], keep=False)
        group.loc[clash, "row_label"] = group.loc[clash, "row_label"] + " [" + group.loc[clash, "group"] + "]"
        cells = {(row.row_label, row.augment, row.image_size): _accuracy_cell(row) for row in group.itertuples()}
        columns = sorted({(row.augment, row.image_size) for row in group.itertuples()}, key=lambda c: (c[0], c[1]))
        order = dict(zip(group["row_label"], group["stage"]))
        rows = []
        for label in sorted(set(group["row_label"]), key=lambda r: (STAGE_ORDER.get(order[r], 9), r)):
            rows.append({"stage": label, **{f"{aug} @ {size} px": cells.get((label, aug, size), "") for aug, size in columns}})
        parts.append(f"### {backbone}\n\n{_table(rows)}")
    return "\n\n".join(parts)


def headline_table(summary: pd.DataFrame) -> str:
    """The few columns a reader compares first: accuracy against the write-up, then cost."""
    rows = []
    extra = _settings_column(summary)
    for index, row in enumerate(summary.itertuples()):
        stage = {"transfer": "transfer (frozen)", "finetune": f"finetune ({_number(row.unfreeze_layers)} layers)"}.get(row.stage, row.stage)
        weights = _weights_cell(row)
        rows.append(
            {
                "backbone": f"`{row.backbone}`",
                "stage": f"{stage}, {row.image_size} px" + (f" ({extra[index]})" if extra and extra[index] else ""),
                # Bold where the row is not what its stage promises (random init, not pretrained).
                "weights": weights if weights == row.weights else f"**{weights}**",
                "test accuracy": _accuracy_cell(row) + _tie_mark(summary, row),
                "write-up": _pct(row.writeup_accuracy),
                f"infer img/s (batch {row.infer_batch_size})": _number(row.infer_images_per_second),
                "peak RSS MB": _number(row.peak_rss_mb),
                **_anon_column(summary, row),
                "train s (+ cache s)": _number(row.train_seconds) + (f" (+ {_number(row.cache_seconds)})" if row.cache_seconds >= 0.5 else ""),
            }
        )
    return _table(rows)


# Where `bench report --readme FILE` puts the headline block.
README_START, README_END = "<!-- bench report: start -->", "<!-- bench report: end -->"


def splice_readme(text: str, block: str) -> str:
    """``text`` with what lies between the report markers replaced by ``block``."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"no {README_START} ... {README_END} markers; add them, on lines of their own, where the results should go")
    return text[: start + len(README_START)] + "\n" + block.strip() + "\n" + text[end:]


def render_headline(frame: pd.DataFrame, summary: pd.DataFrame) -> str:
    """For a project README: the headline table, the winners, and where the numbers come from."""
    # Compute, not the span from first start to last end: a grid resumed across sessions has gaps.
    compute_minutes = sum(compute_minutes_by_seed(frame).values())
    context = (
        f"{len(frame)} cells of `{_distinct(frame, 'dataset')}` on {_distinct(frame, 'cpu')}, "
        f"{compute_minutes:.0f} min of compute (the cells' wall times summed); generated by `python -m bench report` from the records."
    )
    explanation = [ACCURACY_EXPLANATION, "", *([ANON_EXPLANATION, ""] if "peak_anon_mb" in summary.columns else [])]
    return "\n".join([headline_table(summary), "", *explanation, *winners(summary), "", context])


def _distinct(frame: pd.DataFrame, column: str) -> str:
    """The column's distinct non-empty values, sorted and comma-separated, or ``unknown``."""
    return ", ".join(sorted({str(v) for v in frame[column].dropna() if str(v)})) or "unknown"


def failures_table(frame: pd.DataFrame) -> str:
    failed = frame[frame["status"] != "ok"]
    return _table([{"cell": r.key, "failure": r.failure, "error": (r.error or "").splitlines()[0][:200] if r.error else ""} for r in failed.itertuples()])


def _environment_lines(frame: pd.DataFrame) -> list[str]:
    """Machine, software and code of the records in ``frame`` (runs or cost measurements)."""
    gpu = _distinct(frame, "gpu")
    return [
        f"- Machine: {_distinct(frame, 'cpu')}; GPU: {gpu if gpu != 'unknown' else 'none'}",
        f"- Software: TensorFlow {_distinct(frame, 'tf_version')}, Keras {_distinct(frame, 'keras_version')}, Python {_distinct(frame, 'python_version')}",
        f"- Code: git {', '.join(sorted({str(c)[:7] for c in frame['git_commit'].dropna() if c})) or 'unknown'}"
        + (" (with uncommitted changes)" if frame["git_dirty"].fillna(False).astype(bool).any() else ""),
    ]


def provenance(frame: pd.DataFrame, bad_lines: int) -> list[str]:
    def distinct(column):
        return _distinct(frame, column)

    wall = grid_wall_minutes(frame)
    lines = [
        f"- Records: {len(frame)} cells ({(frame.status == 'ok').sum()} ok, {(frame.status == 'failed').sum()} failed)"
        + (f"; {bad_lines} malformed line(s) in runs.jsonl skipped" if bad_lines else ""),
        f"- Data: {distinct('dataset')}; profile: {distinct('profile')}",
        *_environment_lines(frame),
        f"- Run between {frame['started_at'].min()} and {frame['started_at'].max()}"
        + (f"; wall time {wall:.0f} min from the first cell's start to the last cell's end" if wall else ""),
    ]
    by_seed = compute_minutes_by_seed(frame)
    if len(by_seed) > 1:
        lines.append(
            f"- Compute time (the cells' wall times summed): {sum(by_seed.values()):.0f} min; "
            + ", ".join(f"seed {seed}: {minutes:.0f} min" for seed, minutes in by_seed.items())
        )
    commands = sorted({c for c in frame["command"].dropna() if c})
    if commands:
        lines.append("- Command(s): " + "; ".join(f"`{c}`" for c in commands))
    if ((frame["weights"] == "none") & (frame["stage"] != "baseline")).any():
        lines.append("- Rows with weights `none` in a transfer or finetune stage ran from random initialisation, not pretrained weights.")
    return lines


NOTES_FILE = "notes.md"


def render_markdown(frame: pd.DataFrame, summary: pd.DataFrame, bad_lines: int, plots: list[str], notes: str = "", cost_block: str = "") -> str:
    sections = ["# Benchmark results", ""]
    if notes.strip():
        sections += [notes.strip(), ""]
    if len(frame):
        sections += [*provenance(frame, bad_lines), ""]
    if not summary.empty:
        sections += ["## Winners", "", *winners(summary), ""]
        sections += ["## Accuracy", "", "Validation-tuned only; the test split is never used for a choice. `write-up` is the seed write-up's number for the same stage. " + ACCURACY_EXPLANATION, "", accuracy_table(summary), ""]
        sections += [
            "## Cost",
            "",
            "Inference: compiled forward pass, warm-up excluded, median of 5 repeats (± half their range; [min-max] over seeds). "
            "Latency at batch 1. Peak RSS: the cell's process high-water mark, kept by the kernel at no cost to the timings. "
            "Overhead: share of the cell's wall time outside model compute. "
            "Train s: the training loop's seconds (median over seeds); cache s: the seconds spent extracting activations into the cache, "
            "paid once by the first cell of a backbone, size and weights (the largest over seeds; later seeds read the cache); "
            "train img/s: training images (or their cached activations) per second."
            + (" " + ANON_EXPLANATION if "peak_anon_mb" in summary.columns else ""),
            "",
            cost_table(summary),
            "",
        ]
        axes = axes_tables(summary)
        if axes:
            sections += ["## Augmentation and input size", "", axes, ""]
    if cost_block:
        sections += [cost_block.strip(), ""]
    if (frame["status"] != "ok").any():
        sections += ["## Failed cells", "", failures_table(frame), ""]
    if plots:
        sections += ["## Plots", "", *[f"![{Path(p).stem}]({Path(p).name})" for p in plots], ""]
    return "\n".join(sections)


def render_perf(comparisons) -> str:
    """``perf.md``: the ratio lines first, then the table they come from."""
    first = comparisons[0].cached
    lines = [f"{c.stage} cached vs uncached: {c.speedup:.1f}x" for c in comparisons]
    rows = [
        {
            "stage": c.stage,
            "uncached train s": _number(c.uncached_seconds, 1),
            "cached s (cache + train)": f"{_number(c.cached_seconds, 1)} ({_number(c.cached.cache_seconds, 1)} + {_number(c.cached.train_seconds, 1)})",
            "speed-up": f"{c.speedup:.1f}x",
            "test acc uncached / cached": f"{_pct(c.uncached.test_accuracy)} / {_pct(c.cached.test_accuracy)}",
            "harness overhead (uncached / cached)": f"{100 * c.uncached.overhead_seconds / c.uncached.wall_seconds:.1f} % / {100 * c.cached.overhead_seconds / c.cached.wall_seconds:.1f} %",
        }
        for c in comparisons
    ]
    return "\n".join(
        [
            "# Cached against uncached training paths",
            "",
            *[f"- {line}" for line in lines],
            "",
            f"`{first.backbone}` at {first.image_size} px, {first.epochs} epochs, policy `{first.augment}`, weights `{weights_label(first.weights)}`, "
            f"{first.train_images} training / {first.test_images} test images of `{first.dataset}`; one process, cold cache for each cached run.",
            f"Machine: {first.cpu}; GPU: {first.gpu or 'none'}; TensorFlow {first.tf_version}, Keras {first.keras_version}; {first.started_at}.",
            "",
            _table(rows),
            "",
            "Speed-up = uncached training seconds / (cached: running the frozen part once per variant + training seconds). "
            "Harness overhead = share of the cell's wall time outside model compute (data loading, model building, bookkeeping).",
        ]
    )


def memory_lines(growth) -> list[str]:
    """The two ratio lines ``bench perf --memory`` prints for a stage."""
    name = f"`{growth.backbone}` {growth.stage}"
    return [
        f"{name}: peak memory growth {growth.largest.train_images}/{growth.smallest.train_images} training images: {growth.growth:.2f}x",
        f"{name}: cached training time vs in-memory path: {growth.time_ratio:.2f}x",
    ]


def timing_line(growth) -> str:
    """The training seconds behind a stage's time ratio, in the order each loader ran."""

    def seconds(records, median):
        return ", ".join(f"{r.train_seconds:.1f}" for r in records) + (f" (median {median:.1f})" if len(records) > 1 else "")

    return (
        f"`{growth.backbone}` {growth.stage} at {growth.largest.train_images:,} training images, train s: "
        f"per batch {seconds(growth.timed_batched, growth.batched_median_seconds)}; in-memory {seconds(growth.in_memory, growth.in_memory_median_seconds)}"
    )


def render_perf_memory(benchmark) -> str:
    """``perf-memory.md``: the ratio lines first, then every cell's memory and time."""
    growths = benchmark.growths
    first = growths[0].smallest
    # Each stage's sizes, then its timed runs at the largest size numbered per loader.
    runs = [
        (r, run)
        for g in growths
        for r, run in [*((r, "") for r in g.batched), *((r, i + 1) for i, r in enumerate(g.timed_batched)), *((r, i + 1) for i, r in enumerate(g.in_memory))]
    ]
    worst = max((r for g in growths for r in g.batched), key=lambda r: r.peak_anon_mb)
    rows = [
        {
            "backbone": f"`{r.backbone}`",
            "stage": r.stage,
            "size px": r.image_size,
            "loader": "in-memory (old)" if r.path.endswith("in-memory") else "per batch",
            "run": run,
            "training images": f"{r.train_images:,}",
            "peak anon MB": _number(r.peak_anon_mb),
            "peak RSS MB": _number(r.peak_rss_mb),
            "train s": _number(r.train_seconds, 1),
            "cache s": _number(r.cache_seconds, 1),
            "test accuracy": _pct(r.test_accuracy),
        }
        for r, run in runs
    ]
    return "\n".join(
        [
            "# Memory against training-set size",
            "",
            *[f"- {line}" for g in growths for line in memory_lines(g)],
            *[f"- {timing_line(g)}" for g in growths],
            f"- largest peak anonymous memory of a cell (per-batch loader): {_number(worst.peak_anon_mb)} MB (`{worst.backbone}` {worst.stage}, {worst.train_images:,} training images)",
            f"- the `bench` process itself (decoding and checking the data): {_number(benchmark.parent_peak_anon_mb)} MB peak anonymous memory",
            "",
            f"{first.epochs} epochs per cell, policy `{first.augment}`, {first.test_images:,} test images of `{first.dataset}`, each cell in its own process, "
            "a fresh activation cache (each size's transfer cell extracts it; finetune reads its cut from it).",
            f"Machine: {first.cpu}; GPU: {first.gpu or 'none'}; TensorFlow {first.tf_version}, Keras {first.keras_version}; {first.started_at}.",
            f"Command: `{benchmark.command}`",
            "",
            _table(rows),
            "",
            "Growth = peak anonymous memory at the largest size / at the smallest. " + ANON_EXPLANATION,
            "Training time ratio = median training seconds with the per-batch loader / median with the old in-memory loader (whole splits copied into memory, "
            "kept only for this comparison), same cell, largest size, warm cache, the two loaders run alternately (`run` numbers each loader's runs; "
            "`--timing-runs`), so a slow spell of a shared machine falls on both.",
        ]
    )


def render_comparison(comparison) -> str:
    """Markdown for ``bench compare``."""
    lines = ["# Comparison", ""]
    if comparison.environment_notes:
        lines += ["**Records come from different machines or software**, so cost deltas mix code and platform:", ""]
        lines += [f"- {note}" for note in comparison.environment_notes] + [""]
    rows = []
    for d in comparison.deltas:
        flag = lambda bad: " **REGRESSION**" if bad else ""  # noqa: E731
        rows.append(
            {
                "cell": d.cell,
                "test accuracy": f"{_pct(d.old_accuracy)} -> {_pct(d.new_accuracy)} ({100 * (d.new_accuracy - d.old_accuracy):+.1f} pt){flag(d.accuracy_regressed)}",
                "infer img/s": f"{_number(d.old_images_per_second)} -> {_number(d.new_images_per_second)} ({100 * (d.new_images_per_second / d.old_images_per_second - 1):+.1f} %){flag(d.throughput_regressed)}",
                "peak RSS MB": f"{_number(d.old_peak_rss_mb)} -> {_number(d.new_peak_rss_mb)} ({100 * (d.new_peak_rss_mb / d.old_peak_rss_mb - 1):+.1f} %){flag(d.memory_regressed)}",
            }
        )
    lines += [_table(rows), ""]
    for label, cells in (("failed in NEW (ok in OLD)", comparison.failed_new), ("only in OLD", comparison.only_old), ("only in NEW", comparison.only_new)):
        if cells:
            lines.append(f"- {label}: {', '.join(cells)}")
    lines.append(f"- {len(comparison.regressions)} regression(s) beyond the noise in {len(comparison.deltas)} matched cell(s)")
    # The last line says whether NEW passes, and if not, why and how many.
    lines.append("- FAIL: " + "; ".join(comparison.failures) if comparison.failures else "- PASS: every cell of OLD matched, ran ok and held within the noise")
    return "\n".join(lines)


def render_listing(specs, stages: dict, policies: dict) -> str:
    """Text for ``bench list``."""
    backbones = [
        {"backbone": s.name, "stages": ", ".join(s.stages), "default px": s.default_image_size, "finetune unfreezes": unfreeze_layers(stages["finetune"], s.unfreeze_layers) if "finetune" in s.stages else "", "imagenet weights": "yes" if s.has_imagenet_weights else "no", "description": s.description}
        for s in specs
    ]
    stage_rows = [{"stage": s.name, "epochs": s.epochs, "lr": s.learning_rate, "augment": s.augment, "description": s.description} for s in stages.values()]
    policy_rows = [{"policy": p.name, "exact cache": "yes" if p.cache_variants else "no", "description": p.description} for p in policies.values()]
    return "\n\n".join([_table(backbones), _table(stage_rows), _table(policy_rows)])


# --------------------------------------------------------------------------- cost without training

COST_MARKDOWN, COST_PLOT = "cost.md", "cost_throughput_vs_gflops.png"
COST_STAGE_COLUMNS = {"baseline": "whole network", "transfer": "head on pooled features", "finetune": "top on cut activations"}
COST_HOW_TO_READ = (
    "One row per backbone x input size x batch size, from `python -m bench cost`: random weights (they cost the same "
    "compute as pretrained ones), no training, each row measured in its own process. "
    "**infer img/s**: the compiled forward pass of the whole classifier (resize, preprocessing, backbone, head) at the "
    "row's batch size, warm-up excluded, median of 5 timed repeats (± half their range). "
    "**latency**: batch 1, p50 / p95 over 20 calls. "
    "**train img/s**: one optimiser step on a batch of what each stage trains, as the cached path trains it: `baseline` "
    "the whole network on images, `transfer` the head on pooled features, `finetune` the unfrozen top on the activations "
    "at its cut (in brackets: the parameters that step trains); n/a where the backbone has no such stage. A cell of "
    "`bench run` adds its data pipeline and the frozen part's one pass per image (the activation cache). "
    "**peak RSS / anon MB**: the measuring process's high-water mark (build, tracing, every pass above). "
    "**params**: of the whole classifier. **GFLOPs/img**: one forward pass, a multiply-add counted as two."
)


def _millions(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value / 1e6:.2f} M"


def cost_without_training_table(cost: pd.DataFrame) -> str:
    """One row per ok cost record; the anonymous-memory column only where a record has it."""
    ok = cost[cost["status"] == "ok"]
    show_anon = ok["peak_anon_mb"].notna().any()
    show_compute = (ok["precision"] != "float32").any() or ok["jit_compile"].fillna(False).astype(bool).any()
    rows = []
    for row in ok.itertuples():
        entry = {"backbone": f"`{row.backbone}`", "size px": row.image_size, "batch": row.batch_size}
        if show_compute:
            entry["compute"] = row.dtype_policy + (", XLA" if row.jit_compile else "")
        spread = f" ±{100 * row.infer_spread / 2:.0f} %" if row.infer_spread is not None and not pd.isna(row.infer_spread) else ""
        entry["infer img/s"] = _number(row.infer_images_per_second) + spread
        entry["latency p50 / p95 ms"] = f"{_number(row.latency_p50_ms, 1)} / {_number(row.latency_p95_ms, 1)}"
        for stage, part in COST_STAGE_COLUMNS.items():
            rate, params = getattr(row, f"{stage}_train_images_per_second"), getattr(row, f"{stage}_trainable_params")
            entry[f"train img/s: {stage} ({part})"] = "n/a" if rate is None or pd.isna(rate) else f"{_number(rate)} ({_millions(params)})"
        entry["peak RSS MB"] = _number(row.peak_rss_mb)
        if show_anon:
            entry["peak anon MB"] = _number(row.peak_anon_mb)
        entry["params"] = _millions(row.total_params)
        entry["GFLOPs/img"] = _number(row.flops_per_image / 1e9 if row.flops_per_image else None, 2)
        rows.append(entry)
    return _table(rows)


def _cost_provenance(cost: pd.DataFrame, bad_lines: int) -> list[str]:
    inputs = sorted({f"{r.native_size} px, {r.num_classes} classes (`{r.dataset}`)" for r in cost.itertuples()})
    lines = [
        f"- Records: {len(cost)} ({(cost.status == 'ok').sum()} ok, {(cost.status != 'ok').sum()} failed)"
        + (f"; {bad_lines} malformed line(s) in cost.jsonl skipped" if bad_lines else ""),
        f"- Inputs: random images of {'; '.join(inputs)}",
        *_environment_lines(cost),
        f"- Measured between {cost['started_at'].min()} and {cost['started_at'].max()}",
    ]
    commands = sorted({c for c in cost["command"].dropna() if c})
    if commands:
        lines.append("- Command(s): " + "; ".join(f"`{c}`" for c in commands))
    return lines


def cost_section(cost: pd.DataFrame, bad_lines: int, plot_name: str | None, heading: str = "##") -> str:
    """The cost-without-training block: how to read it, the table, failures, the plot."""
    parts = [f"{heading} Cost without training", "", COST_HOW_TO_READ, "", *_cost_provenance(cost, bad_lines), "", cost_without_training_table(cost), ""]
    failed = cost[cost["status"] != "ok"]
    if len(failed):
        parts += ["Failed measurements:", "", *[f"- `{r.key}`: {(r.error or '').splitlines()[0][:200] if r.error else ''}" for r in failed.itertuples()], ""]
    if plot_name:
        parts += [f"![throughput against GFLOPs]({plot_name})", ""]
    return "\n".join(parts)


def render_cost(cost: pd.DataFrame, bad_lines: int, plot_name: str | None) -> str:
    """``cost.md``: the cost-without-training section as a document of its own."""
    return "# " + cost_section(cost, bad_lines, plot_name).removeprefix("## ")


def render_cost_progress(number: int, total: int, record) -> str:
    """One terminal line for a finished cost measurement."""
    if record.status != "ok":
        return f"cost {number}/{total}: {record.key}: failed: {record.error.splitlines()[0] if record.error else ''}"
    return (
        f"cost {number}/{total}: {record.key}: {_number(record.infer_images_per_second)} img/s, latency p50 {_number(record.latency_p50_ms, 1)} ms, "
        f"peak RSS {_number(record.peak_rss_mb)} MB ({_number(record.wall_seconds)} s)"
    )


def write_cost_report(out_dir: Path, cost: pd.DataFrame | None = None, bad_lines: int = 0) -> list[Path]:
    """``cost.md`` and the throughput plot from the cost records (``out_dir/cost.jsonl`` unless given)."""
    from bench import plots

    out_dir = Path(out_dir)
    if cost is None:
        cost, bad_lines = load_cost([out_dir])
    if cost.empty:
        return []
    plot = plots.throughput_vs_gflops(cost, out_dir / COST_PLOT)
    markdown = out_dir / COST_MARKDOWN
    files.write_text(markdown, render_cost(cost, bad_lines, plot.name) + "\n")
    return [markdown, plot]


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count} B"


def _age(days: float) -> str:
    return f"{days:.1f} d" if days >= 1 else f"{24 * days:.1f} h"


def render_cache(listing, shown, now: float, removed: list | None = None) -> str:
    """Text for ``bench cache``: totals by kind, then the ``shown`` entries, or what was removed."""
    entries = listing.entries
    parts = [f"cache {listing.folder}: {_bytes(listing.total_bytes)} in {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"]
    if not listing.folder.exists():
        parts[0] += " (the folder does not exist)"
    kinds = {}
    for entry in entries:
        kinds.setdefault(entry.kind, []).append(entry)
    if kinds:
        totals = [{"kind": kind, "entries": len(group), "size": _bytes(sum(e.size_bytes for e in group)), "newest": _age(min(e.age_days(now) for e in group))} for kind, group in kinds.items()]
        parts += ["", _table(totals)]
    if removed is not None:
        parts += ["", f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, {_bytes(sum(e.size_bytes for e in removed))}"]
    elif shown:
        parts += ["", _table([{"kind": e.kind, "entry": e.path.name, "size": _bytes(e.size_bytes), "age": _age(e.age_days(now))} for e in shown])]
    return "\n".join(parts)


# --------------------------------------------------------------------------- files


def write_report(out_dir: Path, extra_inputs=(), project_readme: Path | None = None) -> list[Path]:
    """Write summary.csv, plots and README.md into ``out_dir``, then the headline block into
    ``project_readme`` between its markers where given; returns the paths written.

    Each file is written beside its place and renamed into it (``bench.files``), so a crash or
    a full disk leaves the old file or the new one. README.md comes after the files it
    describes: a reader who sees a new README sees the whole new set.

    Raises:
        OSError: a file could not be written; the files not yet replaced keep their old text.
    """
    from bench import plots

    out_dir = Path(out_dir)
    records, bad = load([out_dir, *extra_inputs])
    frame = records_frame(records)
    summary = distinguish_labels(summarize(frame))
    if not summary.empty:
        summary["settings"] = [settings(row) for row in summary.itertuples()]
    summary_csv = files.write_text(out_dir / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
    plot_paths = plots.write_plots(frame, summary, out_dir) if not summary.empty else []
    # `bench cost` records found among the inputs get a section of their own, cost.md and a plot.
    cost, cost_bad = load_cost([out_dir, *extra_inputs])
    cost_paths = write_cost_report(out_dir, cost, cost_bad)
    cost_block = cost_section(cost, cost_bad, COST_PLOT) if cost_paths else ""
    # A hand-written notes.md beside the records (dataset caveats, context) heads the report.
    notes = (out_dir / NOTES_FILE).read_text() if (out_dir / NOTES_FILE).exists() else ""
    # The README last: a reader who sees a new one sees the whole new set beside it.
    readme = files.write_text(out_dir / "README.md", render_markdown(frame, summary, bad, [p.name for p in plot_paths], notes, cost_block))
    written = [readme, summary_csv, *plot_paths, *cost_paths]
    if project_readme is not None and not summary.empty:
        project_readme = Path(project_readme)
        written.append(files.write_text(project_readme, splice_readme(project_readme.read_text(), render_headline(frame, summary))))
    return written
