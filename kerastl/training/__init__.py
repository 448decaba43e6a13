"""What changes how a model trains.

`fine_tune` runs the two-phase recipe (head, then backbone) in one call;
`lr_find` sweeps learning rates; `plot_history` draws the curves;
`set_freeze` applies a freeze policy to a model and recompiles it with its
optimizer state; `explain` shows what trains; `PerLayerLR` gives layers their
own learning rates; `GradualUnfreezing` unfreezes blocks during `fit`; `rank_backbones` ranks
candidate backbones on the user's images before any fine-tuning.
"""

from kerastl.training.advisor import Plan, recommend
from kerastl.training.explain import explain
from kerastl.training.feature_cache import FeatureCache, cache_features
from kerastl.training.fine_tune import FineTuneHistory, fine_tune
from kerastl.training.gradual_unfreezing import GradualUnfreezing
from kerastl.training.head_sweep import HeadSweep
from kerastl.training.losses import SparseCategoricalCrossentropy
from kerastl.training.lr_find import LRFinderResult, lr_find
from kerastl.training.per_layer_lr import PerLayerLR
from kerastl.training.plots import PlotDependencyError, plot_history
from kerastl.training.policy import RecompileWarning, change_freeze, set_freeze
from kerastl.training.ranking import BackboneRanking, linear_probe, logme, rank_backbones
from kerastl.training.recompile import clone_optimizer, recompile_model
from kerastl.training.schedules import OneCycle, WarmupCosine

__all__ = [
    "BackboneRanking",
    "FeatureCache",
    "FineTuneHistory",
    "GradualUnfreezing",
    "HeadSweep",
    "LRFinderResult",
    "OneCycle",
    "Plan",
    "PlotDependencyError",
    "PerLayerLR",
    "RecompileWarning",
    "SparseCategoricalCrossentropy",
    "WarmupCosine",
    "cache_features",
    "change_freeze",
    "clone_optimizer",
    "explain",
    "fine_tune",
    "linear_probe",
    "logme",
    "lr_find",
    "plot_history",
    "rank_backbones",
    "recommend",
    "recompile_model",
    "set_freeze",
]
