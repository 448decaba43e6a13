"""`build_model`: preprocessing, feature extractor and head in one Keras model."""

import re
from collections.abc import Sequence
from typing import Any, Literal

import keras

from kerastl._checks import check_bool
from kerastl._keras_private import flatten_layers
from kerastl.backbones.sources import check_input_shape
from kerastl.heads.task_head import TaskHead
from kerastl.layers.feature_extractor import FeatureExtractor
from kerastl.preprocessing.pipelines import pipeline


def build_model(
    extractor: FeatureExtractor,
    head: TaskHead,
    preprocessing: keras.layers.Layer | Literal[False] | None = None,
    *,
    input_shape: Sequence[int | None] | None = None,
    compile: bool = True,
    optimizer: Any = None,
    loss: Any = None,
    metrics: Any = None,
    name: str | None = None,
) -> keras.Model:
    """Assembles raw images -> preprocessing -> feature extractor -> head.

    The result is one functional `keras.Model` of three parts; a saved model
    takes raw 0..255 images and gives predictions with nothing else to
    remember. Parts that carry a name you chose keep it; parts with a name
    Keras generated (`feature_extractor_3`) are named `"feature_extractor"`,
    `"head"` and `"preprocessing"`, so `model.get_layer("head")` works.

    Mixed precision, as keras-hub's `ImageClassifier` does it: the head takes
    the extractor's dtype policy (unless it is already built) and so does the
    model, so that under `"mixed_float16"` `compile` wraps the optimizer in a
    `keras.optimizers.LossScaleOptimizer`. The head's variables, its output
    and the loss stay float32. Nothing else about the parts you pass changes.

    Args:
        extractor: a `kerastl.FeatureExtractor`.
        head: a `kerastl.heads` head (`TaskHead`).
        preprocessing: `None` (default): `kerastl.preprocessing.pipeline(extractor)`,
            the backbone's own normalisation and a resize to its input size.
            A Keras layer (usually from `kerastl.preprocessing.pipeline`), or
            `False` for none (inputs must then already be in the backbone's
            input range and size).
        input_shape: `(height, width, channels)` of the images you feed. Defaults
            to `(None, None, channels)` (any size, the backbone's channels) when
            the preprocessing resizes, else the extractor's input shape. Give
            the channels of your images (1 for grayscale, 3 for RGB): the
            preprocessing converts either to the backbone's.
        compile: compile with the head's loss and metrics.
        optimizer: defaults to Adam with learning rate 1e-3.
        loss: overrides the head's default loss.
        metrics: override the head's default metrics.
        name: model name; defaults to `"<backbone>_<task>"`.

    Example:

    ```python
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(96, 96, 3),
        backbone_kwargs={"alpha": 0.35},
    )
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(10))
    print([layer.name for layer in model.layers[1:]])
    # ['preprocessing', 'feature_extractor', 'head']
    ```
    """
    if not isinstance(extractor, FeatureExtractor):
        raise ValueError(
            f"`extractor` must be a kerastl.FeatureExtractor. Received: extractor={extractor!r}"
        )
    if not isinstance(head, TaskHead):
        raise ValueError(
            "`head` must be a kerastl head (kerastl.heads.binary(), multiclass(...), ...). "
            f"Received: head={head!r}"
        )
    if preprocessing is None:
        preprocessing = pipeline(extractor)
    elif preprocessing is not False and not isinstance(preprocessing, keras.layers.Layer):
        raise ValueError(
            "`preprocessing` must be None (the backbone's recipe), False or a Keras layer. "
            f"Received: preprocessing={preprocessing!r}"
        )
    if input_shape is None:
        input_shape = _default_input_shape(extractor, preprocessing)
    else:
        try:
            checked = check_input_shape(input_shape)
        except ValueError:
            checked = None
        if checked is None or checked[-1] not in (1, 3):
            raise ValueError(
                "`input_shape` must be (height, width, channels) with positive sizes and 1 "
                f"or 3 channels. Received: input_shape={input_shape!r}"
            )
        input_shape = checked
    check_bool(compile, "compile")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"`name` must be a string or None. Received: name={name!r}")
    if compile:
        _check_compile_arguments(optimizer, loss, metrics)

    # === Functional Model ===
    policy = extractor.dtype_policy
    if not head.built:
        for layer in flatten_layers(head, include_self=True):
            layer.dtype_policy = policy
    _name_if_generated(extractor, "feature_extractor")
    _name_if_generated(head, "head")
    images = keras.Input(input_shape, name="images")
    x = images
    if preprocessing is not False:
        _name_if_generated(preprocessing, "preprocessing")
        x = preprocessing(x)
    features = extractor(x)
    outputs = head(features)
    backbone = extractor.spec.name if extractor.spec else extractor.backbone.name
    model = keras.Model(images, outputs, name=name or f"{backbone}_{head.task}")
    # Read by `compile` (loss scaling); a functional model takes no `dtype=` of its own.
    model.dtype_policy = policy

    if compile:
        model.compile(
            optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(1e-3),
            loss=loss if loss is not None else head.default_loss(),
            metrics=metrics if metrics is not None else head.default_metrics(),
        )
    return model


def _check_compile_arguments(optimizer, loss, metrics):
    """Refuses what `compile` would take now and fail on only at the first `fit`."""
    for arg, value, get in (
        ("optimizer", optimizer, keras.optimizers.get),
        ("loss", loss, keras.losses.get),
    ):
        if value is None or (arg == "loss" and isinstance(value, (list, dict))):
            continue
        try:
            get(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"`{arg}` must be a Keras {arg} (an instance, a name or a callable). "
                f"Received: {arg}={value!r}"
            ) from None
    if metrics is None:
        return
    if not isinstance(metrics, (list, tuple, dict)):
        raise TypeError(
            "`metrics` must be a list of metrics (or a dict per output). "
            f"Received: metrics={metrics!r}"
        )
    flat = metrics.values() if isinstance(metrics, dict) else metrics
    for metric in flat:
        if not (isinstance(metric, str) or callable(metric) or isinstance(metric, (list, tuple))):
            raise ValueError(
                f"`metrics` must hold metric names, Metric objects or callables. "
                f"Received: metrics={metrics!r}"
            )


def _name_if_generated(layer, name):
    """Names `layer` `name` when its current name is one Keras generated (`pipeline_2`)."""
    generated = re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower()
    if any(re.fullmatch(rf"{re.escape(stem)}(_\d+)?", layer.name) for stem in (name, generated)):
        layer.name = name


def _default_input_shape(extractor, preprocessing):
    height, width, channels = extractor.image_shape
    resizes = preprocessing is not False and any(
        isinstance(layer, keras.layers.Resizing) for layer in _sublayers(preprocessing)
    )
    return (None, None, channels) if resizes else (height, width, channels)


def _sublayers(layer):
    return getattr(layer, "layers", [layer])
