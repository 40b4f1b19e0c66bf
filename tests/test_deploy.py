"""The deployment axis: a tiny classifier converted to each installed runtime predicts as TensorFlow
does (int8: mostly); the trained cell's saved classifier; the accuracy gate before timing; `bench
deploy`'s refusals, records and report; `bench cost --runtime`'s keys and skip lines."""

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from bench import runners
from bench.cli import main
from bench.convert import convert, file_mb
from bench.cost_records import CostConfig, read_cost_records
from bench.deploy import DeployJob, evaluate_job
from bench.deploy_records import DEPLOY_FILE, DeployRecord, append_deploy_record
from bench.grid import Cell
from bench.provenance import Provenance
from bench.runtimes import RUNTIMES, missing_modules
from conftest import ROOT, run_cli

IMAGES = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    """tests/tiny_backbones.py's tiny_net: a classifier that converts in seconds."""


def _classifier(seed=0):
    """tiny_net with its head: a large random output layer, so the classes' probabilities differ
    clearly from image to image (random small weights predict one class for every image)."""
    import keras

    from backbones import get_backbone
    from bench.models import build_classifier
    from bench.stages import STAGES

    keras.utils.set_random_seed(seed)
    clf = build_classifier(get_backbone("tiny_net"), STAGES["transfer"], 32, 32, 10, None)
    output = clf.head.get_layer("head_output")
    kernel, bias = output.get_weights()
    output.set_weights([np.random.default_rng(seed).normal(0, 30, kernel.shape).astype("float32"), bias])
    return clf


def _runtime_param(name, slow=False):
    marks = [pytest.mark.skipif(bool(missing_modules(name)), reason=f"{name} not installed (pip install -e '.[deploy]')")]
    return pytest.param(name, marks=marks + ([pytest.mark.slow] if slow else []))


# ONNX (Keras's export) and int8 LiteRT (SavedModel, TFLite's converter) in the default suite: both
# conversion routes; the float LiteRT and OpenVINO conversions take longer.
@pytest.mark.parametrize(
    "runtime", [_runtime_param("onnxruntime"), _runtime_param("litert-int8"), _runtime_param("litert", slow=True), _runtime_param("openvino", slow=True), _runtime_param("openvino-int8", slow=True)]
)
def test_a_converted_tiny_classifier_predicts_as_tensorflow_does(runtime, tmp_path):
    clf = _classifier()
    reference = clf.model.predict(IMAGES.astype("float32"), verbose=0)
    assert len(set(reference.argmax(1))) >= 3  # a model whose predictions vary, or agreement proves nothing
    path = convert(clf.model, runtime, tmp_path / "model", calibration=IMAGES)
    assert path.suffix == RUNTIMES[runtime].suffix and file_mb(path) > 0
    probabilities = runners.load(runtime, path, threads=1).probabilities(IMAGES)
    agreement = np.mean(probabilities.argmax(1) == reference.argmax(1))
    if RUNTIMES[runtime].int8:
        assert agreement >= 0.8, agreement
        assert file_mb(path) < file_mb(convert(clf.model, "tensorflow", tmp_path / "float"))
    else:
        np.testing.assert_allclose(probabilities, reference, atol=1e-4)
        assert agreement == 1


def _normalization(keras):
    return keras.layers.Normalization(mean=[10.0, 20.0, 30.0], variance=[4.0, 9.0, 16.0])


def _exact_gelu(keras):
    return keras.layers.Activation("gelu")


# EfficientNet-B0 normalises its input with constants its Normalization layer captures: converted
# unfrozen, they became graph inputs ONNX Runtime demanded. airbench94's exact GELU computes an
# Erfc, which tf2onnx passed through and ONNX does not have.
@pytest.mark.skipif(bool(missing_modules("onnxruntime")), reason="onnxruntime not installed")
@pytest.mark.parametrize("layer", [_normalization, _exact_gelu])
def test_the_onnx_model_of_a_layer_tf2onnx_mishandled_runs_and_matches(layer, tmp_path):
    import keras
    import onnxruntime

    inputs = keras.Input((8, 8, 3), name="images")
    hidden = layer(keras)(keras.layers.Rescaling(1 / 64, offset=-2)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(hidden)))
    path = convert(model, "onnxruntime", tmp_path / "model")
    assert len(onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()) == 1
    images = IMAGES[:4, :8, :8]
    np.testing.assert_allclose(runners.load("onnxruntime", path, threads=1).probabilities(images), model.predict(images.astype("float32"), verbose=0), atol=1e-5)


