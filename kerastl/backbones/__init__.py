"""Backbone registry (every `keras.applications` model by a snake_case name) and sources."""

from kerastl.backbones import applications as _applications  # noqa: F401  (fills the registry)
from kerastl.backbones.recipes import PREPROCESSING_MODES
from kerastl.backbones.registry import (
    BackboneSpec,
    get_backbone,
    list_backbones,
    register_backbone,
    split_blocks,
)
from kerastl.backbones.sources import ResolvedBackbone, resolve_backbone

__all__ = [
    "PREPROCESSING_MODES",
    "BackboneSpec",
    "ResolvedBackbone",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "resolve_backbone",
    "split_blocks",
]
