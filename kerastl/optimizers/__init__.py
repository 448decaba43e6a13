"""Optimizer wrappers: per-layer learning rates (`kerastl.training.PerLayerLR`)."""

from kerastl.training.per_layer_lr import PerLayerLR

__all__ = ["PerLayerLR"]
