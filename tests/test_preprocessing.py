import json
import re

import bad_input as bad
import keras
import numpy as np
import pytest
from support import mobilenet_extractor

import kerastl
from kerastl import preprocessing
from kerastl.backbones import get_backbone, list_backbones
from kerastl.models import build_model

# Registry name -> the keras.applications module whose preprocess_input the
# published weights were trained with.
FAMILIES = [
    (r"vgg16", "vgg16"),
    (r"vgg19", "vgg19"),
    (r"resnet\d+$", "resnet"),
    (r"resnet\d+_v2", "resnet_v2"),
    (r"xception", "xception"),
    (r"inception_v3", "inception_v3"),
    (r"inception_resnet_v2", "inception_resnet_v2"),
    (r"mobilenet$", "mobilenet"),
    (r"mobilenet_v2", "mobilenet_v2"),
    (r"mobilenet_v3_", "mobilenet_v3"),
    (r"densenet", "densenet"),
    (r"efficientnet_b", "efficientnet"),
    (r"efficientnet_v2_", "efficientnet_v2"),
    (r"convnext_", "convnext"),
    (r"nasnet_", "nasnet"),
]


def _family(name):
    modules = [module for pattern, module in FAMILIES if re.fullmatch(pattern + ".*", name)]
    assert len(modules) == 1, f"add backbone {name!r} to FAMILIES"
    return getattr(keras.applications, modules[0])


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("name", list_backbones())
def test_pipeline_equals_the_family_preprocess_input(name):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 7, 9, 3)).astype("float32")
    expected = _family(name).preprocess_input(images.copy())
    prep = preprocessing.pipeline(name, resize=False)
    np.testing.assert_allclose(_np(prep(images, training=False)), expected, rtol=1e-5, atol=1e-5)
    uint8 = rng.integers(0, 256, (2, 5, 5, 3)).astype("uint8")
    np.testing.assert_allclose(
        _np(prep(uint8, training=False)),
        _family(name).preprocess_input(uint8.astype("float32")),
        rtol=1e-5,
        atol=1e-5,
    )
    if get_backbone(name).preprocessing == "none":  # the model rescales inside
        np.testing.assert_array_equal(expected, images)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "none"])
def test_normalization_known_values(mode):
    white_red = np.array([[[[255, 0, 0]]]], "uint8")
    out = _np(preprocessing.BackboneNormalization(mode)(white_red))[0, 0, 0]
    expected = {
        "caffe": [0 - 103.939, 0 - 116.779, 255 - 123.68],  # BGR order
        "tf": [1.0, -1.0, -1.0],
        "torch": [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225],
        "none": [255.0, 0.0, 0.0],
    }[mode]
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.dtype == np.float32


def test_resize_and_grayscale_to_rgb():
    prep = preprocessing.pipeline("mobilenet_v2", resize=(40, 48))
    digits = np.zeros((2, 8, 8, 1), "uint8")
    digits[1] = 255
    out = _np(prep(digits, training=False))
    assert out.shape == (2, 40, 48, 3)
    np.testing.assert_allclose(out[0], -1.0)  # black -> -1 in every channel
    np.testing.assert_allclose(out[1], 1.0, atol=1e-6)
    gray = np.arange(12, dtype="uint8").reshape(1, 2, 2, 3)[..., :1]
    rgb = _np(preprocessing.GrayscaleToRGB()(gray))
    np.testing.assert_array_equal(rgb, np.repeat(gray, 3, -1).astype("float32"))


def _grayscale_extractor(size=16):
    images = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(images)
    return kerastl.FeatureExtractor(keras.Model(images, x, name="gray_net"), pooling="avg")


