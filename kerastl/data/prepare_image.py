import os

import numpy as np

from kerastl.data.checks import check_images

COLOR_MODES = ("rgb", "grayscale")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "Reading image files needs Pillow: `pip install kerastl[images]`."
        ) from None
    return Image


def _target(target_size):
    if target_size is None:
        return None
    if isinstance(target_size, int) and not isinstance(target_size, bool):
        target_size = (target_size, target_size)
    if not (
        isinstance(target_size, (tuple, list))
        and len(target_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in target_size)
    ):
        raise ValueError(
            "`target_size` must be None, an int or (height, width). "
            f"Received: target_size={target_size!r}"
        )
    return tuple(target_size)


def load_image(path, image_size=None, color_mode="rgb"):
    """One image file as a uint8 array `(h, w, 3)` (or `(h, w, 1)` for grayscale)."""
    Image = _pil()
    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if color_mode == "rgb" else "L")
            if image_size is not None:
                image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
            array = np.asarray(image, dtype="uint8")
    except (OSError, ValueError) as e:
        raise ValueError(
            f"Could not read an image from this file ({e}). Received: path={path!r}"
        ) from None
    return array[..., None] if array.ndim == 2 else array


def prepare_image(image, target_size=None):
    """One image (file path, PIL image or array) as a batch `(1, h, w, 3)` for `predict`.

    The values stay raw, 0..255 as float32: kerastl models normalise inside.
    Grayscale images become RGB; RGBA files and PIL images lose alpha.

    Args:
        image: a path (`str` / `os.PathLike`), a `PIL.Image.Image`, or an array
            `(h, w)`, `(h, w, 1)` or `(h, w, 3)` of a numeric dtype.
        target_size: None (keep the size: a model with a resizing pipeline
            takes any size), an int or `(height, width)`.

    Example:

    ```python
    photo = np.random.randint(0, 256, (120, 80, 3)).astype("uint8")
    batch = kerastl.data.prepare_image(photo, target_size=(96, 96))
    print(batch.shape, batch.dtype)  # (1, 96, 96, 3) float32
    ```
    """
    size = _target(target_size)
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"No image file at this path. Received: image={image!r}")
        return load_image(image, size)[None].astype("float32")
    if _is_pil(image):
        array = np.asarray(image.convert("RGB"), dtype="uint8")
    elif isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        check_images(array, arg="image", batched=False)
    else:
        raise ValueError(
            "`image` must be a file path, a PIL image or an array. "
            f"Received: image={type(image).__name__}"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if size is not None and array.shape[:2] != size:
        # PIL resizes uint8 exactly like the file path; floats go through float mode.
        array = _resize(array, size)
    return array[None].astype("float32")


def _is_pil(obj):
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(obj, Image.Image)


def _resize(array, size):
    Image = _pil()
    height, width = size
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((width, height), Image.BILINEAR))
    channels = [
        np.asarray(
            Image.fromarray(array[..., c].astype("float32"), mode="F").resize(
                (width, height), Image.BILINEAR
            )
        )
        for c in range(array.shape[-1])
    ]
    return np.stack(channels, axis=-1)
