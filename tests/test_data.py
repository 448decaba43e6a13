import os

import numpy as np
import pytest
from PIL import Image
from support import RAMP8, mobilenet_extractor, ramp_image, write_png16

from kerastl import data, heads
from kerastl.data.images import resize_image
from kerastl.models import build_model


def _digits(count=30):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:count] * 16).clip(0, 255).astype("uint8")  # 0..16 -> 0..255
    return images, digits.target[:count]


def _tiny_model(head, weights=None):
    extractor = mobilenet_extractor(weights, input_shape=(32, 32, 3))
    return build_model(extractor, head)


@pytest.fixture
def class_folders(tmp_path):
    """digits/<name>/<i>.png for the digits 0, 1, 2 (lossless, 8x8 grayscale)."""
    from PIL import Image

    images, labels = _digits(60)
    root = tmp_path / "digits"
    names = {0: "zero", 1: "one", 2: "two"}
    kept = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if label in names:
            folder = root / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:03d}.png")
            kept.append((names[label], i, image))
    (root / "one" / "notes.txt").write_text("not an image")
    return root, kept


# --- arrays ----------------------------------------------------------------------


def test_from_arrays_batches_shuffles_and_splits(photos):
    x, y = photos[:10], np.arange(10)
    batches = data.from_arrays(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    epoch = [batches[i] for i in range(len(batches))]
    assert [b[0].shape for b in epoch] == [(4, 96, 96, 3), (4, 96, 96, 3), (2, 96, 96, 3)]
    seen = np.concatenate([b[1] for b in epoch])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    for xb, yb in epoch:  # images stay with their labels
        np.testing.assert_array_equal(xb, x[yb])
    batches.on_epoch_end()
    assert list(np.concatenate([batches[i][1] for i in range(3)])) != list(seen)

    train, val = data.from_arrays(x, y, batch_size=4, validation_split=0.3, seed=1)
    train_y = np.concatenate([train[i][1] for i in range(len(train))])
    val_y = np.concatenate([val[i][1] for i in range(len(val))])
    assert len(val_y) == 3 and len(train_y) == 7
    assert set(train_y).isdisjoint(val_y)
    assert list(val_y) == sorted(val_y)  # the validation part is never shuffled
    assert data.from_arrays(x, batch_size=4)[0][0].shape == (4, 96, 96, 3)  # images only


def _split_labels(train, val):
    def labels(batches):
        return np.concatenate([batches[i][1] for i in range(len(batches))])

    return labels(train), labels(val)


def test_validation_split_is_stratified_by_class():
    """Each class gives its share; a class of 2+ gives at least one and keeps one."""
    y = np.repeat([0, 1, 2], [11, 4, 15])
    y = y[np.random.default_rng(0).permutation(len(y))]
    x = np.zeros((len(y), 4, 4, 3), "uint8")
    for seed in range(5):
        train_y, val_y = _split_labels(
            *data.from_arrays(x, y, batch_size=8, validation_split=0.5, seed=seed)
        )
        # Shares of 5.5, 2, 7.5: one of the two halves goes to validation.
        assert np.bincount(val_y).tolist() in ([6, 2, 7], [5, 2, 8])
        assert np.bincount(train_y).tolist() == (np.bincount(y) - np.bincount(val_y)).tolist()

    counts = [20, 6, 2, 1, 1]
    y = np.repeat(np.arange(5), counts)
    x = np.arange(len(y))[:, None, None, None] * np.ones((1, 2, 2, 3), "float32")
    splits = {}
    for split, expected in ((0.1, [1, 1, 1, 0, 0]), (0.25, [5, 2, 1, 0, 0])):
        train, val = data.from_arrays(x, y, batch_size=64, validation_split=split, seed=3)
        train_y, val_y = _split_labels(train, val)
        assert np.bincount(val_y, minlength=5).tolist() == expected
        assert (np.bincount(train_y, minlength=5) + expected).tolist() == counts
        splits[split] = val[0][0][:, 0, 0, 0].tolist()
    # The same seed draws the same images; another seed other ones.
    again = data.from_arrays(x, y, batch_size=64, validation_split=0.25, seed=3)[1]
    assert again[0][0][:, 0, 0, 0].tolist() == splits[0.25]
    other = data.from_arrays(x, y, batch_size=64, validation_split=0.25, seed=4)[1]
    assert other[0][0][:, 0, 0, 0].tolist() != splits[0.25]

    one_hot = np.eye(5, dtype="float32")[y]  # categorical labels split alike
    _, val = data.from_arrays(x, one_hot, batch_size=64, validation_split=0.1, seed=3)
    assert val[0][1].sum(axis=0).tolist() == [1, 1, 1, 0, 0]


def test_validation_split_of_continuous_or_multi_hot_targets_is_random():
    x = np.arange(10)[:, None, None, None] * np.ones((1, 4, 4, 3), "uint8")
    _, unlabelled = data.from_arrays(x, validation_split=0.3, seed=0)
    multi_hot = np.random.default_rng(0).integers(0, 2, (10, 4)).astype("float32")
    for targets in (np.linspace(0.05, 0.95, 10), multi_hot):  # no one class per image
        train, val = data.from_arrays(x, targets, validation_split=0.3, seed=0)
        assert len(train.images) == 7
        np.testing.assert_array_equal(val.images, unlabelled.images)


def test_from_arrays_fits_on_this_backend(photos):
    model = _tiny_model(heads.multiclass(3))
    train, val = data.from_arrays(
        photos[:12, ::3, ::3], np.arange(12) % 3, batch_size=4, validation_split=0.25, seed=0
    )
    history = model.fit(train, validation_data=val, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "val_accuracy" in history.history


def test_mixup_and_cutmix_mix_images_and_one_hot_labels(photos):
    x = photos[:8]
    y = np.eye(2, dtype="float32")[np.arange(8) % 2]
    for mix in ("mixup", "cutmix"):
        batches = data.from_arrays(x, y, batch_size=8, shuffle=False, mix=mix, seed=1)
        # Each draw mixes anew; a single draw may pick a whole-image box.
        draws = [batches[0] for _ in range(3)]
        for _, yb in draws:
            np.testing.assert_allclose(yb.sum(-1), 1.0, atol=1e-5)
        assert any(((yb > 0.01) & (yb < 0.99)).any() for _, yb in draws), mix  # soft labels
        assert not np.allclose(draws[0][0], x)
    with pytest.raises(ValueError, match="one-hot"):
        data.from_arrays(x, np.arange(8) % 2, mix="mixup")


_X = np.full((4, 8, 8, 3), 100.0)


def _nan(value):
    x = _X.copy()
    x[2, 0, 0, 0] = value
    return x


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (np.zeros((4, 8, 8), "uint8"), None, {}, r"Received: x of shape \(4, 8, 8\)"),
        (np.zeros((4, 8, 8, 4), "uint8"), None, {}, r"3 \(RGB\) channels"),
        (np.array([[[["a"] * 3] * 2] * 2]), None, {}, "Received: x of dtype <U1"),
        (np.zeros((4, 8, 8, 3), bool), None, {}, "Received: x of dtype bool"),
        ([_X[0], _X[1, :4]], None, {}, r"ragged.*Received: x as a list of 2 images"),
        (_nan(np.nan), None, {}, r"NaN or infinite.*image 2.*Received: x with 1 NaN"),
        (_nan(np.inf), None, {}, r"NaN or infinite.*Received: x with 0 NaN and 1 infinite"),
        (_X, np.zeros(3), {}, r"Received: y labels of shape \(3,\)"),
        (_X, 3, {}, r"4 images but a single value.*Received: y labels of shape \(\)"),
        (_X, [0, np.nan, 1, 0], {}, r"`y` holds NaN.*Received: y with 1 non-finite"),
        (_X, ["cat", "dog", "cat", "dog"], {}, r"`y` must be numbers.*Received: y of dtype <U3"),
        (np.zeros((0, 8, 8, 3)), None, {}, "holds no images"),
        (_X, None, {"batch_size": 0}, "Received: batch_size=0"),
        (_X, None, {"validation_split": 1.5}, "Received: validation_split=1.5"),
        (_X, None, {"mix": "blend"}, "Received: mix='blend'"),
        (_X, None, {"workers": 0}, "Received: workers=0"),
        (_X, [0, 1, 2, 0], {"class_names": ["a", "b"]}, r"names 2 classes.*ids up to 2"),
    ],
    ids=[
        "rank",
        "channels",
        "strings",
        "bool",
        "ragged",
        "nan",
        "inf",
        "labels",
        "scalar-y",
        "nan-y",
        "string-y",
        "empty",
        "batch",
        "split",
        "mix",
        "workers",
        "class-count",
    ],
)
def test_from_arrays_bad_input(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.from_arrays(x, y, **kwargs)


def test_from_arrays_and_image_batches_bad_types():
    with pytest.raises(TypeError, match=r"`class_names` must be a list.*Received: class_names=5"):
        data.from_arrays(_X, [0, 1, 0, 1], class_names=5)
    with pytest.raises(ValueError, match=r"Received: batch_size=0"):
        data.ImageBatches(_X, batch_size=0)
    with pytest.raises(ValueError, match=r"one per image \(4 images\).*labels of shape \(3,\)"):
        data.ImageBatches(_X, np.arange(3))
    with pytest.raises(ValueError, match=r"Received: workers=0"):
        data.ImageBatches(_X, workers=0)


def test_already_normalised_images_warn():
    with pytest.warns(UserWarning, match="looks already normalised"):
        data.from_arrays(np.random.uniform(0, 1, (4, 8, 8, 3)).astype("float32"))


# --- class folders ---------------------------------------------------------------


def test_from_directory_reads_class_folders_in_order(class_folders):
    root, kept = class_folders
    batches = data.from_directory(
        root, image_size=(8, 8), color_mode="grayscale", batch_size=5, shuffle=False, workers=1
    )
    assert batches.class_names == ["one", "two", "zero"]  # sorted, like Keras
    xs = np.concatenate([batches[i][0] for i in range(len(batches))])
    ys = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert xs.shape == (len(kept), 8, 8, 1) and xs.dtype == np.float32  # one dtype per batch
    expected = sorted(kept, key=lambda item: (item[0], item[1]))
    assert [batches.class_names[label] for label in ys] == [name for name, _, _ in expected]
    np.testing.assert_array_equal(xs[..., 0], np.stack([image for _, _, image in expected]))

    rgb = data.from_directory(root, image_size=20, label_mode="categorical", batch_size=4)
    xb, yb = rgb[0]
    assert xb.shape == (4, 20, 20, 3) and yb.shape == (4, 3) and yb.dtype == np.float32
    train, val = data.from_directory(root, 16, validation_split=0.25, seed=0)
    assert len(train.images) + len(val.images) == len(kept)
    assert set(train.images).isdisjoint(val.images)
    counts = [sum(name == n for n, _, _ in kept) for name in val.class_names]
    shares = np.bincount(val.labels, minlength=3) - np.asarray(counts) * 0.25
    assert np.abs(shares).max() < 1  # stratified: each class gives its quarter


def test_from_directory_reads_16bit_and_8bit_files_alike(tmp_path, photos):
    """A class folder of 16-bit PNGs reads as its 8-bit twin (not clipped to 255)."""
    root = tmp_path / "mixed"
    for name in ("eight", "sixteen"):
        (root / name).mkdir(parents=True)
    Image.fromarray(photos[0]).save(root / "eight" / "photo.png")
    Image.fromarray(photos[1][..., 0]).save(root / "eight" / "gray.png")
    write_png16(root / "sixteen" / "gray16.png", photos[1][..., 0].astype("uint16") * 257)
    write_png16(root / "sixteen" / "rgb48.png", photos[0].astype("uint16") * 257)
    write_png16(root / "sixteen" / "ramp16.png", ramp_image(1)[..., 0])
    batches = data.from_directory(root, image_size=96, batch_size=5, shuffle=False, workers=1)
    x, y = batches[0]
    assert x.dtype == np.float32 and list(y) == [0, 0, 1, 1, 1]
    # eight/gray, eight/photo, sixteen/gray16, sixteen/ramp16, sixteen/rgb48 (sorted)
    np.testing.assert_array_equal(x[2], x[0])
    np.testing.assert_array_equal(x[4], x[1])
    ramp = data.from_directory(root, image_size=(4, 256), batch_size=5, shuffle=False)[0][0][3]
    np.testing.assert_allclose(ramp[..., 0], np.tile(RAMP8, (4, 1)), atol=1e-4)
    grayscale = data.from_directory(root, 96, color_mode="grayscale", shuffle=False)[0][0]
    np.testing.assert_array_equal(grayscale[2, ..., 0], photos[1][..., 0])


def test_from_directory_fits_on_this_backend(class_folders):
    root, _ = class_folders
    batches = data.from_directory(root, image_size=(32, 32), batch_size=8, seed=0)
    model = _tiny_model(heads.multiclass(len(batches.class_names)))
    history = model.fit(batches, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_from_directory_bad_input(tmp_path, class_folders):
    root, _ = class_folders
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "dogs").mkdir()
    (empty / "dogs" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        data.from_directory(empty, 32)
    with pytest.raises(ValueError, match="no class folders with images"):
        data.from_directory(tmp_path / "empty" / "cats", 32)
    single = tmp_path / "single"
    os.makedirs(single / "cats")
    src = next((root / "zero").iterdir())
    (single / "cats" / "a.png").write_bytes(src.read_bytes())
    with pytest.raises(ValueError, match=r"at least 2 class folders; found \['cats'\]"):
        data.from_directory(single, 32)
    with pytest.raises(FileNotFoundError, match="Received: directory="):
        data.from_directory(tmp_path / "missing", 32)
    with pytest.raises(NotADirectoryError, match="Received: directory="):
        data.from_directory(src, 32)
    with pytest.raises(TypeError, match="Received: directory=int"):
        data.from_directory(42, 32)
    with pytest.raises(ValueError, match=r"Received: image_size=\(8,\)"):
        data.from_directory(root, (8,))
    with pytest.raises(ValueError, match="Received: color_mode='rgba'"):
        data.from_directory(root, 8, color_mode="rgba")
    with pytest.raises(ValueError, match="Received: label_mode='binary'"):
        data.from_directory(root, 32, label_mode="binary")
    with pytest.raises(ValueError, match="Received: image_size=None"):
        data.from_directory(root, None)
    corrupt = tmp_path / "corrupt"
    for name in ("a", "b"):
        (corrupt / name).mkdir(parents=True)
        (corrupt / name / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="Could not read an image"):
        data.from_directory(corrupt, 8)[0]


# --- tf.data and torch -----------------------------------------------------------


def test_tf_dataset_is_shuffled_batched_prefetched_and_fits(photos):
    tf = pytest.importorskip("tensorflow", reason="tf.data needs TensorFlow installed")
    images, labels = photos[:10, ::3, ::3], np.arange(10) % 2
    ds = data.from_tf_dataset(
        tf.data.Dataset.from_tensor_slices((images, labels)), batch_size=4, seed=0
    )
    shapes = [tuple(x.shape) for x, _ in ds.as_numpy_iterator()]
    assert shapes == [(4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]
    ys = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    assert sorted(ys) == sorted(labels)
    model = _tiny_model(heads.binary())
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match=r"Received: dataset images of shape \(None, 32, 32\)"):
        data.from_tf_dataset(tf.data.Dataset.from_tensor_slices(images[..., 0]))
    with pytest.raises(ValueError, match=r"shuffle buffer.*Received: shuffle=-5"):
        data.from_tf_dataset(tf.data.Dataset.from_tensor_slices((images, labels)), shuffle=-5)
    with pytest.raises(ValueError, match="Received: dataset=ndarray"):
        data.from_tf_dataset(images)


def test_torch_dataset_channels_first_becomes_channels_last_and_fits(photos):
    torch = pytest.importorskip("torch", reason="a DataLoader needs torch installed")

    class ChannelsFirst(torch.utils.data.Dataset):
        def __init__(self, images, labels):
            self.images, self.labels = images, labels

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return torch.from_numpy(self.images[i].transpose(2, 0, 1).copy()), self.labels[i]

    images, labels = photos[:10, ::3, ::3], np.arange(10) % 3
    loader = data.from_torch_dataset(ChannelsFirst(images, labels), batch_size=4, shuffle=False)
    xb, yb = next(iter(loader))
    assert tuple(xb.shape) == (4, 32, 32, 3)
    np.testing.assert_array_equal(xb.numpy(), images[:4])
    np.testing.assert_array_equal(yb.numpy(), labels[:4])
    model = _tiny_model(heads.multiclass(3))
    history = model.fit(
        data.from_torch_dataset(ChannelsFirst(images, labels), batch_size=4, seed=0),
        epochs=1,
        verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    assert data.from_torch_dataset(loader) is loader
    with pytest.raises(ValueError, match="Received: dataset=list"):
        data.from_torch_dataset([1, 2])
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 8, 8, 3), torch.zeros(0))
    with pytest.raises(ValueError, match=r"holds no batches.*Received: dataset=DataLoader of 0"):
        data.from_torch_dataset(torch.utils.data.DataLoader(empty))
    with pytest.raises(ValueError, match=r"holds no images.*Received: dataset of length 0"):
        data.from_torch_dataset(empty)


# --- one image ---------------------------------------------------------------------


def test_prepare_image_from_path_pil_and_arrays(tmp_path, photos):
    photo = photos[0]
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    from_path = data.prepare_image(str(path))
    assert from_path.shape == (1, 96, 96, 3) and from_path.dtype == np.float32
    np.testing.assert_array_equal(from_path[0], photo)
    np.testing.assert_array_equal(data.prepare_image(path), from_path)  # os.PathLike
    rgba = Image.fromarray(photo).convert("RGBA")
    np.testing.assert_array_equal(data.prepare_image(rgba), from_path)
    np.testing.assert_array_equal(data.prepare_image(np.asarray(rgba)), from_path)
    resized = data.prepare_image(str(path), target_size=(40, 50))
    assert resized.shape == (1, 40, 50, 3)
    expected = np.asarray(Image.fromarray(photo).resize((50, 40), Image.BILINEAR))
    np.testing.assert_array_equal(resized[0], expected)
    np.testing.assert_array_equal(data.prepare_image(photo, target_size=(40, 50)), resized)
    gray = data.prepare_image(photo[..., 0])
    assert gray.shape == (1, 96, 96, 3)
    np.testing.assert_array_equal(gray[0, ..., 2], photo[..., 0])
    as_float = data.prepare_image(photo.astype("float64"), target_size=48)
    assert as_float.shape == (1, 48, 48, 3) and as_float.dtype == np.float32
    np.testing.assert_allclose(as_float, data.prepare_image(photo, 48), atol=1.0)


def test_load_image_and_prepare_image_read_16bit_files(tmp_path, photos):
    """The bug: 16-bit grayscale PNGs read as mostly 255 (convert("L") clips)."""
    gray16 = write_png16(tmp_path / "gray16.png", ramp_image(1)[..., 0])
    rgb48 = write_png16(tmp_path / "rgb48.png", ramp_image(3))
    rgba64 = write_png16(tmp_path / "rgba64.png", ramp_image(4))
    for path in (gray16, rgb48, rgba64):
        image = data.load_image(path)
        assert image.shape == (4, 256, 3)
        assert np.abs(image[0, :, 0].astype(float) - np.arange(256)).max() <= 1, path
        np.testing.assert_array_equal(data.prepare_image(path)[0], image)
    loaded = data.load_image(gray16, color_mode="grayscale")
    assert loaded.dtype == np.float32 and loaded.shape == (4, 256, 1)
    np.testing.assert_allclose(loaded[..., 0], np.tile(RAMP8, (4, 1)), atol=1e-4)
    photo16 = write_png16(tmp_path / "photo16.png", photos[0].astype("uint16") * 257)
    np.testing.assert_array_equal(
        data.prepare_image(photo16, 48), data.prepare_image(photos[0], 48)
    )
    np.testing.assert_array_equal(data.load_image(photo16, 48), resize_image(photos[0], 48))


def test_load_image_reads_files_one_way(tmp_path, photos):
    path = tmp_path / "photo.png"
    Image.fromarray(photos[1]).save(path)
    np.testing.assert_array_equal(data.load_image(path), photos[1])
    assert data.load_image(path, 32).shape == (32, 32, 3)
    np.testing.assert_array_equal(
        data.load_image(path, (30, 40)), resize_image(photos[1], (30, 40))
    )
    gray = data.load_image(path, color_mode="grayscale")
    pil_gray = np.asarray(Image.fromarray(photos[1]).convert("L")).astype(int)
    assert gray.dtype == np.uint8 and np.abs(gray[..., 0].astype(int) - pil_gray).max() <= 1
    for name in ("фото_猫_ü.png", "p" * 196 + ".png"):  # unicode; 200 characters
        (tmp_path / name).write_bytes(path.read_bytes())
        np.testing.assert_array_equal(data.load_image(tmp_path / name), photos[1])
        np.testing.assert_array_equal(data.prepare_image(str(tmp_path / name))[0], photos[1])


def test_prepare_image_predicts_a_class_name(tmp_path, photos, mobilenet_weights):
    extractor = mobilenet_extractor(mobilenet_weights)
    model = build_model(extractor, heads.binary(class_names=["cat", "dog"]), compile=False)
    path = tmp_path / "chelsea.jpg"
    Image.fromarray(photos[2]).resize((150, 120)).save(path)
    batch = data.prepare_image(path)
    with Image.open(path) as image:  # decoded independently of kerastl
        decoded = np.asarray(image.convert("RGB"), "float32")[None]
    np.testing.assert_array_equal(batch, decoded)
    probs = model.predict(batch, verbose=0)
    assert probs.shape == (1, 1)
    np.testing.assert_allclose(probs, model.predict(decoded, verbose=0), atol=1e-6)
    names = heads.head_info(model)["class_names"]
    p = float(probs[0, 0])
    assert names == ["cat", "dog"] and 0.0 < p < 1.0
    assert names[int(p > 0.5)] == ("dog" if p > 0.5 else "cat")


def _bad_image(tmp_path, kind):
    real = tmp_path / "real.png"
    Image.fromarray(np.full((32, 32, 3), 9, "uint8")).save(real)
    if kind == "real":
        return str(real)
    if kind == "directory":
        return str(tmp_path)
    if kind == "missing":
        return str(tmp_path / "missing.jpg")
    path = tmp_path / "broken.png"
    path.write_bytes(real.read_bytes()[:20] if kind == "20 bytes" else b"not an image")
    return str(path)


BAD_IMAGES = [
    ("rank", np.zeros((1, 8, 8, 3)), {}, ValueError, r"Received: image.shape=\(1, 8, 8, 3\)"),
    ("2ch", np.zeros((8, 8, 2)), {}, ValueError, r"Received: image.shape=\(8, 8, 2\)"),
    ("5ch", np.zeros((8, 8, 5)), {}, ValueError, r"Received: image.shape=\(8, 8, 5\)"),
    ("empty", np.zeros((0, 8, 3)), {}, ValueError, r"Received: image.shape=\(0, 8, 3\)"),
    ("nan", np.full((8, 8, 3), np.nan), {}, ValueError, "NaN or inf.*Received: image="),
    ("inf", np.full((8, 8), -np.inf), {}, ValueError, "NaN or inf.*Received: image="),
    ("string", np.full((8, 8, 3), "x"), {}, ValueError, "Received: image.dtype=<U1"),
    ("bool", np.ones((8, 8, 3), bool), {}, ValueError, "Received: image.dtype=bool"),
    ("object", np.zeros((8, 8, 3), object), {}, ValueError, "Received: image.dtype=object"),
    ("complex", np.zeros((8, 8, 3), complex), {}, ValueError, "Received: image.dtype=complex"),
    ("type", 42, {}, TypeError, "Received: image=int"),
    (
        "size",
        np.zeros((8, 8, 3)),
        {"target_size": (8,)},
        ValueError,
        r"Received: target_size=\(8,\)",
    ),
    ("directory", "directory", {}, IsADirectoryError, "Received: image='"),
    ("missing", "missing", {}, FileNotFoundError, "Received: image='.*missing.jpg'"),
    ("20 bytes", "20 bytes", {}, ValueError, "Could not read an image.*Received: image='"),
    ("text", "text", {}, ValueError, "Could not read an image.*Received: image='"),
]


@pytest.mark.parametrize(
    "image, kwargs, error, match", [case[1:] for case in BAD_IMAGES], ids=[c[0] for c in BAD_IMAGES]
)
def test_prepare_image_bad_input(tmp_path, image, kwargs, error, match):
    if isinstance(image, str):
        image = _bad_image(tmp_path, image)
    with pytest.raises(error, match=match):
        data.prepare_image(image, **kwargs)


@pytest.mark.parametrize(
    "path, kwargs, error, match",
    [
        ("directory", {}, IsADirectoryError, "is a directory.*Received: path='"),
        ("missing", {}, FileNotFoundError, "No image file.*Received: path='"),
        ("20 bytes", {}, ValueError, "Could not read an image.*Received: path='"),
        ("text", {}, ValueError, "Could not read an image.*Received: path='"),
        (np.zeros((8, 8, 3), "uint8"), {}, TypeError, "Received: path=ndarray"),
        ("real", {"image_size": (0, 8)}, ValueError, r"Received: image_size=\(0, 8\)"),
        ("real", {"color_mode": "rgba"}, ValueError, "Received: color_mode='rgba'"),
    ],
    ids=["directory", "missing", "20 bytes", "text", "array", "size", "color_mode"],
)
def test_load_image_bad_input(tmp_path, path, kwargs, error, match):
    if isinstance(path, str):
        path = _bad_image(tmp_path, path)
    with pytest.raises(error, match=match):
        data.load_image(path, **kwargs)
