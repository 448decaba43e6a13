"""kerastl: transfer learning on images for Keras 3, on TensorFlow, JAX and PyTorch.

The backend is Keras's: set `KERAS_BACKEND` before importing keras or kerastl.
"""

from kerastl import backbones, freeze, layers
from kerastl.backbones.weights import WeightsDownloadError
from kerastl.layers import FeatureExtractor, GeMPooling2D

__version__ = "0.1.0"

__all__ = [
    "FeatureExtractor",
    "GeMPooling2D",
    "WeightsDownloadError",
    "backbones",
    "freeze",
    "layers",
]