def test_the_saved_classifier_reloads_whole_without_optimiser_state(tmp_path):
    import keras

    from bench.stages import STAGES
    from bench.training import compile_model

    clf = _classifier()
    compile_model(clf.head, STAGES["transfer"], steps_per_epoch=1)  # a trained head carries its optimiser
    clf.head.train_on_batch(np.ones((2, int(clf.head.input.shape[-1])), "float32"), np.eye(10, dtype="float32")[:2])
    path = convert(clf.model, "tensorflow", tmp_path / "model")
    with zipfile.ZipFile(path) as archive, __import__("h5py").File(__import__("io").BytesIO(archive.read("model.weights.h5"))) as weights:
        names = []
        weights.visit(names.append)
    assert not [name for name in names if "optimizer" in name]
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_array_equal(loaded.predict(IMAGES.astype("float32"), verbose=0), clf.model.predict(IMAGES.astype("float32"), verbose=0))


def test_probabilities_batch_and_average_each_image_with_its_mirror():
    weights = np.random.default_rng(1).normal(size=(32 * 32 * 3, 10))

    def run(batch):
        logits = batch.reshape(len(batch), -1) @ weights
        return np.exp(logits - logits.max(1, keepdims=True)) / np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)

    runner = runners.Runner(prepare=lambda images: images.astype(np.float64) / 255, run=run)
    images = IMAGES[:10]
    plain = run(images / 255)
    np.testing.assert_allclose(runner.probabilities(images, batch_size=3), plain)
    np.testing.assert_allclose(runner.probabilities(images, tta_flip=True, batch_size=4), (plain + run(images[:, :, ::-1] / 255)) / 2)


def _cell_record(out, model_file="models/m.keras"):
    from bench.records import Record

    cell = Cell(backbone="tiny_net", stage="transfer", image_size=32, augment="none", seed=0, data="synthetic", profile="quick", epochs=1)
    return Record(**cell.record_fields(), status="ok", model_file=model_file)


def _split(folder, labels):
    np.save(folder / "test_images.npy", IMAGES)
    np.save(folder / "test_labels.npy", labels)
    np.save(folder / "calibration.npy", IMAGES[:8])


@pytest.mark.skipif(bool(missing_modules("onnxruntime")), reason="onnxruntime not installed")
def test_a_float_runtime_off_by_more_than_a_tenth_of_a_point_fails_untimed(tmp_path):
    clf = _classifier()
    predicted = clf.model.predict(IMAGES.astype("float32"), verbose=0).argmax(1)
    labels = predicted.copy()
    labels[:16] = (labels[:16] + 1) % 10  # TensorFlow is right on 75 % of them
    _split(tmp_path, labels)
    job = DeployJob(_cell_record(tmp_path), "onnxruntime")
    convert(clf.model, "onnxruntime", tmp_path / job.model_file())
    ok, _ = evaluate_job(job, tmp_path, tmp_path, (predicted, 0.75), convert_seconds=1.0)
    assert ok.status == "ok" and ok.test_accuracy == ok.reference_accuracy == 0.75 and ok.agreement == 1
    assert ok.infer_images_per_second > 0 and ok.latency_p95_ms >= ok.latency_p50_ms > 0 and ok.threads >= 1
    assert ok.model_file == job.model_file() and ok.model_file_mb > 0 and ok.runtime_version
    # TensorFlow "reached" 75.2 %: the converted model's 75.0 % is 0.2 point off.
    failed, _ = evaluate_job(job, tmp_path, tmp_path, (predicted, 0.752), convert_seconds=1.0)
    assert failed.status == "failed" and failed.failure == "accuracy" and "not timed" in failed.error
    assert failed.infer_images_per_second is None and failed.latency_p50_ms is None and failed.test_accuracy == 0.75


def test_a_cached_finetune_cell_saves_the_whole_classifier_it_trained(tmp_path):
    import keras

    from bench.cell import run_cell
    from bench.data import load_raw, prepare
    from bench.stages import PROFILES

    cell = Cell(backbone="tiny_net", stage="finetune", image_size=32, augment="none", seed=0, data="synthetic", profile="quick", epochs=1)
    record = run_cell(cell, tmp_path / "out", tmp_path / "cache")
    assert record.status == "ok" and record.path == "cached" and record.model_file == cell.model_file()
    model = keras.saving.load_model(tmp_path / "out" / record.model_file, compile=False)
    data = prepare(load_raw("synthetic", tmp_path / "cache"), 0, 0.1, PROFILES["quick"].train_images, PROFILES["quick"].test_images)
    runner = runners.Runner(prepare=lambda images: images.astype("float32"), run=lambda x: model.predict(x, verbose=0))
    accuracy = np.mean(runner.probabilities(data.x_test.rows(slice(None)), record.tta_flip).argmax(1) == data.y_test)
    # The suffix trained on cached activations shares its layers with the saved classifier.
    assert abs(accuracy - record.test_accuracy) < 1e-9


