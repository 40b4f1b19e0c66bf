"""airbench94 in Keras: its network, whitening init, optimiser, schedule, weight averaging,
augmentation and test-time views, each against what airbench94.py does, on tiny inputs."""

import dataclasses

import keras
import numpy as np
import pytest

from backbones import get_backbone
from backbones.airbench import whiten_from_images
from bench.augment import get_policy, translate_reflect
from bench.grid import Cell
from bench.models import build_classifier
from bench.nesterov import Lookahead, NesterovSGD, TriangleSchedule, kilostep_scale, nesterov_optimizer
from bench.rows import RowView
from bench.stages import AIRBENCH94, BASELINE, SMALL_CNN
from bench.training import evaluate, tta_views


def _classifier(seed=0):
    keras.utils.set_random_seed(seed)
    return build_classifier(get_backbone("airbench94"), AIRBENCH94, 32, 32, 10, None)


def test_the_network_has_airbench94s_shapes_and_parameters():
    clf = _classifier()
    out = clf.backbone(np.zeros((2, 32, 32, 3), "float32"))
    assert tuple(out.shape) == (2, 1, 1, 256)
    assert clf.model(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 10)
    # airbench94.py's parameters with requires_grad: the whitening bias (24), six 3x3 convolutions
    # (24-64, 64-64, 64-256, 256-256, 256-256, 256-256), the BatchNorm biases, a bias-free linear layer.
    convolutions = 9 * (24 * 64 + 64 * 64 + 64 * 256 + 3 * 256 * 256)
    trained = 24 + convolutions + 2 * (64 + 256 + 256) + 256 * 10
    assert trained == 1_971_352
    assert sum(int(np.prod(v.shape)) for v in clf.model.trainable_weights) == trained
    # Its frozen whitening kernel: 24 filters of 2 x 2 x 3.
    assert [tuple(v.shape) for v in clf.model.non_trainable_weights if "whiten" in v.path] == [(2, 2, 3, 24)]


def test_convolutions_start_by_passing_their_input_through():
    clf = _classifier()
    x = np.random.default_rng(0).normal(size=(2, 15, 15, 64)).astype("float32")
    np.testing.assert_allclose(clf.backbone.get_layer("block1_conv2")(x), x, atol=1e-6)  # 64 -> 64: all identity
    widen = clf.backbone.get_layer("block1_conv1")(x[..., :24])  # 24 -> 64: the first 24 filters
    np.testing.assert_allclose(widen[..., :24], x[..., :24], atol=1e-6)
    assert np.abs(widen[..., 24:]).max() > 0.01


def test_whitening_init_whitens_the_patches():
    rng = np.random.default_rng(0)
    # Correlated pixels and channels: smooth images, channels mixed.
    noise = rng.normal(size=(64, 33, 33, 3))
    smooth = (noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1] + noise[:, :-1, :-1]) @ np.array([[1, 0.8, 0.5], [0, 0.6, 0.5], [0, 0, 0.7]])
    images = smooth.astype("float32")
    clf = _classifier()
    whiten_from_images(clf.backbone, images)
    layer = clf.backbone.get_layer("whiten")
    outputs = keras.ops.convert_to_numpy(layer(images)).reshape(-1, 24)
    raw = np.lib.stride_tricks.sliding_window_view(images, (2, 2), axis=(1, 2)).reshape(-1, 12)
    assert np.abs(raw.T @ raw / len(raw) - np.eye(12)).max() > 0.5  # far from white before
    np.testing.assert_allclose(outputs[:, :12].T @ outputs[:, :12] / len(outputs), np.eye(12), atol=0.02)
    np.testing.assert_allclose(outputs[:, 12:], -outputs[:, :12], atol=1e-5)


def _torch_sgd(p, grads, lr, momentum, weight_decay):
    """PyTorch's SGD(nesterov=True) step by step: the reference airbench trains with."""
    buf, out = None, []
    for g in grads:
        d = g + weight_decay * p
        buf = d if buf is None else momentum * buf + d
        p = p - lr * (d + momentum * buf)
        out.append(p)
    return out


