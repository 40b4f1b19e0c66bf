"""One cell of the grid: build, train and measure one (backbone, stage, size, policy, seed).

``run_cell(cell, out_dir) -> Record`` is the whole story of a cell; the sweep runs it in a
child process. Training has one loop with two kinds of input:

- uncached: the full model trains on augmented images;
- cached: a frozen prefix of the network (backbone up to the pooled features for
  ``transfer``, up to the first unfrozen layer for ``finetune``) runs once per
  deterministic augmentation variant, and only the trainable suffix trains, on a
  variant drawn per image and epoch. Same optimiser, same schedule, same data order.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
import os
import time
import traceback
from pathlib import Path

import numpy as np

from bench.augment import chain, get_policy
from bench.data import DEFAULT_CACHE_DIR, load_raw, prepare
from bench.records import Record
from bench.stages import PROFILES, STAGES, Stage, unfreeze_layers

ARTIFACTS_DIR = "artifacts"


@dataclasses.dataclass(frozen=True)
class Cell:
    """What to run. Fields left ``None`` take the stage's defaults."""

    backbone: str
    stage: str
    image_size: int
    augment: str
    seed: int
    data: str = "synthetic"
    profile: str = "full"
    weights: str = "none"  # imagenet | none | path to a .weights.h5 file
    epochs: int | None = None
    batch_size: int | None = None
    unfreeze_layers: int | None = None
    use_cache: bool = True
    val_fraction: float = 0.1
    precision: str = "float32"  # float32 | mixed (bfloat16 on CPU, float16 on GPU)
    jit_compile: bool = False  # XLA-compile training and inference
    cpus: float = 1  # resources a distributed executor reserves for the cell
    gpus: float = 0

    @property
    def dataset_label(self) -> str:
        return self.data if self.data in ("cifar10", "synthetic") else Path(self.data).name

    @property
    def file_stem(self) -> str:
        """The key as one file name, for the cell's log and artifacts."""
        return self.key.replace("/", "__")

    @property
    def key(self) -> str:
        key = f"{self.backbone}/{self.stage}/{self.image_size}px/{self.augment}/seed{self.seed}/{self.dataset_label}/{self.profile}"
        # Options that change the numbers extend the key only when set, so default keys stay stable.
        if self.epochs:
            key += f"/epochs{self.epochs}"
        if self.unfreeze_layers is not None and self.stage == "finetune":
            key += f"/unfreeze{self.unfreeze_layers}"
        return key + ("/mixed" if self.precision == "mixed" else "") + ("/xla" if self.jit_compile else "")

    def recipe(self) -> Stage:
        """The stage with the backbone's setting, this cell's overrides and its profile applied."""
        from backbones import get_backbone

        stage = STAGES[self.stage]
        epochs = self.epochs or stage.epochs
        cap = PROFILES[self.profile].max_epochs
        return dataclasses.replace(
            stage,
            epochs=min(epochs, cap) if cap else epochs,
            batch_size=self.batch_size or stage.batch_size,
            unfreeze_layers=unfreeze_layers(stage, get_backbone(self.backbone).unfreeze_layers, self.unfreeze_layers),
        )

    def head_artifact(self, out_dir: Path) -> Path:
        """Where the trained head of this cell's ``transfer`` counterpart lives."""
        transfer = dataclasses.replace(self, stage="transfer", epochs=None, batch_size=None, unfreeze_layers=None)
        return Path(out_dir) / ARTIFACTS_DIR / (transfer.file_stem + ".head.weights.h5")


def _identity(cell: Cell) -> dict:
    return {
        "key": cell.key,
        "backbone": cell.backbone,
        "stage": cell.stage,
        "image_size": cell.image_size,
        "augment": cell.augment,
        "seed": cell.seed,
        "dataset": cell.dataset_label,
        "profile": cell.profile,
        "weights": cell.weights,
    }


def failed_record(cell: Cell, error: str, **extra) -> Record:
    extra.setdefault("started_at", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return Record(**_identity(cell), status="failed", error=error, **extra)


# --------------------------------------------------------------------------- data


def _flip(images: np.ndarray) -> np.ndarray:
    return images[:, :, ::-1]


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype="float32")[labels]


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str(part.shape).encode())
            digest.update(np.ascontiguousarray(part).data)
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:20]


