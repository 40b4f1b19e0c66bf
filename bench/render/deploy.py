"""Deployment (``bench deploy``): the how-to-read paragraph, the table (rows: backbone x stage x
runtime), the section, ``deploy.md``'s text and the terminal line per deployment."""

from __future__ import annotations

import pandas as pd

from bench.render.format import first_line, number, pct, table
from bench.render.provenance import environment_lines, runtime_lines
from bench.runtimes import FLOAT_TOLERANCE_POINTS

DEPLOY_HOW_TO_READ = (
    "One row per backbone x stage x image size (x augmentation, where cells differ in it) x runtime, seeds together, from `python -m bench deploy`: each trained cell's saved classifier "
    "converted to the runtime (`tensorflow`: the Keras model itself, the reference), evaluated on the cell's own test split as "
    "the cell evaluated it (with its flip test-time augmentation where its recipe has it), then timed, each step in a process "
    "of its own. **accuracy**: the converted model's test accuracy (mean over seeds); **drop**: TensorFlow's accuracy on the "
    "same images minus it, in points; **agreement**: the share of test images whose predicted class is TensorFlow's. "
    f"A float runtime more than {FLOAT_TOLERANCE_POINTS} point from TensorFlow is a failed conversion and is not timed; "
    "`litert-int8` (full-integer) and `openvino-int8` (NNCF) are post-training quantisation calibrated on a few hundred of "
    "the cell's training images (never test images): their drop is the quantisation's; **official int8 drop**: beside it, the backbone's "
    "own release's ImageNet top-1 of its int8 model below its float one (the sources are in docs/deploy.md). **file MB**: the model file(s) the runtime loads. "
    "**infer img/s**: batch 64, warm-up excluded, median of 5 timed repeats; **latency**: batch 1, p50 / p95 over 30 calls; "
    "**peak RSS**: the measuring process's, which loaded only its runtime. Every runtime runs on the same threads."
)


def deploy_table(summary: pd.DataFrame) -> str:
    """One row per ``bench.stats.deploy_summary`` row; the augmentation column only where rows
    differ in it, the official int8 drop only where a row has one."""
    show_augment = summary["augment"].nunique() > 1
    show_official = summary["official_int8_drop_points"].notna().any()
    rows = []
    for row in summary.itertuples():
        rows.append(
            {
                "backbone": f"`{row.backbone}`",
                "stage": row.stage,
                "size px": row.image_size,
                **({"augment": row.augment} if show_augment else {}),
                "runtime": row.runtime,
                "accuracy": pct(row.test_accuracy) + (f" (n={row.seeds})" if row.seeds > 1 else ""),
                "drop (points)": number(row.drop_points, 2),
                **({"official int8 drop (ImageNet)": number(row.official_int8_drop_points, 1)} if show_official else {}),
                "agreement": pct(row.agreement),
                "file MB": number(row.model_file_mb, 1),
                "infer img/s": number(row.infer_images_per_second),
                "latency p50 / p95 ms": f"{number(row.latency_p50_ms, 1)} / {number(row.latency_p95_ms, 1)}",
                "peak RSS MB": number(row.peak_rss_mb),
            }
        )
    return table(rows)


def deploy_section(deploy: pd.DataFrame, summary: pd.DataFrame, bad_lines: int, plot_name: str | None, heading: str = "##") -> str:
    """The deployment block: how to read it, where it ran, the table, failures, the plot."""
    counts = f"- Records: {len(deploy)} ({(deploy.status == 'ok').sum()} ok, {(deploy.status != 'ok').sum()} failed)" + (
        f"; {bad_lines} malformed line(s) in deploy.jsonl skipped" if bad_lines else ""
    )
    parts = [f"{heading} Deployment", "", DEPLOY_HOW_TO_READ, "", counts, *environment_lines(deploy), *runtime_lines(deploy), "", deploy_table(summary), ""]
    failed = deploy[deploy["status"] != "ok"]
    if len(failed):
        parts += ["Failed deployments:", "", *[f"- `{r.key}` ({r.failure}): {first_line(r.error)}" for r in failed.itertuples()], ""]
    if plot_name:
        parts += [f"![accuracy against latency]({plot_name})", ""]
    return "\n".join(parts)


def render_deploy(deploy: pd.DataFrame, summary: pd.DataFrame, bad_lines: int, plot_name: str | None) -> str:
    """``deploy.md``: the deployment section as a document of its own."""
    return "# " + deploy_section(deploy, summary, bad_lines, plot_name).removeprefix("## ")


def render_deploy_progress(number_done: int, total: int, record) -> str:
    """One terminal line for a finished deployment."""
    head = f"deploy {number_done}/{total}: {record.key}"
    if record.status != "ok":
        return f"{head}: failed ({record.failure}): {first_line(record.error)}"
    return (
        f"{head}: accuracy {pct(record.test_accuracy)} (TensorFlow {pct(record.reference_accuracy)}, agreement {pct(record.agreement)}), "
        f"{number(record.infer_images_per_second)} img/s, latency p50 {number(record.latency_p50_ms, 1)} ms, {number(record.model_file_mb, 1)} MB"
    )
