import h5py
import keras
import numpy as np
import pytest
from support import mobilenet_classifier, mobilenet_extractor, tf_mode

from kerastl.saving import WeightsReport, load_weights_by_name, save_model


def features(model, images):
    return keras.ops.convert_to_numpy(model.layers[1](images))


def tiny(seed, units=3, extra=False):
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
    ]
    if extra:
        layers.append(keras.layers.Conv2D(4, 1, name="extra"))
    layers += [keras.layers.Flatten(), keras.layers.Dense(units, name="out")]
    return keras.Sequential(layers)


BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def assert_same_weights(a, b):
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))


@pytest.fixture
def pretrained(mobilenet_weights):
    """A 3-class classifier on a calibrated backbone: the "checkpoint" of seed 004."""
    return mobilenet_classifier(mobilenet_weights, 3)


def test_from_model_into_new_head_skips_the_mismatched_head(pretrained, photos):
    target = mobilenet_classifier(None, 5)
    images = tf_mode(photos[:4])
    head_before = keras.ops.convert_to_numpy(target.get_layer("head").kernel)
    assert not np.allclose(features(target, images), features(pretrained, images), atol=1e-3)
    report = load_weights_by_name(target, pretrained)
    assert isinstance(report, WeightsReport)
    np.testing.assert_allclose(features(target, images), features(pretrained, images), atol=1e-6)
    assert report.skipped == {"head": {"source": [(1280, 3), (3,)], "target": [(1280, 5), (5,)]}}
    assert "Conv1" in report.loaded and "Conv_1_bn" in report.loaded
    assert len(report.loaded) == 104  # every MobileNetV2 layer with weights
    assert report.missing == [] and report.unexpected == []
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(target.get_layer("head").kernel), head_before
    )
    assert "skipped 1 (shape mismatch: head [(1280, 3), (3,)] -> [(1280, 5), (5,)])" in str(report)


@pytest.mark.keras_floor
def test_from_keras_and_legacy_h5_files_into_a_feature_extractor(pretrained, photos, tmp_path):
    save_model(pretrained, tmp_path / "pretrained.keras")
    pretrained.save(tmp_path / "pretrained.h5")  # legacy HDF5, as tf.keras wrote it
    images = tf_mode(photos[:4])
    expected = features(pretrained, images)
    for path in ("pretrained.keras", "pretrained.h5"):
        extractor = mobilenet_extractor(None)
        report = load_weights_by_name(extractor, tmp_path / path)
        assert report.matched_by == "name" and len(report.loaded) == 104, path
        assert report.unexpected == ["head"] and report.missing == [], path
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(extractor(images)), expected, atol=1e-6, err_msg=path
        )


@pytest.mark.keras_floor
def test_legacy_keras2_weights_file_with_nested_model_weight_names(tmp_path):
    """Keras 2 writes a nested model as one group; its weight names carry the inner layer."""
    source = tiny(1)
    path = tmp_path / "keras2.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"backbone", b"out"]
        backbone = f.create_group("backbone")
        names = []
        for layer in ("conv", "bn"):
            kinds = ("kernel", "bias") if layer == "conv" else BN_WEIGHTS
            for w, name in zip(source.get_layer(layer).weights, kinds, strict=True):
                names.append(f"backbone/{layer}/{name}:0".encode())
                backbone[names[-1].decode()] = keras.ops.convert_to_numpy(w)
        backbone.attrs["weight_names"] = names
        out = f.create_group("out")
        out.attrs["weight_names"] = [b"out/kernel:0", b"out/bias:0"]
        out["out/kernel:0"] = keras.ops.convert_to_numpy(source.get_layer("out").kernel)
        out["out/bias:0"] = keras.ops.convert_to_numpy(source.get_layer("out").bias)
    target = tiny(2)
    report = load_weights_by_name(target, path)
    assert sorted(report.loaded) == ["bn", "conv", "out"]
    assert_same_weights(target, source)


def test_weights_h5_matches_by_path_across_a_prefix(pretrained, photos, tmp_path):
    """A Keras 3 .weights.h5 names entries by class and position, not layer name."""
    path = tmp_path / "classifier.weights.h5"
    pretrained.save_weights(path)
    images = tf_mode(photos[:4])
    extractor = mobilenet_extractor(None)
    report = load_weights_by_name(extractor, path)  # the classifier's file, the bare backbone
    assert report.matched_by == "path" and len(report.loaded) == 104
    assert report.unexpected == ["layers/dense"] and not report.skipped
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(extractor(images)), features(pretrained, images), atol=1e-6
    )
    five = mobilenet_classifier(None, 5)
    report = load_weights_by_name(five, path)
    assert report.skipped == {
        "layers/dense": {"source": [(1280, 3), (3,)], "target": [(1280, 5), (5,)]}
    }
    np.testing.assert_allclose(features(five, images), features(pretrained, images), atol=1e-6)


def test_missing_and_unexpected_layers_are_reported():
    source, target = tiny(1, extra=True), tiny(2)
    report = load_weights_by_name(target, source)
    assert report.unexpected == ["extra"]
    report = load_weights_by_name(source, target)
    assert report.missing == ["extra"]
    assert sorted(report.loaded) == ["bn", "conv", "out"]


def test_strict_mode_raises_and_assigns_nothing():
    source, target = tiny(1, units=3), tiny(2, units=4)
    before = [keras.ops.convert_to_numpy(w) for w in target.weights]
    with pytest.raises(
        ValueError,
        match=r"Layer 'out' has weights of shapes \[\(144, 3\), "
        r"\(3,\)\].*skip_mismatch=True.*Received: source=",
    ):
        load_weights_by_name(target, source, skip_mismatch=False)
    for b, w in zip(before, target.weights, strict=True):
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(w))


def test_nothing_in_common_is_an_error(tmp_path):
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="unrelated")])
    with pytest.raises(ValueError, match="No layer of the source matches.*Received: source="):
        load_weights_by_name(tiny(1), other)
    with pytest.raises(FileNotFoundError, match="Received: source=.*nope.h5"):
        load_weights_by_name(tiny(1), tmp_path / "nope.h5")
    with pytest.raises(TypeError, match="Received: target="):
        load_weights_by_name("model", other)
