"""Per-batch inputs: row views read only what a batch needs, the batched loaders draw exactly what
the whole-array ones drew for a seed, and an epoch's memory does not follow the split's size."""

import dataclasses

import numpy as np
import pytest

from bench.features import fingerprint
from bench.rows import RowView


def test_a_row_view_reads_only_its_picked_rows_mirrored_on_demand(tmp_path):
    array = np.arange(10 * 2 * 3 * 1, dtype="uint8").reshape(10, 2, 3, 1)
    np.save(tmp_path / "a.npy", array)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    view = RowView(mapped).subset(np.array([7, 2, 5])).mirror()
    assert len(view) == 3 and view.shape == (3, 2, 3, 1)
    np.testing.assert_array_equal(view.rows(slice(None)), array[[7, 2, 5]][:, :, ::-1])
    np.testing.assert_array_equal(view.subset(np.array([2])).rows(slice(None)), array[[5]][:, :, ::-1])
    batch = RowView(mapped).rows(slice(0, 4))
    batch[:] = 0  # a copy, never the read-only map
    assert not isinstance(batch, np.memmap) and mapped[:4].any()
    assert [len(b) for b in view.batches(2)] == [2, 1]


def test_a_views_fingerprint_is_its_rows_fingerprint():
    # Cache keys must not change with how the input is held: a view hashed block by block
    # gives the digest of its rows in one array.
    array = np.random.default_rng(0).integers(0, 255, (700, 8, 8, 3), dtype=np.uint8)
    index = np.sort(np.random.default_rng(1).permutation(700)[:500])
    view = RowView(array, index, mirrored=True)
    assert fingerprint("k", view) == fingerprint("k", np.ascontiguousarray(array[index][:, :, ::-1]))
    assert fingerprint("k", view) != fingerprint("k", view.mirror())


def _epoch(dataset):
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]), len(batches)


@pytest.mark.parametrize("variants,max_shift", [(1, 0), (2, 0), (2, 1), (3, 2)])
def test_batched_epochs_draw_exactly_what_the_in_memory_loader_drew(variants, max_shift):
    from bench.training import in_memory_variant_epochs, variant_epochs

    rng = np.random.default_rng(0)
    pool = [rng.normal(size=(90, 5, 5, 2)).astype("float32") for _ in range(variants)]
    index = np.sort(rng.permutation(90)[:70])
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 70)]
    whole = in_memory_variant_epochs([p[index] for p in pool], y, 4, max_shift)
    batched = variant_epochs([RowView(p, index) for p in pool], y, 4, max_shift, batch_size=16)
    for epoch in range(3):
        expected_x, expected_y = whole(epoch)
        x, labels, steps = _epoch(batched(epoch))
        assert steps == 5
        np.testing.assert_array_equal(x, expected_x)
        np.testing.assert_array_equal(labels, expected_y)


def _whole_array_epoch(x, y_onehot, recipe, policy, seed, epoch):
    """The uncached pipeline the per-batch one replaced (slices of the reordered whole split),
    verbatim, as the reference."""
    import keras
    import tensorflow as tf

    from bench.augment import chain
    from bench.training import epoch_order

    augment = policy.build(seed, y_onehot.shape[-1]) if policy.build is not None else None
    if recipe.shift_fraction:
        translate = keras.layers.RandomTranslation(recipe.shift_fraction, recipe.shift_fraction, fill_mode="nearest", seed=seed + 50)
        augment = chain(augment, lambda images, labels: (translate(images, training=True), labels))
    order = epoch_order(len(x), seed, epoch)
    dataset = tf.data.Dataset.from_tensor_slices((x[order], y_onehot[order])).batch(recipe.batch_size)
    dataset = dataset.map(lambda i, l: (tf.cast(i, "float32"), l), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        dataset = dataset.map(augment)
    return dataset.prefetch(tf.data.AUTOTUNE)


@pytest.mark.parametrize("policy,shift", [("none", 0.0), ("flip-crop", 0.0), ("randaugment", 0.0), ("none", 0.125)])
def test_image_batches_are_the_whole_array_pipelines_batches(policy, shift):
    from bench.augment import get_policy
    from bench.stages import STAGES
    from bench.training import image_epochs

    x = np.random.default_rng(0).integers(0, 255, (50, 32, 32, 3)).astype("uint8")
    y = np.eye(10, dtype="float32")[np.arange(50) % 10]
    recipe = dataclasses.replace(STAGES["baseline"], batch_size=16, shift_fraction=shift)
    got, labels, steps = _epoch(image_epochs(RowView(x), y, recipe, get_policy(policy), 3)(0))
    expected, expected_labels, expected_steps = _epoch(_whole_array_epoch(x, y, recipe, get_policy(policy), 3, 0))
    assert steps == expected_steps == 4
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(got, expected)


def test_training_and_evaluation_pipelines_run_without_tf_data_autotuning():
    """With autotuning on, destroying an iterator waits for tf.data's autotuning thread to wake
    (up to a minute), and training destroys one per epoch (``bench.training.without_autotuning``)."""
    from bench.augment import get_policy
    from bench.stages import STAGES
    from bench.training import image_epochs, variant_epochs, view_batches

    x = np.zeros((20, 8, 8, 3), "uint8")
    y = np.eye(10, dtype="float32")[np.arange(20) % 10]
    recipe = dataclasses.replace(STAGES["baseline"], batch_size=8)
    pipelines = {
        "images": image_epochs(RowView(x), y, recipe, get_policy("flip-crop"), 0)(0),
        "activations": variant_epochs([RowView(x.astype("float32"))], y, 0, 1, batch_size=8)(0),
        "evaluation": view_batches(RowView(x), y),
    }
    assert {name: dataset.options().autotune.enabled for name, dataset in pipelines.items()} == dict.fromkeys(pipelines, False)


def test_an_epochs_memory_does_not_follow_the_splits_size(tmp_path):
    """An epoch over 470 MB of memory-mapped activations (two variants, shifted) holds a few
    blocks of anonymous memory; the in-memory loader it replaced holds the split."""
    from bench.memory import AnonMemorySampler
    from bench.training import READ_BLOCK_BYTES, in_memory_variant_epochs, variant_epochs

    count, shape = 30000, (8, 8, 64)
    maps = []
    for name in ("original", "flipped"):
        array = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype="float32", shape=(count, *shape))
        array[:] = 1.0
        array.flush()
        maps.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    index = np.arange(0, count, 1)
    y = np.eye(10, dtype="float32")[np.arange(count) % 10]
    batched = variant_epochs([RowView(m, index) for m in maps], y, 0, 1, batch_size=128)
    _epoch(variant_epochs([RowView(m[:500]) for m in maps], y[:500], 0, 1, batch_size=128)(0))  # warm-up: tf.data's own first allocations
    sampler = AnonMemorySampler(interval_seconds=0.01)

    def growth_mb(consume):
        sampler.reset()
        start = sampler.peak_kb
        consume()
        return (sampler.peak_mb() * 1024 - start) / 1024

    split_mb, block_mb = count * np.prod(shape) * 4 / 2**20, READ_BLOCK_BYTES / 2**20
    # A block in assembly (the variants' rows, the shift's copies), its tensor, the prefetched batches.
    assert growth_mb(lambda: sum(len(x) for x, _ in batched(0).as_numpy_iterator())) < 6 * block_mb < split_mb / 4
    # The check can fail: the loader it replaced grows by at least the split.
    assert growth_mb(lambda: in_memory_variant_epochs([np.asarray(m) for m in maps], y, 0, 1)(0)) > 0.9 * split_mb
