"""Checks shared by the data sources: what a kerastl model accepts as images."""

import warnings

import numpy as np

from kerastl._checks import check_positive_int


def check_images(images, arg="x", batched=True):
    """Raises a clear error unless `images` is a numeric (batch,) h, w, 1|3 array."""
    shape = tuple(images.shape)
    rank = 4 if batched else 3
    if len(shape) != rank:
        layout = "(batch, height, width, channels)" if batched else "(height, width, channels)"
        raise ValueError(
            f"`{arg}` must be images of rank {rank}, {layout}. Received: {arg}.shape={shape}"
        )
    if shape[-1] not in (1, 3):
        raise ValueError(
            f"`{arg}` must have 1 (grayscale) or 3 (RGB) channels, last. "
            f"Received: {arg}.shape={shape}"
        )
    dtype = np.dtype(getattr(images.dtype, "as_numpy_dtype", images.dtype))
    if dtype == np.bool_ or dtype.kind not in "iuf":
        raise ValueError(f"`{arg}` must have a numeric dtype. Received: {arg}.dtype={dtype}")


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