def test_grayscale_backbone_takes_rgb_and_grayscale_images(tmp_path):
    extractor = _grayscale_extractor()
    prep = preprocessing.pipeline(extractor, mode="tf")
    assert [layer.name for layer in prep.layers] == ["to_grayscale", "resize", "normalize"]
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("uint8")
    luma = rgb @ np.array([[0.299], [0.587], [0.114]])
    expected = _np(keras.layers.Resizing(16, 16)(luma.astype("float32"))) / 127.5 - 1.0
    np.testing.assert_allclose(_np(prep(rgb)), expected, atol=1e-4)
    gray = np.round(luma).astype("uint8")
    np.testing.assert_allclose(_np(prep(gray)), _np(prep(np.repeat(gray, 3, -1))), atol=1e-4)
    # Config (JSON) and .keras round trips; a model takes either kind of image.
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(prep)))
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone.layers[0], preprocessing.RGBToGrayscale)
    np.testing.assert_allclose(_np(clone(rgb)), _np(prep(rgb)), atol=1e-5)
    model = build_model(extractor, kerastl.heads.multiclass(3), prep, compile=False)
    path = str(tmp_path / "gray.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("preprocessing").layers[0], preprocessing.RGBToGrayscale)
    for images in (rgb, gray):
        np.testing.assert_allclose(
            loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5
        )


@pytest.mark.parametrize(
    "layer, channels", [(preprocessing.GrayscaleToRGB, 3), (preprocessing.RGBToGrayscale, 1)]
)
def test_channel_conversion_in_a_function_traced_for_both_kinds_of_image(layer, channels):
    """TensorFlow's `predict` retraces with relaxed shapes once it has seen several: the
    channel axis is then unknown while tracing, and the conversion must still happen."""
    images = keras.Input((None, None, None))
    model = keras.Model(images, layer()(images))
    rng = np.random.default_rng(0)
    for shape in [(2, 8, 8, 3), (2, 8, 8, 1), (3, 6, 10, 3), (1, 12, 12, 1), (2, 5, 5, 3)]:
        x = rng.integers(0, 256, shape).astype("float32")
        out = model.predict(x, verbose=0)
        assert out.shape == (*shape[:-1], channels)
        np.testing.assert_allclose(out, _np(layer()(x)), rtol=1e-5, atol=1e-4)


class _Stub:
    """What `pipeline` reads of a FeatureExtractor, without building one."""

    def __init__(self, image_shape, spec=None):
        self.image_shape, self.spec = image_shape, spec

    def __repr__(self):
        return f"<FeatureExtractor image_shape={self.image_shape}>"


@pytest.mark.backend_free
def test_pipeline_refusals_for_a_backbone_it_does_not_know():
    gray = _Stub((64, 64, 1))
    with pytest.raises(
        ValueError, match=r"unknown.*give it as `mode`.*'tf'.*backbones\.md.*mode=None"
    ):
        preprocessing.pipeline(gray)
    for mode in ("caffe", "torch"):
        with pytest.raises(ValueError, match=rf"1-channel.*mode='tf'.*Received: mode='{mode}'"):
            preprocessing.pipeline(gray, mode=mode)
    with pytest.raises(ValueError, match=r"4-channel.*Received: backbone=<FeatureExtractor"):
        preprocessing.pipeline(_Stub((64, 64, 4)), mode="tf")
    with pytest.raises(
        ValueError, match=r"three RGB channels.*Received: input_shape=\(None, 8, 8, 1\)"
    ):
        preprocessing.BackboneNormalization("caffe").build((None, 8, 8, 1))
    preprocessing.BackboneNormalization("tf").build((None, 8, 8, 1))  # fine for grayscale


def test_resize_target_follows_the_backbone():
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(64, 64, 3), backbone_kwargs={"alpha": 0.35}
    )
    images = np.zeros((1, 32, 32, 3), "uint8")
    assert _np(preprocessing.pipeline(extractor)(images)).shape == (1, 64, 64, 3)
    assert _np(preprocessing.pipeline("xception")(images)).shape == (1, 299, 299, 3)
    assert _np(preprocessing.pipeline("xception", resize=False)(images)).shape == (1, 32, 32, 3)
    assert _np(preprocessing.pipeline(mode="tf", resize=50)(images)).shape == (1, 50, 50, 3)


