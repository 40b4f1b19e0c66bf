"""An image-folder tree (``train/<class>/*``, ``test/<class>/*``): which images it holds, their
common size, its content fingerprint, and each file decoded to 8-bit RGB.

``bench.data`` decodes a whole tree once into a cache entry through these; planning reads only
the files' headers (``image_folder_shape``), and a cell's identity only the fingerprint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from bench.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_files(class_dir: Path) -> list[Path]:
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


def list_split(root: Path, split: str) -> dict[str, list[Path]]:
    split_dir = root / split
    if not split_dir.is_dir():
        raise UsageError(f"data folder {root} has no {split}/ subfolder; expected {root}/train/<class>/* and {root}/test/<class>/*")
    classes = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        classes[class_dir.name] = image_files(class_dir)
    if not classes or not any(classes.values()):
        raise UsageError(f"data folder {split_dir} holds no images; expected {split_dir}/<class>/*.jpg (or .png)")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise UsageError(f"class folder(s) {', '.join(empty)} in {split_dir} hold no images; add images or remove the folder")
    return classes


@contextlib.contextmanager
def open_image(file: Path):
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


def to_rgb(image, file: Path) -> np.ndarray:
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


def decode(files: list[Path], size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    images = []
    for file in files:
        with open_image(file) as image:
            try:
                pixels = to_rgb(image, file)
            except (OSError, SyntaxError, ValueError) as error:  # truncated data, or a mode Pillow cannot convert
                raise UsageError(f"cannot read image {file} (mode {image.mode}): {error}; delete or replace the file") from None
        if size and (pixels.shape[1], pixels.shape[0]) != size:
            pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR), dtype=np.uint8)
        images.append(pixels)
    return np.stack(images)


def common_size(files: list[Path]) -> tuple[int, int]:
    """The most common (width, height); other sizes are resized to it.

    Raises:
        UsageError: an image is unreadable or too large to decode safely, or its shape is too
            far from the common one for a resize to keep it recognisable (aspect ratio off by
            more than 2x, or under 8 px).
    """
    sizes: dict[tuple[int, int], list[Path]] = {}
    for file in files:
        with open_image(file) as image:
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


def image_folder_shape(root: Path) -> tuple[tuple[str, ...], tuple[int, int]]:
    """(class names, most common (width, height)) of an image-folder tree, from the files'
    headers alone: nothing is decoded, so it costs the same for any dataset size.

    Raises:
        UsageError: as ``load_image_folder`` does for a malformed tree or an unreadable image.
    """
    root = Path(root).resolve()
    train, test = list_split(root, "train"), list_split(root, "test")
    if set(train) != set(test):
        raise UsageError(f"train/ and test/ in {root} have different classes; make the class folders match")
    return tuple(sorted(train)), common_size([f for split in (train, test) for files in split.values() for f in files])


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
