"""Keras layers: the FeatureExtractor and the pooling it offers."""

from kerastl.layers.feature_extractor import POOLING_MODES, FeatureExtractor
from kerastl.layers.gem_pooling_2d import GeMPooling2D

__all__ = ["POOLING_MODES", "FeatureExtractor", "GeMPooling2D"]
