"""Grad-CAM (Selvaraju et al. 2017): where in an image a classifier finds its evidence.

The class score is the head's output before its softmax or sigmoid (the
logit). Its gradient with respect to the backbone's last feature map,
averaged over the map's height and width, weighs each channel; the weighted
sum of the channels, through a ReLU, is the heat map: positive where the
features raise the class's score. It is upsampled to the image's size and
scaled to [0, 1].
"""

import numbers
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kerastl._checks import check_positive_int
from kerastl._keras_private import producer
from kerastl.data.checks import check_finite, check_images, image_array
from kerastl.evaluation._gradients import value_and_gradient
from kerastl.heads.head_info import find_head
from kerastl.layers.feature_extractor import extractor_and_front, find_extractor, input_of


def grad_cam(
    model: keras.Model,
    images: Any,
    class_index: int | Sequence[int] | None = None,
    *,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM heat maps: where each image holds the evidence for a class.

    The images go through the model's preprocessing and its backbone to the
    last feature map `A` (`(height', width', channels)`, before any pooling).
    The class's score is the head's output before its softmax or sigmoid (for
    a binary head, the logit for class 1 and its negative for class 0). Each
    channel of `A` is weighed by the mean over the map of the score's
    gradient, the weighted sum goes through a ReLU, and the map is resized
    (bilinear) to the image's size and divided by its maximum (Selvaraju et
    al. 2017). A frozen backbone is differentiated all the same.

    Args:
        model: a kerastl classifier (`kerastl.build_model`): raw images, then
            any preprocessing, a `FeatureExtractor` with one feature map, and
            a binary, multiclass or multilabel head.
        images: raw images as the model takes them (0..255, uint8 or float):
            `(n, height, width, channels)`, or one image `(height, width,
            channels)`.
        class_index: the class to explain: `None` (default) for each image's
            predicted class, an int for the same class in every image, or a
            sequence of one int per image. For a binary head, 1 is the
            positive class and 0 the negative one.
        batch_size: images per forward and backward pass.

    Returns:
        Float32 heat maps `(n, height, width)` in [0, 1], in the order of the
        images (`n` is 1 for one image). A map is 1 where the evidence for
        the class is strongest, and all 0 where nothing in the image raises
        the class's score.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: `model` is not a kerastl classifier (a regression head
            has no class to explain), or `images`, `class_index` or
            `batch_size` is not valid.

    Example:

    ```python
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(96, 96, 3), pooling="avg",
        backbone_kwargs={"alpha": 0.35},
    )
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(3))
    images = np.random.randint(0, 256, (2, 120, 160, 3), dtype="uint8")
    heat = kerastl.grad_cam(model, images, class_index=[0, 2])
    print(heat.shape, heat.dtype)  # (2, 120, 160) float32
    print(bool(heat.min() >= 0 and heat.max() <= 1))  # True
    ```
    """
    extractor, head, front = _parts(model)
    images = _images(images, model)
    batch_size = check_positive_int(batch_size, "batch_size")
    num_classes = 2 if head.task == "binary" else head.num_outputs
    classes = _class_indices(class_index, len(images), num_classes)
    maps = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        chosen = None if classes is None else classes[start : start + batch_size]
        maps.append(_heat(batch, chosen, extractor, head, front))
    return np.concatenate(maps)


# --- helpers ---------------------------------------------------------------------


def _parts(model):
    """`(extractor, head, front)` of a kerastl classifier; `front` may be `None`."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a kerastl classifier (a keras.Model from kerastl.build_model). "
            f"Received: model={model!r}"
        )
    extractor, head = find_extractor(model), find_head(model)
    if extractor is None or head is None:
        missing = " and ".join(
            name
            for name, part in (("FeatureExtractor", extractor), ("TaskHead", head))
            if part is None
        )
        raise ValueError(
            "`model` must be a kerastl classifier (kerastl.build_model): Grad-CAM reads the "
            f"feature map of its FeatureExtractor and the class scores of its head; it has no "
            f"{missing}. Received: model={model.name!r}"
        )
    if head.task == "regression":
        raise ValueError(
            "Grad-CAM explains a class, and a regression head has none: pass a binary, "
            f"multiclass or multilabel classifier. Received: model={model.name!r} "
            "with a 'regression' head"
        )
    if extractor.outputs:
        raise ValueError(
            f"Grad-CAM needs one feature map, and the FeatureExtractor {extractor.name!r} "
            f"outputs several ({extractor.outputs}). Received: model={model.name!r}"
        )
    features = input_of(head, model)
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or features is None or producer(features)[0] is not extractor:
        raise ValueError(
            "`model` must be a functional model of one input whose FeatureExtractor feeds "
            "its head directly (kerastl.build_model): Grad-CAM reruns that path. "
            f"Received: model={model.name!r}"
        )
    maps = extractor.backbone.outputs
    if len(maps) != 1 or len(maps[0].shape) != 4:
        raise ValueError(
            "Grad-CAM needs a feature map (batch, height, width, channels) from the "
            f"backbone, and {extractor.name!r}'s backbone outputs "
            f"{[tuple(t.shape) for t in maps]} (already pooled): cut it before its pooling "
            f"(FeatureExtractor(..., cut=...)). Received: model={model.name!r}"
        )
    _, front = extractor_and_front(model, "Grad-CAM reads its feature map")
    return extractor, head, front


