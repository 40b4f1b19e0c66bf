"""Datasets as uint8 arrays: CIFAR-10 through Keras, an image-folder tree (decoded once into
memory-mapped cache entries), or synthetic data.

Every source yields the same frozen ``Dataset`` of row views, read a batch at a time. The
validation split is carved from train, stratified and seeded; the test split is only ever
evaluated, never used for a choice, and a tuning trial loads none (``with_test=False``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from bench.cache_entries import check_free_space, open_entry, remove_stale_temporaries, write_entry
from bench.errors import UsageError
from bench.image_files import common_size, decode, list_split
from bench.keras_home import keras_cache_dir
from bench.rows import RowView

DEFAULT_CACHE_DIR = Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "bench"))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Images are uint8 ``(N, H, W, 3)`` row views (usually of memory maps); labels int64 ``(N,)``.

    Train and validation are index sets into one pool (the official training images, or a
    profile's subset of them), so features computed once over the pool serve every split.
    No property copies images: ``x_train`` and ``x_val`` are views, read a batch at a time.
    ``x_test`` and ``y_test`` are ``None`` where the test split was not loaded.
    """

    name: str
    class_names: tuple[str, ...]
    x_pool: RowView
    y_pool: np.ndarray
    train_index: np.ndarray
    val_index: np.ndarray
    x_test: RowView | None
    y_test: np.ndarray | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.x_pool.shape[1])

    @property
    def x_train(self) -> RowView:
        return self.x_pool.subset(self.train_index)

    @property
    def y_train(self) -> np.ndarray:
        return self.y_pool[self.train_index]

    @property
    def x_val(self) -> RowView:
        return self.x_pool.subset(self.val_index)

    @property
    def y_val(self) -> np.ndarray:
        return self.y_pool[self.val_index]

    def with_validation_in_training(self) -> "Dataset":
        """The final fit's data: training on train and validation together (the validation
        split stays as it is, for the per-epoch metrics, which then measure seen images)."""
        return dataclasses.replace(self, train_index=np.sort(np.concatenate([self.train_index, self.val_index])))


@dataclasses.dataclass(frozen=True, eq=False)
class RawData:
    """A source's official train/test split, before validation carving and subsetting (the
    test split ``None`` where it was not loaded)."""

    name: str
    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None


def load_raw(source: str, cache_dir: Path = DEFAULT_CACHE_DIR, notes: list[str] | None = None, with_test: bool = True) -> RawData:
    """Load ``cifar10``, ``synthetic`` or an image-folder directory; ``with_test=False`` leaves
    the test split out (an image folder's ``test/`` is then not even listed)."""
    if source == "cifar10":
        raw = _load_cifar10()
        # Keras's loader reads the test batch with the training ones: it is dropped unseen.
        return raw if with_test else dataclasses.replace(raw, x_test=None, y_test=None)
    if source == "synthetic":
        return make_synthetic(test_per_class=20 if with_test else 0)
    path = Path(source)
    if not path.is_dir():
        raise UsageError(f"--data {source!r} is neither 'cifar10', 'synthetic' nor a directory; pass one of those")
    return load_image_folder(path, cache_dir, notes, with_test)


def _load_cifar10() -> RawData:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:  # offline: urllib raises several different types
        raise UsageError(
            f"could not download CIFAR-10 ({type(error).__name__}): save https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
            f"as {keras_cache_dir() / 'datasets' / 'cifar-10-batches-py-target_archive'} (Keras's cache name for it), or pass --data DIR "
            "with an image-folder copy (DIR/train/<class>/*, DIR/test/<class>/*)"
        ) from None
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    return RawData("cifar10", names, x_train, y_train.reshape(-1).astype(np.int64), x_test, y_test.reshape(-1).astype(np.int64))


