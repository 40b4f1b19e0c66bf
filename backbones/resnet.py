"""ResNet50 from keras.applications (the write-up's "next steps")."""

import keras

from backbones.registry import register_backbone


@register_backbone(
    default_image_size=96,
    preprocess=keras.applications.resnet50.preprocess_input,
    has_imagenet_weights=True,
)
def resnet50(input_shape=(96, 96, 3), weights="imagenet"):
    """ResNet50 (v1), ImageNet weights, 23.6 M parameters."""
    return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=input_shape)
