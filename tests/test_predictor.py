import keras
import numpy as np
import pytest
from PIL import Image
from support import mobilenet_extractor, ramp_image, tf_mode, write_png16

import kerastl
from kerastl.backbones import register_backbone
from kerastl.data import load_image
from kerastl.data.images import resize_image
from kerastl.predictor import Prediction, Predictor
from kerastl.preprocessing import BackboneNormalization
from kerastl.saving import read_metadata, save_model

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
def pooled():
    """A cheap 3-class softmax model at 96 px, for the bad-input tables."""
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


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
    expected = multiclass.predict(tf_mode(resize_image(large, 96)[None]), verbose=0)[0]
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
    inputs = np.stack([photos[0], resize_image(wide, 96)]).astype("float32")
    expected = model.predict(inputs, verbose=0)
    for result, row in zip(results, expected, strict=True):
        np.testing.assert_allclose([result.probabilities[c] for c in CLASSES], row, atol=1e-5)
        assert result.label == CLASSES[int(row.argmax())]


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


def test_default_names(multiclass):
    predictor = Predictor(multiclass)
    assert predictor.class_names == ["0", "1", "2"]
    with pytest.raises(ValueError, match=r"3 classes \(multiclass\). Received: class_names="):
        Predictor(multiclass, class_names=["a", "b"])


def _bad_input(tmp_path, kind):
    if kind == "directory":
        return str(tmp_path)
    if kind == "missing":
        return str(tmp_path / "missing.jpg")
    real = tmp_path / "real.png"
    Image.fromarray(np.full((32, 32, 3), 9, "uint8")).save(real)
    path = tmp_path / "broken.png"
    path.write_bytes(real.read_bytes()[:20] if kind == "20 bytes" else b"not an image")
    return str(path)


BAD_INPUTS = [
    ("directory", "directory", IsADirectoryError, r"Received: inputs\[1\]='"),
    ("missing", "missing", FileNotFoundError, r"No image file.*Received: inputs\[1\]=.*missing"),
    ("20 bytes", "20 bytes", ValueError, r"Could not read an image.*Received: inputs\[1\]='"),
    ("text", "text", ValueError, r"Could not read an image.*Received: inputs\[1\]='"),
    ("rank", np.zeros((2, 3, 4, 5, 6)), ValueError, r"Received: inputs\[1\].shape=\(2, 3, 4, 5"),
    ("2ch", np.zeros((96, 96, 2)), ValueError, r"Received: inputs\[1\].shape=\(96, 96, 2\)"),
    ("5ch", np.zeros((96, 96, 5)), ValueError, r"Received: inputs\[1\].shape=\(96, 96, 5\)"),
    ("empty", np.zeros((0, 96, 3)), ValueError, r"empty. Received: inputs\[1\].shape"),
    ("nan", np.full((96, 96, 3), np.nan), ValueError, r"NaN or inf.*Received: inputs\[1\]="),
    ("inf", np.full((96, 96), np.inf), ValueError, r"NaN or inf.*Received: inputs\[1\]="),
    ("bool", np.zeros((96, 96, 3), bool), ValueError, r"Received: inputs\[1\].dtype=bool"),
    ("object", np.zeros((9, 9, 3), object), ValueError, r"Received: inputs\[1\].dtype=object"),
    ("complex", np.zeros((9, 9, 3), complex), ValueError, r"inputs\[1\].dtype=complex128"),
    ("string", np.full((9, 9, 3), "x"), ValueError, r"Received: inputs\[1\].dtype=<U1"),
    ("type", {"image": 1}, TypeError, r"Received: inputs\[1\]=dict"),
]


