"""`kerastl.data.images`: decoding, channel conversion and resizing, one way for every source."""

import numpy as np
import pytest
from PIL import Image
from support import RAMP8, ramp_image, write_png16

from kerastl.data import load_image, prepare_image
from kerastl.data.images import convert_channels, read_image, resize_image

# numpy and Pillow only: one backend's session runs it (conftest).
pytestmark = pytest.mark.backend_free


def test_the_png_writer_writes_what_pil_reads(tmp_path):
    gray = ramp_image(1)[..., 0]
    path = write_png16(tmp_path / "gray.png", gray)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(image), gray)
    rgb = ramp_image(3)
    with Image.open(write_png16(tmp_path / "rgb.png", rgb)) as image:
        assert image.mode == "RGB"  # PIL keeps the high byte of 48-bit RGB
        np.testing.assert_array_equal(np.asarray(image), rgb >> 8)


# --- 16-bit files (the bug: convert("L") clipped them to 255) -----------------------


@pytest.mark.parametrize("writer", ["pil", "png16"])
def test_16bit_grayscale_png_is_scaled_to_0_255(tmp_path, writer):
    gray = ramp_image(1)[..., 0]
    path = tmp_path / "ramp16.png"
    if writer == "pil":
        Image.fromarray(gray).save(path)  # mode I;16
    else:
        write_png16(path, gray)
    image = read_image(path, channels=1)
    assert image.shape == (4, 256, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], np.tile(RAMP8, (4, 1)), atol=1e-4)
    assert np.abs(image[0, :, 0] - np.arange(256)).max() <= 1  # the 8-bit ramp, within 1
    rgb = read_image(path)
    assert rgb.shape == (4, 256, 3)
    np.testing.assert_array_equal(rgb, np.repeat(image, 3, axis=-1))


@pytest.mark.parametrize("dtype, mode", [("<u2", "I;16"), (">u2", "I;16B"), ("int32", "I")])
def test_16bit_pil_images_in_memory_are_scaled(dtype, mode):
    image = Image.fromarray(ramp_image(1)[..., 0].astype(dtype))
    assert image.mode == mode
    got = read_image(image, channels=1)
    np.testing.assert_allclose(got[..., 0], np.tile(RAMP8, (4, 1)), atol=1e-4)


@pytest.mark.parametrize("channels", [3, 4], ids=["rgb48", "rgba64"])
def test_16bit_rgb_and_rgba_pngs_read_right(tmp_path, channels):
    pixels = ramp_image(channels)
    if channels == 4:
        pixels[..., 3] = np.random.default_rng(0).integers(0, 65536, pixels.shape[:2])
    image = read_image(write_png16(tmp_path / "colour.png", pixels))
    assert image.shape == (4, 256, 3)  # alpha dropped
    expected = pixels[..., :3] * 255.0 / 65535.0
    assert np.abs(image - expected).max() <= 1.0
    assert np.abs(image[0, :, 0].astype(int) - np.arange(256)).max() <= 1
    gray = read_image(tmp_path / "colour.png", channels=1)
    assert gray.shape == (4, 256, 1)


def test_16bit_gray_alpha_png_drops_alpha(tmp_path):
    pixels = np.stack([ramp_image(1)[..., 0], np.full((4, 256), 65535, "uint16")], -1)
    image = read_image(write_png16(tmp_path / "la.png", pixels), channels=1)
    assert np.abs(image[0, :, 0].astype(int) - np.arange(256)).max() <= 1


# --- 8-bit modes ------------------------------------------------------------------------


def test_rgba_palette_grayscale_and_bilevel_files(tmp_path, photos):
    photo = photos[0]
    alpha = np.random.default_rng(1).integers(0, 256, photo.shape[:2], dtype="uint8")
    Image.fromarray(np.dstack([photo, alpha])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), photo)

    palette = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB"))
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) > 4
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), expected)
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    transparent.save(tmp_path / "transparent.png")
    np.testing.assert_array_equal(read_image(tmp_path / "transparent.png"), expected)

    gray = photo[..., 1]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgb = read_image(tmp_path / "gray.png")
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, axis=-1))
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png", channels=1)[..., 0], gray)

    Image.fromarray(gray > 128).convert("1").save(tmp_path / "bilevel.png")
    bilevel = read_image(tmp_path / "bilevel.png", channels=1)[..., 0]
    np.testing.assert_array_equal(bilevel, np.where(gray > 128, 255, 0))


