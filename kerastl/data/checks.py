"""The checks of what a kerastl model takes as images and labels: one set of messages.

Every check names the user's argument (`arg`: `train`, `validation`, `data`,
`x` ...), says what is wrong and ends with what it received, never the array
itself. `part` is what of the argument is checked (`"images"`, `"labels"`, or
`""` where the argument is the array), `where` places a streamed batch
(`" (batch 3)"`).
"""

import warnings

import numpy as np

from kerastl._checks import check_positive_int


def _subject(arg, part, where=""):
    """`(name in the message, name after "Received:")`."""
    name = f"`{arg}` {part}".rstrip()
    return name, f"{arg} {part}".rstrip() + where


def to_numpy(value):
    """A host array of a numpy, tf, torch or jax array (or a nested list of numbers)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch
        value = value.detach().cpu()
    return np.asarray(value)


def image_array(images, arg="x", part="", where=""):
    """`images` as one numpy array; a clear error when they are ragged (images of many sizes)."""
    name, received = _subject(arg, part, where)
    try:
        array = to_numpy(images)
    except (ValueError, TypeError):
        array = None
    if array is not None and not (array.dtype == object and isinstance(images, (list, tuple))):
        return array
    if not isinstance(images, (list, tuple)):
        raise TypeError(
            f"{name} must be an array (n, height, width, channels). "
            f"Received: {received} of type {type(images).__name__}"
        )
    shapes = [_shape(image) for image in list(images)[:3]]
    raise ValueError(
        f"{name} are ragged: images of different sizes do not make one batch. Resize them "
        "to one size first (or read files with kerastl.data.from_directory(image_size=...)). "
        f"Received: {received} as a {type(images).__name__} of {len(images)} images of "
        f"shapes {', '.join(map(str, shapes))}, ..."
    )


def _shape(value):
    try:
        return tuple(np.shape(value))
    except ValueError:  # itself ragged
        return "ragged"


def check_images(images, arg="x", part="", where="", batched=True):
    """Raises a clear error unless `images` is a numeric `(batch,) h, w, 1|3` array (or spec).

    `images` needs `.shape` and `.dtype` only: a `tf.TensorSpec` is checked as well.
    """
    name, received = _subject(arg, part, where)
    shape = tuple(images.shape)
    dtype = np.dtype(getattr(images.dtype, "as_numpy_dtype", images.dtype))
    if dtype == np.bool_ or dtype.kind not in "iuf":
        raise ValueError(
            f"{name} must be numbers (raw 0..255 pixel values); read image files with "
            "kerastl.data.from_directory or kerastl.data.load_image. "
            f"Received: {received} of dtype {dtype}"
        )
    rank = 4 if batched else 3
    if len(shape) != rank:
        layout = "(batch, height, width, channels)" if batched else "(height, width, channels)"
        hint = ""
        if batched and len(shape) == 3 and shape[-1] in (1, 3) and part != "":
            hint = " (single images: batch them, e.g. with kerastl.data.from_tf_dataset)"
        elif batched and len(shape) == 3:
            hint = " (add the channel axis to grayscale images: x[..., None])"
        raise ValueError(
            f"{name} must have rank {rank}, {layout}{hint}. Received: {received} of shape {shape}"
        )
    if shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must have 1 (grayscale) or 3 (RGB) channels, last. "
            f"Received: {received} of shape {shape}"
        )


def check_finite(images, arg="x", part="", where=""):
    """Refuses NaN and infinite pixel values: they would train (or cache) silently to NaN."""
    if images.dtype.kind != "f" or images.size == 0:
        return
    # min and max carry any NaN or infinity: 5x faster than a mask of every value.
    if np.isfinite(images.min()) and np.isfinite(images.max()):
        return
    finite = np.isfinite(images)
    name, received = _subject(arg, part, where)
    first = int(np.argmin(finite.reshape(len(images), -1).all(axis=1)))
    nan = int(np.isnan(images).sum())
    raise ValueError(
        f"{name} hold NaN or infinite values (first in image {first}): a model would train "
        "on them to NaN. Clean or drop those images. "
        f"Received: {received} with {nan} NaN and {int((~finite).sum()) - nan} infinite values"
    )


def check_label_count(labels, count, arg="x", part="images", where=""):
    """Refuses labels that are not one per image (a scalar, fewer, more)."""
    n = len(labels) if np.ndim(labels) else None
    if n != count:
        _, received = _subject(arg, "labels", where)
        what = "a single value" if n is None else f"{n} labels"
        raise ValueError(
            f"`{arg}` has {count} {part} but {what}: give one label per image. "
            f"Received: {received} of shape {np.shape(labels)}"
        )


def check_head_labels(labels, head, arg, where=""):
    """Refuses labels a `TaskHead` cannot train on: class ids beyond its outputs, a one-hot
    width other than its classes, binary labels outside [0, 1], NaN, strings."""
    labels = to_numpy(labels)
    received = f"{arg} labels{where}"
    task, classes = head.task, head.num_outputs
    if labels.size == 0:
        return
    if labels.dtype == object or labels.dtype.kind not in "biuf":
        raise ValueError(
            f"`{arg}` labels must be numbers for a {task} head (class ids, one-hot rows or "
            f"targets). Received: {received} of dtype {labels.dtype}"
        )
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise ValueError(
            f"`{arg}` labels hold NaN or infinite values. Received: {received} with "
            f"{int((~np.isfinite(labels)).sum())} non-finite values"
        )
    width = labels.shape[-1] if labels.ndim >= 2 else None
    if labels.ndim > 2 or (width is not None and width != 1 and task in ("binary",)):
        raise ValueError(
            f"`{arg}` labels must be one value per image for a {task} head. "
            f"Received: {received} of shape {labels.shape}"
        )
    if task == "multiclass" and head.sparse_labels:
        if width not in (None, 1):
            raise ValueError(
                f"`{arg}` labels are one-hot rows of {width} classes, and the head takes class "
                f"ids of {classes} classes (sparse_labels=True): pass class ids "
                "(np.argmax(y, axis=-1)) or a head with sparse_labels=False. "
                f"Received: {received} of shape {labels.shape}"
            )
        _check_class_ids(labels.reshape(-1), classes, arg, received)
    elif task == "multiclass" and width is None:
        raise ValueError(
            f"`{arg}` labels are class ids, and the head takes one-hot rows of {classes} "
            "classes (sparse_labels=False): pass keras.utils.to_categorical(y, "
            f"{classes}). Received: {received} of shape {labels.shape}"
        )
    elif task in ("multiclass", "multilabel") or (task == "regression" and classes > 1):
        if width != classes:
            kind = "one-hot rows" if task == "multiclass" else "rows"
            raise ValueError(
                f"`{arg}` has labels of {width or 1} classes; the head has {classes} "
                f"({task} takes {kind} of {classes} values). "
                f"Received: {received} of shape {labels.shape}"
            )
    elif task == "regression" and width not in (None, 1):
        raise ValueError(
            f"`{arg}` has targets of {width} values; the head has 1 output. "
            f"Received: {received} of shape {labels.shape}"
        )
    if task in ("binary", "multilabel") or (task == "multiclass" and not head.sparse_labels):
        values = labels.reshape(-1)
        if np.any((values < 0) | (values > 1)):
            raise ValueError(
                f"`{arg}` has {task} labels outside [0, 1]. Received: {received} such as "
                f"{sorted(set(values[(values < 0) | (values > 1)].tolist()))[:5]}"
            )


def _check_class_ids(values, classes, arg, received):
    outside = (values < 0) | (values >= classes) | (values != np.round(values))
    if np.any(outside):
        bad = sorted(set(values[outside].tolist()))[:5]
        raise ValueError(
            f"`{arg}` has labels the head does not have: it has {classes} classes "
            f"(0..{classes - 1}); found {bad}. Received: {received}"
        )


def warn_if_rescaled(images, arg="x"):
    """Warns when float images look already scaled: kerastl models take 0..255."""
    if images.dtype.kind != "f" or images.size == 0:
        return
    low, high = float(np.min(images)), float(np.max(images))
    if low < 0 or high <= 1.0:
        warnings.warn(
            f"`{arg}` holds values in [{low:.3g}, {high:.3g}]: it looks already "
            "normalised. kerastl models normalise inside and take raw 0..255 images; "
            "feed them unscaled.",
            stacklevel=3,
        )


def check_split(validation_split):
    if validation_split is not None and not (
        isinstance(validation_split, float) and 0 < validation_split < 1
    ):
        raise ValueError(
            "`validation_split` must be None or a float in (0, 1). "
            f"Received: validation_split={validation_split!r}"
        )


def check_batch_size(batch_size):
    return check_positive_int(batch_size, "batch_size")
