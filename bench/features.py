"""The activation cache: what a frozen prefix of a network outputs, computed once per input.

``FeatureCache`` runs the prefix over images (a ``RowView``, batch by batch) and keeps the
result as a checked, memory-mapped ``.npy`` entry keyed by what determines it (``entry_key``:
backbone, weights content, image size; then the cut and the input's content);
``cached_inputs`` gathers, as row views, the variants a cached training path reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bench import progress
from bench.cache_entries import check_free_space, open_entry, remove_stale_temporaries, write_entries
from bench.errors import UsageError
from bench.grid import Cell
from bench.rows import RowView


def fingerprint(*parts) -> str:
    """A short hash of arrays and row views (shape and bytes) and other values (their ``repr``).

    A view is hashed block by block: the same digest as its rows in one array, without one.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            part = RowView(part)
        if isinstance(part, RowView):
            digest.update(str(part.shape).encode())
            for block in part.batches():
                digest.update(block.data)
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:20]


def entry_key(cell: Cell) -> tuple:
    """What, besides the cut and the input's content, an activation-cache entry depends on:
    the cell's ``activation_identity()`` (backbone, weights content, image size, precision)."""
    return tuple(sorted(cell.activation_identity().items()))


class FeatureCache:
    """Activations of a frozen ``prefix``, computed once per distinct input.

    ``prefix`` maps images to one tensor per name in ``cut_names``; a call returns the first
    (what this cell trains on) and saves the others as well, so one pass through a backbone
    serves every stage that cuts it at one of those places (``transfer`` stores the
    activations at ``finetune``'s cut as it computes its pooled features). Entries are keyed by
    ``entry_key``, the cut and the input's content, so a cached array is only ever reused for
    exactly the computation that produced it (a mirrored copy of the images is a different
    input, hence a different entry). Entries are checked as they are opened
    (``bench.cache_entries``); ``notes`` collects a line for each damaged one recomputed.
    """

    def __init__(self, cell: Cell, prefix, cut_names: tuple[str, ...], folder: Path):
        import tensorflow as tf

        self.prefix = prefix
        self.cut_names = tuple(cut_names)
        self.base_key = entry_key(cell)
        self.folder = Path(folder)
        self.notes: list[str] = []
        self._files: dict[int, tuple[RowView, list[Path]]] = {}
        remove_stale_temporaries(self.folder)
        # One trace for every array this cache extracts.
        self.forward = tf.function(lambda x: prefix(x, training=False), reduce_retracing=True)

    def _row_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(n) for n in output.shape[1:]) for output in self.prefix.outputs]

    def files(self, images: RowView) -> list[Path]:
        """The entries ``images`` maps to, one per cut (its content is hashed once per view)."""
        if id(images) not in self._files:
            # The view is kept with its files, so its id cannot be reused by another view.
            self._files[id(images)] = (images, [self.folder / f"{fingerprint(*self.base_key, name, images)}.npy" for name in self.cut_names])
        return self._files[id(images)][1]

    def bytes_needed(self, images: RowView) -> int:
        """Disk space a call on ``images`` will write: nothing when its entry exists."""
        if self.files(images)[0].exists():
            return 0
        return sum(len(images) * int(np.prod(shape, dtype=np.int64)) * 4 for shape in self._row_shapes())

    # Images per extraction step. Measured on 2 CPU cores (MobileNetV2 at 128 px, 1,024 images):
    # 307 images/s at 128 against 306 at 256, with a peak of 936 MB of anonymous memory against
    # 1,504 MB, since the backbone's widest activations scale with the batch.
    EXTRACT_BATCH_SIZE = 128

    def __call__(self, images: RowView, batch_size: int = EXTRACT_BATCH_SIZE) -> np.ndarray:
        """The first cut's activations over ``images``: a memory map of the checked cached entry,
        extracted and saved first when it is missing or damaged."""
        files = self.files(images)
        row_shapes = self._row_shapes()
        cached = open_entry(files[0], len(images), "float32", row_shapes[0], self.notes)
        if cached is not None:
            return cached
        check_free_space(self.folder, self.bytes_needed(images), f"the activation cache of {len(images):,} images")
        try:
            # Written batch by batch straight to the entries' memory maps: a finetune cut of
            # 120,000 images can be gigabytes.
            write_entries(files, [(len(images), *shape) for shape in row_shapes], "float32", lambda arrays: self._extract(images, arrays, batch_size))
        except OSError as error:
            raise UsageError(
                f"could not write the activation cache in {self.folder} ({error.strerror or error}); free space or fix its permissions, "
                "or pass another --cache-dir (or --no-cache)"
            ) from None
        extracted = open_entry(files[0], len(images), "float32", row_shapes[0], self.notes)
        if extracted is None:
            raise UsageError(f"the activation cache entry {files[0]} was damaged as it was written; check the disk under {self.folder}")
        return extracted

    def _extract(self, images: RowView, arrays: list[np.ndarray], batch_size: int) -> None:
        import tensorflow as tf

        start = 0
        for batch in images.batches(batch_size):
            outputs = self.forward(tf.constant(batch))
            for array, values in zip(arrays, outputs if len(arrays) > 1 else [outputs]):
                array[start : start + len(batch)] = values.numpy()
            start += len(batch)
            progress.report("extracting", start, len(images))


def cached_inputs(cache: FeatureCache, data, variants, tta_flip: bool) -> tuple[list[RowView], list[RowView], list[RowView]]:
    """(train variants, val variants, test variants): views of memory-mapped activations for the cached path.

    Train and validation share the pool's activations for the policy's variants; a mirrored
    copy is computed for validation and test only where test-time flipping needs it. The disk
    space every missing entry needs is checked before the first is extracted. Data without
    a test split (a tuning trial's) gets no test variants.
    """
    with_test = data.x_test is not None
    inputs = {v: data.x_pool.mirror() if v == "flipped" else data.x_pool for v in variants}
    if tta_flip:
        if with_test:
            inputs["test flipped"] = data.x_test.mirror()
        if "flipped" not in inputs:
            inputs["val flipped"] = data.x_val.mirror()
    if with_test:
        inputs["test"] = data.x_test
    need = sum(cache.bytes_needed(images) for images in inputs.values())
    check_free_space(cache.folder, need, f"the activation cache of this cell ({len(inputs)} inputs)")
    activations = {name: cache(images) for name, images in inputs.items()}
    train = [RowView(activations[v], data.train_index) for v in variants]
    val = [RowView(activations["original"], data.val_index)]
    test = [RowView(activations["test"])] if with_test else []
    if tta_flip:
        val.append(RowView(activations["flipped"], data.val_index) if "flipped" in activations else RowView(activations["val flipped"]))
        test += [RowView(activations["test flipped"])] if with_test else []
    return train, val, test