def test_cmyk_jpeg_becomes_rgb(tmp_path, photos):
    Image.fromarray(photos[1]).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as image:
        assert image.mode == "CMYK"
        expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "cmyk.jpg"), expected)


def test_unicode_and_long_file_names(tmp_path, photos):
    for name in ("chat_ünïcødé_猫_кот.png", "x" * 196 + ".png"):  # 200 characters
        path = tmp_path / name
        Image.fromarray(photos[2]).save(path)
        np.testing.assert_array_equal(read_image(str(path)), photos[2])
        np.testing.assert_array_equal(read_image(path, size=48), resize_image(photos[2], 48))


# --- channels and resizing --------------------------------------------------------------


def test_channel_conversion(photos):
    photo = photos[3]
    luma = convert_channels(photo, 1)
    assert luma.dtype == np.uint8
    pil_luma = np.asarray(Image.fromarray(photo).convert("L")).astype(int)
    assert np.abs(luma[..., 0].astype(int) - pil_luma).max() <= 1  # PIL rounds in fixed point
    as_float = convert_channels(photo.astype("float32"), 1)
    expected = photo.astype("float64") @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(as_float[..., 0], expected, rtol=1e-6)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(convert_channels(luma, 3), np.repeat(luma, 3, axis=-1))
    rgba = np.dstack([photo, np.zeros(photo.shape[:2], "uint8")])
    np.testing.assert_array_equal(convert_channels(rgba, 3), photo)
    np.testing.assert_array_equal(convert_channels(rgba, 1), luma)
    with pytest.raises(ValueError, match=r"Received: image.shape=\(96, 96, 2\)"):
        convert_channels(photo[..., :2], 3)


def test_resize_is_pil_bilinear_in_uint8_and_float_mode(photos):
    photo = photos[4]
    resized = resize_image(photo, (40, 50))
    assert resized.shape == (40, 50, 3) and resized.dtype == np.uint8
    expected = np.asarray(Image.fromarray(photo).resize((50, 40), Image.BILINEAR))
    np.testing.assert_array_equal(resized, expected)
    as_float = resize_image(photo.astype("float64"), (40, 50))
    assert as_float.dtype == np.float32
    plane = Image.fromarray(photo[..., 1].astype("float32"), mode="F")
    np.testing.assert_array_equal(
        as_float[..., 1], np.asarray(plane.resize((50, 40), Image.BILINEAR))
    )
    assert np.abs(as_float - resized).max() <= 1.0  # uint8 mode rounds
    np.testing.assert_array_equal(resize_image(photo, 96), photo)  # same size: untouched
    assert resize_image(photo[..., :1], 200).shape == (200, 200, 1)


def test_arrays_keep_their_values(photos):
    photo = photos[5]
    np.testing.assert_array_equal(read_image(photo), photo)
    assert read_image(photo).dtype == np.uint8
    assert read_image(photo.astype("int64")).dtype == np.uint8
    floats = read_image(photo.astype("float64") + 0.25)
    assert floats.dtype == np.float32
    np.testing.assert_allclose(floats, photo + 0.25)
    np.testing.assert_array_equal(read_image(photo[..., 0])[..., 2], photo[..., 0])
    pil = read_image(Image.fromarray(photo), size=(30, 20), channels=1)
    np.testing.assert_array_equal(pil, read_image(photo, size=(30, 20), channels=1))


# --- bad input --------------------------------------------------------------------------


