"""ResNet50 from keras.applications (the write-up's "next steps")."""

from backbones.registry import register_backbone


@register_backbone(
    # 64 px: ResNet50 costs about 10x MobileNetV2 per pixel; at 96 px its two passes over the
    # data alone take half an hour on 2 CPU cores, more than the default grid's budget allows.
    # Sweep larger sizes with --image-size.
    default_image_size=64,
    preprocess="keras.applications.resnet50.preprocess_input",  # imported on first use
    has_imagenet_weights=True,
)
def resnet50(input_shape=(64, 64, 3), weights="imagenet"):
    """ResNet50 (v1), ImageNet weights, 23.6 M parameters."""
    import keras

    return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=input_shape)
