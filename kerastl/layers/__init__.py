"""Keras layers: the FeatureExtractor, the pooling it offers, LoRA adapters in a model, and
the temperature that calibrates a classifier."""

from kerastl.layers.feature_extractor import POOLING_MODES, FeatureExtractor, find_extractor
from kerastl.layers.gem_pooling_2d import GeMPooling2D
from kerastl.layers.global_pooling_2d import GLOBAL_POOLING_MODES, GlobalPooling2D
from kerastl.layers.lora import LoRAWrapper, apply_lora, merge_lora
from kerastl.layers.temperature_scaling import TemperatureScaling

__all__ = [
    "GLOBAL_POOLING_MODES",
    "POOLING_MODES",
    "FeatureExtractor",
    "GeMPooling2D",
    "GlobalPooling2D",
    "LoRAWrapper",
    "TemperatureScaling",
    "apply_lora",
    "find_extractor",
    "merge_lora",
]
