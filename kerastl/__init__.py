"""kerastl: transfer learning on images for Keras 3, on TensorFlow, JAX and PyTorch.

The backend is Keras's: set `KERAS_BACKEND` before importing keras or kerastl.
"""

from kerastl import (
    backbones,
    callbacks,
    data,
    evaluation,
    freeze,
    heads,
    layers,
    losses,
    optimizers,
    preprocessing,
    saving,
    training,
)
from kerastl._version import __version__
from kerastl.backbones.weights import WeightsDownloadError
from kerastl.evaluation import Calibration, Interpretation, calibrate, grad_cam, interpret
from kerastl.layers import FeatureExtractor, GeMPooling2D, GlobalPooling2D
from kerastl.models import build_model
from kerastl.predictor import Prediction, Predictor
from kerastl.saving import (
    ExportDependencyError,
    WeightsReport,
    export,
    load_model,
    load_weights_by_name,
    read_metadata,
    save_model,
)
from kerastl.training import (
    FineTuneHistory,
    Plan,
    cache_features,
    explain,
    fine_tune,
    lr_find,
    plot_history,
    rank_backbones,
    recommend,
    set_freeze,
)

__all__ = [
    "__version__",
    "Calibration",
    "ExportDependencyError",
    "FeatureExtractor",
    "FineTuneHistory",
    "Interpretation",
    "GeMPooling2D",
    "GlobalPooling2D",
    "Plan",
    "Prediction",
    "Predictor",
    "WeightsDownloadError",
    "WeightsReport",
    "backbones",
    "build_model",
    "cache_features",
    "calibrate",
    "callbacks",
    "data",
    "evaluation",
    "explain",
    "fine_tune",
    "export",
    "freeze",
    "grad_cam",
    "heads",
    "interpret",
    "layers",
    "load_model",
    "load_weights_by_name",
    "losses",
    "lr_find",
    "optimizers",
    "plot_history",
    "preprocessing",
    "rank_backbones",
    "read_metadata",
    "recommend",
    "save_model",
    "saving",
    "set_freeze",
    "training",
]
