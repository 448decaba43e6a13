"""Keras layers: the FeatureExtractor, the pooling it offers, and LoRA adapters in a model."""

from kerastl.layers.feature_extractor import POOLING_MODES, FeatureExtractor, find_extractor
from kerastl.layers.gem_pooling_2d import GeMPooling2D
from kerastl.layers.global_pooling_2d import GLOBAL_POOLING_MODES, GlobalPooling2D
from kerastl.layers.lora import LoRAWrapper, apply_lora, merge_lora

__all__ = [
    "GLOBAL_POOLING_MODES",
    "POOLING_MODES",
    "FeatureExtractor",
    "GeMPooling2D",
    "GlobalPooling2D",
    "LoRAWrapper",
    "apply_lora",
    "find_extractor",
    "merge_lora",
]
