import dataclasses
import os

import numpy as np
import pytest

from bench import augment
from bench.augment import POLICIES, get_policy
from bench.cell import run_cell
from bench.grid import Cell
from bench.models import prefix_suffix
from bench.training import image_epochs, shift_maps, variant_epochs
from bench.stages import STAGES

TINY = dict(data="synthetic", profile="full", weights="none", epochs=2, batch_size=32)


def _cell(backbone="tiny_net", stage="transfer", policy="none", **overrides):
    return Cell(backbone=backbone, stage=stage, image_size=32, augment=policy, seed=0, **{**TINY, **overrides})


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    """The cells here train tests/tiny_backbones.py's tiny_net: the harness's paths, not MobileNetV2's weight, are under test."""


def test_cell_key_includes_size_policy_and_seed():
    base = _cell()
    keys = {base.key, dataclasses.replace(base, image_size=64).key, dataclasses.replace(base, augment="flip").key, dataclasses.replace(base, seed=1).key}
    assert len(keys) == 4
    assert "32px" in base.key and "/none/" in base.key and "seed0" in base.key


def test_profile_caps_epochs_and_overrides_apply():
    assert _cell(profile="quick", epochs=None).recipe().epochs == 1
    assert _cell(stage="finetune", unfreeze_layers=7).recipe().unfreeze_layers == 7
    # A backbone's own setting beats the stage's default; the cell's override beats both.
    assert _cell(backbone="mobilenet_v2", stage="finetune").recipe().unfreeze_layers == 13
    assert _cell(backbone="efficientnet_b0", stage="finetune").recipe().unfreeze_layers == STAGES["finetune"].unfreeze_layers
    assert _cell(epochs=None).recipe().epochs == STAGES["transfer"].epochs


@pytest.fixture(scope="module")
def transfer_runs(tmp_path_factory):
    from conftest import registered

    out = tmp_path_factory.mktemp("out")
    cache = tmp_path_factory.mktemp("cache")
    with registered("tiny_backbones"):
        cached = run_cell(_cell(), out, cache)
        uncached = run_cell(_cell(use_cache=False), out, cache)
    return out, cache, cached, uncached


def test_record_schema(transfer_runs):
    _, _, cached, _ = transfer_runs
    data = dataclasses.asdict(cached)
    assert cached.status == "ok" and cached.error == ""
    for name in ("test_accuracy", "val_accuracy", "test_loss", "val_loss", "train_seconds", "wall_seconds", "train_images_per_second",
                 "infer_images_per_second", "latency_p50_ms", "latency_p95_ms", "peak_rss_mb", "peak_anon_mb", "total_params", "trainable_params", "flops_per_image"):
        assert data[name] is not None and data[name] > 0, name
    assert 0 <= cached.test_accuracy <= 1 and cached.latency_p95_ms >= cached.latency_p50_ms
    assert cached.trainable_params < cached.total_params
    assert cached.provenance.tf_version and cached.provenance.keras_version and cached.provenance.cpu and cached.provenance.started_at
    assert len(cached.history) == 2 and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(cached.history[0])


def test_cached_transfer_matches_uncached(transfer_runs):
    _, _, cached, uncached = transfer_runs
    assert (cached.path, uncached.path) == ("cached", "uncached")
    assert abs(cached.test_accuracy - uncached.test_accuracy) <= 0.005
    assert abs(cached.val_accuracy - uncached.val_accuracy) <= 0.005
    np.testing.assert_allclose(cached.history[-1]["loss"], uncached.history[-1]["loss"], rtol=2e-3)


def test_cache_holds_each_distinct_input_once_and_is_reused(transfer_runs):
    out, cache, cached, _ = transfer_runs
    # Policy none + test-time flip: pool, mirrored validation, test, mirrored test, each as
    # pooled features and as the activations at finetune's cut.
    files = sorted((cache / "features").glob("*.npy"))
    assert len(files) == 8
    again = run_cell(_cell(), out, cache)
    assert sorted((cache / "features").glob("*.npy")) == files
    assert again.cache_seconds < cached.cache_seconds
    assert again.test_accuracy == cached.test_accuracy
    # Activations computed in another precision are other entries, never reused.
    try:
        mixed = run_cell(_cell(precision="mixed"), out, cache)
    finally:
        __import__("keras").mixed_precision.set_global_policy("float32")
    assert mixed.precision == "mixed_bfloat16" and mixed.key != cached.key
    assert len(set((cache / "features").glob("*.npy")) - set(files)) == 8


def test_cached_finetune_matches_uncached(transfer_runs, monkeypatch):
    out, cache, _, _ = transfer_runs
    # The paths draw their random translations differently (activation cells against
    # image pixels), so they only match without one.
    monkeypatch.setitem(STAGES, "finetune", dataclasses.replace(STAGES["finetune"], shift_fraction=0.0))
    files = sorted((cache / "features").glob("*.npy"))
    cached = run_cell(_cell(stage="finetune"), out, cache)
    # The transfer cell already stored the activations at finetune's cut.
    assert sorted((cache / "features").glob("*.npy")) == files
    uncached = run_cell(_cell(stage="finetune", use_cache=False), out, cache)
    assert cached.status == uncached.status == "ok"
    assert cached.notes == ""  # started from the saved transfer head
    assert abs(cached.test_accuracy - uncached.test_accuracy) <= 0.005
    np.testing.assert_allclose(cached.history[-1]["loss"], uncached.history[-1]["loss"], rtol=2e-3)


def _shifted_by(before, after, cells):
    """The (rows, cols) shift, edges repeated, that turns map ``before`` into ``after``, or None."""
    height, width = before.shape[:2]
    for row in range(-cells, cells + 1):
        for col in range(-cells, cells + 1):
            rows = np.clip(np.arange(height) - row, 0, height - 1)
            cols = np.clip(np.arange(width) - col, 0, width - 1)
            if np.array_equal(before[rows][:, cols], after):
                return row, col
    return None


