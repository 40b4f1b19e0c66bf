"""Cheap checks before any work starts, each written once and used by every command that needs it.

Each raises ``UsageError`` with one line naming the problem and the fix; none writes anything
except ``check_out_dir``'s probe file, which it removes.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

from backbones import get_backbone
from bench.errors import UsageError
from bench.keras_home import keras_cache_dir


def check_min_image_sizes(spec, sizes) -> None:
    """Refuse a size below what ``spec``'s architecture can take."""
    for size in sizes:
        if size < spec.min_image_size:
            raise UsageError(f"--image-size {size} is below {spec.name}'s minimum of {spec.min_image_size} px; pass {spec.min_image_size} or more")


def check_weights_file_fits(weights: str, specs) -> None:
    """One ``--weights FILE`` holds one architecture's weights: refuse it for several backbones."""
    if weights not in ("imagenet", "none") and Path(weights).is_file() and len(specs) > 1:
        raise UsageError("--weights FILE fits a single backbone; with several, pass a DIR holding <backbone>.weights.h5")


def preflight_weights(spec, weights: str, image_size: int) -> None:
    """Build the backbone with its weights once, before any cell runs.

    A weights file for another architecture, or ImageNet weights that cannot be downloaded,
    then stops the run with one clear line. A successful download lands in Keras's cache,
    where the cells find it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spec.builder(input_shape=(image_size, image_size, 3), weights=weights)
        # Keras may load a partly matching file with only a warning: treat that as a mismatch.
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message) or "could not be loaded" in str(w.message)]
        if skipped:
            raise ValueError(skipped[0])
    except Exception as error:
        text = str(error).strip()
        if weights == "imagenet":
            url = re.search(r"https?://\S+?\.h5", text)
            what = f"{url.group(0).rsplit('/', 1)[-1]} from {url.group(0)}" if url else "its weights file"
            raise UsageError(
                f"could not download ImageNet weights for {spec.name} (offline?): place {what} in {keras_cache_dir() / 'models'}/, "
                f"or pass --weights DIR holding {spec.name}.weights.h5, or --weights none"
            ) from None
        first = text.splitlines()[0][:200] if text else type(error).__name__
        raise UsageError(f"weights file {weights} does not fit {spec.name} ({first}); pass that backbone's own weights or --weights none") from None


def preflight_cells(cells) -> None:
    """Check each (backbone, weights) the cells use once (see ``preflight_weights``)."""
    checked = set()
    for cell in cells:
        if cell.weights != "none" and (cell.backbone, cell.weights) not in checked:
            preflight_weights(get_backbone(cell.backbone), cell.weights, cell.image_size)
            checked.add((cell.backbone, cell.weights))


def check_out_dir(out: Path, flag: str = "--out", create: bool = True) -> None:
    """Make sure ``out`` is (or, with ``create=False``, could become) a writable folder."""
    if not create:
        # Whether it could be created, without creating it: bad input writes nothing.
        existing = next(p for p in (out, *out.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"cannot create {flag} folder {out}: {existing} is not a writable folder; pick a writable folder")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {flag} folder {out}: {error.strerror}; pick a writable folder") from None
    # Create a file rather than ask os.access: root passes every permission check, and
    # /proc or a read-only mount refuse files whatever the mode bits say.
    try:
        probe, name = tempfile.mkstemp(dir=out, prefix=".bench-write-probe-")
        os.close(probe)
        os.unlink(name)
    except OSError as error:
        raise UsageError(f"{flag} folder {out} is not writable ({error.strerror}); pick a writable folder or fix its permissions") from None


def validate_data(data: str, cache_dir: Path, seed: int, val_fraction: float, profile: str, notes: list[str] | None = None, with_test: bool = True) -> int:
    """Load (and so check) the data once in the parent (the test split too unless ``with_test``
    is false); returns its native image size.

    ``notes`` collects a line per damaged cache entry healed on the way."""
    from bench.data import load_raw, prepare
    from bench.stages import PROFILES

    raw = load_raw(data, cache_dir, notes, with_test)
    chosen = PROFILES[profile]
    prepare(raw, seed, val_fraction, chosen.train_images, chosen.test_images)
    return int(raw.x_train.shape[1])