def _images(images, model):
    """`images` as a float32 `(n, height, width, channels)` array the model takes."""
    array = image_array(images, arg="images")
    single = array.ndim == 3
    check_images(array, arg="images", batched=not single)
    if single:
        array = array[None]
    if array.shape[0] == 0 or 0 in array.shape[1:3]:
        raise ValueError(
            f"`images` is empty: there is no image to explain. Received: images of shape "
            f"{tuple(array.shape)}"
        )
    expected = tuple(model.inputs[0].shape[1:])
    if any(want not in (None, got) for want, got in zip(expected, array.shape[1:], strict=True)):
        raise ValueError(
            f"`images` must fit the model's input {(None, *expected)}. "
            f"Received: images of shape {tuple(array.shape)}"
        )
    check_finite(array, arg="images")
    return array.astype("float32", copy=False)


def _class_indices(class_index, n, num_classes):
    """`None` (each image's predicted class) or one class id per image, as an int array."""
    if class_index is None:
        return None
    values = None
    if _is_index(class_index):
        values = np.full(n, int(class_index))
    elif (
        isinstance(class_index, (Sequence, np.ndarray))
        and not isinstance(class_index, (str, bytes))
        and getattr(class_index, "ndim", 1) == 1
        and all(_is_index(value) for value in class_index)
    ):
        values = np.asarray([int(value) for value in class_index], dtype="int64")
    if values is None or len(values) != n or not ((values >= 0) & (values < num_classes)).all():
        raise ValueError(
            f"`class_index` must be None (each image's predicted class), a class in "
            f"[0, {num_classes}) or a list of {n} such classes (one per image). "
            f"Received: class_index={class_index!r}"
        )
    return values


def _is_index(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _heat(images, classes, extractor, head, front):
    """The normalised heat maps of one batch of raw images."""
    x = ops.convert_to_tensor(images)
    if front is not None:
        x = front(x, training=False)
    # The backbone itself, not the extractor: a frozen extractor stops the gradient.
    features = ops.cast(extractor.backbone(x, training=False), "float32")
    chosen = None if classes is None else ops.convert_to_tensor(classes[:, None], "int32")

    def score(feature_map):
        pooled = (
            feature_map if extractor.poolers is None else extractor.poolers["features"](feature_map)
        )
        logits = head.scores(pooled)
        if head.task == "binary":  # one logit: class 1's score, its negative class 0's
            logits = ops.concatenate([-logits, logits], axis=-1)
        index = ops.argmax(logits, axis=-1)[:, None] if chosen is None else chosen
        return ops.take_along_axis(logits, index, axis=-1)[:, 0]

    _, gradient = value_and_gradient(score, features)
    feature_map = np.asarray(ops.convert_to_numpy(features))
    weights = gradient.mean(axis=(1, 2))  # (n, channels)
    cam = np.maximum(np.einsum("nhwc,nc->nhw", feature_map, weights), 0.0)
    size = images.shape[1:3]
    cam = ops.image.resize(
        cam[..., None].astype("float32"),
        size,
        interpolation="bilinear",
        data_format="channels_last",
    )
    cam = np.maximum(np.asarray(ops.convert_to_numpy(cam))[..., 0], 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    return np.clip(cam, 0.0, 1.0).astype("float32")
