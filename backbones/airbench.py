"""airbench94's network (Keller Jordan, 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
github.com/KellerJordan/cifar10-airbench), written anew in Keras, trained from scratch at 32 px.

A 2 x 2 convolution whose 24 filters whiten image patches (set from training images, never
trained; its bias trains for the recipe's first epochs), then three blocks of conv -> max-pool
-> BatchNorm -> GELU -> conv -> BatchNorm -> GELU (widths 64, 256, 256), then a 3 x 3 max-pool
to 1 x 1. The harness adds the head (``bench.stages.AIRBENCH94``: a bias-free Dense whose
logits are scaled by 1/9, as airbench's). The recipe is ``bench.stages.AIRBENCH94``.

Where this differs from the PyTorch original, and why:
- channels_last and float32: what Keras and oneDNN run fastest on a CPU; the original's half
  precision buys nothing on these cores.
- BatchNorm has no scale (``scale=False``): airbench's scales are frozen at 1, which is the
  same function without 1,152 untrained weights. Keras's ``momentum`` is the weight of the old
  running statistic, PyTorch's that of the new batch: airbench's PyTorch momentum 1 - 0.6 is
  Keras's 0.6. Keras's running variance is the biased one (PyTorch's the unbiased): at
  batches of 1,024 the two differ by 0.1 %.
"""

from backbones.registry import register_backbone

# keras is imported inside the functions: registering the backbone must not load TensorFlow.

WIDTHS = (64, 256, 256)
# Keras momentum = 1 - PyTorch momentum (see the module docstring); airbench94's is 0.6.
BATCHNORM_MOMENTUM = 0.6
# airbench's; Keras's default 1e-3 would change the function wherever a channel's variance is small.
BATCHNORM_EPSILON = 1e-12
WHITEN_KERNEL = 2
# Each of the 3 x 2 x 2 = 12 patch directions, and its negative: GELU then passes both signs.
WHITEN_FILTERS = 2 * 3 * WHITEN_KERNEL**2
# Added to each eigenvalue before dividing by its square root: directions with almost no
# variance are not blown up into noise.
WHITEN_EPSILON = 5e-4
WHITEN_LAYER = "whiten"


def _conv_group(x, width, name):
    import keras

    from backbones.airbench_layers import PartialDirac

    def conv(suffix):
        return keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=PartialDirac(), name=f"{name}_{suffix}")

    def norm_gelu(x, suffix):
        x = keras.layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, epsilon=BATCHNORM_EPSILON, scale=False, name=f"{name}_norm{suffix}")(x)
        return keras.layers.Activation("gelu", name=f"{name}_gelu{suffix}")(x)

    # Pool straight after the first convolution: the rest of the block runs on a quarter of the pixels.
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(conv("conv1")(x))
    x = norm_gelu(x, 1)
    return norm_gelu(conv("conv2")(x), 2)


def whiten_from_images(backbone, images) -> None:
    """Set the whitening layer's kernel from preprocessed training images, as airbench does:
    the eigenvectors of the 2 x 2 patches' (uncentred) covariance, each divided by the square
    root of its eigenvalue (plus ``WHITEN_EPSILON``), then the same filters negated.

    Args:
        backbone: a model built by ``airbench94``.
        images: float32 (n, height, width, 3), as the backbone's input (airbench uses 5,000).
    """
    import numpy as np

    layer = backbone.get_layer(WHITEN_LAYER)
    covariance = patch_covariance(np.asarray(images, dtype="float32"), WHITEN_KERNEL)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    # Largest first, as airbench orders them.
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    filters = eigenvectors / np.sqrt(eigenvalues + WHITEN_EPSILON)
    kernel = np.concatenate([filters, -filters], axis=1).reshape(layer.kernel.shape)
    layer.kernel.assign(kernel.astype("float32"))


def patch_covariance(images, size: int):
    """The (uncentred) covariance of every ``size`` x ``size`` patch, flattened as a Keras
    kernel is laid out (row, column, channel), in float64; read a few images at a time so
    the patches (961 per CIFAR image) never all sit in memory."""
    import numpy as np

    dimension = size * size * images.shape[-1]
    total, count = np.zeros((dimension, dimension)), 0
    for start in range(0, len(images), 256):
        windows = np.lib.stride_tricks.sliding_window_view(images[start : start + 256], (size, size), axis=(1, 2))
        # (n, rows, cols, channels, size, size) -> (n, rows, cols, size, size, channels)
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dimension).astype("float64")
        total += patches.T @ patches
        count += len(patches)
    return total / count


@register_backbone(
    default_image_size=32,
    # small_cnn's CIFAR-10 standardisation: airbench's mean and std, (0.4914, 0.4822, 0.4465) and
    # (0.2470, 0.2435, 0.2616), on the 0-255 scale. Named, not imported: one backbone module never
    # imports another.
    preprocess="backbones.small_cnn.standardize_cifar",
    stages=("baseline",),
    init_from_images=whiten_from_images,
    baseline_recipe="airbench94",
    # Its rate and decay are in airbench's units (per 1,024 examples): tuning searches about 3x
    # either side of its values (11.5, 0.0153), and smoothing past its 0.2.
    search_ranges=(("learning_rate", 4.0, 32.0), ("weight_decay", 0.005, 0.05), ("label_smoothing", 0.0, 0.3)),
)
def airbench94(input_shape=(32, 32, 3), weights=None):
    """airbench94's network: patch-whitening 2x2 conv, three conv-pool-BN-GELU blocks (64-256-256), 1.97 M parameters."""
    if weights not in (None, "none"):
        raise ValueError("airbench94 has no pretrained weights; it trains from scratch (use --weights none)")
    import keras

    from backbones.airbench_layers import Whitening

    inputs = keras.Input(input_shape)
    x = Whitening(WHITEN_FILTERS, WHITEN_KERNEL, name=WHITEN_LAYER)(inputs)
    x = keras.layers.Activation("gelu", name="whiten_gelu")(x)
    for index, width in enumerate(WIDTHS, start=1):
        x = _conv_group(x, width, f"block{index}")
    # 3 x 3 -> 1 x 1 at 32 px; the harness's global average pool then only flattens.
    x = keras.layers.MaxPooling2D(3, name="pool")(x)
    return keras.Model(inputs, x, name="airbench94")
