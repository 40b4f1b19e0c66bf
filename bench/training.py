"""Training and evaluation: the optimiser and schedule, the two epoch sources, ``train``, ``evaluate``.

One loop trains either the whole model on augmented images (``image_epochs``) or a
trainable suffix on cached activations (``variant_epochs``); both see the images in the
same order per epoch (``epoch_order``), with the same optimiser and schedule. Every input
is read batch by batch from row views of memory maps (``bench.rows``) and prefetched in the
background, so memory follows the batch size, never the dataset's.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from bench import progress
from bench.augment import chain
from bench.rows import RowView, as_view
from bench.stages import Stage


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype="float32")[labels]


def set_precision(precision: str) -> str:
    """Apply a Keras dtype policy; returns the policy name recorded."""
    import keras
    import tensorflow as tf

    if precision == "float32":
        name = "float32"
    elif precision == "mixed":
        # bfloat16 is what CPUs accelerate (AVX512-BF16, AMX); GPUs want float16.
        name = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    else:
        raise ValueError(f"unknown precision {precision!r}; choose float32 or mixed")
    keras.mixed_precision.set_global_policy(name)
    return name


def compile_model(model, recipe: Stage, steps_per_epoch: int, jit_compile: bool = False):
    """AdamW with linear warm-up then cosine decay to zero over all epochs, or the recipe's
    Nesterov SGD and schedule (``bench.nesterov``); smoothed cross-entropy."""
    import keras

    if recipe.solver == "nesterov":
        from bench.nesterov import nesterov_optimizer

        optimizer = nesterov_optimizer(model, recipe, steps_per_epoch)
    else:
        total = max(1, recipe.epochs * steps_per_epoch)
        warmup = min(total - 1, int(recipe.warmup_epochs * steps_per_epoch))
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else recipe.learning_rate,
            decay_steps=total - warmup,
            warmup_target=recipe.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=recipe.weight_decay)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order images are seen in an epoch: the same for the cached and uncached paths."""
    return np.random.default_rng([seed, epoch]).permutation(count)


# How batches reach the step, chosen by measurement against the in-memory loader it replaced
# (`bench perf --memory`, MobileNetV2 at 128 px, 20,000 training images, 3 epochs, 2 CPU cores):
# a tf.data generator called once per batch trained the transfer head 1.27x slower (6.6 s
# against 5.2 s: a generator call costs about a millisecond, and the head's step only a few),
# so the generator reads a block of several batches and ``rebatch`` splits it in C++: 1.07x
# for transfer, 0.86x for finetune (whose in-memory loader copies the whole split each
# epoch). Single runs later moved between 0.77x and 1.31x on this shared machine; with five
# alternating warm runs per loader (medians) it is 0.82x transfer, 0.98x finetune
# (results/perf-memory-5k-20k/perf-memory-5-warm-runs.md).
# tf.data runs the generator in its background thread and prefetches; a parallel map over
# ``tf.numpy_function`` or a ``keras.utils.PyDataset`` with workers were not needed.
# Batches prefetched ahead of the step: a fixed depth keeps memory a few batches, where
# AUTOTUNE may buffer more.
PREFETCH_BATCHES = 4
# Bytes of rows one generator call reads: MobileNetV2's pooled features come 25 batches at a
# time, its finetune cut's 3.
READ_BLOCK_BYTES = 16 * 2**20
# Batch size for validation and evaluation passes (the model's output does not depend on it).
EVAL_BATCH_SIZE = 256