def test_shift_maps_moves_whole_cells_with_edges_repeated():
    maps = np.random.default_rng(0).normal(size=(64, 5, 5, 3)).astype("float32")
    shifted = shift_maps(maps.copy(), 2, np.random.default_rng(1))
    shifts = [_shifted_by(before, after, 2) for before, after in zip(maps, shifted)]
    assert None not in shifts
    assert len(set(shifts)) > 10 and (0, 0) in shifts and (2, -2) in shifts
    np.testing.assert_array_equal(shift_maps(maps.copy(), 2, np.random.default_rng(1)), shifted)


def _epoch_arrays(dataset):
    """An epoch's batches from a per-batch pipeline, joined: (inputs, labels)."""
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def test_cached_epochs_shift_the_activation_maps_only_when_asked():
    maps = np.random.default_rng(0).normal(size=(40, 4, 4, 2)).astype("float32")
    y = np.eye(10, dtype="float32")[np.arange(40) % 10]
    plain, plain_labels = _epoch_arrays(variant_epochs([maps], y, seed=0, batch_size=16)(0))
    shifted, shifted_labels = _epoch_arrays(variant_epochs([maps], y, seed=0, max_shift=1, batch_size=16)(0))
    np.testing.assert_array_equal(plain_labels, shifted_labels)
    order = [int(np.flatnonzero((maps == m).all(axis=(1, 2, 3)))[0]) for m in plain]
    assert all(_shifted_by(maps[i], m, 1) is not None for i, m in zip(order, shifted))
    assert not np.array_equal(plain, shifted)


def test_stage_shift_translates_uncached_images_deterministically():
    x = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3)).astype("uint8")
    y = np.eye(10, dtype="float32")[np.arange(16) % 10]
    recipe = dataclasses.replace(STAGES["baseline"], batch_size=16, shift_fraction=0.125)
    first = next(iter(image_epochs(x, y, recipe, get_policy("none"), 1)(0)))[0].numpy()
    again = next(iter(image_epochs(x, y, recipe, get_policy("none"), 1)(0)))[0].numpy()
    plain = next(iter(image_epochs(x, y, dataclasses.replace(recipe, shift_fraction=0.0), get_policy("none"), 1)(0)))[0].numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, plain)


def test_finetune_without_a_saved_head_trains_one_inline(tmp_path):
    record = run_cell(_cell(stage="finetune", epochs=1), tmp_path / "out", tmp_path / "cache")
    assert record.status == "ok" and "trained its own" in record.notes


def test_prefix_and_suffix_compose_to_the_model():
    from backbones import get_backbone
    from bench.models import build_classifier, split_below_top

    x = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3)).astype("float32")
    for stage_name in ("transfer", "finetune"):
        stage = STAGES[stage_name]
        clf = build_classifier(get_backbone("mobilenet_v2"), stage, 32, 48, 10, None)
        if stage_name == "transfer":
            prefix, suffix = clf.features, clf.head
        else:
            prefix, suffix = prefix_suffix(clf, *split_below_top(clf.backbone, stage.unfreeze_layers))
        np.testing.assert_allclose(suffix(prefix(x, training=False), training=False), clf.model(x, training=False), rtol=1e-4, atol=1e-5)


def _first_batch(policy, seed):
    x = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3)).astype("uint8")
    y = np.eye(10, dtype="float32")[np.arange(16) % 10]
    recipe = dataclasses.replace(STAGES["baseline"], batch_size=16)
    images, labels = next(iter(image_epochs(x, y, recipe, get_policy(policy), seed)(0)))
    return x, images.numpy(), labels.numpy()


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "none"])
def test_policy_changes_training_inputs_deterministically(policy):
    x, images, labels = _first_batch(policy, seed=1)
    _, plain, _ = _first_batch("none", seed=1)
    assert not np.allclose(images, plain), "policy left the batch unchanged"
    _, again, again_labels = _first_batch(policy, seed=1)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    _, other, _ = _first_batch(policy, seed=2)
    assert not np.array_equal(images, other)


def test_augmentation_never_touches_validation_or_test(monkeypatch, tmp_path):
    seen = []
    original = POLICIES["flip-crop"]

    def build(seed, num_classes):
        inner = original.build(seed, num_classes)

        def apply(images, labels):
            import tensorflow as tf

            counted = tf.numpy_function(lambda a: (seen.append(a.shape[0]), a)[1], [images], tf.float32)
            counted.set_shape(images.shape)
            return inner(counted, labels)

        return apply

    monkeypatch.setitem(augment.POLICIES, "flip-crop", dataclasses.replace(original, build=build))
    record = run_cell(Cell("tiny_scratch", "baseline", 32, "flip-crop", 0, epochs=1, batch_size=600, weights="none"), tmp_path, tmp_path / "c")
    assert record.status == "ok"
    # One epoch, one batch: exactly the 540 training images, no validation or test image.
    assert seen == [540]


def test_cache_key_follows_the_weights_content_not_the_file(tmp_path):
    first, copy, other = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5", tmp_path / "c.weights.h5"
    first.write_bytes(b"weights" * 1000)
    copy.write_bytes(first.read_bytes())
    other.write_bytes(b"other" * 1000)
    os.utime(copy, (1, 1))  # another path and timestamp, same content
    identity = lambda path: _cell(weights=str(path)).activation_identity()  # noqa: E731
    assert identity(first) == identity(copy) != identity(other)
    # Random initial weights are keyed by seed instead.
    assert _cell().activation_identity() != dataclasses.replace(_cell(), seed=1).activation_identity()