def test_a_classifier_keras_cannot_save_costs_the_cell_its_model_file_not_its_results(tmp_path):
    import keras

    from backbones import register_backbone, unregister_backbone
    from bench.cell import run_cell

    class Scale(keras.layers.Layer):  # unregistered, and no get_config for its argument
        def __init__(self, factor, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

    def unsaveable(input_shape=(32, 32, 3), weights=None):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, Scale(2.0)(keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)))

    register_backbone(unsaveable, default_image_size=32, stages=("transfer",))
    try:
        cell = Cell(backbone="unsaveable", stage="transfer", image_size=32, augment="none", seed=0, data="synthetic", profile="quick", epochs=1)
        record = run_cell(cell, tmp_path / "out", tmp_path / "cache")
    finally:
        unregister_backbone("unsaveable")
    assert record.status == "ok" and record.test_accuracy is not None
    assert record.model_file == "" and "classifier not saved" in record.notes and not list((tmp_path / "out").glob("models/*.keras"))


def test_deploy_refuses_a_folder_without_runs_or_without_saved_models(tmp_path, capsys):
    assert main(["deploy", "--out", str(tmp_path / "none")]) == 2
    assert "runs.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "runs.jsonl").write_text((ROOT / "tests/fixtures/runs.jsonl").read_text().splitlines()[0] + "\n")  # an ok cell that saved no classifier
    assert main(["deploy", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "skipped 1 cell(s) without a saved classifier" in err and "no trained cell" in err
    assert not (tmp_path / DEPLOY_FILE).exists()


def _deploy_record(runtime, accuracy, status="ok", **fields):
    common = dict(test_accuracy=accuracy, reference_accuracy=0.8, agreement=0.99, test_images=100, model_file_mb=9.0, infer_images_per_second=300.0,
                  infer_batch_size=64, latency_p50_ms=5.0, latency_p95_ms=6.0, peak_rss_mb=400.0, threads=2, runtime_version="1.0", provenance=Provenance(cpu="cpu", started_at="t"))
    if status != "ok":
        common = dict(test_accuracy=accuracy, reference_accuracy=0.8, failure="accuracy", error="conversion changed the predictions")
    return DeployRecord(f"mobilenet_v2/finetune/k/{runtime}", "mobilenet_v2/finetune/k", "mobilenet_v2", "finetune", 128, "flip", 0, "cifar10", runtime, status, {"seed": 0}, **{**common, **fields})


def test_the_report_gains_a_deployment_table_and_plot_only_with_deploy_records(tmp_path):
    (tmp_path / "runs.jsonl").write_text("".join(line + "\n" for line in (ROOT / "tests/fixtures/runs.jsonl").read_text().splitlines()[:2]))
    assert main(["report", "--out", str(tmp_path)]) == 0
    assert "Deployment" not in (tmp_path / "README.md").read_text() and not (tmp_path / "deploy.md").exists()
    second_seed = dataclasses.replace(_deploy_record("tensorflow", 0.82), key="mobilenet_v2/finetune/k1/tensorflow", seed=1, identity={"seed": 1})
    for record in (_deploy_record("tensorflow", 0.8), second_seed, _deploy_record("litert-int8", 0.785), _deploy_record("openvino", 0.5, status="failed")):
        append_deploy_record(tmp_path, record)
    assert main(["report", "--out", str(tmp_path)]) == 0
    readme, deploy = (tmp_path / "README.md").read_text(), (tmp_path / "deploy.md").read_text()
    assert "## Deployment" in readme and deploy.startswith("# Deployment")
    rows = [line for line in deploy.splitlines() if line.startswith("| `mobilenet_v2`")]
    assert [row.split("|")[4].strip() for row in rows] == ["tensorflow", "litert-int8"]
    assert "| 81.0 % (n=2)" in rows[0]  # seeds of one configuration together
    assert "| 78.5 %" in rows[1] and "| 1.50 " in rows[1]  # the int8 drop, in points
    # Beside an int8 row, MobileNetV2's release's own ImageNet int8 drop (registry metadata).
    header = [cell.strip() for cell in next(line for line in deploy.splitlines() if line.startswith("| backbone")).split("|")]
    official = header.index("official int8 drop (ImageNet)")
    assert [row.split("|")[official].strip() for row in rows] == ["", "1.0"]
    assert "`mobilenet_v2/finetune/k/openvino` (accuracy): conversion changed the predictions" in deploy
    assert "threads: 2 (every runtime alike)" in deploy
    assert (tmp_path / "deploy_accuracy_vs_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_tensorflow_cost_keys_are_those_of_the_committed_records():
    records = read_cost_records(ROOT / "results" / "cost.jsonl").records
    assert records and all(r.runtime == "tensorflow" for r in records)
    for record in records:
        config = CostConfig(record.backbone, record.image_size, record.batch_size, record.native_size, record.num_classes, record.dataset, record.precision, record.jit_compile)
        assert config.key == record.key
    other = dataclasses.replace(config, runtime="litert-int8")
    assert other.key == record.key + "/litert-int8" and other.identity()["runtime"] == "litert-int8"


def test_cost_skips_runtimes_it_cannot_measure_with_one_line_each(monkeypatch, capsys):
    import io

    from bench import runtimes
    from bench.errors import UsageError
    from bench.plan import CostRequest, cost_runtimes, plan_costs

    monkeypatch.setattr(runtimes, "missing_modules", lambda name: ["openvino"] if name == "openvino" else [])
    log = io.StringIO()
    request = cost_runtimes(CostRequest(backbone=("tiny_net",), runtime=("openvino", "onnxruntime", "tensorflow")), log)
    assert request.runtime == ("tensorflow", "onnxruntime")
    assert log.getvalue() == 'skipped runtime openvino: openvino not installed; pip install -e ".[deploy]"\n'
    assert [c.runtime for c in plan_costs(request)] == ["tensorflow", "onnxruntime"]
    log = io.StringIO()
    assert cost_runtimes(CostRequest(backbone=("tiny_net",), runtime=("litert", "tensorflow"), precision="mixed"), log).runtime == ("tensorflow",)
    assert "skipped runtime litert: --precision mixed and --jit-compile are TensorFlow's settings" in log.getvalue()
    with pytest.raises(UsageError, match="no runtime asked for can be measured here"):
        cost_runtimes(CostRequest(backbone=("tiny_net",), runtime=("openvino",)), io.StringIO())


@pytest.mark.slow
def test_run_then_deploy_then_resume_end_to_end(tmp_path):
    """A real `bench run` of tiny_net's two stages, then `bench deploy` to two runtimes, each step in its own process."""
    out, env = tmp_path / "out", {"BENCH_BACKBONE_MODULES": "tiny_backbones"}
    done = run_cli("run", "--backbone", "tiny_net", "--data", "synthetic", "--profile", "quick", "--out", out, "--cache-dir", tmp_path / "cache", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_cli("deploy", "--out", out, "--runtime", "onnxruntime", "litert-int8", "--cache-dir", tmp_path / "cache", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (out / DEPLOY_FILE).read_text().splitlines()]
    assert [(r["stage"], r["runtime"]) for r in lines] == [(s, r) for s in ("transfer", "finetune") for r in ("tensorflow", "onnxruntime", "litert-int8")]
    runs = {json.loads(line)["key"]: json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()}
    for record in lines:
        assert record["status"] == "ok" and (out / record["model_file"]).is_file()
        if record["runtime"] == "tensorflow":  # the saved classifier scores what the cell scored
            assert record["test_accuracy"] == pytest.approx(runs[record["cell_key"]]["test_accuracy"]) and record["agreement"] == 1
        if record["runtime"] == "onnxruntime":
            assert record["agreement"] == 1 and record["test_accuracy"] == record["reference_accuracy"]
        if record["runtime"] == "litert-int8":
            assert record["calibration_images"] > 0
    assert "| `tiny_net` | finetune | 32        | litert-int8 |" in (out / "deploy.md").read_text()
    again = run_cli("deploy", "--out", out, "--runtime", "onnxruntime", "litert-int8", "--resume", env=env)
    assert again.returncode == 0 and "6 of 6 deployments already have an ok record; running 0" in again.stderr


@pytest.mark.slow
def test_cost_measures_each_installed_runtime_in_its_own_processes(tmp_path):
    out = tmp_path / "out"
    done = run_cli("cost", "--backbone", "tiny_net", "--image-size", "32", "--batch-size", "2", "--runtime", "tensorflow", "onnxruntime", "litert-int8", "--out", out,
                   env={"BENCH_BACKBONE_MODULES": "tiny_backbones"})
    assert done.returncode == 0, done.stderr[-2000:]
    records = {r.runtime: r for r in read_cost_records(out).records}
    assert set(records) == {"tensorflow", "onnxruntime", "litert-int8"}
    for runtime, record in records.items():
        assert record.status == "ok" and record.infer_images_per_second > 0 and record.peak_rss_mb > 0 and record.threads >= 1
        assert (record.transfer_train_images_per_second is None) == (runtime != "tensorflow")
    assert records["litert-int8"].model_file_mb < records["onnxruntime"].model_file_mb
    assert "| runtime " in (out / "cost.md").read_text()
    assert not list(out.glob(".bench-cost-*"))  # the converted files are gone
