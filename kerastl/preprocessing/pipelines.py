"""Preprocessing pipelines: layers that live in the model, ahead of the backbone."""

import numbers

import keras
import numpy as np

from kerastl._checks import check_bool
from kerastl.backbones import get_backbone
from kerastl.backbones.registry import BackboneSpec
from kerastl.preprocessing.backbone_normalization import BackboneNormalization
from kerastl.preprocessing.grayscale_to_rgb import GrayscaleToRGB
from kerastl.preprocessing.preprocessing_pipeline import Pipeline
from kerastl.preprocessing.resize import Resize
from kerastl.preprocessing.rgb_to_grayscale import RGBToGrayscale

AUGMENT_PRESETS = ("none", "light", "medium", "strong")


def augmentation(preset="medium", seed=None):
    """The augmentation layers of a preset, for images in 0..255.

    Presets: `"none"` (no layers), `"light"` (horizontal flip, small
    translation), `"medium"` (+ rotation, zoom, contrast) and `"strong"`
    (larger ranges + RandAugment, clipped back to 0..255). Keras augmentation layers act only in
    training (`fit`); `predict` and `evaluate` see the images unchanged.

    MixUp and CutMix mix labels as well as images, which a layer inside the
    model never sees: they are batch transforms of `kerastl.data` (`mix=`).
    """
    if preset not in AUGMENT_PRESETS:
        raise ValueError(
            f"`augment` must be one of {AUGMENT_PRESETS} or a list of layers. "
            f"Received: augment={preset!r}"
        )
    _check_seed(seed)
    L = keras.layers
    seeds = iter(range(seed, seed + 10)) if seed is not None else iter([None] * 10)
    if preset == "none":
        return []
    if preset == "light":
        return [
            L.RandomFlip("horizontal", seed=next(seeds)),
            L.RandomTranslation(0.1, 0.1, seed=next(seeds)),
        ]
    strong = preset == "strong"
    layers = [
        L.RandomFlip("horizontal", seed=next(seeds)),
        L.RandomRotation(0.15 if strong else 0.1, seed=next(seeds)),
        L.RandomZoom(0.2 if strong else 0.1, seed=next(seeds)),
        L.RandomTranslation(*(2 * (0.15 if strong else 0.1,)), seed=next(seeds)),
        L.RandomContrast(0.2 if strong else 0.1, seed=next(seeds)),
    ]
    if strong:
        layers.append(L.RandAugment(value_range=(0, 255), seed=next(seeds)))
        # On torch, Keras 3.15's RandAugment can leave values above 255 (378 measured
        # on skimage photos): clip back to the range, with a standard serialisable layer.
        layers.append(L.ReLU(max_value=255.0))
    return layers


