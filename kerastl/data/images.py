"""Reading images: the one place kerastl decodes, converts and resizes an image.

Files, PIL images and arrays all end up as a numpy array `(height, width,
channels)` of raw pixels on the 0..255 scale: uint8 for 8-bit sources, float32
for everything else (16-bit files keep their precision). `load_image`,
`prepare_image`, `ImageBatches` and `Predictor` all read through `read_image`.
"""

import numbers
import os
import struct

import numpy as np

# ITU-R 601 luma, the weights PIL's convert("L") uses.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# PIL modes of 16-bit grayscale (PNG, TIFF): convert("L") would clip them to 255.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def import_pil():
    """The `PIL.Image` module, or an ImportError that says how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "Reading image files needs Pillow: `pip install kerastl[images]`."
        ) from None
    return Image


def check_size(size, arg="size"):
    """`size` as `(height, width)`, or None; an int means a square."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    if not (
        isinstance(pair, (tuple, list))
        and len(pair) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in pair)
    ):
        raise ValueError(
            f"`{arg}` must be None, an int or (height, width). Received: {arg}={size!r}"
        )
    return (int(pair[0]), int(pair[1]))


def read_image(source, size=None, channels=3, arg="image"):
    """One image as a numpy array `(height, width, channels)` of raw 0..255 pixels.

    Decodes files, converts channels and resizes, the same way for every
    source. 16-bit grayscale files are scaled to 0..255 (`x * 255 / 65535`);
    alpha is dropped; palette, CMYK and 1-bit images become RGB or grayscale.

    Args:
        source: a file path (`str` / `os.PathLike`), a `PIL.Image.Image`, or a
            numeric array `(h, w)` or `(h, w, 1 | 3 | 4)` of raw 0..255 pixels
            (4 channels: RGBA, alpha dropped).
        size: None (keep the size), an int or `(height, width)`: resized with
            `resize_image`.
        channels: 3 (RGB) or 1 (grayscale, ITU-R 601 luma).
        arg: the name errors give the source.

    Returns:
        uint8 for 8-bit sources (files, PIL images, uint8 arrays), float32
        otherwise.

    Example:

    ```python
    photo = np.random.randint(0, 256, (120, 80, 4)).astype("uint8")  # RGBA
    image = kerastl.data.images.read_image(photo, size=64, channels=1)
    print(image.shape, image.dtype)  # (64, 64, 1) uint8
    ```
    """
    size = check_size(size)
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")
    if isinstance(source, (str, os.PathLike)):
        array = _read_file(source, arg)
    elif _is_pil(source):
        array = _from_pil(source, arg, f"{arg}=<PIL image, mode {source.mode!r}>")
    elif isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        array = _check_array(source, arg)
    else:
        raise TypeError(
            f"`{arg}` must be an image file path, a PIL image or an array. "
            f"Received: {arg}={type(source).__name__}"
        )
    array = convert_channels(array, channels, arg)
    if size is not None:
        array = resize_image(array, size)
    return array


def convert_channels(array, channels, arg="image"):
    """`(h, w, 1 | 3 | 4)` pixels with 1 or 3 `channels`.

    1 -> 3 repeats the plane; 4 (RGBA) drops alpha, as PIL's `convert("RGB")`;
    3 -> 1 takes the ITU-R 601 luma `0.299 R + 0.587 G + 0.114 B`, rounded for
    uint8 (as PIL's `convert("L")`, which rounds in fixed point: within 1).
    """
    have = array.shape[-1]
    if have not in (1, 3, 4) or channels not in (1, 3):
        raise ValueError(
            f"`{arg}` must have 1, 3 or 4 channels, converted to 1 or 3 (channels={channels}). "
            f"Received: {arg}.shape={array.shape}"
        )
    if have == 4:
        array = array[..., :3]
    if array.shape[-1] == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=-1)
    luma = array.astype("float64") @ np.asarray(LUMA_WEIGHTS)
    if array.dtype == np.uint8:
        return np.floor(luma + 0.5).astype("uint8")[..., None]
    return luma.astype("float32")[..., None]


