"""Augmentation policies, as data: Keras 3 core preprocessing layers on batches, or a NumPy
transform of the images as they are read.

Policies run on the tf.data training pipeline only (never inside the model, never on
validation or test). A policy whose randomness is a choice among a few deterministic
variants of each image lists them in ``cache_variants``: the activation cache then stores
every variant and stays exact. Any other policy makes a cache inexact, so the stage runs
its uncached path.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

# keras is imported inside the builders, so that listing the policies (``bench list``,
# argument checks) does not need it.


@dataclasses.dataclass(frozen=True)
class Policy:
    """Attributes:
    name: key on the command line and in records.
    description: one line.
    build: ``(seed, num_classes) -> callable(images, one_hot_labels) -> (images, labels)``
        applied to float32 batches on the 0-255 scale; ``None`` means identity.
    cache_variants: deterministic variants an exact activation cache must hold, or
        ``None`` when no finite set of variants reproduces the policy.
    epoch_rows: ``(seed, count, epoch) -> callable(positions, images) -> images``: a NumPy
        transform of uint8 training images as they are read, told which of the ``count``
        images they are (``positions``) and the epoch, which alternating flip needs; ``None``:
        none. It runs before ``build``'s.
    """

    name: str
    description: str
    build: Callable | None
    cache_variants: tuple[str, ...] | None
    epoch_rows: Callable | None = None


def _images_only(*layers):
    def build(seed, num_classes):
        import keras

        # Distinct per-layer seeds, all derived from the run's seed.
        pipeline = keras.Sequential([make(seed + i) for i, make in enumerate(layers)])

        def apply(images, labels):
            return pipeline(images, training=True), labels

        return apply

    return build


def _mixing(layer_name):
    def build(seed, num_classes):
        import keras

        layer = getattr(keras.layers, layer_name)(seed=seed)

        def apply(images, labels):
            mixed = layer({"images": images, "labels": labels}, training=True)
            return mixed["images"], mixed["labels"]

        return apply

    return build


def _flip(seed):
    import keras

    return keras.layers.RandomFlip("horizontal", seed=seed)


def _translate(seed):
    import keras

    # 4 px of 32: the classic pad-and-crop range for CIFAR, as a fraction of the side.
    return keras.layers.RandomTranslation(0.125, 0.125, fill_mode="reflect", seed=seed)


def _randaugment(seed):
    import keras

    return keras.layers.RandAugment(value_range=(0, 255), seed=seed)


def chain(*steps):
    """``(images, labels) -> (images, labels)`` steps applied in order; ``None`` steps are skipped."""
    steps = [step for step in steps if step is not None]

    def apply(images, labels):
        for step in steps:
            images, labels = step(images, labels)
        return images, labels

    return apply


def _flip_then(mix_layer_name):
    flip_build = _images_only(_flip)
    mix_build = _mixing(mix_layer_name)

    def build(seed, num_classes):
        return chain(flip_build(seed, num_classes), mix_build(seed + 100, num_classes))

    return build


def translate_reflect(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A new array of each (height, width, channels) image ``i`` moved down by ``rows[i]`` and right
    by ``cols[i]`` pixels, the space it leaves filled by reflecting the image about its edge
    (``np.pad``'s and PyTorch's "reflect": the edge pixel itself is not repeated)."""
    pad = int(max(np.abs(rows).max(initial=0), np.abs(cols).max(initial=0)))
    if not pad:
        return np.array(images)
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    moved = np.empty_like(images)
    # One slice per distinct shift: at most (2 * pad + 1) ** 2 copies, never a gather per pixel.
    for row in np.unique(rows):
        for col in np.unique(cols):
            picked = np.flatnonzero((rows == row) & (cols == col))
            moved[picked] = padded[picked, pad - row : pad - row + height, pad - col : pad - col + width]
    return moved


# airbench94's translation: up to 2 px each way, reflect-padded.
ALTFLIP_SHIFT_PIXELS = 2


def _alternating_flip_translate(seed: int, count: int, epoch: int):
    """airbench94's augmentation: each image starts mirrored or not at random, then is mirrored
    every other epoch, so each is seen both ways in every two epochs (random flips only do that
    on average); then moved by a random whole number of pixels each way, edges reflected."""
    start_mirrored = np.random.default_rng([seed, 10]).integers(2, size=count).astype(bool)
    rows, cols = np.random.default_rng([seed, epoch, 11]).integers(-ALTFLIP_SHIFT_PIXELS, ALTFLIP_SHIFT_PIXELS + 1, size=(2, count))

    def transform(positions, images):
        mirrored = start_mirrored[positions] ^ bool(epoch % 2)
        images[mirrored] = images[mirrored][:, :, ::-1]
        return translate_reflect(images, rows[positions], cols[positions])

    return transform


POLICIES = {
    p.name: p
    for p in (
        Policy("none", "no augmentation", None, ("original",)),
        Policy("flip", "random horizontal flip", _images_only(_flip), ("original", "flipped")),
        Policy("flip-crop", "horizontal flip + random translation up to 12.5 % (pad-and-crop)", _images_only(_flip, _translate), None),
        Policy(
            "randaugment",
            "keras.layers.RandAugment (2 ops, factor 0.5) + horizontal flip",
            _images_only(_flip, _randaugment),
            None,
        ),
        Policy("mixup", "horizontal flip + keras.layers.MixUp", _flip_then("MixUp"), None),
        Policy("cutmix", "horizontal flip + keras.layers.CutMix", _flip_then("CutMix"), None),
        Policy(
            "altflip-translate",
            f"airbench94's: alternating flip (each image mirrored every other epoch, from a random start) + random translation up to {ALTFLIP_SHIFT_PIXELS} px, reflected edges",
            None,
            None,
            _alternating_flip_translate,
        ),
    )
}


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown augmentation policy {name!r}; choose from: {', '.join(POLICIES)}") from None
