"""Porting a PyTorch state dict into a Keras model, layer by layer (as KerasHub's timm
converters do): one small function per layer kind, each the one place its layout transpose
is written, and a ledger that hands out every tensor exactly once, shape checked.

Nothing here imports Keras: the functions take built layers and call their ``set_weights``.
"""

from __future__ import annotations

import numpy as np


class PortError(ValueError):
    """A state dict that does not fit the model (a missing, extra, reused or misshapen tensor); one line."""


class StateDictPort:
    """The tensors of one state dict, each to be taken exactly once.

    ``take`` checks the shape the model needs; ``set_aside`` accounts for tensors the model
    deliberately leaves out (a headless backbone's ImageNet classifier); ``finish`` fails if
    any tensor was neither taken nor set aside, so a file with a block more than the model
    cannot load silently.
    """

    def __init__(self, tensors: dict[str, np.ndarray], source: str):
        self.tensors = tensors
        self.source = source
        self.used: set[str] = set()

    def take(self, name: str, shape: tuple) -> np.ndarray:
        if name not in self.tensors:
            raise PortError(f"{self.source} has no tensor {name}")
        if name in self.used:
            raise PortError(f"tensor {name} of {self.source} would be used twice")
        value = self.tensors[name]
        if tuple(value.shape) != tuple(shape):
            raise PortError(f"tensor {name} of {self.source} has shape {tuple(value.shape)}, the model needs {tuple(shape)}")
        self.used.add(name)
        return value

    def set_aside(self, name: str, shape: tuple) -> None:
        self.take(name, shape)

    def finish(self) -> None:
        left = [name for name in self.tensors if name not in self.used]
        if left:
            raise PortError(f"{len(left)} tensor(s) of {self.source} fit no layer of the model, first {left[0]} (a larger variant's file?)")


def _floats(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype="float32")


def port_conv2d(port: StateDictPort, layer, prefix: str) -> None:
    """``Conv2D``: torch's kernel is (out, in, h, w), Keras's (h, w, in, out)."""
    kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
    weights = [_floats(port.take(f"{prefix}.weight", (channels_out, channels_in, kernel_h, kernel_w))).transpose(2, 3, 1, 0)]
    if layer.use_bias:
        weights.append(_floats(port.take(f"{prefix}.bias", (channels_out,))))
    layer.set_weights(weights)


def port_depthwise(port: StateDictPort, layer, prefix: str) -> None:
    """``DepthwiseConv2D``: torch's grouped kernel is (channels, 1, h, w), Keras's (h, w, channels, 1)."""
    kernel_h, kernel_w, channels, multiplier = layer.kernel.shape
    weights = [_floats(port.take(f"{prefix}.weight", (channels * multiplier, 1, kernel_h, kernel_w))).reshape(channels, multiplier, kernel_h, kernel_w).transpose(2, 3, 0, 1)]
    if layer.use_bias:
        weights.append(_floats(port.take(f"{prefix}.bias", (channels * multiplier,))))
    layer.set_weights(weights)


def port_batch_normalization(port: StateDictPort, layer, prefix: str) -> None:
    """``BatchNormalization``: gamma, beta and the moving statistics, in Keras's order.

    The epsilon is the layer's own (set by the architecture): a state dict does not hold it.
    ``num_batches_tracked`` is taken when present: a training-time counter that inference
    never reads, accounted for so that every tensor of the file is used.
    """
    (channels,) = layer.gamma.shape
    names = ("weight", "bias", "running_mean", "running_var")
    layer.set_weights([_floats(port.take(f"{prefix}.{name}", (channels,))) for name in names])
    if f"{prefix}.num_batches_tracked" in port.tensors:
        port.take(f"{prefix}.num_batches_tracked", ())


def port_dense(port: StateDictPort, layer, prefix: str) -> None:
    """``Dense``: torch's ``Linear`` weight is (out, in), Keras's kernel (in, out)."""
    channels_in, channels_out = layer.kernel.shape
    layer.set_weights([_floats(port.take(f"{prefix}.weight", (channels_out, channels_in))).T, _floats(port.take(f"{prefix}.bias", (channels_out,)))])
