"""Cost measurements: throughput, latency, memory, parameters, FLOPs, and the environment.

Timing follows pytest-benchmark's hygiene: warm-up calls are excluded, the compiled
function is timed (not ``model.predict``'s Python overhead), and the median of repeats
is reported.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from bench import timing
from bench.memory import peak_rss_mb  # noqa: F401  (callers read it here)
from bench.provenance import Provenance, machine


def compiled_forward(model: keras.Model, jit_compile: bool = False):
    """``model(x, training=False)`` as a traced tf.function."""
    return tf.function(lambda x: model(x, training=False), jit_compile=jit_compile, reduce_retracing=True)


def inference_images_per_second(forward, images: np.ndarray, batch_size: int = 64, batches: int = 3, repeats: int = 5) -> dict:
    """Median images/s of ``forward`` (see ``compiled_forward``) over ``repeats`` timed runs (``timing.images_per_second``)."""
    batch = tf.constant(timing.batch_of(images, batch_size))
    return timing.images_per_second(lambda x: forward(x).numpy(), batch, batch_size, batches, repeats)


def latency_ms(forward, images: np.ndarray, calls: int = 30) -> dict:
    """Batch-1 latency percentiles (ms) of the compiled forward pass, warm-up excluded."""
    singles = [tf.constant(images[i : i + 1]) for i in range(min(calls, len(images)))]
    return timing.latency_ms(lambda x: forward(x).numpy(), singles, calls)


def training_images_per_second(step, batch_size: int, steps: int = 2, repeats: int = 5) -> dict:
    """Median images/s of ``step()`` (one synchronous training step on one batch) over
    ``repeats`` timed runs of ``steps`` steps, after two warm-up steps (tracing).

    Returns:
        ``{"images_per_second", "spread"}``; spread is (max - min) / median.
    """
    rate = timing.images_per_second(lambda _: step(), None, batch_size, steps, repeats)
    return {"images_per_second": rate["images_per_second"], "spread": rate["spread"]}


def matmul_gflops(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """The machine's practical peak: GFLOP/s of a square ``size`` matmul in ``dtype``, the best
    of ``repeats`` after a warm-up (a multiply-add counted as two, as ``flops_per_image`` counts).
    What a training step's achieved rate is read against: a nominal clock would not do, since
    the cores boost above the clock the kernel reports."""
    a = tf.random.normal((size, size), dtype=tf.float32)
    a = tf.cast(a, dtype)
    tf.matmul(a, a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def flops_per_image(model: keras.Model, input_shape: tuple[int, ...]) -> float | None:
    """Floating-point operations of one forward pass (a multiply-add counts 2), from TF's profiler."""
    try:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32))
        frozen = convert_variables_to_constants_v2(concrete)
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        profile = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options)
        return float(profile.total_float_ops) if profile.total_float_ops else None
    except Exception:  # the profiler is best-effort; a missing FLOP count must not fail a cell
        return None


def peak_gpu_mb() -> float | None:
    """Peak accelerator memory of GPU:0 since start, or ``None`` without a GPU."""
    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def param_counts(model: keras.Model) -> tuple[int, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = trainable + sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return total, trainable


def environment() -> Provenance:
    """Software and hardware facts stamped on every record (its command is the caller's to add)."""
    gpus = tf.config.list_physical_devices("GPU")
    gpu = ""
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        gpu = details.get("device_name", gpus[0].name)
    return dataclasses.replace(machine(), tf_version=tf.__version__, keras_version=keras.__version__, gpu=gpu)


class ThroughputMeter(keras.callbacks.Callback):
    """Steady-state training images/s: time between batch ends, first epoch's first steps excluded.

    The first steps of the first epoch trace and compile the train function; the gaps
    between later batch ends include input-pipeline time, as a user's training would.
    """

    def __init__(self, batch_size: int, skip_steps: int = 3):
        super().__init__()
        self.batch_size = batch_size
        self.skip_steps = skip_steps
        self.seconds = 0.0
        self.steps = 0
        self._last = None
        self._seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self._seen += 1
        if self._seen > self.skip_steps:
            self.seconds += now - self._last
            self.steps += 1
        self._last = now

    @property
    def images_per_second(self) -> float | None:
        return self.steps * self.batch_size / self.seconds if self.seconds else None


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training the moment the loss is NaN or infinite."""

    def __init__(self):
        super().__init__()
        self.diverged = False

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.diverged = True
            self.model.stop_training = True
