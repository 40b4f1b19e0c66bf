"""Datasets as uint8 arrays: CIFAR-10 through Keras, an image-folder tree (decoded once into
memory-mapped cache entries), or synthetic data.

Every source yields the same frozen ``Dataset`` of row views, read a batch at a time. The
validation split is carved from train, stratified and seeded; the test split is only ever
evaluated, never used for a choice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from bench.cache_entries import check_free_space, open_entry, remove_stale_temporaries, write_entry
from bench.errors import UsageError
from bench.keras_home import keras_cache_dir
from bench.rows import RowView

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_CACHE_DIR = Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "bench"))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Images are uint8 ``(N, H, W, 3)`` row views (usually of memory maps); labels int64 ``(N,)``.

    Train and validation are index sets into one pool (the official training images, or a
    profile's subset of them), so features computed once over the pool serve every split.
    No property copies images: ``x_train`` and ``x_val`` are views, read a batch at a time.
    """

    name: str
    class_names: tuple[str, ...]
    x_pool: RowView
    y_pool: np.ndarray
    train_index: np.ndarray
    val_index: np.ndarray
    x_test: RowView
    y_test: np.ndarray

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


@dataclasses.dataclass(frozen=True, eq=False)
class RawData:
    """A source's official train/test split, before validation carving and subsetting."""

    name: str
    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_raw(source: str, cache_dir: Path = DEFAULT_CACHE_DIR, notes: list[str] | None = None) -> RawData:
    """Load ``cifar10``, ``synthetic`` or an image-folder directory."""
    if source == "cifar10":
        return _load_cifar10()
    if source == "synthetic":
        return make_synthetic()
    path = Path(source)
    if not path.is_dir():
        raise UsageError(f"--data {source!r} is neither 'cifar10', 'synthetic' nor a directory; pass one of those")
    return load_image_folder(path, cache_dir, notes)


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
    """A small learnable dataset: each class is a coloured stripe pattern plus noise."""
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
    x_test, y_test = draw(test_per_class)
    return RawData("synthetic", tuple(f"class_{i}" for i in range(num_classes)), x_train, y_train, x_test, y_test)


