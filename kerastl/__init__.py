"""kerastl: transfer learning on images for Keras 3, on TensorFlow, JAX and PyTorch.

The backend is Keras's: set `KERAS_BACKEND` before importing keras or kerastl.
"""

from kerastl import (
    backbones,
    callbacks,
    data,
    freeze,
    heads,
    layers,
    optimizers,
    preprocessing,
    saving,
)
from kerastl.backbones.weights import WeightsDownloadError
from kerastl.callbacks import GradualUnfreezing
from kerastl.layers import FeatureExtractor, GeMPooling2D
from kerastl.models import build_model
from kerastl.optimizers import PerLayerLR
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

__version__ = "0.1.0"

__all__ = [
    "ExportDependencyError",
    "FeatureExtractor",
    "GeMPooling2D",
    "GradualUnfreezing",
    "PerLayerLR",
    "Prediction",
    "Predictor",
    "WeightsDownloadError",
    "WeightsReport",
    "backbones",
    "build_model",
    "callbacks",
    "data",
    "export",
    "freeze",
    "heads",
    "layers",
    "load_model",
    "load_weights_by_name",
    "optimizers",
    "preprocessing",
    "read_metadata",
    "save_model",
    "saving",
]
