"""Training and evaluation: the optimiser and schedule, the two epoch sources, ``train``, ``evaluate``.

One loop trains either the whole model on augmented images (``image_epochs``) or a
trainable suffix on cached activations (``variant_epochs``); both see the images in the
same order per epoch (``epoch_order``), with the same optimiser and schedule.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from bench import progress
from bench.augment import chain
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
    """AdamW with linear warm-up then cosine decay to zero over all epochs; smoothed cross-entropy."""
    import keras

    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = min(total - 1, int(recipe.warmup_epochs * steps_per_epoch))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else recipe.learning_rate,
        decay_steps=total - warmup,
        warmup_target=recipe.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=recipe.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order images are seen in an epoch: the same for the cached and uncached paths."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def image_epochs(x, y_onehot, recipe: Stage, policy, seed: int):
    """Uncached input: a tf.data pipeline of augmented image batches per epoch."""
    import keras
    import tensorflow as tf

    augment = policy.build(seed, y_onehot.shape[-1]) if policy.build is not None else None
    if recipe.shift_fraction:
        translate = keras.layers.RandomTranslation(recipe.shift_fraction, recipe.shift_fraction, fill_mode="nearest", seed=seed + 50)
        augment = chain(augment, lambda images, labels: (translate(images, training=True), labels))

    def for_epoch(epoch):
        order = epoch_order(len(x), seed, epoch)
        dataset = tf.data.Dataset.from_tensor_slices((x[order], y_onehot[order])).batch(recipe.batch_size)
        dataset = dataset.map(lambda i, l: (tf.cast(i, "float32"), l), num_parallel_calls=tf.data.AUTOTUNE)
        if augment is not None:
            # Sequential (not parallel) map: the layers' seed generators then give the same
            # batches for the same seed.
            dataset = dataset.map(augment)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return for_epoch


def variant_epochs(variants: list[np.ndarray], y_onehot, seed: int, max_shift: int = 0):
    """Cached input: each image's variant (e.g. original or mirrored) drawn per epoch, seeded,
    then its activation map shifted by up to ``max_shift`` positions each way."""

    def for_epoch(epoch):
        order = epoch_order(len(y_onehot), seed, epoch)
        picked = variants[0][order]  # a copy: fancy indexing
        if len(variants) > 1:
            choice = np.random.default_rng([seed, epoch, 1]).integers(len(variants), size=len(order))
            for v in range(1, len(variants)):
                picked[choice == v] = variants[v][order[choice == v]]
        if max_shift:
            picked = shift_maps(picked, max_shift, np.random.default_rng([seed, epoch, 2]))
        return picked, y_onehot[order]

    return for_epoch


def map_shift(recipe: Stage, map_side: int) -> int:
    """Positions the cached path shifts a ``map_side``-wide activation map by, for the stage's fraction."""
    # At least one position: a coarse map (2 x 2 at 32 px) still gets the regulariser.
    return max(1, round(recipe.shift_fraction * map_side)) if recipe.shift_fraction else 0


def shift_maps(maps: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Moves each (height, width, channels) map, in place, by a random whole number of positions
    in [-max_shift, max_shift] along each axis, repeating the edge positions into the space it leaves."""
    count, height, width = maps.shape[:3]
    rows, cols = rng.integers(-max_shift, max_shift + 1, size=(2, count))
    for row in range(-max_shift, max_shift + 1):
        for col in range(-max_shift, max_shift + 1):
            picked = np.flatnonzero((rows == row) & (cols == col))
            if row or col:
                # Group by group, so the extra memory is one group's maps, not a padded copy of all.
                source_rows = np.clip(np.arange(height) - row, 0, height - 1)
                source_cols = np.clip(np.arange(width) - col, 0, width - 1)
                maps[picked] = maps[picked][:, source_rows][:, :, source_cols]
    return maps


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns: per-epoch metrics, steady-state speed, divergence, time."""

    history: list[dict]
    images_per_second: float | None
    diverged: bool
    seconds: float


def train(model, epoch_inputs, steps_per_epoch: int, val_inputs, y_val_onehot, recipe: Stage, jit_compile: bool = False) -> TrainResult:
    """Fit ``model`` epoch by epoch.

    ``epoch_inputs(epoch)`` gives a tf.data pipeline or an ``(x, y)`` pair already in the
    epoch's order; the learning-rate schedule spans all epochs.
    """
    from bench.measure import DivergenceGuard, ThroughputMeter

    meter, guard = ThroughputMeter(recipe.batch_size), DivergenceGuard()
    compile_model(model, recipe, steps_per_epoch, jit_compile)
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
            validation_data=(val_inputs, y_val_onehot),
            validation_batch_size=256,
            callbacks=[meter, guard, progress.keras_callback(epoch, recipe.epochs, steps_per_epoch)],
            verbose=0,
        )
        row = {k: float(v[-1]) for k, v in fit.history.items()}
        history.append({"epoch": epoch + 1, **row})
        # Progress goes to the cell's log file.
        print(f"epoch {epoch + 1}/{recipe.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()) + f" ({time.perf_counter() - start:.0f} s)", flush=True)
        progress.report("training", (epoch + 1) * steps_per_epoch, recipe.epochs * steps_per_epoch, milestone=True, epoch=epoch + 1, epochs=recipe.epochs, **row)
        if guard.diverged:
            break
    return TrainResult(history, meter.images_per_second, guard.diverged, time.perf_counter() - start)


def evaluate(model, variants: list[np.ndarray], labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, cross-entropy) of the class probabilities averaged over the test-time variants."""
    probs = np.mean([model.predict(v, batch_size=256, verbose=0) for v in variants], axis=0)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(np.mean(probs.argmax(1) == labels)), float(-np.mean(np.log(picked)))
