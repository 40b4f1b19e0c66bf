"""The activation cache: what a frozen prefix of a network outputs, computed once per input.

``FeatureCache`` runs the prefix over an image array and keeps the result as a
memory-mapped ``.npy`` keyed by what determines it (backbone, weights content, image size,
cut, input content); ``cached_inputs`` gathers the variants a cached training path reads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from bench import progress
from bench.grid import Cell


def mirror(images: np.ndarray) -> np.ndarray:
    """Images flipped left to right (the ``flipped`` cache variant, and test-time flipping)."""
    return images[:, :, ::-1]


def fingerprint(*parts) -> str:
    """A short hash of arrays (shape and bytes) and other values (their ``repr``)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str(part.shape).encode())
            digest.update(np.ascontiguousarray(part).data)
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:20]


class FeatureCache:
    """Activations of a frozen ``prefix``, computed once per distinct input array.

    ``prefix`` maps images to one tensor per name in ``cut_names``; a call returns the first
    (what this cell trains on) and saves the others as well, so one pass through a backbone
    serves every stage that cuts it at one of those places (``transfer`` stores the
    activations at ``finetune``'s cut as it computes its pooled features). Entries are keyed by
    the cell's ``activation_identity()`` (backbone, weights content, image size, precision),
    the cut and the input array's content, so a cached array is only ever reused for exactly
    the computation that produced it (a mirrored copy of the images is a different array,
    hence a different entry).
    """

    def __init__(self, cell: Cell, prefix, cut_names: tuple[str, ...], folder: Path):
        import tensorflow as tf

        self.prefix = prefix
        self.cut_names = tuple(cut_names)
        self.base_key = tuple(sorted(cell.activation_identity().items()))
        self.folder = Path(folder)
        # One trace for every array this cache extracts.
        self.forward = tf.function(lambda x: prefix(x, training=False), reduce_retracing=True)

    def _file(self, cut_name: str, images: np.ndarray) -> Path:
        return self.folder / f"{fingerprint(*self.base_key, cut_name, images)}.npy"

    def __call__(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The first cut's activations over ``images``: a memory-mapped cached copy, or computed and saved."""
        import tensorflow as tf

        files = [self._file(name, images) for name in self.cut_names]
        if files[0].exists():
            return np.load(files[0], mmap_mode="r")
        outputs = self.prefix.outputs
        shapes = [(len(images), *output.shape[1:]) for output in outputs]
        temporaries = [f.with_suffix(f".{os.getpid()}.tmp.npy") for f in files]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Written straight to disk: a finetune cut of 120,000 images can be gigabytes.
            arrays = [np.lib.format.open_memmap(t, mode="w+", dtype="float32", shape=shape) for t, shape in zip(temporaries, shapes)]
        except OSError:
            # A full or read-only cache only costs the next run a re-extraction.
            arrays, files = [np.empty(shape, "float32") for shape in shapes], []
        for start in range(0, len(images), batch_size):
            batch = self.forward(tf.constant(images[start : start + batch_size]))
            for array, values in zip(arrays, batch if len(arrays) > 1 else [batch]):
                array[start : start + batch_size] = values.numpy()
            progress.report("extracting", min(start + batch_size, len(images)), len(images))
        if not files:
            return arrays[0]
        for array, temporary, file in zip(arrays, temporaries, files):
            array.flush()
            os.replace(temporary, file)
        del arrays
        return np.load(files[0], mmap_mode="r")


def cached_inputs(cache: FeatureCache, data, variants, tta_flip: bool) -> tuple[list, list, list]:
    """(train variants, val variants, test variants) of activations for the cached path.

    Train and validation share the pool's activations for the policy's variants; a mirrored
    copy is computed for validation and test only where test-time flipping needs it.
    """
    pool = {v: cache(mirror(data.x_pool) if v == "flipped" else data.x_pool) for v in variants}
    train = [np.asarray(pool[v][data.train_index]) for v in variants]
    val = [np.asarray(pool["original"][data.val_index])]
    test = [cache(data.x_test)]
    if tta_flip:
        val.append(np.asarray(pool["flipped"][data.val_index]) if "flipped" in pool else cache(mirror(data.x_val)))
        test.append(cache(mirror(data.x_test)))
    return train, val, test