def test_the_optimiser_steps_as_pytorchs_nesterov_sgd_with_its_groups():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(6)]
    plain, offset, frozen = (keras.Variable(start) for _ in range(3))
    optimizer = NesterovSGD(0.01, momentum=0.85, decay=0.3, gradient_scale=4.0, lr_scale=8.0, scaled=[offset], frozen_after=[(frozen, 2)])
    seen = []
    for g in grads:
        optimizer.apply([g, g, g], [plain, offset, frozen])
        seen.append([v.numpy() for v in (plain, offset, frozen)])
    summed = [4 * g for g in grads]  # the gradient of airbench's summed loss
    np.testing.assert_allclose([s[0] for s in seen], _torch_sgd(start, summed, 0.01, 0.85, 0.3), rtol=1e-5)
    # A scaled group: 8x the rate, the decay divided by 8 (airbench's lr_biases and wd / lr_biases).
    np.testing.assert_allclose([s[1] for s in seen], _torch_sgd(start, summed, 0.08, 0.85, 0.3 / 8), rtol=1e-5)
    # Frozen after two steps: moves twice, then not at all.
    np.testing.assert_allclose([s[2] for s in seen[:2]], _torch_sgd(start, summed[:2], 0.01, 0.85, 0.3), rtol=1e-5)
    assert all(np.array_equal(s[2], seen[1][2]) for s in seen[2:])


def test_the_optimiser_finds_the_batchnorm_offsets_and_the_whitening_bias():
    model = _classifier().model
    optimizer = nesterov_optimizer(model, AIRBENCH94, steps_per_epoch=2)  # the bias trains 3 epochs: 6 steps
    variables = model.trainable_variables
    ones = [np.ones(v.shape, "float32") for v in variables]
    whiten, offset = (next(v for v in variables if v.path == path) for path in ("whiten/bias", "block1_norm1/beta"))
    optimizer.iterations.assign(5)
    optimizer.apply(ones, variables)  # from zero, both: rate x (1 + momentum) x the summed gradient
    assert whiten.numpy()[0] != 0 and offset.numpy()[0] / whiten.numpy()[0] == pytest.approx(64, rel=1e-5)
    before = [v.numpy().copy() for v in (whiten, offset)]
    optimizer.apply(ones, variables)  # step 7: the bias has trained its 3 epochs
    np.testing.assert_array_equal(whiten.numpy(), before[0])
    assert not np.array_equal(offset.numpy(), before[1])


@pytest.mark.parametrize("epochs", [1, 4, 10])
def test_the_schedule_scales_with_the_epoch_budget(epochs):
    recipe = Cell("airbench94", "baseline", 32, "altflip-translate", 0, epochs=epochs).recipe()
    assert recipe.epochs == epochs and recipe.batch_size == 1024 and recipe.label_smoothing == 0.2
    steps_per_epoch = 44  # 45,000 training images at batch 1,024
    optimizer = nesterov_optimizer(_classifier().model, recipe, steps_per_epoch)
    total, peak = epochs * steps_per_epoch, 11.5 / kilostep_scale(0.85)
    rate = []
    for step in range(total + 1):
        optimizer.iterations.assign(step)
        rate.append(float(optimizer.learning_rate))
    top = int(0.23 * total)
    np.testing.assert_allclose([rate[0], rate[top], rate[total]], [0.2 * peak, peak, 0.07 * peak], rtol=1e-5)
    assert np.all(np.diff(rate[: top + 1]) > 0) and np.all(np.diff(rate[top:]) < 0)
    # airbench's decay per step, over the rate: the same for every group.
    assert optimizer.decay == pytest.approx(0.0153 * 1024 / 11.5)
    assert optimizer.gradient_scale == 1024


def test_triangle_schedule_matches_airbench_get_lr():
    def get_lr(step, total):  # airbench94.py's, as a factor of the peak
        warmup = int(total * 0.23)
        if step < warmup:
            return 0.2 * (1 - step / warmup) + step / warmup
        return (1 - (step - warmup) / (total - warmup)) + 0.07 * (step - warmup) / (total - warmup)

    schedule = TriangleSchedule(2.0, 97, 0.23, 0.2, 0.07)
    np.testing.assert_allclose([float(schedule(s)) for s in range(98)], [2.0 * get_lr(s, 97) for s in range(98)], rtol=1e-5)


