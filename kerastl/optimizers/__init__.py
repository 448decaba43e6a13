"""Optimizer wrappers: per-layer learning rates."""

from kerastl.optimizers.per_layer_lr import PerLayerLR

__all__ = ["PerLayerLR"]
