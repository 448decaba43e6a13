"""What changes how a model trains.

`set_freeze` applies a freeze policy to a model and recompiles it with its
optimizer state; `explain` shows what trains; `PerLayerLR` gives layers their
own learning rates; `GradualUnfreezing` unfreezes blocks during `fit`.
"""

from kerastl.training.explain import explain
from kerastl.training.gradual_unfreezing import GradualUnfreezing
from kerastl.training.per_layer_lr import PerLayerLR
from kerastl.training.policy import RecompileWarning, change_freeze, set_freeze
from kerastl.training.recompile import clone_optimizer, recompile_model

__all__ = [
    "GradualUnfreezing",
    "PerLayerLR",
    "RecompileWarning",
    "change_freeze",
    "clone_optimizer",
    "explain",
    "recompile_model",
    "set_freeze",
]