def test_lookahead_averages_as_airbench_does():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    raw = []  # the weights after each optimiser step, before the averaging touches them

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append([v.numpy().copy() for v in model.weights])

    start = [v.numpy().copy() for v in model.weights]
    x, y = np.random.default_rng(0).normal(size=(12, 3)), np.random.default_rng(1).normal(size=(12, 2))
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[Record(), Lookahead(5, 0.95, 12)])
    average = start
    for step, weights in enumerate(raw, start=1):
        if step % 5 == 0:
            decay = 0.95**5 * (step / 12) ** 3
            average = [a + (1 - decay) * (w - a) for a, w in zip(average, weights)]
            # The weights are set to the average: the next SGD step starts from it.
            kernel, bias = average
            error = x[step : step + 1] @ kernel + bias - y[step : step + 1]  # mse's gradient at the output, 2 outputs
            np.testing.assert_allclose(raw[step][0], kernel - 0.1 * x[step : step + 1].T @ error, rtol=1e-4, atol=1e-5)
    for got, want in zip(model.weights, average):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_translate_reflect_moves_each_image_with_reflected_edges():
    images = np.arange(2 * 5 * 5 * 1, dtype="uint8").reshape(2, 5, 5, 1)
    moved = translate_reflect(images, np.array([1, -2]), np.array([0, 1]))
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(moved[0], padded[0, 1:6, 2:7])  # down 1
    np.testing.assert_array_equal(moved[1], padded[1, 4:9, 1:6])  # up 2, right 1
    np.testing.assert_array_equal(moved[0, 0], images[0, 1])  # the top row reflected: row 1, not row 0 again


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    # Images brighter to the right: mirrored ones are brighter to the left, whatever the 2 px shift.
    count = 64
    ramp = np.broadcast_to(np.arange(32, dtype="uint8")[None, None, :, None] * 8, (count, 32, 32, 3))
    policy = get_policy("altflip-translate")
    positions = np.arange(count)
    mirrored = []
    for epoch in range(4):
        images = policy.epoch_rows(3, count, epoch)(positions, np.array(ramp))
        mirrored.append(images[:, 16, 8, 0] > images[:, 16, 24, 0])
    assert 16 < mirrored[0].sum() < 48  # a random start
    for before, after in zip(mirrored, mirrored[1:]):
        np.testing.assert_array_equal(after, ~before)
    # Shifts of at most 2 px: the column a pixel shows is at most 2 away from its own.
    images = policy.epoch_rows(3, count, 0)(positions, np.array(ramp))
    columns = images[:, 16, 16, 0].astype(int) // 8
    shifts = np.where(mirrored[0], 31 - columns, columns) - 16
    assert set(shifts) == {-2, -1, 0, 1, 2}


def test_test_time_views_are_airbenchs_six_weighted_crops():
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    views, weights = tta_views(RowView(images), AIRBENCH94)
    assert weights == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    # airbench: the mirror of padded[0:32, 0:32] and of padded[2:34, 2:34], and both unmirrored.
    expected = [images, images[:, :, ::-1], padded[:, :32, :32], padded[:, :32, :32, :][:, :, ::-1], padded[:, 2:, 2:], padded[:, 2:, 2:][:, :, ::-1]]
    for view, want in zip(views, expected):
        np.testing.assert_array_equal(view.rows(slice(None)), want)
    plain, plain_weights = tta_views(RowView(images), BASELINE)
    assert len(plain) == 2 and plain_weights == [0.5, 0.5]


def test_logit_averaging_can_pick_another_class_than_probability_averaging():
    softmax = keras.Sequential([keras.Input((3,)), keras.layers.Activation("softmax")])
    # One confident view for class 0, two mild ones for class 1.
    views = [np.array([[6.0, 0.0, 0.0]]), np.array([[0.0, 1.5, 0.0]]), np.array([[0.0, 1.5, 0.0]])]
    weights = [1 / 3] * 3
    mean_logits = np.average(np.concatenate(views), axis=0, weights=weights)  # [2, 1, 0]: class 0
    assert evaluate(softmax, views, np.array([int(mean_logits.argmax())]), weights, "logits")[0] == 1.0
    expected_loss = -np.log(np.exp(mean_logits[0]) / np.exp(mean_logits).sum())
    assert evaluate(softmax, views, np.array([0]), weights, "logits")[1] == pytest.approx(expected_loss, rel=1e-5)
    assert evaluate(softmax, views, np.array([1]), weights, "probabilities")[0] == 1.0  # probabilities favour class 1


def test_the_default_grid_has_both_from_scratch_rows():
    from bench.cli import build_parser
    from bench.plan import RunRequest, plan_cells

    cells, _ = plan_cells(RunRequest.from_args(build_parser().parse_args(["run", "--all", "--data", "synthetic"])), native_size=32)
    scratch = {c.backbone: c for c in cells if c.stage == "baseline"}
    assert set(scratch) == {"small_cnn", "airbench94"}
    assert scratch["small_cnn"].recipe() == SMALL_CNN and scratch["small_cnn"].augment == "flip-crop"
    assert scratch["airbench94"].recipe() == AIRBENCH94 and scratch["airbench94"].augment == "altflip-translate"
    curve, _ = plan_cells(RunRequest.from_args(build_parser().parse_args(["run", "--backbone", "airbench94", "--epochs", "4", "--seeds", "3"])), native_size=32)
    assert [(c.recipe().epochs, c.seed) for c in curve] == [(4, 0), (4, 1), (4, 2)]
    assert dataclasses.replace(curve[0].recipe(), epochs=AIRBENCH94.epochs) == AIRBENCH94


