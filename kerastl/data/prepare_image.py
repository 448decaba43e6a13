"""Single images for `predict`: one file, PIL image or array, read through `images`."""

import os
from typing import Any

import numpy as np

from kerastl.data.images import check_size, read_image

COLOR_MODES = ("rgb", "grayscale")


def load_image(
    path: str | os.PathLike[str],
    image_size: int | tuple[int, int] | None = None,
    color_mode: str = "rgb",
) -> np.ndarray:
    """One image file as an array `(h, w, 3)` (or `(h, w, 1)` for grayscale), raw 0..255.

    uint8 for 8-bit files; float32 for 16-bit ones, scaled to 0..255
    (`x * 255 / 65535`). Alpha is dropped; palette, CMYK and 1-bit images are
    converted. Resized with PIL's bilinear filter (see
    `kerastl.data.images.resize_image`).

    Args:
        path: the file (`str` / `os.PathLike`).
        image_size: None (keep the size), an int (a square: `96` is `(96, 96)`) or
            `(height, width)`.
        color_mode: `"rgb"` or `"grayscale"` (ITU-R 601 luma).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be an image file path. Received: path={type(path).__name__}")
    size = check_size(image_size, arg="image_size")
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"`color_mode` must be one of {COLOR_MODES}. Received: color_mode={color_mode!r}"
        )
    return read_image(path, size, channels=3 if color_mode == "rgb" else 1, arg="path")


def prepare_image(image: Any, target_size: int | tuple[int, int] | None = None) -> np.ndarray:
    """One image (file path, PIL image or array) as a batch `(1, h, w, 3)` for `predict`.

    The values stay raw, 0..255 as float32: kerastl models normalise inside.
    Grayscale images become RGB; RGBA files, PIL images and arrays lose alpha;
    16-bit files are scaled to 0..255.

    Args:
        image: a path (`str` / `os.PathLike`), a `PIL.Image.Image`, or an array
            `(h, w)`, `(h, w, 1)`, `(h, w, 3)` or `(h, w, 4)` of a numeric dtype.
        target_size: None (keep the size: a model with a resizing pipeline
            takes any size), an int (a square) or `(height, width)`. A 4-channel
            array's alpha is dropped, not composited.

    Example:

    ```python
    photo = np.random.randint(0, 256, (120, 80, 3)).astype("uint8")
    batch = kerastl.data.prepare_image(photo, target_size=(96, 96))
    print(batch.shape, batch.dtype)  # (1, 96, 96, 3) float32
    ```
    """
    size = check_size(target_size, arg="target_size")
    return read_image(image, size, channels=3, arg="image")[None].astype("float32")
