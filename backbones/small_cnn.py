"""A small residual CNN trained from scratch at CIFAR's native 32 px (the baseline stage)."""

from backbones.registry import register_backbone

# keras is imported inside the functions: registering the backbone must not load TensorFlow.

# CIFAR-10 per-channel statistics of the training images, on the 0-255 scale
CIFAR_MEAN = (125.3, 123.0, 113.9)
CIFAR_STD = (63.0, 62.1, 66.7)


def standardize_cifar(images):
    import keras

    return (images - keras.ops.convert_to_tensor(CIFAR_MEAN)) / keras.ops.convert_to_tensor(CIFAR_STD)


def _conv_bn(x, filters, name):
    import keras

    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _residual(x, filters, name):
    import keras

    shortcut = x
    x = _conv_bn(x, filters, f"{name}_a")
    x = _conv_bn(x, filters, f"{name}_b")
    return keras.layers.Add(name=f"{name}_add")([shortcut, x])


@register_backbone(default_image_size=32, preprocess=standardize_cifar, has_imagenet_weights=False, stages=("baseline",), baseline_recipe="small_cnn")
def small_cnn(input_shape=(32, 32, 3), weights=None):
    """Residual CNN, 9 convolutions, widths 32-64-128, about 0.5 M parameters."""
    if weights not in (None, "none"):
        raise ValueError("small_cnn has no pretrained weights; it trains from scratch (use --weights none)")
    import keras

    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, 32, "stem")
    x = _residual(x, 32, "res1")
    # Pool before widening: the wider convolution then runs on a quarter of the pixels.
    for width, name in ((64, "res2"), (128, "res3")):
        x = keras.layers.MaxPooling2D(name=f"{name}_pool")(x)
        x = _conv_bn(x, width, f"{name}_widen")
        x = _residual(x, width, name)
    return keras.Model(inputs, x, name="small_cnn")
