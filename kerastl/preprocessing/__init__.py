"""Preprocessing that lives in the model: raw 0..255 images in, backbone input out."""

from kerastl.preprocessing.backbone_normalization import BackboneNormalization
from kerastl.preprocessing.grayscale_to_rgb import GrayscaleToRGB
from kerastl.preprocessing.pipelines import AUGMENT_PRESETS, augmentation, pipeline

__all__ = [
    "AUGMENT_PRESETS",
    "BackboneNormalization",
    "GrayscaleToRGB",
    "augmentation",
    "pipeline",
]
