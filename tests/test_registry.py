import re
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from backbones import BackboneLookupError, BackboneSpec, get_backbone, list_backbones, register_backbone, registry, unregister_backbone
from bench.models import build_classifier, split_below_top, top_layers
from bench.stages import STAGES
from conftest import per_backbone

LITES = tuple(f"efficientnet_lite{i}" for i in range(5))
BUILTINS = ("airbench94", "efficientnet_b0", *LITES, "mobilenet_v2", "resnet50", "small_cnn")


def test_builtins_registered():
    assert set(BUILTINS) <= set(list_backbones())


def test_list_backbones_takes_a_glob():
    assert list_backbones("*net*") == ["efficientnet_b0", *LITES, "mobilenet_v2", "resnet50"]
    assert list_backbones("*lite*") == list(LITES)
    assert list_backbones("small_*") == ["small_cnn"]
    assert list_backbones("nothing*") == []


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(BackboneLookupError) as info:
        get_backbone("mobilenet_v3")
    message = str(info.value)
    assert "'mobilenet_v2'" in message and "Did you mean" in message
    for name in BUILTINS:
        assert name in message


def test_reports_find_a_backbone_or_none_where_this_machine_lacks_it():
    from bench.stats import official_int8_drop

    assert registry.find_backbone("mobilenet_v3") is None and official_int8_drop("mobilenet_v3") is None
    assert registry.find_backbone("mobilenet_v2") is get_backbone("mobilenet_v2") and official_int8_drop("mobilenet_v2") == 1.0
    assert official_int8_drop("small_cnn") is None  # no pretrained weights, no int8 release


def test_registering_a_name_twice_raises():
    @register_backbone(name="dup_test", stages=("baseline",), default_image_size=32)
    def first(input_shape, weights=None):
        return None

    try:
        with pytest.raises(BackboneLookupError, match="already registered"):

            @register_backbone(name="dup_test", stages=("baseline",), default_image_size=32)
            def second(input_shape, weights=None):
                return None

    finally:
        unregister_backbone("dup_test")


def test_spec_rejects_unknown_stage():
    with pytest.raises(ValueError, match="stages"):
        BackboneSpec("x", lambda **k: None, 32, lambda x: x, False, ("pretrain",))


def test_spec_rejects_a_default_size_below_its_minimum():
    with pytest.raises(ValueError, match="below its minimum"):
        BackboneSpec("x", lambda **k: None, 16, lambda x: x, False, ("baseline",))


def _build(name, stage_name, unfreeze=4):
    import dataclasses

    spec = get_backbone(name)
    stage = dataclasses.replace(STAGES[stage_name], unfreeze_layers=unfreeze, head_units=8)
    keras.utils.set_random_seed(0)
    return build_classifier(spec, stage, native_size=32, image_size=32, num_classes=10, weights=None)


@pytest.mark.parametrize("name", per_backbone(list_backbones()))
def test_backbone_builds_a_headless_feature_map(name):
    backbone = get_backbone(name).builder(input_shape=(32, 32, 3), weights=None)
    out = backbone(np.zeros((2, 32, 32, 3), "float32"))
    assert len(out.shape) == 4 and out.shape[0] == 2


def _weight_ids(weights):
    return {id(w) for w in weights}


@pytest.mark.parametrize("name,stage", per_backbone([(n, s) for n in list_backbones() for s in get_backbone(n).stages], name_of=lambda p: p[0]))
def test_stage_trainable_weights(name, stage):
    clf = _build(name, stage)
    probs = clf.model(np.zeros((2, 32, 32, 3), "float32"))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(np.sum(probs, axis=1), 1.0, rtol=1e-5)
    trainable = _weight_ids(clf.model.trainable_weights)
    head = _weight_ids(clf.head.trainable_weights)
    if stage == "baseline":
        assert trainable == head | _weight_ids(clf.backbone.trainable_weights)
        assert len(clf.backbone.trainable_weights) > 0
    elif stage == "transfer":
        assert trainable == head
    elif stage == "finetune":
        unfrozen = top_layers(clf.backbone, 4)
        assert len(unfrozen) == 4
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in unfrozen)
        expected = head | {id(w) for layer in unfrozen for w in layer.trainable_weights}
        assert trainable == expected
        # BatchNorm stays frozen even inside the unfrozen top.
        assert all(not layer.trainable for layer in clf.backbone.layers if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize("name", per_backbone([n for n in list_backbones() if "finetune" in get_backbone(n).stages]))
def test_finetune_cut_reproduces_the_backbone(name):
    clf = _build(name, "finetune")
    bottom, top = split_below_top(clf.backbone, STAGES["finetune"].unfreeze_layers)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(top(bottom(x, training=False), training=False), clf.backbone(x, training=False), rtol=1e-4, atol=1e-4)
    trainable_top = {id(w) for w in top.trainable_weights}
    assert {id(w) for w in clf.backbone.trainable_weights} <= trainable_top


def test_readme_plugin_example_registers_and_runs(tmp_path, monkeypatch):
    """The plugin example of docs/adding-a-backbone.md, run as written, through the entry-point group."""
    readme = (Path(__file__).resolve().parent.parent / "docs" / "adding-a-backbone.md").read_text()
    block = re.search(r"<!-- plugin-example -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "docs/adding-a-backbone.md lost its plugin example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 12
    (tmp_path / "my_backbones.py").write_text(code)
    dist = tmp_path / "my_backbones-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-backbones\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[bench.backbones]\nmy_backbones = my_backbones\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        names = list_backbones()
        added = sorted(set(names) - set(BUILTINS) - {"fault_raises"})
        assert "tiny_vgg" in added
        spec = get_backbone("tiny_vgg")
        out = spec.builder(input_shape=(32, 32, 3), weights=None)(np.zeros((1, 32, 32, 3), "float32"))
        assert len(out.shape) == 4
    finally:
        unregister_backbone("tiny_vgg")
        sys.modules.pop("my_backbones", None)