def make_synthetic(train_per_class: int = 60, test_per_class: int = 20, num_classes: int = 10, size: int = 32, seed: int = 1234) -> RawData:
    """A small learnable dataset: each class is a coloured stripe pattern plus noise (no test
    split with ``test_per_class=0``; the training images are the same either way)."""
    rng = np.random.default_rng(seed)
    palette = rng.uniform(40, 215, size=(num_classes, 3))
    rows = np.arange(size)[:, None]
    cols = np.arange(size)[None, :]

    def draw(per_class):
        images, labels = [], []
        for label in range(num_classes):
            period = 3 + label % 5
            stripes = ((rows + (cols if label % 2 else 0)) // period) % 2
            base = stripes[..., None] * palette[label] + (1 - stripes[..., None]) * palette[(label + 3) % num_classes]
            noise = rng.normal(0, 25, size=(per_class, size, size, 3))
            images.append(np.clip(base[None] + noise, 0, 255).astype(np.uint8))
            labels.append(np.full(per_class, label, np.int64))
        return np.concatenate(images), np.concatenate(labels)

    x_train, y_train = draw(train_per_class)
    x_test, y_test = draw(test_per_class) if test_per_class else (None, None)
    return RawData("synthetic", tuple(f"class_{i}" for i in range(num_classes)), x_train, y_train, x_test, y_test)


def load_image_folder(root: Path, cache_dir: Path = DEFAULT_CACHE_DIR, notes: list[str] | None = None, with_test: bool = True) -> RawData:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*`` (without ``with_test``, train
    only: ``test/`` is not read at all): labels from the listing, images as memory-mapped
    uint8 arrays.

    Images of other sizes are resized to the training images' most common size (if their
    shape allows it). The decoded images are cached under ``cache_dir/datasets`` as one
    checked ``.npy`` entry per split (``bench.cache_entries``), keyed by the files' paths,
    sizes and modification times (the training split's entry by its own files alone, the
    test split's by both, since its size comes from the training images), and decoded a
    chunk at a time: memory never holds more than a chunk of them.
    """
    root = root.resolve()
    splits = {"train": list_split(root, "train")}
    class_names = tuple(sorted(splits["train"]))
    if with_test:
        splits["test"] = test = list_split(root, "test")
        if set(splits["train"]) != set(test):
            raise UsageError(
                f"train/ and test/ in {root} have different classes (only in train: {sorted(set(splits['train']) - set(test))}, "
                f"only in test: {sorted(set(test) - set(splits['train']))}); make the class folders match"
            )
    train_files = [f for name in class_names for f in splits["train"][name]]
    key = hashlib.sha256()
    # The decoder's version: a change to how images decode (16-bit scaling, transparency)
    # must not reuse arrays an older decoder wrote.
    key.update(f"decoder {DECODER_VERSION}\n".encode())
    folder = Path(cache_dir) / "datasets"
    remove_stale_temporaries(folder)
    arrays, size = {}, None
    for split_name, split in splits.items():
        files = [f for name in class_names for f in split[name]]
        for file in files:
            stat = file.stat()
            key.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        entry = folder / f"{root.name}-{key.hexdigest()[:16]}.x_{split_name}.npy"
        images = open_entry(entry, len(files), "uint8", notes=notes)
        if images is None:
            size = size or common_size(train_files)
            _decode_to_entry(files, size, entry)
            images = open_entry(entry, len(files), "uint8", notes=notes)
            if images is None:
                raise UsageError(f"the decoded dataset {entry} was damaged as it was written; check the disk under {folder}")
        arrays[f"x_{split_name}"] = images
        arrays[f"y_{split_name}"] = np.concatenate([np.full(len(split[name]), i, np.int64) for i, name in enumerate(class_names)])
    return RawData(str(root), class_names, arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test"))


# Bumped whenever decoding changes what an image becomes; part of the dataset cache's key.
# 3: test images resized to the training images' common size (was: both splits'), each
# split its own key.
DECODER_VERSION = 3
# Images decoded per chunk: what the decoding holds in memory (160 px: 40 MB).
DECODE_CHUNK = 512


def _decode_to_entry(files: list[Path], size: tuple[int, int], entry: Path) -> None:
    """Decode ``files`` a chunk at a time into the cache entry ``entry``."""
    first = decode(files[:DECODE_CHUNK], size)
    shape = (len(files), *first.shape[1:])
    check_free_space(entry.parent, int(np.prod(shape, dtype=np.int64)), f"the decoded images of {len(files):,} files")

    def fill(array):
        array[: len(first)] = first
        for start in range(DECODE_CHUNK, len(files), DECODE_CHUNK):
            array[start : start + DECODE_CHUNK] = decode(files[start : start + DECODE_CHUNK], size)

    try:
        write_entry(entry, shape, "uint8", fill)
    except OSError as error:
        raise UsageError(f"could not write the decoded dataset to {entry.parent} ({error.strerror or error}); free space or fix its permissions, or pass another --cache-dir") from None


def stratified_subset(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of about ``count`` items, the same share of every class."""
    classes = np.unique(labels)
    per_class = max(1, count // len(classes))
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(picked))


def split_validation(labels: np.ndarray, fraction: float, seed: int, class_labels: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train_indices, val_indices) of one labelled split.

    Raises:
        UsageError: a class has too few images to put at least one in each part; named by
            ``class_labels`` where given (for an image folder, its class folder).
    """
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < 2:
            name = class_labels[c] if c < len(class_labels) else f"class {c}"
            raise UsageError(f"{name} has {len(members)} training image(s) in use: at least 2 are needed to carve a validation split; add images")
        n_val = min(len(members) - 1, max(1, round(fraction * len(members))))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def prepare(raw: RawData, seed: int, val_fraction: float = 0.1, train_images: int | None = None, test_images: int | None = None) -> Dataset:
    """Carve the validation split and apply a profile's subset limits."""
    if not 0 < val_fraction < 1:
        raise UsageError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    for split, labels in (("train", raw.y_train), ("test", raw.y_test)):
        if labels is None:
            continue
        bad = labels[(labels < 0) | (labels >= len(raw.class_names))]
        if bad.size:
            raise UsageError(f"{split} labels out of range: found {int(bad[0])} with {len(raw.class_names)} classes; fix the labels")
    rng = np.random.default_rng(seed)
    # Index sets, not copies: the images stay in their (memory-mapped) arrays.
    x_pool, y_pool, x_test, y_test = RowView(raw.x_train), raw.y_train, None if raw.x_test is None else RowView(raw.x_test), raw.y_test
    if train_images and train_images < len(y_pool):
        keep = stratified_subset(y_pool, train_images, rng)
        x_pool, y_pool = x_pool.subset(keep), y_pool[keep]
    if y_test is not None and test_images and test_images < len(y_test):
        keep = stratified_subset(y_test, test_images, rng)
        x_test, y_test = x_test.subset(keep), y_test[keep]
    # An image folder's class is a folder the user can open; other sources' classes are names.
    folder = Path(raw.name) if Path(raw.name).is_absolute() else None
    class_labels = tuple(f"class folder {folder / 'train' / name}" if folder else f"class {name!r}" for name in raw.class_names)
    train_index, val_index = split_validation(y_pool, val_fraction, seed, class_labels)
    return Dataset(raw.name, raw.class_names, x_pool, np.asarray(y_pool), train_index, val_index, x_test, None if y_test is None else np.asarray(y_test))


def pool_images_for(train_images: int, num_classes: int, val_fraction: float) -> int:
    """The smallest pool (``prepare``'s ``train_images``) whose stratified split leaves at least
    ``train_images`` images to train on in a balanced dataset of ``num_classes`` classes."""
    per_class = max(2, -(-train_images // num_classes))
    while per_class - min(per_class - 1, max(1, round(val_fraction * per_class))) < train_images / num_classes:
        per_class += 1
    return per_class * num_classes
