"""What changes how a model trains.

`fine_tune` runs the two-phase recipe (head, then backbone) in one call;
`lr_find` sweeps learning rates; `plot_history` draws the curves;
`set_freeze` applies a freeze policy to a model and recompiles it with its
optimizer state; `explain` shows what trains; `rank_backbones` ranks
candidate backbones on the user's images before any fine-tuning.
(`PerLayerLR` and the schedules live in `kerastl.optimizers`, `GradualUnfreezing`
in `kerastl.callbacks`, the loss in `kerastl.losses`.)
"""

from kerastl.training.advisor import Plan, recommend
from kerastl.training.explain import explain
from kerastl.training.feature_cache import FeatureCache, cache_features
from kerastl.training.fine_tune import FineTuneHistory, fine_tune
from kerastl.training.head_sweep import HeadSweep
from kerastl.training.lr_find import LRFinderResult, lr_find
from kerastl.training.plots import PlotDependencyError, plot_history
from kerastl.training.policy import RecompileWarning, change_freeze, set_freeze
from kerastl.training.ranking import BackboneRanking, rank_backbones
from kerastl.training.recompile import clone_optimizer, recompile_model
from kerastl.training.transferability import linear_probe, logme

__all__ = [
    "BackboneRanking",
    "FeatureCache",
    "FineTuneHistory",
    "HeadSweep",
    "LRFinderResult",
    "Plan",
    "PlotDependencyError",
    "RecompileWarning",
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