def _image_files(class_dir: Path) -> list[Path]:
    """Every image below a class folder, sub-folders included, sorted by relative path.

    Nested folders are read, not dropped: ``train/cat/indoor/1.png`` is a ``cat``. A
    symbolic link to a folder is followed once (a link loop is not walked again).

    Raises:
        UsageError: an image is a broken symbolic link.
    """
    def unreadable(error: OSError):
        raise UsageError(f"cannot list {error.filename}: {error.strerror}; fix its permissions or remove it")

    found, seen = [], set()
    for folder, subfolders, names in os.walk(class_dir, onerror=unreadable, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not path.exists():
                raise UsageError(f"image {path} is a broken symbolic link (to {os.readlink(path)}); remove the link or restore its target")
            found.append(path)
    # Sorted by name: nothing downstream may depend on the order files were written in.
    return sorted(found, key=lambda p: p.relative_to(class_dir).parts)


def _list_split(root: Path, split: str) -> dict[str, list[Path]]:
    split_dir = root / split
    if not split_dir.is_dir():
        raise UsageError(f"data folder {root} has no {split}/ subfolder; expected {root}/train/<class>/* and {root}/test/<class>/*")
    classes = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        classes[class_dir.name] = _image_files(class_dir)
    if not classes or not any(classes.values()):
        raise UsageError(f"data folder {split_dir} holds no images; expected {split_dir}/<class>/*.jpg (or .png)")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise UsageError(f"class folder(s) {', '.join(empty)} in {split_dir} hold no images; add images or remove the folder")
    return classes


@contextlib.contextmanager
def _open_image(file: Path):
    """``PIL.Image.open``, with every way a file can be unreadable turned into one line naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit: refuse those too, before decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UsageError(
            f"image {file} is too large to decode safely ({error}); shrink it below {Image.MAX_IMAGE_PIXELS:,} pixels or remove it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UsageError(f"cannot read image {file}: {error}; delete or replace the file") from None


def _to_rgb(image, file: Path) -> np.ndarray:
    """uint8 ``(H, W, 3)`` of a Pillow image of any mode.

    Pillow's own conversion clips wide modes (a 16-bit PNG becomes almost white), so they
    are scaled: 16-bit (``I;16*``, and ``I`` holding 16-bit values) by 255/65535; float
    (``F``) from 0-1 by 255, or taken as is where values reach past 1 (0-255). Transparent
    images (alpha, or a palette or colour with a transparent entry) are composited over white.
    """
    from PIL import Image

    mode = image.mode
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if mode == "F":
            scale = 255.0 if high <= 1.0 else 1.0
            if low < 0 or high * scale > 255:
                raise UsageError(f"image {file} holds float values from {low:g} to {high:g}; expected 0-1 or 0-255; rescale it")
        else:
            if low < 0 or high > 65535:
                raise UsageError(f"image {file} holds {mode} values from {low:g} to {high:g}, beyond 16 bits; convert it to 8 or 16 bits")
            scale = 255.0 / 65535.0
        gray = np.rint(values * scale).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _decode(files: list[Path], size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    images = []
    for file in files:
        with _open_image(file) as image:
            try:
                pixels = _to_rgb(image, file)
            except (OSError, SyntaxError, ValueError) as error:  # truncated data, or a mode Pillow cannot convert
                raise UsageError(f"cannot read image {file} (mode {image.mode}): {error}; delete or replace the file") from None
        if size and (pixels.shape[1], pixels.shape[0]) != size:
            pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR), dtype=np.uint8)
        images.append(pixels)
    return np.stack(images)


def _common_size(files: list[Path]) -> tuple[int, int]:
    """The most common (width, height); other sizes are resized to it.

    Raises:
        UsageError: an image is unreadable or too large to decode safely, or its shape is too
            far from the common one for a resize to keep it recognisable (aspect ratio off by
            more than 2x, or under 8 px).
    """
    sizes: dict[tuple[int, int], list[Path]] = {}
    for file in files:
        with _open_image(file) as image:
            sizes.setdefault(image.size, []).append(file)
    # Ties broken by size itself, not by which file came first.
    common = max(sizes, key=lambda s: (len(sizes[s]), s))
    common_ratio = common[0] / common[1]
    for (width, height), members in sorted(sizes.items()):
        ratio = (width / height) / common_ratio
        if min(width, height) < 8 or not 0.5 <= ratio <= 2:
            raise UsageError(
                f"image {members[0]} is {width}x{height} but most images are {common[0]}x{common[1]}: too different to resize "
                "to a common size; crop or remove such images"
            )
    return common


def load_image_folder(root: Path, cache_dir: Path = DEFAULT_CACHE_DIR, notes: list[str] | None = None) -> RawData:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*``: labels from the listing, images as
    memory-mapped uint8 arrays.

    Images of other sizes are resized to the most common size (if their shape allows it). The
    decoded images are cached under ``cache_dir/datasets`` as one checked ``.npy`` entry per
    split (``bench.cache_entries``), keyed by the files' paths, sizes and modification times,
    and decoded a chunk at a time: memory never holds more than a chunk of them.
    """
    root = root.resolve()
    train, test = _list_split(root, "train"), _list_split(root, "test")
    if set(train) != set(test):
        raise UsageError(
            f"train/ and test/ in {root} have different classes (only in train: {sorted(set(train) - set(test))}, "
            f"only in test: {sorted(set(test) - set(train))}); make the class folders match"
        )
    class_names = tuple(sorted(train))
    all_files = [f for split in (train, test) for name in class_names for f in split[name]]
    key = hashlib.sha256()
    # The decoder's version: a change to how images decode (16-bit scaling, transparency)
    # must not reuse arrays an older decoder wrote.
    key.update(f"decoder {DECODER_VERSION}\n".encode())
    for file in all_files:
        stat = file.stat()
        key.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    folder = Path(cache_dir) / "datasets"
    remove_stale_temporaries(folder)
    arrays, common_size = {}, None
    for split_name, split in (("train", train), ("test", test)):
        files = [f for name in class_names for f in split[name]]
        entry = folder / f"{root.name}-{key.hexdigest()[:16]}.x_{split_name}.npy"
        images = open_entry(entry, len(files), "uint8", notes=notes)
        if images is None:
            common_size = common_size or _common_size(all_files)
            _decode_to_entry(files, common_size, entry)
            images = open_entry(entry, len(files), "uint8", notes=notes)
            if images is None:
                raise UsageError(f"the decoded dataset {entry} was damaged as it was written; check the disk under {folder}")
        arrays[f"x_{split_name}"] = images
        arrays[f"y_{split_name}"] = np.concatenate([np.full(len(split[name]), i, np.int64) for i, name in enumerate(class_names)])
    return RawData(str(root), class_names, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])


