"""``RowView``: rows of an array (usually a memory map) picked by index and optionally mirrored,
read a batch at a time, so that no caller ever holds a whole split in memory.

Images and cached activations both flow through it: a split is an index set into a pool, a
mirrored split is a flag, and only the rows a batch needs are ever copied out of the map.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from bench.augment import translate_reflect

# Rows read per block when a whole view is streamed (hashing, extraction): a few tens of MB.
BLOCK_BYTES = 32 * 2**20


@dataclasses.dataclass(frozen=True, eq=False)
class RowView:
    """Rows ``array[index]`` (all rows when ``index`` is ``None``), moved by ``shift`` (rows,
    columns) with the edges reflected, then mirrored left to right when ``mirrored`` (axis 2:
    the width of an image or of an activation map).

    Nothing is read until ``rows`` or ``batches`` asks: building, subsetting and mirroring a
    view cost nothing.
    """

    array: np.ndarray
    index: np.ndarray | None = None
    mirrored: bool = False
    shift: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.array) if self.index is None else len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *(int(n) for n in self.array.shape[1:]))

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.array.shape[1:], dtype=np.int64)) * self.array.dtype.itemsize

    def rows(self, positions) -> np.ndarray:
        """A fresh contiguous array of the view's rows at ``positions`` (an index array or a slice)."""
        picked = self.array[positions] if self.index is None else self.array[self.index[positions]]
        if self.shift != (0, 0):
            picked = translate_reflect(picked, *(np.full(len(picked), by) for by in self.shift))
        if self.mirrored:
            picked = picked[:, :, ::-1]
        if picked.flags.owndata and picked.flags.c_contiguous:
            return picked  # fancy indexing already copied
        # A slice of a memory map is still the map: copy, so callers may modify the batch.
        return np.array(picked, order="C", copy=True)

    def batches(self, batch_size: int | None = None) -> Iterator[np.ndarray]:
        """Consecutive batches of rows in the view's order; ``None``: blocks of about ``BLOCK_BYTES``."""
        size = batch_size or max(1, BLOCK_BYTES // max(1, self.row_bytes))
        for start in range(0, len(self), size):
            yield self.rows(slice(start, start + size))

    def subset(self, positions: np.ndarray) -> RowView:
        """The view's rows at ``positions``, as a view."""
        positions = np.asarray(positions)
        return dataclasses.replace(self, index=positions if self.index is None else self.index[positions])

    def mirror(self) -> RowView:
        """The same rows flipped left to right (the ``flipped`` cache variant, test-time flipping)."""
        return dataclasses.replace(self, mirrored=not self.mirrored)

    def translated(self, rows: int, cols: int) -> RowView:
        """The same rows moved down by ``rows`` and right by ``cols`` (negative: up, left), edges
        reflected; before any mirroring, as airbench94's test-time views are mirrored after."""
        return dataclasses.replace(self, shift=(self.shift[0] + rows, self.shift[1] + cols))


def as_view(rows) -> RowView:
    """``rows`` as a ``RowView``: views pass through, arrays are wrapped whole."""
    return rows if isinstance(rows, RowView) else RowView(np.asarray(rows))
