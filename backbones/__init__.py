"""Backbone registry. Importing the package registers the built-in backbones."""

from backbones.registry import (
    ALL_STAGES,
    ENTRY_POINT_GROUP,
    BackboneLookupError,
    BackboneSpec,
    PretrainedConfig,
    WeightsSource,
    WeightsUnavailableError,
    get_backbone,
    list_backbones,
    register_backbone,
    unregister_backbone,
)
from backbones import airbench, efficientnet, efficientnet_lite, mobilenet, resnet, small_cnn  # noqa: F401  (registers the built-ins)

__all__ = [
    "ALL_STAGES",
    "ENTRY_POINT_GROUP",
    "BackboneLookupError",
    "BackboneSpec",
    "PretrainedConfig",
    "WeightsSource",
    "WeightsUnavailableError",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "unregister_backbone",
]
