"""MobileNetV2 from keras.applications, the write-up's pretrained backbone."""

import keras

from backbones.registry import register_backbone


@register_backbone(
    default_image_size=96,
    preprocess=keras.applications.mobilenet_v2.preprocess_input,
    has_imagenet_weights=True,
)
def mobilenet_v2(input_shape=(96, 96, 3), weights="imagenet"):
    """MobileNetV2 (alpha 1.0), ImageNet weights, 2.3 M parameters."""
    return keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=input_shape)