@pytest.mark.parametrize(
    "item, error, match", [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_inputs_are_refused_clearly(pooled, tmp_path, item, error, match):
    if isinstance(item, str):
        item = _bad_input(tmp_path, item)
    with pytest.raises(error, match=match):
        Predictor(pooled).predict([np.zeros((96, 96, 3)), item])


@pytest.mark.parametrize(
    "inputs, kwargs, match",
    [
        ([], {}, r"`inputs` is empty. Received: inputs=\[\]"),
        (np.zeros((0, 96, 96, 3)), {}, r"Received: inputs.shape=\(0, 96, 96, 3\)"),
        (np.zeros((96, 96, 3)), {"top_k": 0}, "Received: top_k=0"),
    ],
    ids=["empty list", "empty batch", "top_k"],
)
def test_bad_predict_arguments(pooled, inputs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Predictor(pooled).predict(inputs, **kwargs)


# --- one path: the Predictor reads and normalises as the library does ----------------


def _tiny_backbone(recipe):
    """A registered two-conv backbone whose weights "expect" `recipe`."""
    # Scaled so that every recipe's inputs give unsaturated softmax outputs.
    scale = {"caffe": 1 / 128, "tf": 1.0, "torch": 1.0, "none": 1 / 255}[recipe]

    def tiny(include_top=False, weights=None, input_shape=(32, 32, 3)):
        inputs = keras.Input(input_shape)
        x = keras.layers.Rescaling(scale, name="stage0_scale")(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="stage1_conv")(x)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="tanh", name="stage2_conv")(x)
        return keras.Model(inputs, x, name=f"tiny_{recipe}")

    name = f"tiny_{recipe}_predictor_test"
    register_backbone(name, tiny, default_size=32, min_size=8, preprocessing=recipe, overwrite=True)
    return name


@pytest.mark.parametrize("recipe", ["caffe", "tf", "torch", "none"])
@pytest.mark.parametrize("inside", [True, False], ids=["in-model", "caller"])
def test_predictor_reads_and_normalises_the_library_way(photos, tmp_path, recipe, inside):
    """Predictor.predict(path) == model.predict(load_image(path, size) [+ the recipe])."""
    keras.utils.set_random_seed(7)
    extractor = kerastl.FeatureExtractor(
        _tiny_backbone(recipe), weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    head = kerastl.heads.multiclass(3)
    if inside:
        prep = kerastl.preprocessing.pipeline(extractor, mode=recipe)
        model = kerastl.build_model(extractor, head, preprocessing=prep, compile=False)
    else:
        inputs = keras.Input((32, 32, 3))
        model = keras.Model(inputs, head(extractor(inputs)))
    caller_recipe = None if inside or recipe == "none" else recipe
    assert read_metadata(model)["input_preprocessing"] == caller_recipe
    paths = []
    for i, photo in enumerate(photos[:3]):  # 96 px: the Predictor resizes to 32
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(photo).save(paths[-1])

    results = Predictor(model, class_names=CLASSES).predict(paths)
    decoded = np.stack([load_image(p, (32, 32)) for p in paths]).astype("float32")
    fed = decoded
    if caller_recipe is not None:
        fed = keras.ops.convert_to_numpy(BackboneNormalization(recipe)(decoded))
    expected = model.predict(fed, verbose=0)
    got = np.array([[r.probabilities[c] for c in CLASSES] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert expected.max() < 0.99  # not saturated: a wrong input would show
    if caller_recipe is not None:  # the check can fail: raw pixels predict otherwise
        assert np.abs(model.predict(decoded, verbose=0) - expected).max() > 1e-3


def test_16bit_files_predict_like_their_8bit_twins(multiclass, photos, tmp_path):
    eight, gray8 = str(tmp_path / "eight.png"), str(tmp_path / "gray8.png")
    Image.fromarray(photos[0]).save(eight)
    Image.fromarray(photos[1][..., 0]).save(gray8)
    sixteen = [
        write_png16(tmp_path / "rgb48.png", photos[0].astype("uint16") * 257),
        write_png16(
            tmp_path / "rgba64.png",
            np.dstack([photos[0], photos[2][..., :1]]).astype("uint16") * 257,
        ),
        write_png16(tmp_path / "gray16.png", photos[1][..., 0].astype("uint16") * 257),
    ]
    predictor = Predictor(multiclass, class_names=CLASSES)
    results = predictor.predict(sixteen + [eight, gray8])
    expected = multiclass.predict(
        tf_mode(np.stack([photos[0], photos[0], np.dstack([photos[1][..., 0]] * 3)])),
        verbose=0,
    )
    got = np.array([[r.probabilities[c] for c in CLASSES] for r in results])
    np.testing.assert_allclose(got[:3], expected, atol=1e-5)
    np.testing.assert_allclose(got[:3], got[[3, 3, 4]], atol=1e-6)
    ramp = write_png16(tmp_path / "ramp16.png", ramp_image(1)[..., 0])
    np.testing.assert_allclose(
        [predictor.predict(ramp)[0].probabilities[c] for c in CLASSES],
        multiclass.predict(tf_mode(resize_image(load_image(ramp), 96)[None]), verbose=0)[0],
        atol=1e-5,
    )


def test_regression_model_is_refused():
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="task='regression'.*Received: model="):
        Predictor(model)


@pytest.mark.backend_free
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"threshold": "x"},
            ValueError,
            r"`threshold` must be a number in \(0, 1\)\. Received: threshold='x'",
        ),
        ({"threshold": True}, ValueError, r"Received: threshold=True"),
        ({"batch_size": True}, ValueError, r"Received: batch_size=True"),
        ({"class_names": 5}, TypeError, r"`class_names` must be a list.*Received: class_names=5"),
        ({"class_names": {"a": 0, "b": 1}}, TypeError, r"Received: class_names=\{'a': 0"),
        ({"class_names": "abc"}, TypeError, r"Received: class_names='abc'"),
    ],
)
def test_bad_arguments_are_named_before_any_model_loads(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        Predictor(tmp_path / "not-there.keras", **kwargs)


def test_metadata_that_does_not_describe_the_backbone_is_named(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "m.keras"
    save_model(model, path, metadata={"backbone": 5})
    with pytest.raises(ValueError, match=r"metadata\['backbone'\].*Received: backbone=5"):
        Predictor(path)
