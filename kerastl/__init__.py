"""kerastl: transfer learning on images for Keras 3, on TensorFlow, JAX and PyTorch.

The backend is Keras's: set `KERAS_BACKEND` before importing keras or kerastl.
"""

from kerastl import backbones, data, freeze, heads, layers, preprocessing
from kerastl.backbones.weights import WeightsDownloadError
from kerastl.layers import FeatureExtractor, GeMPooling2D
from kerastl.models import build_model

__version__ = "0.1.0"

__all__ = [
    "FeatureExtractor",
    "GeMPooling2D",
    "WeightsDownloadError",
    "backbones",
    "build_model",
    "data",
    "freeze",
    "heads",
    "layers",
    "preprocessing",
]
