"""Model surgery: backbone + head assembly, each stage's trainable weights, and the frozen-prefix /
trainable-suffix split the cached path trains on.

The classifier takes raw uint8-valued images at the data's native size: resizing and the
backbone's own preprocessing are layers of the model, so throughput and latency measure
what a deployed model would run.
"""

from __future__ import annotations

import dataclasses

import keras

# airbench_layers: its layers are registered with Keras, so a saved airbench94 classifier loads.
from backbones import BackboneSpec, airbench_layers, get_backbone
from backbones.registry import INIT_IMAGES
from bench.stages import Stage


@keras.saving.register_keras_serializable(package="bench")
class Preprocess(keras.layers.Layer):
    """Applies a backbone's preprocessing function (pixels on the 0-255 scale in).

    Saved by its backbone's name, not its function: a saved classifier (``bench.convert``)
    loads wherever that backbone is registered.
    """

    def __init__(self, backbone: str, fn=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.fn = fn or get_backbone(backbone).preprocess

    def call(self, images):
        return self.fn(keras.ops.cast(images, "float32"))

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """The parts of one cell's network.

    Attributes:
        model: images -> class probabilities, end to end.
        backbone: the headless feature extractor inside ``model``.
        features: images -> pooled backbone features (what the ``transfer`` cache stores).
        head: pooled features -> probabilities (the only part ``transfer`` trains).
    """

    model: keras.Model
    backbone: keras.Model
    features: keras.Model
    head: keras.Model


def build_head(feature_dim: int, num_classes: int, stage: Stage) -> keras.Model:
    """Global-average-pooled features -> [Dense -> Dropout] -> Dense softmax, as in the write-up
    (the output layer's bias, initialiser and a scale of its logits as the stage says)."""
    inputs = keras.Input((feature_dim,), name="pooled_features")
    x = inputs
    if stage.head_units:
        x = keras.layers.Dense(stage.head_units, activation="relu", name="head_dense")(x)
    if stage.head_dropout:
        x = keras.layers.Dropout(stage.head_dropout, name="head_dropout")(x)
    # float32 output even under a mixed-precision policy: softmax and the loss need the range.
    output = dict(use_bias=stage.head_bias, kernel_initializer=_initializer(stage.head_init), dtype="float32", name="head_output")
    if stage.logit_scale == 1.0:
        outputs = keras.layers.Dense(num_classes, activation="softmax", **output)(x)
    else:
        logits = keras.layers.Rescaling(stage.logit_scale, dtype="float32", name="head_scale")(keras.layers.Dense(num_classes, **output)(x))
        outputs = keras.layers.Activation("softmax", dtype="float32", name="head_softmax")(logits)
    return keras.Model(inputs, outputs, name="head")


def _initializer(name: str):
    return airbench_layers.torch_default_uniform() if name == "torch" else name


def build_classifier(spec: BackboneSpec, stage: Stage, native_size: int, image_size: int, num_classes: int, weights) -> Classifier:
    """Assemble backbone and head for one stage and set which weights train.

    Args:
        spec: the backbone.
        stage: decides frozen parts and head shape.
        native_size: side of the images the model is fed.
        image_size: side the backbone runs at (a Resizing layer bridges the two).
        num_classes: output width.
        weights: ``None``, ``"imagenet"`` or a weights file, handed to the builder.
    """
    backbone = spec.builder(input_shape=(image_size, image_size, 3), weights=weights)
    inputs = keras.Input((native_size, native_size, 3), name="images")
    x = inputs
    if image_size != native_size:
        x = keras.layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(x)
    x = Preprocess(spec.name, spec.preprocess, name="preprocess")(x)
    # A frozen or partly frozen backbone runs with training=False so BatchNorm keeps its
    # ImageNet statistics, even for the layers fine-tuning unfreezes.
    x = backbone(x, training=False) if stage.trainable != "all" else backbone(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    features = keras.Model(inputs, pooled, name="features")
    head = build_head(pooled.shape[-1], num_classes, stage)
    model = keras.Model(inputs, head(pooled), name=f"{spec.name}_{stage.name}")
    set_trainable(backbone, stage)
    return Classifier(model, backbone, features, head)


def init_from_training_images(spec: BackboneSpec, backbone: keras.Model, x_train) -> None:
    """Run the backbone's ``init_from_images`` hook, if it has one, on its first ``INIT_IMAGES``
    training images, preprocessed as the model preprocesses them."""
    if spec.init_from_images is None:
        return
    images = x_train.rows(slice(0, INIT_IMAGES)).astype("float32")
    spec.init_from_images(backbone, keras.ops.convert_to_numpy(spec.preprocess(images)))


def top_layers(backbone: keras.Model, count: int) -> list[keras.layers.Layer]:
    """The last ``count`` layers of ``backbone`` that carry weights and are not BatchNorm."""
    picked = []
    for layer in reversed(backbone.layers):
        if len(picked) == count:
            break
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
            picked.append(layer)
    return picked[::-1]


def set_trainable(backbone: keras.Model, stage: Stage) -> None:
    """Apply the stage's rule: all, head only (backbone frozen), or the top N layers."""
    if stage.trainable == "all":
        backbone.trainable = True
    elif stage.trainable == "head":
        backbone.trainable = False
    elif stage.trainable == "top":
        backbone.trainable = True
        unfrozen = {id(layer) for layer in top_layers(backbone, stage.unfreeze_layers)}
        for layer in backbone.layers:
            layer.trainable = id(layer) in unfrozen
    else:
        raise ValueError(f"stage {stage.name!r}: unknown trainable rule {stage.trainable!r}")


def split_below_top(backbone: keras.Model, count: int) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) of a backbone cut at the input of the first of its ``top_layers(count)``.

    Everything below the cut stays frozen in every stage, so its output can be cached (and
    shared: ``transfer`` and ``finetune`` cut at the same place). Where a skip connection
    crosses the cut (the top would need a second tensor from below), the cut moves down one
    layer at a time until the top depends on the cut tensor alone.
    """
    layers = backbone.layers
    first = layers.index(top_layers(backbone, count)[0])
    for index in range(first, 0, -1):
        node_inputs = layers[index].input
        if isinstance(node_inputs, (list, tuple)):
            continue
        try:
            top = keras.Model(node_inputs, backbone.output, name=f"{backbone.name}_top")
        except ValueError:
            continue
        bottom = keras.Model(backbone.input, node_inputs, name=f"{backbone.name}_bottom")
        return bottom, top
    raise ValueError(f"could not find a single-tensor cut in {backbone.name}")


def prefix_suffix(clf: Classifier, bottom: keras.Model, top: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Finetune's frozen prefix (images -> cut activations) and trainable suffix (-> probabilities)."""
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


def cut_name(top: keras.Model) -> str:
    """A name for the place a backbone is cut: the first layer above the cut."""
    return top.layers[1].name if len(top.layers) > 1 else "top"


def cached_split(clf: Classifier, recipe: Stage, finetune_depth: int | None) -> tuple[keras.Model, keras.Model, tuple[str, ...]]:
    """(frozen prefix, trained suffix, cut names) for the cached path.

    ``finetune`` trains the suffix above its cut. ``transfer`` trains the head on pooled
    features, and where the backbone also has a ``finetune`` stage (``finetune_depth``: the
    layers it unfreezes), its prefix computes them through that stage's cut and hands the cut
    activations to the cache too: the ``finetune`` cell then reads them instead of running
    the backbone over every image again.
    """
    if recipe.trainable == "top":
        bottom, top = split_below_top(clf.backbone, recipe.unfreeze_layers)
        prefix, suffix = prefix_suffix(clf, bottom, top)
        return prefix, suffix, (cut_name(top),)
    if finetune_depth is None:
        return clf.features, clf.head, ("pooled",)
    bottom, top = split_below_top(clf.backbone, finetune_depth)
    cut_prefix, _ = prefix_suffix(clf, bottom, top)
    cut = cut_prefix.output
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(top(cut, training=False))
    prefix = keras.Model(cut_prefix.input, [pooled, cut], name="frozen_prefix_shared")
    return prefix, clf.head, ("pooled", cut_name(top))
