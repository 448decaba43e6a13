"""Preprocessing that lives in the model: raw 0..255 images in, backbone input out."""

from kerastl.preprocessing.backbone_normalization import BackboneNormalization
from kerastl.preprocessing.grayscale_to_rgb import GrayscaleToRGB
from kerastl.preprocessing.pipelines import AUGMENT_PRESETS, augmentation, pipeline
from kerastl.preprocessing.preprocessing_pipeline import Pipeline
from kerastl.preprocessing.resize import Resize
from kerastl.preprocessing.rgb_to_grayscale import RGBToGrayscale

__all__ = [
    "AUGMENT_PRESETS",
    "BackboneNormalization",
    "GrayscaleToRGB",
    "Pipeline",
    "RGBToGrayscale",
    "Resize",
    "augmentation",
    "pipeline",
]
