import keras
import numpy as np
import pytest
from PIL import Image
from support import mobilenet_extractor, tf_mode

from kerastl.predictor import Prediction, Predictor
from kerastl.saving import save_model

CLASSES = ["astronaut", "coffee", "cat"]


def classifier(weights, head, rescale_inside=False):
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs) if rescale_inside else inputs
    extractor = mobilenet_extractor(weights)
    return keras.Model(inputs, head(extractor(x)))


@pytest.fixture
def multiclass(mobilenet_weights):
    keras.utils.set_random_seed(3)
    return classifier(mobilenet_weights, keras.layers.Dense(3, activation="softmax"))


@pytest.fixture
def image_files(photos, tmp_path):
    paths = []
    for i, photo in enumerate(photos[:5]):
        paths.append(str(tmp_path / f"photo_{i}.png"))  # lossless: pixels compare exactly
        Image.fromarray(photo).save(paths[-1])
    return paths


def test_saved_model_classifies_image_files_by_name(multiclass, photos, image_files, tmp_path):
    """Seed 000: load a model file, predict a new image file to a class name."""
    path = tmp_path / "model.keras"
    save_model(multiclass, path, class_names=CLASSES)
    results = Predictor(str(path)).predict(image_files, top_k=2)
    expected = multiclass.predict(tf_mode(photos[:5]), verbose=0)  # the recipe by hand
    assert len(results) == 5 and all(isinstance(r, Prediction) for r in results)
    assert [r.label for r in results] == [CLASSES[i] for i in expected.argmax(-1)]
    for result, row in zip(results, expected, strict=True):
        assert len(result.top) == 2 and result.top[0][1] >= result.top[1][1]
        assert result.labels == (result.label,)
        np.testing.assert_allclose([result.probabilities[c] for c in CLASSES], row, atol=1e-5)
    assert len({r.label for r in results}) > 1  # the photos do not all look alike


def test_paths_pil_images_arrays_and_batches_agree(multiclass, photos, image_files):
    predictor = Predictor(multiclass, class_names=CLASSES, batch_size=2)
    by_path = predictor.predict(image_files, top_k=None)
    by_pil = predictor.predict([Image.open(p) for p in image_files], top_k=None)
    by_batch = predictor.predict(photos[:5], top_k=None)
    by_single = [predictor.predict(photo, top_k=None)[0] for photo in photos[:5]]
    mixed = predictor.predict(
        [image_files[0], photos[1:3], Image.open(image_files[3]), photos[4].astype("float32")],
        top_k=None,
    )
    for results in (by_pil, by_batch, by_single, mixed):
        assert [r.label for r in results] == [r.label for r in by_path]
        for a, b in zip(results, by_path, strict=True):
            assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
    assert len(by_path[0].top) == 3


def test_other_sizes_and_grayscale_are_converted(multiclass, photos):
    predictor = Predictor(multiclass, class_names=CLASSES)
    flat = [
        np.full((h, w, 3), (200, 120, 40), "uint8") for h, w in ((96, 96), (50, 70), (300, 200))
    ]
    p = [r.probabilities for r in predictor.predict(flat)]
    assert p[1] == pytest.approx(p[0], abs=1e-5) and p[2] == pytest.approx(p[0], abs=1e-5)
    large = np.repeat(np.repeat(photos[0], 2, axis=0), 2, axis=1)
    resized = keras.ops.image.resize(large[None].astype("float32"), (96, 96), antialias=True)
    expected = multiclass.predict(tf_mode(keras.ops.convert_to_numpy(resized)), verbose=0)[0]
    got = predictor.predict(large)[0].probabilities
    np.testing.assert_allclose([got[c] for c in CLASSES], expected, atol=1e-5)
    gray = photos[0].mean(-1).astype("uint8")
    rgba = np.dstack([photos[0], np.full((96, 96, 1), 255, "uint8")])
    results = predictor.predict([photos[0], gray, rgba, np.dstack([gray] * 3)])
    assert results[2].probabilities == pytest.approx(results[0].probabilities, abs=1e-6)
    assert results[1].probabilities == pytest.approx(results[3].probabilities, abs=1e-6)