@pytest.mark.parametrize("preset", ["light", "medium", "strong"])
def test_augmentation_changes_training_inputs_only(preset, photos):
    images = photos[:8].astype("float32")
    plain = _np(preprocessing.pipeline("mobilenet_v2", resize=False)(images))
    prep = preprocessing.pipeline("mobilenet_v2", resize=False, augment=preset, seed=1)
    np.testing.assert_allclose(_np(prep(images, training=False)), plain, atol=1e-6)
    trained = _np(prep(images, training=True))
    assert trained.shape == plain.shape
    changed = np.abs(trained - plain).mean(axis=(1, 2, 3)) > 1e-3
    assert changed.sum() >= 4, changed
    assert len(prep.layers) == 2 + len(preprocessing.augmentation(preset))


@pytest.mark.parametrize("preset", ["light", "medium", "strong"])
def test_augmented_images_stay_in_0_255(preset, photos):
    images = photos[:8].astype("float32")
    for seed in range(10):  # seeds 5 and 7 overshoot on torch without the clip
        x = images
        for layer in preprocessing.augmentation(preset, seed=seed):
            x = layer(x, training=True)
        x = _np(x)
        assert x.min() >= 0.0 and x.max() <= 255.0, (seed, x.min(), x.max())


def test_augmentation_inside_a_model_is_training_only(photos, mobilenet_weights):
    extractor = mobilenet_extractor(mobilenet_weights)
    model = build_model(
        extractor,
        kerastl.heads.regression(4),
        preprocessing.pipeline(extractor, augment="medium", seed=2),
        compile=False,
    )
    images = photos[:6, ::2, ::2]  # 48x48, resized to 96x96 in the model
    inference = [_np(model(images, training=False)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    np.testing.assert_allclose(model.predict(images, verbose=0), inference[0], atol=1e-4)
    assert not np.allclose(_np(model(images, training=True)), inference[0], atol=1e-2)


def test_no_augmentation_is_deterministic_in_training(photos):
    prep = preprocessing.pipeline("resnet50", resize=40, augment="none")
    images = photos[:4]
    np.testing.assert_array_equal(
        _np(prep(images, training=True)), _np(prep(images, training=False))
    )


def test_custom_augmentation_layers():
    flip = keras.layers.RandomFlip("vertical", seed=0)
    prep = preprocessing.pipeline("densenet121", resize=False, augment=[flip])
    assert prep.layers[1] is flip


def test_pipeline_config_round_trip_through_json(photos):
    prep = preprocessing.pipeline("vgg16", resize=(24, 20), augment="strong", seed=3)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(prep)))
    clone = keras.saving.deserialize_keras_object(config)
    assert [type(layer).__name__ for layer in clone.layers] == [
        type(layer).__name__ for layer in prep.layers
    ]
    assert clone.layers[-1].get_config()["mode"] == "caffe"
    np.testing.assert_allclose(
        _np(clone(photos[:3], training=False)),
        _np(prep(photos[:3], training=False)),
        atol=1e-4,
    )


class Halve(keras.layers.Layer):
    """A user's layer with no compute_output_shape: Keras finds its shape by running it."""

    def call(self, inputs):
        return inputs[:, ::2, ::2]


