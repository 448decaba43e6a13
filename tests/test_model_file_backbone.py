"""A pretrained model file as a backbone: a classifier someone saved, with a registry body.

The files are written here: the registry's MobileNetV2 (alpha 0.35, 96 px) with
BatchNorm calibrated on real photos, nested in a classifier with its own
rescaling and head, saved whole as `.h5` and `.keras`.
"""

import warnings

import keras
import numpy as np
import pytest
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