def test_model_with_its_own_preprocessing_gets_raw_pixels(mobilenet_weights, photos, tmp_path):
    keras.utils.set_random_seed(3)
    model = classifier(
        mobilenet_weights, keras.layers.Dense(3, activation="softmax"), rescale_inside=True
    )
    meta = save_model(model, tmp_path / "m.keras", class_names=CLASSES)
    assert meta["input_preprocessing"] is None
    results = Predictor(str(tmp_path / "m.keras")).predict(photos[:4])
    expected = model.predict(photos[:4].astype("float32"), verbose=0)
    for result, row in zip(results, expected, strict=True):
        np.testing.assert_allclose([result.probabilities[c] for c in CLASSES], row, atol=1e-5)


def test_model_that_resizes_itself_takes_images_of_any_size(mobilenet_weights, photos):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Resizing(96, 96)(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    extractor = mobilenet_extractor(mobilenet_weights)
    keras.utils.set_random_seed(3)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(extractor(x)))
    predictor = Predictor(model, class_names=CLASSES)
    assert predictor.image_size == (96, 96)  # batched at the backbone's size
    wide = np.asarray(Image.fromarray(photos[1]).resize((144, 96)))
    results = predictor.predict([photos[0], wide])
    expected = model.predict(photos[:1].astype("float32"), verbose=0)[0]
    np.testing.assert_allclose([results[0].probabilities[c] for c in CLASSES], expected, atol=1e-5)
    assert results[1].label in CLASSES


def test_binary_logit_head_gives_both_classes(mobilenet_weights, photos):
    """Seed 001: Dense(1) on logits, binary cross-entropy from logits."""
    keras.utils.set_random_seed(4)
    model = classifier(mobilenet_weights, keras.layers.Dense(1))
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    results = Predictor(model, class_names=["cat", "dog"]).predict(photos[:6])
    logits = model.predict(tf_mode(photos[:6]), verbose=0)[:, 0]
    dog = 1 / (1 + np.exp(-logits))
    for result, p in zip(results, dog, strict=True):
        assert set(result.probabilities) == {"cat", "dog"}
        assert result.probabilities["dog"] == pytest.approx(p, abs=1e-5)
        assert result.probabilities["cat"] == pytest.approx(1 - p, abs=1e-5)
        assert result.label == ("dog" if p >= 0.5 else "cat")


def test_multilabel_head_uses_the_threshold(mobilenet_weights, photos):
    keras.utils.set_random_seed(5)
    model = classifier(mobilenet_weights, keras.layers.Dense(4, activation="sigmoid"))
    names = ["sky", "person", "food", "animal"]
    probs = model.predict(tf_mode(photos[:6]), verbose=0)
    threshold = float(np.median(probs))  # some labels above, some below
    results = Predictor(model, class_names=names, threshold=threshold).predict(photos[:6])
    for result, row in zip(results, probs, strict=True):
        above = {n for n, p in zip(names, row, strict=True) if p >= threshold}
        assert set(result.labels) == above
        assert result.label == (names[int(row.argmax())] if above else None)
        assert result.probabilities == pytest.approx(dict(zip(names, row, strict=True)), abs=1e-5)
    assert any(len(r.labels) > 1 for r in results) or any(not r.labels for r in results)


def test_default_names_and_bad_input(multiclass, tmp_path):
    predictor = Predictor(multiclass)
    assert predictor.class_names == ["0", "1", "2"]
    with pytest.raises(FileNotFoundError, match=r"Received: inputs\[0\]=.*missing.jpg"):
        predictor.predict(str(tmp_path / "missing.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Could not read the image.*Received: inputs\[1\]="):
        predictor.predict([np.zeros((96, 96, 3)), str(tmp_path / "broken.jpg")])
    with pytest.raises(ValueError, match=r"Received: inputs\[0\] with shape \(2, 3, 4, 5, 6\)"):
        predictor.predict([np.zeros((2, 3, 4, 5, 6))])
    with pytest.raises(ValueError, match=r"3-channel images. Received: inputs\[0\] with 2"):
        predictor.predict(np.zeros((96, 96, 2)))
    with pytest.raises(ValueError, match="Received: top_k=0"):
        predictor.predict(np.zeros((96, 96, 3)), top_k=0)
    with pytest.raises(ValueError, match=r"3 classes \(multiclass\). Received: class_names="):
        Predictor(multiclass, class_names=["a", "b"])


def test_regression_model_is_refused():
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="task='regression'.*Received: model="):
        Predictor(model)
