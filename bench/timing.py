"""Timing loops any runtime's forward pass goes through: throughput at a batch size and batch-1
latency, warm-up calls excluded, the median of repeats reported (pytest-benchmark's hygiene).
NumPy only: a runtime's measuring process imports nothing it does not run.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def images_per_second(run, batch, batch_size: int, batches: int = 3, repeats: int = 5, warmup: int = 2) -> dict:
    """Median images/s of ``run(batch)`` over ``repeats`` timed runs of ``batches`` calls each.

    Args:
        run: one forward pass, returning only once its output is ready.
        batch: the input, already in the runtime's own form (a tensor, an array).

    Returns:
        ``{"images_per_second", "spread", "batch_size"}``; spread is (max - min) / median.
    """
    for _ in range(warmup):  # tracing, compilation, first-call allocation
        run(batch)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            run(batch)
        rates.append(batch_size * batches / (time.perf_counter() - start))
    median = statistics.median(rates)
    return {"images_per_second": median, "spread": (max(rates) - min(rates)) / median, "batch_size": batch_size}


def latency_ms(run, singles: list, calls: int = 30, warmup: int = 3) -> dict:
    """Batch-1 latency percentiles (ms) of ``run`` over ``calls`` calls, cycling through ``singles``
    (one-image inputs in the runtime's own form, made before the clock starts)."""
    for _ in range(warmup):
        run(singles[0])
    times = []
    for i in range(calls):
        single = singles[i % len(singles)]
        start = time.perf_counter()
        run(single)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}


def batch_of(images: np.ndarray, batch_size: int) -> np.ndarray:
    """``batch_size`` images cycled from the first ones (only those rows: resizing the whole array would copy it)."""
    return np.resize(images[:batch_size], (batch_size, *images.shape[1:]))