def test_pipeline_builds_without_running_its_layers(photos, tmp_path, monkeypatch):
    prep = preprocessing.pipeline("mobilenet_v2", resize=(40, 24), augment="medium", seed=1)
    assert isinstance(prep, keras.layers.Pipeline) and isinstance(prep, preprocessing.Pipeline)
    for layer in prep.layers:  # a symbolic build asks shapes and runs nothing
        monkeypatch.setattr(layer, "call", lambda *a, **k: pytest.fail("ran a layer"))
    inputs = keras.Input((32, 48, 3))
    outputs = prep(inputs)
    assert outputs.shape == (None, 40, 24, 3) and outputs.dtype == "float32"
    assert all(layer.built for layer in prep.layers)
    monkeypatch.undo()
    # A layer that cannot say its shape: the pipeline runs, as Keras' does.
    mixed = preprocessing.pipeline("mobilenet_v2", resize=False, augment=[Halve()])
    assert mixed(keras.Input((32, 48, 3))).shape == (None, 16, 24, 3)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "prep.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[1]) is preprocessing.Pipeline
    np.testing.assert_allclose(
        _np(loaded(photos[:2, :32, :48], training=False)),
        _np(model(photos[:2, :32, :48], training=False)),
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: preprocessing.pipeline("mobilenet_v2", augment="extreme"),
            "Received: augment='extreme'",
        ),
        (lambda: preprocessing.pipeline("mobilenet_v2", augment=[3]), r"Received: augment=\[3\]"),
        (
            lambda: preprocessing.pipeline("mobilenet_v2", resize=(0, 4)),
            r"Received: resize=\(0, 4\)",
        ),
        (lambda: preprocessing.pipeline(keras.layers.Dense(2)), "Received: backbone=<Dense"),
        (lambda: preprocessing.pipeline(), "Received: backbone=None"),
        (lambda: preprocessing.BackboneNormalization("imagenet"), "Received: mode='imagenet'"),
    ],
)
def test_bad_pipeline_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((8, 8, 3), "uint8"), r"Received: input_shape=\(8, 8, 3\)"),
        (np.zeros((1, 8, 8, 4), "uint8"), r"1 \(grayscale\) or 3 \(RGB\) channels"),
        (np.zeros((1, 8, 8, 2), "float32"), r"Received: input_shape=\(1, 8, 8, 2\)"),
        (np.zeros((1, 8, 8, 3), bool), "Received: dtype=bool"),
    ],
    ids=["rank", "rgba", "two_channels", "bool"],
)
def test_bad_images_are_clear_errors(images, match):
    with pytest.raises(ValueError, match=match):
        preprocessing.pipeline("mobilenet_v2", resize=16)(images)


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.preprocessing ===
    bad.case(
        "pp-backbone-int",
        lambda: kerastl.preprocessing.pipeline(3),
        ValueError,
        r"Received: backbone=3",
    ),
    bad.case(
        "pp-backbone-unknown",
        lambda: kerastl.preprocessing.pipeline("mobilenet_v9"),
        ValueError,
        r"Received: backbone='mobilenet_v9'",
    ),
    bad.case(
        "pp-no-mode",
        lambda: kerastl.preprocessing.pipeline(),
        ValueError,
        r"Received: backbone=None",
    ),
    bad.case(
        "pp-resize-zero",
        lambda: kerastl.preprocessing.pipeline(bad.REG, resize=0),
        ValueError,
        r"Received: resize=0",
    ),
    bad.case(
        "pp-resize-negative",
        lambda: kerastl.preprocessing.pipeline(bad.REG, resize=-1),
        ValueError,
        r"Received: resize=-1",
    ),
    bad.case(
        "pp-resize-short",
        lambda: kerastl.preprocessing.pipeline(bad.REG, resize=(1,)),
        ValueError,
        r"Received: resize=\(1,\)",
    ),
    bad.case(
        "pp-resize-string",
        lambda: kerastl.preprocessing.pipeline(bad.REG, resize="x"),
        ValueError,
        r"Received: resize='x'",
    ),
    bad.case(
        "pp-resize-float",
        lambda: kerastl.preprocessing.pipeline(bad.REG, resize=2.5),
        ValueError,
        r"Received: resize=2.5",
    ),
    bad.case(
        "pp-resize-bool-pair",
        lambda: kerastl.preprocessing.pipeline(bad.REG, resize=(True, 96)),
        ValueError,
        r"Received: resize=\(True, 96\)",
    ),
    bad.case(
        "pp-augment-preset",
        lambda: kerastl.preprocessing.pipeline(bad.REG, augment="heavy"),
        ValueError,
        r"Received: augment='heavy'",
    ),
    bad.case(
        "pp-augment-list",
        lambda: kerastl.preprocessing.pipeline(bad.REG, augment=[3]),
        ValueError,
        r"Received: augment=\[3\]",
    ),
    bad.case(
        "pp-augment-none",
        lambda: kerastl.preprocessing.pipeline(bad.REG, augment=None),
        ValueError,
        r"Received: augment=None",
    ),
    bad.case(
        "pp-mode",
        lambda: kerastl.preprocessing.pipeline(bad.REG, mode="bgr"),
        ValueError,
        r"Received: mode='bgr'",
    ),
    bad.case(
        "pp-interpolation",
        lambda: kerastl.preprocessing.pipeline(bad.REG, interpolation="cubic-ish"),
        ValueError,
        r"Received: interpolation='cubic-ish'",
    ),
    bad.case(
        "pp-crop-string",
        lambda: kerastl.preprocessing.pipeline(bad.REG, crop_to_aspect_ratio="no"),
        TypeError,
        r"Received: crop_to_aspect_ratio='no'",
    ),
    bad.case(
        "pp-seed-string",
        lambda: kerastl.preprocessing.pipeline(bad.REG, augment="light", seed="x"),
        TypeError,
        r"Received: seed='x'",
    ),
    bad.case(
        "pp-seed-float",
        lambda: kerastl.preprocessing.pipeline(bad.REG, augment="light", seed=2.5),
        TypeError,
        r"Received: seed=2.5",
    ),
    bad.case(
        "pp-seed-bool",
        lambda: kerastl.preprocessing.pipeline(bad.REG, augment="medium", seed=True),
        TypeError,
        r"Received: seed=True",
    ),
    bad.case(
        "pp-name",
        lambda: kerastl.preprocessing.pipeline(bad.REG, name=3),
        TypeError,
        r"Received: name=3",
    ),
    bad.case(
        "pp-augmentation-preset",
        lambda: kerastl.preprocessing.augmentation("x"),
        ValueError,
        r"Received: augment='x'",
    ),
    bad.case(
        "pp-augmentation-seed",
        lambda: kerastl.preprocessing.augmentation("strong", seed="x"),
        TypeError,
        r"Received: seed='x'",
    ),
    bad.case(
        "pp-normalization-mode",
        lambda: kerastl.preprocessing.BackboneNormalization("bgr"),
        ValueError,
        r"Received: mode='bgr'",
    ),
    bad.case(
        "pp-gray-rank3",
        lambda: kerastl.preprocessing.GrayscaleToRGB()(bad.images((8, 8, 3))),
        ValueError,
        r"Received: input_shape=\(8, 8, 3\)",
    ),
    bad.case(
        "pp-gray-2-channels",
        lambda: kerastl.preprocessing.GrayscaleToRGB()(bad.images((1, 8, 8, 2))),
        ValueError,
        r"Received: input_shape=\(1, 8, 8, 2\)",
    ),
    bad.case(
        "pp-gray-4-channels",
        lambda: kerastl.preprocessing.GrayscaleToRGB()(bad.images((1, 8, 8, 4))),
        ValueError,
        r"Received: input_shape=\(1, 8, 8, 4\)",
    ),
    bad.case(
        "pp-gray-bool",
        lambda: kerastl.preprocessing.GrayscaleToRGB()(np.zeros((1, 8, 8, 3), bool)),
        ValueError,
        r"Received: dtype=bool",
    ),
    bad.case(
        "pp-gray-string",
        lambda: kerastl.preprocessing.GrayscaleToRGB()(np.full((1, 2, 2, 3), "a")),
        ValueError,
        r"Received: dtype=",
    ),
    bad.case(
        "pp-pipeline-rank3",
        lambda: kerastl.preprocessing.pipeline(bad.REG)(bad.images((96, 96, 3))),
        ValueError,
        r"Received: input_shape=\(96, 96, 3\)",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