def _weights_identity(cell: Cell):
    if cell.weights in ("none", "imagenet"):
        # Random initial weights differ per seed; the features they give do too.
        return (cell.weights, cell.seed if cell.weights == "none" else None)
    # The file's content, not its path or timestamp: a copy, a re-mount or a `touch` of the
    # same weights keeps its cache; hashing costs well under a second even for ResNet50's.
    digest = hashlib.sha256()
    with open(cell.weights, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return ("sha256", digest.hexdigest())


class FeatureCache:
    """Activations of a frozen ``prefix``, computed once per distinct input array.

    ``prefix`` maps images to one tensor per name in ``cut_names``; a call returns the first
    (what this cell trains on) and saves the others as well, so one pass through a backbone
    serves every stage that cuts it at one of those places (``transfer`` stores the
    activations at ``finetune``'s cut as it computes its pooled features). Entries are keyed by
    backbone, weights, image size, cut and the input array's content, so a cached array is
    only ever reused for exactly the computation that produced it (a mirrored copy of the
    images is a different array, hence a different entry).
    """

    def __init__(self, cell: Cell, prefix, cut_names: tuple[str, ...], folder: Path):
        import tensorflow as tf

        self.prefix = prefix
        self.cut_names = tuple(cut_names)
        self.base_key = (cell.backbone, _weights_identity(cell), cell.image_size)
        self.folder = Path(folder)
        # One trace for every array this cache extracts.
        self.forward = tf.function(lambda x: prefix(x, training=False), reduce_retracing=True)

    def _file(self, cut_name: str, images: np.ndarray) -> Path:
        return self.folder / f"{_fingerprint(*self.base_key, cut_name, images)}.npy"

    def __call__(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The first cut's activations over ``images``: a memory-mapped cached copy, or computed and saved."""
        import tensorflow as tf

        files = [self._file(name, images) for name in self.cut_names]
        if files[0].exists():
            return np.load(files[0], mmap_mode="r")
        outputs = self.prefix.outputs
        shapes = [(len(images), *output.shape[1:]) for output in outputs]
        temporaries = [f.with_suffix(f".{os.getpid()}.tmp.npy") for f in files]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Written straight to disk: a finetune cut of 120,000 images can be gigabytes.
            arrays = [np.lib.format.open_memmap(t, mode="w+", dtype="float32", shape=shape) for t, shape in zip(temporaries, shapes)]
        except OSError:
            # A full or read-only cache only costs the next run a re-extraction.
            arrays, files = [np.empty(shape, "float32") for shape in shapes], []
        for start in range(0, len(images), batch_size):
            batch = self.forward(tf.constant(images[start : start + batch_size]))
            for array, values in zip(arrays, batch if len(arrays) > 1 else [batch]):
                array[start : start + batch_size] = values.numpy()
        if not files:
            return arrays[0]
        for array, temporary, file in zip(arrays, temporaries, files):
            array.flush()
            os.replace(temporary, file)
        del arrays
        return np.load(files[0], mmap_mode="r")


def cached_inputs(cache: FeatureCache, data, variants, tta_flip: bool) -> tuple[list, list, list]:
    """(train variants, val variants, test variants) of activations for the cached path.

    Train and validation share the pool's activations for the policy's variants; a mirrored
    copy is computed for validation and test only where test-time flipping needs it.
    """
    pool = {v: cache(_flip(data.x_pool) if v == "flipped" else data.x_pool) for v in variants}
    train = [np.asarray(pool[v][data.train_index]) for v in variants]
    val = [np.asarray(pool["original"][data.val_index])]
    test = [cache(data.x_test)]
    if tta_flip:
        val.append(np.asarray(pool["flipped"][data.val_index]) if "flipped" in pool else cache(_flip(data.x_val)))
        test.append(cache(_flip(data.x_test)))
    return train, val, test


# --------------------------------------------------------------------------- training


def _compile(model, recipe: Stage, steps_per_epoch: int, jit_compile: bool = False):
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


def _epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order images are seen in an epoch: the same for the cached and uncached paths."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def _image_epochs(x, y_onehot, recipe: Stage, policy, seed: int):
    """Uncached input: a tf.data pipeline of augmented image batches per epoch."""
    import keras
    import tensorflow as tf

    augment = policy.build(seed, y_onehot.shape[-1]) if policy.build is not None else None
    if recipe.shift_fraction:
        translate = keras.layers.RandomTranslation(recipe.shift_fraction, recipe.shift_fraction, fill_mode="nearest", seed=seed + 50)
        augment = chain(augment, lambda images, labels: (translate(images, training=True), labels))

    def for_epoch(epoch):
        order = _epoch_order(len(x), seed, epoch)
        dataset = tf.data.Dataset.from_tensor_slices((x[order], y_onehot[order])).batch(recipe.batch_size)
        dataset = dataset.map(lambda i, l: (tf.cast(i, "float32"), l), num_parallel_calls=tf.data.AUTOTUNE)
        if augment is not None:
            # Sequential (not parallel) map: the layers' seed generators then give the same
            # batches for the same seed.
            dataset = dataset.map(augment)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return for_epoch


def _variant_epochs(variants: list[np.ndarray], y_onehot, seed: int, shift_cells: int = 0):
    """Cached input: each image's variant (e.g. original or mirrored) drawn per epoch, seeded,
    then its activation map shifted by up to ``shift_cells`` cells each way."""

    def for_epoch(epoch):
        order = _epoch_order(len(y_onehot), seed, epoch)
        picked = variants[0][order]  # a copy: fancy indexing
        if len(variants) > 1:
            choice = np.random.default_rng([seed, epoch, 1]).integers(len(variants), size=len(order))
            for v in range(1, len(variants)):
                picked[choice == v] = variants[v][order[choice == v]]
        if shift_cells:
            picked = shift_maps(picked, shift_cells, np.random.default_rng([seed, epoch, 2]))
        return picked, y_onehot[order]

    return for_epoch


def cells_to_shift(recipe: Stage, map_side: int) -> int:
    """Cells the cached path shifts a ``map_side``-wide activation map by, for the stage's fraction."""
    # At least one cell: a coarse map (2 x 2 at 32 px) still gets the regulariser.
    return max(1, round(recipe.shift_fraction * map_side)) if recipe.shift_fraction else 0


def shift_maps(maps: np.ndarray, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Moves each (height, width, channels) map, in place, by a random whole number of cells
    in [-cells, cells] along each axis, repeating the edge cells into the space it leaves."""
    count, height, width = maps.shape[:3]
    rows, cols = rng.integers(-cells, cells + 1, size=(2, count))
    for row in range(-cells, cells + 1):
        for col in range(-cells, cells + 1):
            picked = np.flatnonzero((rows == row) & (cols == col))
            if row or col:
                # Group by group, so the extra memory is one group's maps, not a padded copy of all.
                source_rows = np.clip(np.arange(height) - row, 0, height - 1)
                source_cols = np.clip(np.arange(width) - col, 0, width - 1)
                maps[picked] = maps[picked][:, source_rows][:, :, source_cols]
    return maps


def train(model, epoch_inputs, steps_per_epoch: int, val_inputs, y_val_onehot, recipe: Stage, jit_compile: bool = False):
    """Fit ``model`` epoch by epoch; returns (history rows, throughput meter, guard, seconds).

    ``epoch_inputs(epoch)`` gives a tf.data pipeline or an ``(x, y)`` pair already in the
    epoch's order; the learning-rate schedule spans all epochs.
    """
    from bench.measure import DivergenceGuard, ThroughputMeter

    meter, guard = ThroughputMeter(recipe.batch_size), DivergenceGuard()
    _compile(model, recipe, steps_per_epoch, jit_compile)
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
            callbacks=[meter, guard],
            verbose=0,
        )
        row = {k: float(v[-1]) for k, v in fit.history.items()}
        history.append({"epoch": epoch + 1, **row})
        # Progress goes to the cell's log file.
        print(f"epoch {epoch + 1}/{recipe.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()) + f" ({time.perf_counter() - start:.0f} s)", flush=True)
        if guard.diverged:
            break
    return history, meter, guard, time.perf_counter() - start


def evaluate(model, variants: list[np.ndarray], labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, cross-entropy) of the class probabilities averaged over the test-time variants."""
    probs = np.mean([model.predict(v, batch_size=256, verbose=0) for v in variants], axis=0)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(np.mean(probs.argmax(1) == labels)), float(-np.mean(np.log(picked)))


# --------------------------------------------------------------------------- the cell


def run_cell(cell: Cell, out_dir: Path, cache_dir: Path = DEFAULT_CACHE_DIR, features_dir: Path | None = None) -> Record:
    """Train and measure one cell. Bad data raises ``UsageError``; a divergence returns a failed record.

    Decoded datasets are cached under ``cache_dir/datasets``, activations under
    ``features_dir`` (default ``cache_dir/features``).
    """
    import keras

    from backbones import get_backbone
    from bench import measure
    from bench.models import build_classifier

    wall_start = time.perf_counter()
    features_dir = Path(features_dir or Path(cache_dir) / "features")
    env = measure.environment()
    spec, recipe, policy = get_backbone(cell.backbone), cell.recipe(), get_policy(cell.augment)
    profile = PROFILES[cell.profile]
    keras.utils.set_random_seed(cell.seed)
    precision = _set_precision(cell.precision)
    raw = load_raw(cell.data, cache_dir)
    data = prepare(raw, cell.seed, cell.val_fraction, profile.train_images, profile.test_images)
    weights = None if cell.weights == "none" else cell.weights
    clf = build_classifier(spec, recipe, data.image_size, cell.image_size, data.num_classes, weights)
    y_train = _one_hot(data.y_train, data.num_classes)
    y_val = _one_hot(data.y_val, data.num_classes)

    # A cache is exact for the policy's variants; a shift also needs a spatial cut (finetune's).
    cached = cell.use_cache and recipe.trainable != "all" and policy.cache_variants is not None and (recipe.trainable == "top" or not recipe.shift_fraction)
    head_trained_inline = False
    if recipe.starts_from:
        artifact = cell.head_artifact(out_dir)
        if artifact.exists():
            clf.head.load_weights(artifact)
        else:
            # No transfer result to start from (finetune asked for alone): train the head here.
            head_trained_inline = True
            transfer_cell = dataclasses.replace(cell, stage=recipe.starts_from, epochs=None, batch_size=None, unfreeze_layers=None)
            _train_head_inline(transfer_cell, data, clf, features_dir)

    cache_seconds = 0.0
    if cached:
        cache_start = time.perf_counter()
        prefix, suffix, cut_names = _cached_split(clf, cell, spec, recipe)
        cache = FeatureCache(cell, prefix, cut_names, features_dir)
        train_variants, val_variants, test_variants = cached_inputs(cache, data, policy.cache_variants, recipe.tta_flip)
        cache_seconds = time.perf_counter() - cache_start
        epoch_inputs = _variant_epochs(train_variants, y_train, cell.seed, cells_to_shift(recipe, train_variants[0].shape[1]))
        val_inputs = val_variants[0]
        trained = suffix
    else:
        epoch_inputs = _image_epochs(data.x_train, y_train, recipe, policy, cell.seed)
        val_inputs = data.x_val
        val_variants = [data.x_val] + ([_flip(data.x_val)] if recipe.tta_flip else [])
        test_variants = [data.x_test] + ([_flip(data.x_test)] if recipe.tta_flip else [])
        trained = clf.model

    steps_per_epoch = math.ceil(len(y_train) / recipe.batch_size)
    history, meter, guard, train_seconds = train(trained, epoch_inputs, steps_per_epoch, val_inputs, y_val, recipe, cell.jit_compile)
    common = dict(
        epochs=len(history),
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        unfreeze_layers=recipe.unfreeze_layers if recipe.trainable == "top" else None,
        path="cached" if cached else "uncached",
        history=history,
        train_seconds=train_seconds,
        cache_seconds=cache_seconds,
        precision=precision,
        jit_compile=cell.jit_compile,
        **env,
    )
    if guard.diverged:
        return failed_record(cell, "diverged: the training loss became NaN or infinite", **common)

    if recipe.name == "transfer":
        artifact = cell.head_artifact(out_dir)
        artifact.parent.mkdir(parents=True, exist_ok=True)
        clf.head.save_weights(artifact)

    eval_start = time.perf_counter()
    test_accuracy, test_loss = evaluate(trained, test_variants, data.y_test)
    val_accuracy, val_loss = evaluate(trained, val_variants, data.y_val)
    measure_start = time.perf_counter()
    total_params, trainable_params = measure.param_counts(clf.model)
    forward = measure.compiled_forward(clf.model, cell.jit_compile)
    throughput = measure.inference_images_per_second(forward, data.x_test)
    latency = measure.latency_ms(forward, data.x_test)
    flops = measure.flops_per_image(clf.model, data.x_test.shape[1:])
    measure_seconds = time.perf_counter() - measure_start
    wall_seconds = time.perf_counter() - wall_start
    eval_seconds = measure_start - eval_start
    return Record(
        **_identity(cell),
        status="ok",
        error="inline: no transfer head was saved, so this cell trained one first" if head_trained_inline else "",
        test_accuracy=test_accuracy,
        test_loss=test_loss,
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        train_accuracy=history[-1].get("accuracy") if history else None,
        tta_flip=recipe.tta_flip,
        train_images=len(data.train_index),
        val_images=len(data.val_index),
        test_images=len(data.y_test),
        wall_seconds=wall_seconds,
        eval_seconds=eval_seconds,
        measure_seconds=measure_seconds,
        # Time outside model compute: data loading, model building, bookkeeping.
        overhead_seconds=wall_seconds - cache_seconds - train_seconds - eval_seconds - measure_seconds,
        train_images_per_second=meter.images_per_second,
        infer_images_per_second=throughput["images_per_second"],
        infer_batch_size=throughput["batch_size"],
        infer_spread=throughput["spread"],
        latency_p50_ms=latency["p50"],
        latency_p95_ms=latency["p95"],
        peak_rss_mb=measure.peak_rss_mb(),
        peak_gpu_mb=measure.peak_gpu_mb(),
        total_params=total_params,
        trainable_params=trainable_params,
        flops_per_image=flops,
        **common,
    )


def _set_precision(precision: str) -> str:
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


def _prefix_suffix(clf, bottom, top):
    """Finetune's frozen prefix (images -> cut activations) and trainable suffix (-> probabilities)."""
    import keras

    images = clf.model.input
    x = images
    for layer in clf.model.layers[1:]:
        if layer is clf.backbone:
            break
        x = layer(x)
    prefix = keras.Model(images, bottom(x, training=False), name="frozen_prefix")
    cut = keras.Input(bottom.output.shape[1:], name="cut_activations")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(top(cut, training=False))
    suffix = keras.Model(cut, clf.head(pooled), name="trainable_suffix")
    return prefix, suffix


def _cached_split(clf, cell: Cell, spec, recipe: Stage):
    """(frozen prefix, trained suffix, cut names) for the cached path.

    ``finetune`` trains the suffix above its cut. ``transfer`` trains the head on pooled
    features, and where its backbone also has a ``finetune`` stage, its prefix computes
    them through that stage's cut and hands the cut activations to the cache too: the
    ``finetune`` cell then reads them instead of running the backbone over every image again.
    """
    import keras

    from bench.models import split_below_top

    if recipe.trainable == "top":
        bottom, top = split_below_top(clf.backbone, recipe.unfreeze_layers)
        prefix, suffix = _prefix_suffix(clf, bottom, top)
        return prefix, suffix, (_cut_name(top),)
    if "finetune" not in spec.stages:
        return clf.features, clf.head, ("pooled",)
    bottom, top = split_below_top(clf.backbone, dataclasses.replace(cell, stage="finetune").recipe().unfreeze_layers)
    cut_prefix, _ = _prefix_suffix(clf, bottom, top)
    cut = cut_prefix.output
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(top(cut, training=False))
    prefix = keras.Model(cut_prefix.input, [pooled, cut], name="frozen_prefix_shared")
    return prefix, clf.head, ("pooled", _cut_name(top))


def _cut_name(top) -> str:
    return top.layers[1].name if len(top.layers) > 1 else "top"


def _train_head_inline(transfer_cell: Cell, data, clf, features_dir: Path) -> None:
    """Train ``clf.head`` as the transfer stage would, on cached pooled features."""
    recipe, policy = transfer_cell.recipe(), get_policy(transfer_cell.augment)
    variants = policy.cache_variants or ("original",)
    train_variants, val_variants, _ = cached_inputs(FeatureCache(transfer_cell, clf.features, ("pooled",), features_dir), data, variants, tta_flip=False)
    y_train = _one_hot(data.y_train, data.num_classes)
    train(
        clf.head,
        _variant_epochs(train_variants, y_train, transfer_cell.seed),
        math.ceil(len(y_train) / recipe.batch_size),
        val_variants[0],
        _one_hot(data.y_val, data.num_classes),
        recipe,
    )


def run_cell_safely(cell: Cell, out_dir: Path, cache_dir: Path = DEFAULT_CACHE_DIR) -> Record:
    """``run_cell`` with every exception turned into a failed record (the last traceback lines)."""
    try:
        return run_cell(cell, out_dir, cache_dir)
    except Exception as error:
        tail = "".join(traceback.format_exception(error)[-3:]).strip()
        kind = "out of memory: " if _is_oom(error) else ""
        return failed_record(cell, f"{kind}{type(error).__name__}: {error}"[:2000] + f"\n{tail[-1500:]}")


def _is_oom(error: Exception) -> bool:
    if isinstance(error, MemoryError):
        return True
    try:
        import tensorflow as tf

        return isinstance(error, tf.errors.ResourceExhaustedError)
    except ImportError:
        return False