def resize_image(array, size):
    """`(h, w, c)` pixels resized to `size` with PIL's bilinear filter.

    PIL's bilinear widens its support when it shrinks (antialiasing). uint8
    pixels are resized in PIL's 8-bit mode (rounded, as PIL resizes a file);
    every other dtype in its 32-bit float mode ("F"), returned as float32.

    Args:
        array: a numpy array `(height, width, channels)`.
        size: an int or `(height, width)`.
    """
    size = check_size(size)
    if size is None:
        raise ValueError("`size` must be an int or (height, width). Received: size=None")
    if not isinstance(array, np.ndarray) or array.ndim != 3 or array.size == 0:
        shape = getattr(array, "shape", None)
        raise ValueError(
            "`array` must be a non-empty numpy array (height, width, channels). "
            f"Received: array.shape={shape}"
        )
    if array.dtype.kind not in "iuf":
        raise ValueError(f"`array` must have a numeric dtype. Received: array.dtype={array.dtype}")
    if array.shape[:2] == size:
        return array if array.dtype == np.uint8 else array.astype("float32")
    Image = import_pil()
    # 2-D uint8 planes are PIL mode "L", float32 planes mode "F".
    dtype = "uint8" if array.dtype == np.uint8 else "float32"
    height, width = size
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(array[..., c], dtype=dtype)).resize(
                (width, height), Image.BILINEAR
            )
        )
        for c in range(array.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def _is_pil(obj):
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(obj, Image.Image)


def _decode_errors(Image):
    # What PIL raises on a corrupt, truncated or unsupported image (ValueError: a mode
    # it cannot convert, or a closed image).
    return (OSError, SyntaxError, EOFError, ValueError, struct.error, Image.DecompressionBombError)


def _read_file(path, arg):
    shown = f"{arg}={path!r}"
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"`{arg}` is a directory, not an image file. Received: {shown}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No image file at this path. Received: {shown}")
    Image = import_pil()
    try:
        image = Image.open(path)
    except PermissionError as e:
        raise PermissionError(f"Cannot open this file ({e.strerror}). Received: {shown}") from None
    except _decode_errors(Image) as e:
        raise ValueError(
            f"Could not read an image from this file ({e}). Received: {shown}"
        ) from None
    with image:
        return _from_pil(image, arg, shown)


def _from_pil(image, arg, shown):
    """The pixels of a PIL image: uint8 `(h, w, 1 | 3)`, or float32 `(h, w, 1)` for
    16-bit and float modes."""
    Image = import_pil()
    try:
        image.load()  # a truncated file fails here
        mode = image.mode
        if mode in SIXTEEN_BIT_MODES:
            array = (np.asarray(image, dtype="float64") * 255.0 / 65535.0).astype("float32")
        elif mode == "F":
            array = np.asarray(image, dtype="float32")
        else:
            if mode == "La":
                image = image.convert("LA")
            elif mode in ("P", "PA"):
                image = image.convert("RGBA")  # applies palette transparency without a warning
            # 16-bit RGB(A) PNGs open as "RGB"/"RGBA" already (PIL keeps the high byte).
            array = np.asarray(image.convert("L" if image.mode in ("1", "L", "LA") else "RGB"))
    except _decode_errors(Image) as e:
        raise ValueError(f"Could not read an image ({e}). Received: {shown}") from None
    array = array[..., None] if array.ndim == 2 else array
    if array.size == 0:
        raise ValueError(f"`{arg}` is empty. Received: {arg}.shape={array.shape}")
    _check_finite(array, arg)
    return array


def _check_finite(array, arg):
    if array.dtype.kind != "f":
        return
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(
            f"`{arg}` holds NaN or infinite values: pixels must be finite. "
            f"Received: {arg}=<{array.dtype} array {array.shape}, {bad} NaN or inf>"
        )


def _check_array(source, arg):
    try:
        array = np.asarray(source)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(
            f"`{arg}` could not be read as an array ({e}). Received: {arg}={type(source).__name__}"
        ) from None
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise ValueError(
            f"`{arg}` must have a numeric (int or float) dtype. Received: {arg}.dtype={array.dtype}"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(
            f"`{arg}` must be one image, (height, width) or (height, width, channels). "
            f"Received: {arg}.shape={array.shape}"
        )
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"`{arg}` must have 1 (grayscale), 3 (RGB) or 4 (RGBA) channels, last. "
            f"Received: {arg}.shape={array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"`{arg}` is empty. Received: {arg}.shape={array.shape}")
    if array.dtype.kind == "f":
        _check_finite(array, arg)
        return array.astype("float32", copy=False)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"`{arg}` holds integers outside 0..255 ({low}..{high}): kerastl takes raw 8-bit "
            "pixel values. Scale 16-bit pixels with `x * 255 / 65535` (files and PIL images "
            f"are scaled when read). Received: {arg}=<{array.dtype} array {array.shape}, "
            f"values {low}..{high}>"
        )
    return array.astype("uint8", copy=False)
