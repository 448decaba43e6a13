"""Optimizers and learning-rate schedules.

`PerLayerLR` wraps any Keras optimizer to give layers their own learning
rates (layer decay, per-block multipliers); `WarmupCosine` and `OneCycle` are
the schedules `fine_tune` uses, serialisable with the model.
"""

from kerastl.optimizers.per_layer_lr import PerLayerLR
from kerastl.optimizers.schedules import OneCycle, WarmupCosine

__all__ = ["OneCycle", "PerLayerLR", "WarmupCosine"]