def image_folder_shape(root: Path) -> tuple[tuple[str, ...], tuple[int, int]]:
    """(class names, most common (width, height)) of an image-folder tree, from the files'
    headers alone: nothing is decoded, so it costs the same for any dataset size.

    Raises:
        UsageError: as ``load_image_folder`` does for a malformed tree or an unreadable image.
    """
    root = Path(root).resolve()
    train, test = _list_split(root, "train"), _list_split(root, "test")
    if set(train) != set(test):
        raise UsageError(f"train/ and test/ in {root} have different classes; make the class folders match")
    return tuple(sorted(train)), _common_size([f for split in (train, test) for files in split.values() for f in files])


# Bumped whenever decoding changes what an image becomes; part of the dataset cache's key.
DECODER_VERSION = 2
# Images decoded per chunk: what the decoding holds in memory (160 px: 40 MB).
DECODE_CHUNK = 512


def _decode_to_entry(files: list[Path], size: tuple[int, int], entry: Path) -> None:
    """Decode ``files`` a chunk at a time into the cache entry ``entry``."""
    first = _decode(files[:DECODE_CHUNK], size)
    shape = (len(files), *first.shape[1:])
    check_free_space(entry.parent, int(np.prod(shape, dtype=np.int64)), f"the decoded images of {len(files):,} files")

    def fill(array):
        array[: len(first)] = first
        for start in range(DECODE_CHUNK, len(files), DECODE_CHUNK):
            array[start : start + DECODE_CHUNK] = _decode(files[start : start + DECODE_CHUNK], size)

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
        bad = labels[(labels < 0) | (labels >= len(raw.class_names))]
        if bad.size:
            raise UsageError(f"{split} labels out of range: found {int(bad[0])} with {len(raw.class_names)} classes; fix the labels")
    rng = np.random.default_rng(seed)
    # Index sets, not copies: the images stay in their (memory-mapped) arrays.
    x_pool, y_pool, x_test, y_test = RowView(raw.x_train), raw.y_train, RowView(raw.x_test), raw.y_test
    if train_images and train_images < len(y_pool):
        keep = stratified_subset(y_pool, train_images, rng)
        x_pool, y_pool = x_pool.subset(keep), y_pool[keep]
    if test_images and test_images < len(y_test):
        keep = stratified_subset(y_test, test_images, rng)
        x_test, y_test = x_test.subset(keep), y_test[keep]
    # An image folder's class is a folder the user can open; other sources' classes are names.
    folder = Path(raw.name) if Path(raw.name).is_absolute() else None
    class_labels = tuple(f"class folder {folder / 'train' / name}" if folder else f"class {name!r}" for name in raw.class_names)
    train_index, val_index = split_validation(y_pool, val_fraction, seed, class_labels)
    return Dataset(raw.name, raw.class_names, x_pool, np.asarray(y_pool), train_index, val_index, x_test, np.asarray(y_test))


def pool_images_for(train_images: int, num_classes: int, val_fraction: float) -> int:
    """The smallest pool (``prepare``'s ``train_images``) whose stratified split leaves at least
    ``train_images`` images to train on in a balanced dataset of ``num_classes`` classes."""
    per_class = max(2, -(-train_images // num_classes))
    while per_class - min(per_class - 1, max(1, round(val_fraction * per_class))) < train_images / num_classes:
        per_class += 1
    return per_class * num_classes


def content_fingerprint(root: Path) -> str:
    """A hash of an image folder's content: every file's path relative to ``root`` and its bytes.

    The folder's own name and location are left out, so a renamed or moved copy has the same
    fingerprint, and a changed, added or removed image gives another.
    """
    digest = hashlib.sha256()
    root = Path(root).resolve()
    for split in ("train", "test"):
        for file in sorted((root / split).rglob("*")):
            if file.is_file():
                digest.update(f"{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0".encode())
                digest.update(file.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]