def pipeline(
    backbone=None,
    resize=None,
    augment="none",
    mode=None,
    interpolation="bilinear",
    crop_to_aspect_ratio=False,
    seed=None,
    name="preprocessing",
):
    """Layers that turn raw 0..255 images into what a backbone expects.

    In order: `GrayscaleToRGB` (checks the batch, casts to float, 1 -> 3
    channels; `RGBToGrayscale`, 3 -> 1 channel by luma, for a backbone that
    takes grayscale images), `Resize` to the backbone's size (a `keras.layers.Resizing` that
    passes images already at that size through), the augmentation layers
    (training only), then `BackboneNormalization` with the recipe of the
    backbone's weights from the registry (caffe / tf / torch; nothing for
    backbones that rescale inside, such as EfficientNet and ConvNeXt).

    Pixel values are not checked here: inside a traced `fit` or `predict` a
    layer cannot raise on data, so NaN or infinite pixels pass through and
    come out as NaN. `kerastl.data` refuses them where the images come in.

    Args:
        backbone: a `FeatureExtractor` (its backbone and input size are used),
            a registry name or a `BackboneSpec`. `None` needs `mode`.
        resize: `None`: to the backbone's input size (the extractor's, or the
            registry default size); an int or `(height, width)`: to that size;
            `False`: no resizing (inputs must already have the backbone's size).
        augment: a preset (`"none"`, `"light"`, `"medium"`, `"strong"`) or a
            list of Keras layers.
        mode: normalisation recipe (`"caffe"`, `"tf"`, `"torch"`, `"none"`);
            overrides the backbone's. Required for backbones not in the
            registry: the recipe their weights were trained with, which their
            makers' code tells (`"tf"` for `x / 127.5 - 1`, that is
            `(x / 255 - 0.5) * 2`; `"none"` for a model that rescales inside,
            with a `Rescaling` or `Normalization` layer first). A grayscale
            backbone takes `"tf"` or `"none"`.
        interpolation: passed to `keras.layers.Resizing`.
        crop_to_aspect_ratio: passed to `keras.layers.Resizing`.
        seed: seed of the augmentation layers.
        name: name of the returned layer.

    Returns:
        A `kerastl.preprocessing.Pipeline` (a `keras.layers.Pipeline` that
        builds without running its layers) named `"preprocessing"`, serialised
        with the model.

    Example:

    ```python
    prep = kerastl.preprocessing.pipeline("mobilenet_v2", resize=96, augment="light")
    cifar_like = np.random.randint(0, 256, (2, 32, 32, 3)).astype("uint8")
    print(tuple(prep(cifar_like, training=False).shape))  # (2, 96, 96, 3)
    ```
    """
    check_bool(crop_to_aspect_ratio, "crop_to_aspect_ratio")
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string. Received: name={name!r}")
    _check_seed(seed)
    spec, size, channels = _resolve_backbone(backbone)
    if mode is None:
        if spec is None:
            raise ValueError(
                "The backbone is not a registry architecture, so the input recipe its "
                "weights were trained with is unknown to kerastl: give it as `mode`: "
                "'tf' (x / 127.5 - 1), 'torch' (x / 255, then ImageNet mean and std), "
                "'caffe' (BGR, ImageNet mean subtracted) or 'none' (0..255 as they are, "
                "for a model that rescales inside), e.g. build_model(extractor, head, "
                "preprocessing=kerastl.preprocessing.pipeline(extractor, mode='tf')); "
                "or declare its architecture with FeatureExtractor(..., arch='<registry "
                "name>'). To tell the recipe, read what its makers' code does to an image "
                "before `predict`, or look at its first layers (a Rescaling or "
                "Normalization layer there: 'none'); see 'A classifier kerastl does not "
                f"know' in docs/backbones.md. Received: backbone={backbone!r}, mode=None"
            )
        mode = spec.preprocessing
    if channels == 1 and mode in ("caffe", "torch"):
        raise ValueError(
            f"The backbone takes 1-channel (grayscale) images, and the {mode!r} recipe "
            "normalises the three RGB channels: give mode='tf' or 'none'. "
            f"Received: mode={mode!r}"
        )
    if channels == 1:
        layers = [RGBToGrayscale(name="to_grayscale")]
    elif channels in (3, None):
        layers = [GrayscaleToRGB(name="to_rgb")]
    else:
        raise ValueError(
            f"The backbone takes {channels}-channel images; kerastl's preprocessing gives "
            "1 (grayscale) or 3 (RGB) channels: build your own preprocessing layer and "
            f"pass it to build_model(..., preprocessing=...). Received: backbone={backbone!r}"
        )
    target = _resize_target(resize, size)
    if target is not None:
        _check_interpolation(interpolation)
        layers.append(
            Resize(
                *target,
                interpolation=interpolation,
                crop_to_aspect_ratio=crop_to_aspect_ratio,
                name="resize",
            )
        )
    if isinstance(augment, str):
        layers += augmentation(augment, seed=seed)
    elif isinstance(augment, (list, tuple)) and all(
        isinstance(layer, keras.layers.Layer) for layer in augment
    ):
        layers += list(augment)
    else:
        raise ValueError(
            f"`augment` must be one of {AUGMENT_PRESETS} or a list of Keras layers. "
            f"Received: augment={augment!r}"
        )
    layers.append(BackboneNormalization(mode, name="normalize"))
    return Pipeline(layers, name=name)


def _resolve_backbone(backbone):
    """(registry spec or None, input size (h, w) or None, channels or None) of `backbone`."""
    if backbone is None:
        return None, None, None
    if isinstance(backbone, str):
        spec = get_backbone(backbone)
        return spec, (spec.default_size, spec.default_size), 3
    if isinstance(backbone, BackboneSpec):
        return backbone, (backbone.default_size, backbone.default_size), 3
    # A FeatureExtractor, read by duck typing: preprocessing sits upstream of it.
    image_shape = getattr(backbone, "image_shape", None)
    if image_shape is not None and hasattr(backbone, "spec"):
        size = tuple(image_shape[:2])
        return backbone.spec, (None if None in size else size), image_shape[-1]
    raise ValueError(
        "`backbone` must be a FeatureExtractor, a registry name or a BackboneSpec. "
        f"Received: backbone={backbone!r}"
    )


def _resize_target(resize, size):
    if resize is False:
        return None
    if resize is None or resize is True:
        return size
    target = (resize, resize) if isinstance(resize, numbers.Integral) else resize
    if (
        isinstance(target, (tuple, list))
        and len(target) == 2
        and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in target
        )
    ):
        return tuple(int(s) for s in target)
    raise ValueError(
        "`resize` must be None (the backbone's size), False, an int or (height, width). "
        f"Received: resize={resize!r}"
    )


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"`seed` must be an int or None. Received: seed={seed!r}")


def _check_interpolation(interpolation):
    # keras.layers.Resizing checks only when it first resizes: try it on one pixel.
    try:
        keras.ops.image.resize(
            np.zeros((1, 1, 1, 1), "float32"), (1, 1), interpolation=interpolation
        )
    except (TypeError, ValueError):
        raise ValueError(
            "`interpolation` must be a `keras.layers.Resizing` interpolation this backend "
            f"supports ('bilinear', 'nearest', 'bicubic', ...). "
            f"Received: interpolation={interpolation!r}"
        ) from None
