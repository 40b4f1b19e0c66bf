"""``bench perf`` output: cached against uncached paths (``perf.md``) and, with ``--memory``,
memory and training time against training-set size (``perf-memory.md``)."""

from __future__ import annotations

from bench.render.format import number, pct, table
from bench.render.runs import ANON_EXPLANATION
from bench.stats import weights_label


def _machine_line(first) -> str:
    return f"Machine: {first.provenance.cpu}; GPU: {first.provenance.gpu or 'none'}; TensorFlow {first.provenance.tf_version}, Keras {first.provenance.keras_version}; {first.provenance.started_at}."


def render_perf(comparisons) -> str:
    """``perf.md``: the ratio lines first, then the table they come from."""
    first = comparisons[0].cached
    lines = [f"{c.stage} cached vs uncached: {c.speedup:.1f}x" for c in comparisons]
    rows = [
        {
            "stage": c.stage,
            "uncached train s": number(c.uncached_seconds, 1),
            "cached s (cache + train)": f"{number(c.cached_seconds, 1)} ({number(c.cached.cache_seconds, 1)} + {number(c.cached.train_seconds, 1)})",
            "speed-up": f"{c.speedup:.1f}x",
            "test acc uncached / cached": f"{pct(c.uncached.test_accuracy)} / {pct(c.cached.test_accuracy)}",
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
            _machine_line(first),
            "",
            table(rows),
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
            "peak anon MB": number(r.peak_anon_mb),
            "peak RSS MB": number(r.peak_rss_mb),
            "train s": number(r.train_seconds, 1),
            "cache s": number(r.cache_seconds, 1),
            "test accuracy": pct(r.test_accuracy),
        }
        for r, run in runs
    ]
    return "\n".join(
        [
            "# Memory against training-set size",
            "",
            *[f"- {line}" for g in growths for line in memory_lines(g)],
            *[f"- {timing_line(g)}" for g in growths],
            f"- largest peak anonymous memory of a cell (per-batch loader): {number(worst.peak_anon_mb)} MB (`{worst.backbone}` {worst.stage}, {worst.train_images:,} training images)",
            f"- the `bench` process itself (decoding and checking the data): {number(benchmark.parent_peak_anon_mb)} MB peak anonymous memory",
            "",
            f"{first.epochs} epochs per cell, policy `{first.augment}`, {first.test_images:,} test images of `{first.dataset}`, each cell in its own process, "
            "a fresh activation cache (each size's transfer cell extracts it; finetune reads its cut from it).",
            _machine_line(first),
            f"Command: `{benchmark.command}`",
            "",
            table(rows),
            "",
            "Growth = peak anonymous memory at the largest size / at the smallest. " + ANON_EXPLANATION,
            "Training time ratio = median training seconds with the per-batch loader / median with the old in-memory loader (whole splits copied into memory, "
            "kept only for this comparison), same cell, largest size, warm cache, the two loaders run alternately (`run` numbers each loader's runs; "
            "`--timing-runs`), so a slow spell of a shared machine falls on both.",
        ]
    )
