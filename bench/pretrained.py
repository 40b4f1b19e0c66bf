"""Pretrained weights the harness finds itself: the files a pip package carries (EfficientNet-
Lite's PyTorch state dicts), where Keras's own loader fetches the others.

Resolving ``--weights imagenet`` to the installed file (its path then names the cell's weights
and its content hash enters the cell's identity), the file names a ``--weights DIR`` may hold,
and the safety check of a state dict file, made while the run is planned: a refused file stops
the run before any model is built. Nothing here imports Keras.
"""

from __future__ import annotations

from pathlib import Path

from backbones import BackboneSpec, WeightsUnavailableError
from bench.errors import UsageError

# Files read as PyTorch state dicts (anything else is a Keras weights file).
STATE_DICT_SUFFIXES = (".pth", ".pt")


def packaged(spec: BackboneSpec) -> bool:
    """Whether the backbone's ImageNet weights come from a pip package rather than Keras."""
    return spec.pretrained is not None and spec.pretrained.weights.package is not None


def resolve_imagenet(spec: BackboneSpec) -> tuple[str | None, str]:
    """(``"imagenet"`` for Keras's loader, or the packaged file's path; or None and why, with the pip command)."""
    if not packaged(spec):
        return "imagenet", ""
    try:
        return str(spec.pretrained.weights.installed_file()), ""
    except WeightsUnavailableError as error:
        return None, str(error)


def folder_file_names(spec: BackboneSpec) -> list[str]:
    """The weights files a ``--weights DIR`` may hold for the backbone, in order of preference."""
    return [f"{spec.name}.weights.h5"] + ([spec.pretrained.weights.file_name] if packaged(spec) else [])


def check_weights_file(path: Path) -> None:
    """Refuse a state dict file that is not one (or whose pickle would run code), in one line.

    Raises:
        UsageError: the reader refused it; nothing of it was executed.
    """
    from backbones.torch_state_dict import StateDictError, read_state_dict

    path = Path(path).resolve()
    if path.suffix not in STATE_DICT_SUFFIXES:
        return
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _CHECKED:  # a run plans its cells twice, once per stage each
        return
    try:
        read_state_dict(path)
    except StateDictError as error:
        raise UsageError(f"weights file refused: {error}") from None
    _CHECKED.add(key)


_CHECKED: set = set()