def blocked_batches(count: int, batch_size: int, row_bytes: int, read_rows, *specs):
    """Batches of ``batch_size`` over rows ``0..count``, in order: ``read_rows(start, stop)`` gives
    the numpy arrays of rows ``[start, stop)``, called in the background by tf.data a block of
    several batches at a time (``READ_BLOCK_BYTES``), so memory is a few blocks whatever ``count``.
    ``specs`` match what it returns: ``(shape without the leading axis, dtype)`` of each array."""
    import tensorflow as tf

    # Whole batches per block, so the batches' boundaries are those of slicing the rows.
    block = batch_size * max(1, READ_BLOCK_BYTES // max(1, batch_size * row_bytes))

    def blocks():
        for start in range(0, count, block):
            yield read_rows(start, min(start + block, count))

    signature = tuple(tf.TensorSpec((None, *shape), dtype) for shape, dtype in specs)
    dataset = tf.data.Dataset.from_generator(blocks, output_signature=signature if len(signature) > 1 else signature[0]).rebatch(batch_size)
    # A known length lets Keras size its epochs without running out of data.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(count / batch_size)))
    return dataset.with_options(without_autotuning())


def without_autotuning():
    """tf.data options with autotuning off, for every pipeline here (and those built on them).

    tf.data's autotuning thread sleeps between its passes, for up to a minute once a pipeline
    has run a while, and destroying an iterator waits for it to wake. Training calls ``fit``
    once per epoch, so each epoch ended up to a minute late: measured on 2 cores, ``fit``
    returned only at the thread's wake-ups (20.5, 41 or 82 s after it began, its own epoch
    done at 13-29 s), and the default grid's from-scratch epochs took 142 or 202 s for 90-130
    s of steps. Nothing here needs the tuning: the prefetch buffers are fixed (``PREFETCH_BATCHES``),
    and the one map asked for AUTOTUNE parallelism then runs at tf.data's default (up to the cores)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def view_batches(rows, labels: np.ndarray | None = None, batch_size: int = EVAL_BATCH_SIZE):
    """Consecutive batches of a ``RowView`` (with their labels where given), in order, for validation and evaluation."""
    rows = as_view(rows)
    specs = [(rows.shape[1:], rows.dtype)] + ([(labels.shape[1:], labels.dtype)] if labels is not None else [])

    def read_rows(start, stop):
        return rows.rows(slice(start, stop)) if labels is None else (rows.rows(slice(start, stop)), labels[start:stop])

    return blocked_batches(len(rows), batch_size, rows.row_bytes, read_rows, *specs).prefetch(PREFETCH_BATCHES)


def image_epochs(x, y_onehot, recipe: Stage, policy, seed: int):
    """Uncached input: a tf.data pipeline of augmented image batches per epoch, each batch read
    from the (memory-mapped) images in the epoch's order."""
    import keras
    import tensorflow as tf

    x = as_view(x)
    augment = policy.build(seed, y_onehot.shape[-1]) if policy.build is not None else None
    if recipe.shift_fraction:
        translate = keras.layers.RandomTranslation(recipe.shift_fraction, recipe.shift_fraction, fill_mode="nearest", seed=seed + 50)
        augment = chain(augment, lambda images, labels: (translate(images, training=True), labels))

    def for_epoch(epoch):
        order = epoch_order(len(x), seed, epoch)
        specs = (x.shape[1:], x.dtype), (y_onehot.shape[1:], "float32")
        # A policy that needs to know which images a block holds, and the epoch, runs on the rows as read.
        transform = policy.epoch_rows(seed, len(x), epoch) if policy.epoch_rows is not None else (lambda positions, images: images)

        def read_rows(start, stop):
            positions = order[start:stop]
            return transform(positions, x.rows(positions)), y_onehot[positions]

        dataset = blocked_batches(len(order), recipe.batch_size, x.row_bytes, read_rows, *specs)
        dataset = dataset.map(lambda i, l: (tf.cast(i, "float32"), l), num_parallel_calls=tf.data.AUTOTUNE)
        if augment is not None:
            # Sequential (not parallel) map: the layers' seed generators then give the same
            # batches for the same seed.
            dataset = dataset.map(augment)
        return dataset.prefetch(PREFETCH_BATCHES)

    return for_epoch


def variant_draws(count: int, variants: int, seed: int, epoch: int, max_shift: int = 0):
    """An epoch's seeded draws for the cached path: (order, each position's variant or ``None``,
    each position's (rows, cols) map shift or ``None``)."""
    order = epoch_order(count, seed, epoch)
    choice = np.random.default_rng([seed, epoch, 1]).integers(variants, size=count) if variants > 1 else None
    shifts = shift_draws(count, max_shift, np.random.default_rng([seed, epoch, 2])) if max_shift else None
    return order, choice, shifts


def variant_epochs(variants, y_onehot, seed: int, max_shift: int = 0, *, batch_size: int):
    """Cached input, batch by batch: each image's variant (e.g. original or mirrored) drawn per
    epoch, seeded, then its activation map shifted by up to ``max_shift`` positions each way.

    ``variants`` are row views of memory-mapped activations; only a block of batches' rows is
    read at a time (``blocked_batches``), so memory is a few blocks whatever the split's size.
    """
    variants = [as_view(v) for v in variants]
    count = len(y_onehot)

    def for_epoch(epoch):
        order, choice, shifts = variant_draws(count, len(variants), seed, epoch, max_shift)

        def read_rows(start, stop):
            positions = order[start:stop]
            if choice is None:
                maps = variants[0].rows(positions)
            else:
                maps = np.empty((len(positions), *variants[0].shape[1:]), variants[0].dtype)
                for v, view in enumerate(variants):
                    mask = choice[start:stop] == v
                    maps[mask] = view.rows(positions[mask])
            if shifts is not None:
                maps = shift_maps_by(maps, shifts[0][start:stop], shifts[1][start:stop])
            return maps, y_onehot[positions]

        specs = (variants[0].shape[1:], variants[0].dtype), (y_onehot.shape[1:], "float32")
        return blocked_batches(count, batch_size, variants[0].row_bytes, read_rows, *specs).prefetch(PREFETCH_BATCHES)

    return for_epoch


def in_memory_variant_epochs(variants: list[np.ndarray], y_onehot, seed: int, max_shift: int = 0):
    """The loader ``variant_epochs`` replaced, kept only as ``bench perf --memory``'s comparison:
    whole arrays in memory and a fancy-indexed copy of the split per epoch. Same draws."""

    def for_epoch(epoch):
        order, choice, shifts = variant_draws(len(y_onehot), len(variants), seed, epoch, max_shift)
        picked = variants[0][order]  # a copy: fancy indexing
        for v in range(1, len(variants)):
            picked[choice == v] = variants[v][order[choice == v]]
        if shifts is not None:
            picked = shift_maps_by(picked, *shifts)
        return picked, y_onehot[order]

    return for_epoch


def map_shift(recipe: Stage, map_side: int) -> int:
    """Positions the cached path shifts a ``map_side``-wide activation map by, for the stage's fraction."""
    # At least one position: a coarse map (2 x 2 at 32 px) still gets the regulariser.
    return max(1, round(recipe.shift_fraction * map_side)) if recipe.shift_fraction else 0


def shift_draws(count: int, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, cols): each map's shift, whole positions in [-max_shift, max_shift] along each axis."""
    return rng.integers(-max_shift, max_shift + 1, size=(2, count))


def shift_maps(maps: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Moves each (height, width, channels) map, in place, by a random whole number of positions
    in [-max_shift, max_shift] along each axis, repeating the edge positions into the space it leaves."""
    return shift_maps_by(maps, *shift_draws(len(maps), max_shift, rng))


def shift_maps_by(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Moves map ``i``, in place, by ``rows[i]`` and ``cols[i]`` positions, edges repeated."""
    height, width = maps.shape[1:3]
    for row in np.unique(rows):
        for col in np.unique(cols):
            picked = np.flatnonzero((rows == row) & (cols == col))
            if (row or col) and len(picked):
                # Group by group, so the extra memory is one group's maps, not a padded copy of all.
                source_rows = np.clip(np.arange(height) - row, 0, height - 1)
                source_cols = np.clip(np.arange(width) - col, 0, width - 1)
                maps[picked] = maps[picked][:, source_rows][:, :, source_cols]
    return maps


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns: per-epoch metrics, steady-state speed, divergence, an early stop, time."""

    history: list[dict]
    images_per_second: float | None
    diverged: bool
    seconds: float
    stopped: bool = False  # ``should_stop`` ended training before its last epoch (a pruned trial)


def train(model, epoch_inputs, steps_per_epoch: int, val_inputs, y_val_onehot, recipe: Stage, jit_compile: bool = False, should_stop=None) -> TrainResult:
    """Fit ``model`` epoch by epoch.

    ``epoch_inputs(epoch)`` gives a tf.data pipeline or an ``(x, y)`` pair already in the
    epoch's order; ``val_inputs`` is a ``RowView`` (read batch by batch) or an array. The
    learning-rate schedule spans all epochs. ``should_stop(epoch, epochs, metrics)``, called
    after each epoch (1-based) with its metrics, may end training early (a tuning trial's pruner).
    """
    from bench.measure import DivergenceGuard, ThroughputMeter

    meter, guard = ThroughputMeter(recipe.batch_size), DivergenceGuard()
    compile_model(model, recipe, steps_per_epoch, jit_compile)
    averaging = []
    if recipe.solver == "nesterov" and recipe.nesterov.lookahead_every:
        from bench.nesterov import Lookahead

        averaging.append(Lookahead(recipe.nesterov.lookahead_every, recipe.nesterov.lookahead_decay, recipe.epochs * steps_per_epoch))
    if isinstance(val_inputs, RowView):
        validation, validation_batch_size = view_batches(val_inputs, y_val_onehot), None
    else:
        validation, validation_batch_size = (val_inputs, y_val_onehot), EVAL_BATCH_SIZE
    history = []
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        inputs = epoch_inputs(epoch)
        x, y = inputs if isinstance(inputs, tuple) else (inputs, None)
        fit = model.fit(
            x,
            y,
            batch_size=recipe.batch_size if y is not None else None,
            shuffle=False,
            epochs=epoch + 1,
            initial_epoch=epoch,
            validation_data=validation,
            validation_batch_size=validation_batch_size,
            callbacks=[*averaging, meter, guard, progress.keras_callback(epoch, recipe.epochs, steps_per_epoch)],
            verbose=0,
        )
        row = {k: float(v[-1]) for k, v in fit.history.items()}
        history.append({"epoch": epoch + 1, **row})
        # Progress goes to the cell's log file.
        print(f"epoch {epoch + 1}/{recipe.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()) + f" ({time.perf_counter() - start:.0f} s)", flush=True)
        progress.report("training", (epoch + 1) * steps_per_epoch, recipe.epochs * steps_per_epoch, milestone=True, epoch=epoch + 1, epochs=recipe.epochs, **row)
        if guard.diverged:
            break
        if should_stop is not None and should_stop(epoch + 1, recipe.epochs, row):
            print(f"stopped after epoch {epoch + 1}/{recipe.epochs}: stopped by the study (pruned, or collapsed to chance)", flush=True)
            return TrainResult(history, meter.images_per_second, False, time.perf_counter() - start, stopped=True)
    return TrainResult(history, meter.images_per_second, guard.diverged, time.perf_counter() - start)


def tta_views(rows: RowView, recipe: Stage) -> tuple[list[RowView], list[float]]:
    """The test-time views of ``rows`` and their weights: the images and, where ``tta_flip``, their
    mirror; where ``tta_shift_pixels``, the same translated up-left and down-right, which share
    half the weight (airbench94: 1/4 each untranslated, 1/8 each translated)."""
    rows = as_view(rows)
    flips = [lambda view: view] + ([RowView.mirror] if recipe.tta_flip else [])
    views = [flip(rows) for flip in flips]
    if not recipe.tta_shift_pixels:
        return views, [1 / len(views)] * len(views)
    shift = recipe.tta_shift_pixels
    shifted = [flip(rows.translated(by, by)) for by in (shift, -shift) for flip in flips]
    return views + shifted, [0.5 / len(views)] * len(views) + [0.5 / len(shifted)] * len(shifted)


def evaluate(model, variants: list, labels: np.ndarray, weights: list[float] | None = None, average: str = "probabilities") -> tuple[float, float]:
    """(accuracy, cross-entropy) of the class probabilities averaged over the test-time variants
    (row views, read batch by batch, or arrays), equally or by ``weights``; ``average="logits"``
    averages the logits instead (airbench94's)."""
    predictions = [model.predict(view_batches(v) if isinstance(v, RowView) else v, batch_size=None if isinstance(v, RowView) else EVAL_BATCH_SIZE, verbose=0) for v in variants]
    if average == "logits":
        # A view's log-probabilities are its logits less one number per image, so their
        # weighted mean is the mean logit less one number per image: the same softmax.
        mean_log = np.average(np.log(np.maximum(predictions, np.finfo("float32").tiny)), axis=0, weights=weights)
        probs = np.exp(mean_log - mean_log.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    else:
        probs = np.average(predictions, axis=0, weights=weights)  # weights None: np.mean's
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(np.mean(probs.argmax(1) == labels)), float(-np.mean(np.log(picked)))
