"""Tiny pretrained-style backbones for tests that need transfer and finetune cells but not MobileNetV2 itself.

Registered only where a test asks (the ``tiny_backbones`` fixture, or ``BENCH_BACKBONE_MODULES=tiny_backbones``
for a spawned ``bench``): two strided convolutions build and train at 32 px in a fraction of a
second, where MobileNetV2 takes the better part of a minute on a loaded 2-core machine.
``tiny_wide`` has other widths, so each one's weights file does not fit the other;
``tiny_scratch`` runs the baseline stage, as small_cnn does; ``tiny_probe`` is tiny_net with
the ``linear`` stage too, as the built-in pretrained backbones have it.
"""

from backbones import register_backbone

NAMES = ("tiny_net", "tiny_wide", "tiny_scratch", "tiny_probe")


def _build(name, widths, input_shape, weights):
    import keras

    if weights == "imagenet":
        raise ValueError(f"{name} has no ImageNet weights")
    inputs = keras.Input(input_shape)
    x = inputs
    for index, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=f"{name}_conv{index}")(x)
    model = keras.Model(inputs, x, name=name)
    if weights not in (None, "none"):
        model.load_weights(weights)
    return model


# Two weight layers: tuning unfreezes one or both.
@register_backbone(default_image_size=32, stages=("transfer", "finetune"), unfreeze_layers=1, search_ranges=(("unfreeze_layers", 1, 2),))
def tiny_net(input_shape=(32, 32, 3), weights=None):
    """Two strided convolutions (4 and 8 filters): a stand-in for a pretrained backbone."""
    return _build("tiny_net", (4, 8), input_shape, weights)


@register_backbone(default_image_size=32, stages=("transfer", "finetune"), unfreeze_layers=1, search_ranges=(("unfreeze_layers", 1, 2),))
def tiny_wide(input_shape=(32, 32, 3), weights=None):
    """Two strided convolutions (6 and 12 filters): another architecture than tiny_net's."""
    return _build("tiny_wide", (6, 12), input_shape, weights)


@register_backbone(default_image_size=32, stages=("baseline",))
def tiny_scratch(input_shape=(32, 32, 3), weights=None):
    """Two strided convolutions trained from scratch: a stand-in for small_cnn's baseline."""
    return _build("tiny_scratch", (4, 8), input_shape, weights)


@register_backbone(default_image_size=32, stages=("linear", "transfer", "finetune"), unfreeze_layers=1)
def tiny_probe(input_shape=(32, 32, 3), weights=None):
    """tiny_net's two convolutions, with every pretrained stage (the linear probe's too)."""
    return _build("tiny_probe", (4, 8), input_shape, weights)