def test_the_from_scratch_recipes_train_in_mixed_precision_unless_the_run_says_otherwise():
    from bench.cli import build_parser
    from bench.plan import RunRequest, plan_cells

    def precisions(*flags):
        cells, _ = plan_cells(RunRequest.from_args(build_parser().parse_args(["run", "--backbone", "airbench94", "small_cnn", "mobilenet_v2", "--data", "synthetic", *flags])), native_size=32)
        return {(c.backbone, c.stage): c.precision for c in cells}

    # The two from-scratch recipes train in bfloat16 (faster there); the pretrained stages keep float32 (slower in it).
    assert set(precisions().items()) == {(("airbench94", "baseline"), "mixed"), (("small_cnn", "baseline"), "mixed")} | {
        (("mobilenet_v2", stage), "float32") for stage in ("linear", "transfer", "finetune")
    }
    assert set(precisions("--precision", "float32").values()) == {"float32"}
    assert set(precisions("--precision", "mixed").values()) == {"mixed"}


def test_the_whitening_layer_is_set_from_the_first_training_images_as_the_model_preprocesses_them():
    from backbones.registry import INIT_IMAGES
    from bench.models import init_from_training_images

    images = np.random.default_rng(0).integers(0, 255, (INIT_IMAGES + 50, 32, 32, 3), dtype=np.uint8)
    spec, clf, again = get_backbone("airbench94"), _classifier(), _classifier()
    init_from_training_images(spec, clf.backbone, RowView(images))
    whiten_from_images(again.backbone, keras.ops.convert_to_numpy(spec.preprocess(images[:INIT_IMAGES].astype("float32"))))
    kernel = clf.backbone.get_layer("whiten").kernel.numpy()
    assert np.abs(kernel).max() > 0.1
    np.testing.assert_allclose(kernel, again.backbone.get_layer("whiten").kernel.numpy(), rtol=1e-5)


@pytest.mark.slow
def test_training_freezes_the_whitening_bias_after_its_epochs(monkeypatch):
    from bench.training import image_epochs, train

    # Averaging every step: with every 5 and 4 steps in all, the last step would reset the weights
    # to the start (no averaging step yet), as airbench's would.
    rules = dataclasses.replace(AIRBENCH94.nesterov, whiten_bias_epochs=1, lookahead_every=1)
    recipe = dataclasses.replace(AIRBENCH94, epochs=2, batch_size=8, nesterov=rules)
    rng = np.random.default_rng(0)
    x, labels = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8), np.eye(10, dtype="float32")[np.arange(16) % 10]
    spec, clf = get_backbone("airbench94"), _classifier()
    whiten_from_images(clf.backbone, keras.ops.convert_to_numpy(spec.preprocess(x.astype("float32"))))
    bias = clf.backbone.get_layer("whiten").bias
    after = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            after.append(bias.numpy().copy())

    # The harness's loop calls fit once per epoch: watch the bias after each.
    fit = clf.model.fit
    monkeypatch.setattr(clf.model, "fit", lambda *a, callbacks=(), **k: fit(*a, callbacks=[*callbacks, Watch()], **k))
    result = train(clf.model, image_epochs(x, labels, recipe, get_policy(recipe.augment), 0), 2, x[:8], labels[:8], recipe)
    assert len(result.history) == 2 and not result.diverged
    assert np.abs(after[0]).max() > 0  # trained in the first epoch
    np.testing.assert_array_equal(after[1], after[0])  # then frozen


def test_a_trained_airbench94_classifier_saves_loads_and_predicts_the_same(tmp_path):
    from bench.convert import convert
    from bench.training import compile_model

    clf = _classifier()
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3)).astype("float32")
    whiten_from_images(clf.backbone, images / 64.0)  # a kernel that is not the initial zeros
    # Compiled with its optimiser, as a cell saves it: saving clones the model, optimiser config included.
    compile_model(clf.model, AIRBENCH94, steps_per_epoch=44)
    path = convert(clf.model, "tensorflow", tmp_path / "airbench94")
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(loaded(images, training=False), clf.model(images, training=False), rtol=1e-5, atol=1e-6)
