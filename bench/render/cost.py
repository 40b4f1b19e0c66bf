"""Cost without training (``bench cost``): the how-to-read paragraph, the table, the section,
``cost.md``'s text and the terminal line per measurement."""

from __future__ import annotations

import pandas as pd

from bench.render.format import first_line, half_range, millions, missing, number, table
from bench.render.provenance import cost_provenance
from bench.stats import training_gflops_per_second

COST_STAGE_COLUMNS = {"baseline": "whole network", "transfer": "head on pooled features", "finetune": "top on cut activations", "linear": "L-BFGS on pooled features"}
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
    "{linear}**peak RSS / anon MB**: the measuring process's high-water mark (build, tracing, every pass above). "
    "**params**: of the whole classifier. **GFLOPs/img**: one forward pass, a multiply-add counted as two.{peak}"
)
COST_PEAK_HOW_TO_READ = (
    " **baseline GFLOP/s (% of matmul)**: the whole-network training step's achieved rate, a training image counted as "
    "three forward passes, against the machine's best rate on a 2,048-square matmul in the row's compute dtype, "
    "timed in the same process: how near the step runs to what the cores can do."
)

COST_LINEAR_HOW_TO_READ = (
    "`linear`: rows x L-BFGS iterations per second of its logistic regression on 8,192 random pooled-feature rows "
    "(a split of n rows costs about n x iterations / this rate). "
)


def _stage_columns(ok: pd.DataFrame) -> dict:
    """The stages with a training-speed column: ``linear`` only where a record measured it
    (reports of earlier records render as before)."""
    return {stage: part for stage, part in COST_STAGE_COLUMNS.items() if stage != "linear" or ok["linear_train_images_per_second"].notna().any()}


RUNTIMES_HOW_TO_READ = (
    "**runtime**: what ran the forward pass: `tensorflow` the compiled Keras model; the others a converted file "
    "(`onnxruntime`, `openvino` at float32, `openvino-int8` quantised by NNCF, `litert` float32, `litert-int8` full-integer "
    "int8), each converted in one "
    "process and timed in another that loads only its runtime, every runtime on the same threads, one operator at a "
    "time; they time inference only (train columns n/a)."
)


def shows_runtimes(cost: pd.DataFrame) -> bool:
    """Whether any record ran on a runtime other than TensorFlow (tables of older records stay as they were)."""
    return bool((cost["runtime"].fillna("tensorflow") != "tensorflow").any())


def _shows_peak(ok: pd.DataFrame) -> bool:
    """Whether a record timed the matmul peak (tables of older records stay as they were)."""
    return "matmul_gflops" in ok and bool(ok["matmul_gflops"].notna().any())


def _against_peak(row) -> str:
    if missing(row.baseline_train_images_per_second) or missing(row.flops_per_image) or missing(row.matmul_gflops):
        return "n/a"
    achieved = training_gflops_per_second(row.flops_per_image, row.baseline_train_images_per_second)
    return f"{number(achieved)} ({100 * achieved / row.matmul_gflops:.0f} %)"


def cost_without_training_table(cost: pd.DataFrame) -> str:
    """One row per ok cost record; the anonymous-memory and runtime columns only where a record has them."""
    ok = cost[cost["status"] == "ok"]
    show_anon = ok["peak_anon_mb"].notna().any()
    show_compute = (ok["precision"] != "float32").any() or ok["jit_compile"].fillna(False).astype(bool).any()
    rows = []
    for row in ok.itertuples():
        entry = {"backbone": f"`{row.backbone}`", "size px": row.image_size, "batch": row.batch_size}
        if shows_runtimes(cost):
            entry["runtime"] = row.runtime
        if show_compute:
            entry["compute"] = row.dtype_policy + (", XLA" if row.jit_compile else "")
        entry["infer img/s"] = number(row.infer_images_per_second) + half_range(row.infer_spread)
        entry["latency p50 / p95 ms"] = f"{number(row.latency_p50_ms, 1)} / {number(row.latency_p95_ms, 1)}"
        for stage, part in _stage_columns(ok).items():
            rate, params = getattr(row, f"{stage}_train_images_per_second"), getattr(row, f"{stage}_trainable_params")
            entry[f"train img/s: {stage} ({part})"] = "n/a" if missing(rate) else f"{number(rate)} ({millions(params)})"
        entry["peak RSS MB"] = number(row.peak_rss_mb)
        if show_anon:
            entry["peak anon MB"] = number(row.peak_anon_mb)
        entry["params"] = millions(row.total_params)
        entry["GFLOPs/img"] = number(row.flops_per_image / 1e9 if row.flops_per_image else None, 2)
        if _shows_peak(ok):
            entry["baseline GFLOP/s (% of matmul)"] = _against_peak(row)
        rows.append(entry)
    return table(rows)


def cost_section(cost: pd.DataFrame, bad_lines: int, plot_name: str | None, heading: str = "##") -> str:
    """The cost-without-training block: how to read it, the table, failures, the plot."""
    ok = cost[cost["status"] == "ok"]
    how_to_read = COST_HOW_TO_READ.format(linear=COST_LINEAR_HOW_TO_READ if "linear" in _stage_columns(ok) else "", peak=COST_PEAK_HOW_TO_READ if _shows_peak(ok) else "")
    how_to_read += (" " + RUNTIMES_HOW_TO_READ) if shows_runtimes(cost) else ""
    parts = [f"{heading} Cost without training", "", how_to_read, "", *cost_provenance(cost, bad_lines), "", cost_without_training_table(cost), ""]
    failed = cost[cost["status"] != "ok"]
    if len(failed):
        parts += ["Failed measurements:", "", *[f"- `{r.key}`: {first_line(r.error)}" for r in failed.itertuples()], ""]
    if plot_name:
        parts += [f"![throughput against GFLOPs]({plot_name})", ""]
    return "\n".join(parts)


def render_cost(cost: pd.DataFrame, bad_lines: int, plot_name: str | None) -> str:
    """``cost.md``: the cost-without-training section as a document of its own."""
    return "# " + cost_section(cost, bad_lines, plot_name).removeprefix("## ")


def render_cost_progress(number_done: int, total: int, record) -> str:
    """One terminal line for a finished cost measurement."""
    if record.status != "ok":
        return f"cost {number_done}/{total}: {record.key}: failed: {record.error.splitlines()[0] if record.error else ''}"
    return (
        f"cost {number_done}/{total}: {record.key}: {number(record.infer_images_per_second)} img/s, latency p50 {number(record.latency_p50_ms, 1)} ms, "
        f"peak RSS {number(record.peak_rss_mb)} MB ({number(record.wall_seconds)} s)"
    )
