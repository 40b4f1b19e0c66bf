"""EfficientNet-B0 from keras.applications (the write-up's "next steps")."""

from backbones.registry import register_backbone


@register_backbone(
    default_image_size=96,
    # EfficientNet rescales and normalises inside the model: it takes raw 0-255 pixels.
    # A dotted path, and keras imported in the builder: registering must not load TensorFlow.
    preprocess="keras.applications.efficientnet.preprocess_input",
    has_imagenet_weights=True,
)
def efficientnet_b0(input_shape=(96, 96, 3), weights="imagenet"):
    """EfficientNet-B0, ImageNet weights, 4.0 M parameters."""
    import keras

    return keras.applications.EfficientNetB0(include_top=False, weights=weights, input_shape=input_shape)