def _bad_file(tmp_path, kind):
    if kind == "directory":
        return str(tmp_path)
    if kind == "missing":
        return str(tmp_path / "missing.png")
    buffer = tmp_path / "real.png"
    Image.fromarray(np.zeros((64, 64, 3), "uint8") + 7).save(buffer)
    data = buffer.read_bytes()
    path = tmp_path / f"{kind}.png"
    path.write_bytes({"20 bytes": data[:20], "truncated": data[: len(data) // 2]}.get(kind, b"txt"))
    return str(path)


BAD_FILES = [
    ("directory", IsADirectoryError, "is a directory"),
    ("missing", FileNotFoundError, "No image file"),
    ("20 bytes", ValueError, "Could not read an image"),
    ("truncated", ValueError, "Could not read an image"),
    ("text", ValueError, "Could not read an image"),
]

BAD_ARRAYS = [
    (np.zeros((0, 8, 3)), ValueError, r"is empty. Received: image.shape=\(0, 8, 3\)"),
    (np.full((8, 8, 3), np.nan), ValueError, "NaN or inf"),
    (np.full((8, 8), np.inf, "float32"), ValueError, "NaN or inf"),
    (np.zeros((8, 8, 3), bool), ValueError, "Received: image.dtype=bool"),
    (np.zeros((8, 8, 3), object), ValueError, "Received: image.dtype=object"),
    (np.zeros((8, 8, 3), complex), ValueError, "Received: image.dtype=complex128"),
    (np.full((8, 8, 3), "x"), ValueError, "Received: image.dtype=<U1"),
    (np.zeros((8,)), ValueError, r"Received: image.shape=\(8,\)"),
    (np.zeros((1, 8, 8, 3)), ValueError, r"Received: image.shape=\(1, 8, 8, 3\)"),
    (np.zeros((8, 8, 2)), ValueError, r"Received: image.shape=\(8, 8, 2\)"),
    (np.zeros((8, 8, 5)), ValueError, r"Received: image.shape=\(8, 8, 5\)"),
    (np.full((8, 8), 65535, "uint16"), ValueError, "outside 0..255"),
    (np.full((8, 8), -1), ValueError, "outside 0..255"),
    (42, TypeError, "Received: image=int"),
    (b"photo.png", TypeError, "Received: image=bytes"),
]
BAD_ARRAY_IDS = [
    "empty",
    "nan",
    "inf",
    "bool",
    "object",
    "complex",
    "string",
    "rank1",
    "rank4",
    "2ch",
    "5ch",
    "uint16",
    "negative",
    "int",
    "bytes",
]


@pytest.mark.parametrize("kind, error, match", BAD_FILES, ids=[k for k, _, _ in BAD_FILES])
def test_bad_files_are_refused_clearly(tmp_path, kind, error, match):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(error, match=f"{match}.*Received: image='"):
        read_image(path)


@pytest.mark.parametrize("source, error, match", BAD_ARRAYS, ids=BAD_ARRAY_IDS)
def test_bad_arrays_are_refused_clearly(source, error, match):
    with pytest.raises(error, match=match) as info:
        read_image(source)
    assert "Received: image" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "Received: size=0"),
        ({"size": (8, 8, 3)}, r"Received: size=\(8, 8, 3\)"),
        ({"size": True}, "Received: size=True"),
        ({"channels": 4}, "Received: channels=4"),
    ],
    ids=["zero", "rank", "bool", "channels"],
)
def test_bad_size_and_channels(kwargs, match):
    with pytest.raises(ValueError, match=match):
        read_image(np.zeros((8, 8, 3)), **kwargs)


@pytest.mark.backend_free
def test_an_int_image_size_is_a_square_and_alpha_is_dropped(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((50, 70, 3), "uint8")).save(path)
    assert load_image(path, image_size=96).shape == (96, 96, 3)
    rgba = np.zeros((20, 30, 4), "uint8")
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent: alpha is dropped, not composited
    batch = prepare_image(rgba)
    assert batch.shape == (1, 20, 30, 3) and batch[0, 0, 0].tolist() == [200.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"Received: image_size=True"):
        load_image(path, image_size=True)
