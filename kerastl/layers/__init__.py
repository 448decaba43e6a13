"""Keras layers: the FeatureExtractor and the pooling it offers."""

from kerastl.layers.feature_extractor import POOLING_MODES, FeatureExtractor, find_extractor
from kerastl.layers.gem_pooling_2d import GeMPooling2D
from kerastl.layers.global_pooling_2d import GLOBAL_POOLING_MODES, GlobalPooling2D

__all__ = [
    "GLOBAL_POOLING_MODES",
    "POOLING_MODES",
    "FeatureExtractor",
    "GeMPooling2D",
    "GlobalPooling2D",
    "find_extractor",
]
