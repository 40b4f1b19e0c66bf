"""The Keras pieces airbench94's network needs that Keras does not have: PyTorch's default
weight init, airbench's partly-identity convolution init, and a convolution whose kernel is
frozen while its bias trains. Imported by ``backbones.airbench``'s builder only, so that
registering the backbone never loads TensorFlow."""

from __future__ import annotations

import keras
import numpy as np


def torch_default_uniform(seed=None):
    """PyTorch's default for convolution and linear weights, uniform in +-1/sqrt(fan_in) (its
    kaiming_uniform with a = sqrt(5)): airbench keeps it, and Keras's Glorot is larger."""
    return keras.initializers.VarianceScaling(scale=1 / 3, mode="fan_in", distribution="uniform", seed=seed)


# Registered: a trained classifier is saved whole (``bench.convert``) and loaded to deploy.
@keras.saving.register_keras_serializable(package="airbench")
class PartialDirac(keras.initializers.Initializer):
    """airbench's convolution init: PyTorch's default, then the first ``min(in, out)`` filters set
    to the identity (a Dirac at the kernel's centre), so each block starts by passing its input
    through and learns what to add to it."""

    def __call__(self, shape, dtype=None):
        rows, cols, channels_in, channels_out = shape
        kernel = keras.ops.convert_to_numpy(torch_default_uniform()(shape, dtype="float32"))
        identity = np.arange(min(channels_in, channels_out))
        kernel[:, :, :, identity] = 0.0
        kernel[rows // 2, cols // 2, identity, identity] = 1.0
        return keras.ops.convert_to_tensor(kernel, dtype=dtype)


@keras.saving.register_keras_serializable(package="airbench")
class Whitening(keras.layers.Layer):
    """A valid-padded convolution whose kernel is set from data (``backbones.airbench.whiten_from_images``)
    and never trained, with a trainable bias: Keras freezes whole layers, this needs half of one."""

    def __init__(self, filters: int, kernel_size: int, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, kernel_size

    def build(self, input_shape):
        shape = (self.kernel_size, self.kernel_size, input_shape[-1], self.filters)
        self.kernel = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, images):
        return keras.ops.conv(images, self.kernel, padding="valid") + self.bias

    def compute_output_shape(self, input_shape):
        def side(n):
            return None if n is None else n - self.kernel_size + 1

        return (input_shape[0], side(input_shape[1]), side(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}
