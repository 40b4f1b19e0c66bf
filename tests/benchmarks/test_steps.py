"""pytest-benchmark suite: each backbone's inference step and each stage's training step.

Timed with ``pytest tests/benchmarks -m slow -n 0 --benchmark-only --benchmark-enable`` (``tox -e
bench``). Every step builds a backbone at its default size (minutes for the whole registry), so
they are slow-marked: the slow suite (CI) runs each once, untimed (``--benchmark-disable``), as a
smoke test of the steps it times; the outputs are checked either way. Inputs are the backbone's default size,
batch 32, random weights: the timing, not the accuracy, is the point. Compare runs with
``--benchmark-autosave`` / ``--benchmark-compare``.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

from backbones import get_backbone, list_backbones
from bench.measure import compiled_forward
from bench.models import build_classifier
from bench.stages import STAGES

pytestmark = pytest.mark.slow

BATCH = 32
NATIVE = 32  # CIFAR images; the model resizes to the backbone's size


def _classifier(name, stage_name):
    spec = get_backbone(name)
    stage = STAGES[stage_name]
    size = spec.default_image_size if stage.resize else NATIVE
    keras.utils.set_random_seed(0)
    return build_classifier(spec, stage, NATIVE, size, 10, None)


def _images():
    return tf.constant(np.random.default_rng(0).integers(0, 255, (BATCH, NATIVE, NATIVE, 3)).astype("float32"))


@pytest.mark.parametrize("name", list_backbones())
def test_inference_step(benchmark, name):
    clf = _classifier(name, get_backbone(name).stages[0])
    forward = compiled_forward(clf.model)
    images = _images()
    forward(images).numpy()  # warm-up: tracing excluded
    benchmark.extra_info["images_per_step"] = BATCH
    probabilities = benchmark.pedantic(lambda: forward(images).numpy(), rounds=5, iterations=1, warmup_rounds=1)
    assert probabilities.shape == (BATCH, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name,stage", [(n, s) for n in list_backbones() for s in get_backbone(n).stages])
def test_training_step(benchmark, name, stage):
    clf = _classifier(name, stage)
    clf.model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    images, labels = _images(), tf.one_hot(tf.range(BATCH) % 10, 10)
    first_loss = float(clf.model.train_on_batch(images, labels))  # warm-up: tracing excluded
    benchmark.extra_info["images_per_step"] = BATCH
    before = [w.numpy().copy() for w in clf.model.trainable_weights]
    loss = float(benchmark.pedantic(lambda: clf.model.train_on_batch(images, labels), rounds=5, iterations=1, warmup_rounds=1))
    assert np.isfinite(first_loss) and np.isfinite(loss)
    # The step trains exactly the stage's trainable part: every trainable weight moved.
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, clf.model.trainable_weights))
