import os

import numpy as np
import pytest
from support import mobilenet_extractor

from kerastl import data, heads
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


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (np.zeros((4, 8, 8), "uint8"), None, {}, r"Received: x.shape=\(4, 8, 8\)"),
        (np.zeros((4, 8, 8, 4), "uint8"), None, {}, r"3 \(RGB\) channels"),
        (np.array([[[["a"] * 3] * 2] * 2]), None, {}, "Received: x.dtype=<U1"),
        (np.zeros((4, 8, 8, 3), bool), None, {}, "Received: x.dtype=bool"),
        (np.zeros((4, 8, 8, 3)), np.zeros(3), {}, "Received: len\\(y\\)=3"),
        (np.zeros((0, 8, 8, 3)), None, {}, "holds no images"),
        (np.zeros((4, 8, 8, 3)), None, {"batch_size": 0}, "Received: batch_size=0"),
        (np.zeros((4, 8, 8, 3)), None, {"validation_split": 1.5}, "Received: validation_split=1.5"),
        (np.zeros((4, 8, 8, 3)), None, {"mix": "blend"}, "Received: mix='blend'"),
    ],
    ids=["rank", "channels", "strings", "bool", "labels", "empty", "batch", "split", "mix"],
)
def test_from_arrays_bad_input(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.from_arrays(x, y, **kwargs)


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
    assert xs.shape == (len(kept), 8, 8, 1) and xs.dtype == np.uint8
    expected = sorted(kept, key=lambda item: (item[0], item[1]))
    assert [batches.class_names[label] for label in ys] == [name for name, _, _ in expected]
    np.testing.assert_array_equal(xs[..., 0], np.stack([image for _, _, image in expected]))

    rgb = data.from_directory(root, image_size=20, label_mode="categorical", batch_size=4)
    xb, yb = rgb[0]
    assert xb.shape == (4, 20, 20, 3) and yb.shape == (4, 3) and yb.dtype == np.float32
    train, val = data.from_directory(root, 16, validation_split=0.25, seed=0)
    assert len(train.images) + len(val.images) == len(kept)
    assert set(train.images).isdisjoint(val.images)


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
    with pytest.raises(ValueError, match=r"Received: dataset images.shape=\(None, 32, 32\)"):
        data.from_tf_dataset(tf.data.Dataset.from_tensor_slices(images[..., 0]))
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


# --- one image ---------------------------------------------------------------------


def test_prepare_image_from_path_pil_and_arrays(tmp_path, photos):
    from PIL import Image

    photo = photos[0]
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    from_path = data.prepare_image(str(path))
    assert from_path.shape == (1, 96, 96, 3) and from_path.dtype == np.float32
    np.testing.assert_array_equal(from_path[0], photo)
    np.testing.assert_array_equal(data.prepare_image(path), from_path)  # os.PathLike
    rgba = Image.fromarray(photo).convert("RGBA")
    np.testing.assert_array_equal(data.prepare_image(rgba), from_path)
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


def test_prepare_image_predicts_a_class_name(tmp_path, photos, mobilenet_weights):
    from PIL import Image

    extractor = mobilenet_extractor(mobilenet_weights)
    model = build_model(extractor, heads.binary(class_names=["cat", "dog"]), compile=False)
    path = tmp_path / "chelsea.jpg"
    Image.fromarray(photos[2]).resize((150, 120)).save(path)
    probs = model.predict(data.prepare_image(path), verbose=0)
    assert probs.shape == (1, 1)
    names = heads.head_info(model)["class_names"]
    assert names[int(probs[0, 0] > 0.5)] in ("cat", "dog")


@pytest.mark.parametrize(
    "image, kwargs, error, match",
    [
        (np.zeros((1, 8, 8, 3)), {}, ValueError, r"Received: image.shape=\(1, 8, 8, 3\)"),
        (np.zeros((8, 8, 4)), {}, ValueError, r"Received: image.shape=\(8, 8, 4\)"),
        (np.full((8, 8, 3), "x"), {}, ValueError, "Received: image.dtype=<U1"),
        ("missing.jpg", {}, FileNotFoundError, "Received: image='missing.jpg'"),
        (42, {}, ValueError, "Received: image=int"),
        (np.zeros((8, 8, 3)), {"target_size": (8,)}, ValueError, r"Received: target_size=\(8,\)"),
    ],
    ids=["rank", "channels", "dtype", "missing", "type", "size"],
)
def test_prepare_image_bad_input(image, kwargs, error, match):
    with pytest.raises(error, match=match):
        data.prepare_image(image, **kwargs)
