import json
import pathlib
import time
import urllib.error

import bad_input as bad
import keras
import numpy as np
import pytest
from support import run_in_backend, shapes_only, tf_mode

import kerastl

MOBILENET = dict(input_shape=(96, 96, 3), backbone_kwargs={"alpha": 0.35})


def extractor(weights, **kwargs):
    return kerastl.FeatureExtractor("mobilenet_v2", weights=weights, **{**MOBILENET, **kwargs})


def test_seed_001_parameter_counts():
    with shapes_only():  # counts and shapes: no variable needs a value
        base = kerastl.FeatureExtractor(
            "mobilenet_v2", weights=None, input_shape=(160, 160, 3), pooling="avg", freeze="all"
        )
        model = keras.Sequential([base, keras.layers.Dense(1)])
        assert model.input_shape == (None, 160, 160, 3)  # Sequential picks up input_shape
        assert base.count_params() == 2_257_984
        assert sum(int(np.prod(v.shape)) for v in base.trainable_weights) == 0
        assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == 1_281
        assert base.compute_output_shape((32, 160, 160, 3)) == (32, 1280)


def test_cut_and_multi_scale_outputs():
    cut = extractor(None, cut="block_6_expand_relu")
    assert tuple(cut(np.zeros((2, 96, 96, 3), "float32")).shape) == (2, 12, 12, 96)
    assert cut.backbone.layers[-1].name == "block_6_expand_relu"  # later layers are gone
    multi = extractor(None, outputs=["S8", "block_13_expand_relu", "out_relu"])
    maps = multi(np.zeros((2, 96, 96, 3), "float32"))
    shapes = {k: tuple(v.shape) for k, v in maps.items()}
    assert shapes == {
        "S8": (2, 12, 12, 96),
        "block_13_expand_relu": (2, 6, 6, 192),
        "out_relu": (2, 3, 3, 1280),
    }
    assert multi.compute_output_shape((2, 96, 96, 3)) == shapes
    pooled = extractor(None, outputs=["S8", "S32"], pooling="gem")
    out = pooled(np.zeros((2, 96, 96, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"S8": (2, 96), "S32": (2, 1280)}


@pytest.fixture(scope="module")
def unpooled_maps(mobilenet_weights, photos):
    """The calibrated extractor's feature maps of 4 photos, NumPy (computed once)."""
    return keras.ops.convert_to_numpy(extractor(mobilenet_weights)(tf_mode(photos[:4])))


@pytest.mark.parametrize(
    "pooling, channels", [("avg", 1280), ("max", 1280), ("gem", 1280), ("avgmax", 2560)]
)
def test_pooling_modes(pooling, channels, mobilenet_weights, photos, unpooled_maps):
    images = tf_mode(photos[:4])
    maps = unpooled_maps
    pooled = keras.ops.convert_to_numpy(extractor(mobilenet_weights, pooling=pooling)(images))
    assert pooled.shape == (4, channels)
    expected = {
        "avg": maps.mean(axis=(1, 2)),
        "max": maps.max(axis=(1, 2)),
        "gem": (np.maximum(maps, 1e-6) ** 3).mean(axis=(1, 2)) ** (1 / 3),
        "avgmax": np.concatenate([maps.mean(axis=(1, 2)), maps.max(axis=(1, 2))], -1),
    }[pooling]
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-5)


def test_calibrated_backbone_gives_meaningful_features(mobilenet_weights, photos):
    """Guards every feature check: features depend on the image and are not ~0."""
    features = keras.ops.convert_to_numpy(
        extractor(mobilenet_weights, pooling="avg")(tf_mode(photos))
    )
    assert features.std() > 0.05
    assert np.abs(features[0] - features[1]).mean() > 0.01  # different photos, different features
    random_init = keras.ops.convert_to_numpy(extractor(None, pooling="avg")(tf_mode(photos)))
    assert not np.allclose(features, random_init, atol=1e-3)


def test_config_round_trip_through_json(mobilenet_weights, photos):
    layer = extractor(mobilenet_weights, pooling="gem", freeze="none", bn="affine", name="fx")
    layer(tf_mode(photos[:1]))
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    assert config["config"]["weights"] is None  # loading never downloads
    clone = keras.saving.deserialize_keras_object(config)
    clone(tf_mode(photos[:1]))
    assert clone.get_config() == layer.get_config()
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(tf_mode(photos[:4]))),
        keras.ops.convert_to_numpy(layer(tf_mode(photos[:4]))),
        atol=1e-5,
    )


def _classifier(weights):
    inputs = keras.Input((96, 96, 3))
    features = extractor(weights, pooling="gem")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(features))


@pytest.mark.keras_floor
def test_keras_save_and_load_give_equal_outputs(mobilenet_weights, photos, tmp_path):
    model = _classifier(mobilenet_weights)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[1], kerastl.FeatureExtractor)
    assert loaded.layers[1].fully_frozen
    np.testing.assert_allclose(
        loaded.predict(tf_mode(photos), verbose=0),
        model.predict(tf_mode(photos), verbose=0),
        atol=1e-5,
    )


# Loading on the other backends: tests/test_cross_backend.py (one matrix for every part).


@pytest.mark.keras_floor
def test_frozen_batchnorm_statistics_do_not_move_and_frozen_weights_get_no_slots(
    mobilenet_weights, photos
):
    model = _classifier(mobilenet_weights)
    backbone = model.layers[1].backbone
    before = [keras.ops.convert_to_numpy(v) for v in backbone.weights]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    labels = np.arange(len(photos)) % 3
    model.fit(tf_mode(photos), labels, epochs=2, batch_size=8, verbose=0)
    after = [keras.ops.convert_to_numpy(v) for v in backbone.weights]
    moving = [v.path for v in backbone.weights if "moving" in v.path]
    assert len(moving) > 50
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(b, a)
    # Adam keeps two slots per trained variable: the head (kernel, bias) and GeM's p only.
    trained = {v.path for v in model.trainable_variables}
    assert len(trained) == 3
    slots = [
        v
        for v in model.optimizer.variables
        if len(v.shape) > 0 or "momentum" in v.path or "velocity" in v.path
    ]
    assert len(slots) == 2 * len(trained)
    assert sum(int(np.prod(v.shape)) for v in model.optimizer.variables) < 10_000


def test_fully_frozen_extractor_passes_no_gradient(mobilenet_weights, photos):
    layer = extractor(mobilenet_weights, pooling="avg")
    assert layer.fully_frozen
    trainable = extractor(mobilenet_weights, pooling="avg", freeze="none")
    assert not trainable.fully_frozen
    assert len(trainable.trainable_weights) > 0
    # bn="frozen" keeps BatchNorm layers out of training even under freeze="none".
    bns = [
        la for la in trainable.backbone.layers if isinstance(la, keras.layers.BatchNormalization)
    ]
    assert bns and not any(bn.trainable for bn in bns)
    affine = extractor(mobilenet_weights, freeze="none", bn="affine")
    assert all(
        la.trainable
        for la in affine.backbone.layers
        if isinstance(la, keras.layers.BatchNormalization)
    )


def _gradient_norm(layer, images):
    """Gradient of the summed features with respect to the input images."""
    backend = keras.config.backend()
    x = keras.ops.convert_to_tensor(images)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = keras.ops.sum(layer(x))
        grad = tape.gradient(y, x)
        return 0.0 if grad is None else float(np.abs(grad.numpy()).sum())
    if backend == "jax":
        import jax

        grad = jax.grad(lambda t: keras.ops.sum(layer(t)))(x)
        return float(np.abs(np.asarray(grad)).sum())

    x = x.detach().requires_grad_(True)
    y = keras.ops.sum(layer(x))
    if not y.requires_grad:
        return 0.0
    y.backward()
    return float(x.grad.abs().sum())


def test_gradient_is_cut_at_a_frozen_extractor(mobilenet_weights, photos):
    images = tf_mode(photos[:2])
    assert _gradient_norm(extractor(mobilenet_weights, pooling="avg"), images) == 0.0
    open_layer = extractor(mobilenet_weights, pooling="avg", freeze="none")
    assert _gradient_norm(open_layer, images) > 0.0


@pytest.mark.keras_floor
def test_backbone_from_model_and_from_model_file_with_submodel(mobilenet_weights, photos, tmp_path):
    base = kerastl.backbones.get_backbone("mobilenet_v2").build(
        (96, 96, 3), weights=mobilenet_weights, alpha=0.35
    )
    inputs = keras.Input((96, 96, 3))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    classifier = keras.Model(inputs, keras.layers.Dense(1)(x))
    for suffix in ("keras", "h5"):
        path = str(tmp_path / f"classifier.{suffix}")
        classifier.save(path)
        # A whole classifier with one nested model gives that model by itself.
        assert kerastl.FeatureExtractor(path, pooling="avg").backbone.name == base.name
        layer = kerastl.FeatureExtractor(path, submodel=base.name, pooling="avg")
        reference = extractor(mobilenet_weights, pooling="avg")
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer(tf_mode(photos[:3]))),
            keras.ops.convert_to_numpy(reference(tf_mode(photos[:3]))),
            atol=1e-5,
        )
    # A flat classifier of no registry architecture is cut before its top
    # (tests/test_model_file_backbone.py has the rule).
    images = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(images))
    flat = keras.Model(images, keras.layers.Dense(2)(x), name="flat")
    assert kerastl.FeatureExtractor(flat, pooling="gem").cut == "conv"
    # A pooled model (nothing with weights after its maps) outputs a vector: said when
    # the layer is made (not a backend error at call time).
    pooled = keras.Model(images, x, name="pooled")
    with pytest.raises(ValueError, match=r"not a feature map.*'conv'\) with `cut=`.*pooling='gem'"):
        kerastl.FeatureExtractor(pooled, pooling="gem")
    from_model = kerastl.FeatureExtractor(base, cut="block_6_expand_relu")
    assert from_model.compute_output_shape((1, 96, 96, 3)) == (1, 12, 12, 96)
    clone = kerastl.FeatureExtractor.from_config(from_model.get_config())
    assert clone.compute_output_shape((1, 96, 96, 3)) == (1, 12, 12, 96)


def test_a_saved_config_never_names_a_file(tmp_path):
    """A loaded config opens no other file: a path as its backbone is refused."""
    layer = extractor(None, pooling="avg")
    config = layer.get_config()
    assert config["backbone"] == "mobilenet_v2"
    for path in (str(tmp_path / "other.keras"), str(tmp_path / "other.h5")):
        with pytest.raises(ValueError, match=r"not a file path. Received: backbone="):
            kerastl.FeatureExtractor.from_config({**config, "backbone": path})


def test_dtype_policy_is_respected():
    layer = kerastl.FeatureExtractor(
        "mobilenet_v2",
        weights=None,
        input_shape=(32, 32, 3),
        pooling="avg",
        dtype="mixed_float16",
        backbone_kwargs={"alpha": 0.35},
    )
    out = layer(np.zeros((1, 32, 32, 3), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert layer.backbone.layers[1].compute_dtype == "float16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_imagenet_download_fails_fast_offline_with_instructions(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    start = time.time()
    with pytest.raises(kerastl.WeightsDownloadError) as info:
        kerastl.FeatureExtractor(
            "mobilenet_v2",
            weights="imagenet",
            **{"input_shape": (96, 96, 3), "backbone_kwargs": {"alpha": 0.35}},
        )
    assert time.time() - start < 10
    message = str(info.value)
    assert "https://storage.googleapis.com/" in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in message
    assert "KERAS_HOME" in message and "weights='/path/to/" in message


def test_imagenet_weights_come_from_the_keras_cache_directory(mobilenet_weights, photos, tmp_path):
    """The cache directory named in the offline message really is where Keras looks."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    model = kerastl.backbones.get_backbone("mobilenet_v2").build(
        (96, 96, 3), weights=mobilenet_weights, alpha=0.35
    )
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    with h5py.File(cache / name, "w") as f:  # the format of the published files
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    expected = keras.ops.convert_to_numpy(model(tf_mode(photos[:2])))
    np.save(tmp_path / "images.npy", tf_mode(photos[:2]))
    backend = keras.config.backend()
    got = run_in_backend(
        backend,
        """
        import os
        os.environ["KERAS_HOME"] = home
        import keras, numpy as np, kerastl
        layer = kerastl.FeatureExtractor("mobilenet_v2", weights="imagenet",
                                         input_shape=(96, 96, 3), backbone_kwargs={"alpha": 0.35})
        print(json.dumps(keras.ops.convert_to_numpy(layer(np.load(images))).tolist()))
        """,
        home=str(tmp_path / "keras_home"),
        images=str(tmp_path / "images.npy"),
    )
    np.testing.assert_allclose(np.array(got), expected, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"backbone": "resnet_50"},
            ValueError,
            r"Unknown backbone.*Received: backbone='resnet_50'",
        ),
        (
            {"cut": "block_6_expand_rel"},
            ValueError,
            r"no layer named 'block_6_expand_rel'.*block_6_expand_relu.*Received: cut=",
        ),
        ({"outputs": ["S8", "nope"]}, ValueError, r"Received: outputs='nope'"),
        ({"outputs": "S8"}, TypeError, r"Received: outputs='S8'"),
        (
            {"input_shape": (16, 16, 3)},
            ValueError,
            r"at least 32x32.*Received: input_shape=\(16, 16, 3\)",
        ),
        (
            {"input_shape": (96, 96, 1)},
            ValueError,
            r"3-channel.*Received: input_shape=\(96, 96, 1\)",
        ),
        ({"input_shape": (96, 96)}, ValueError, r"Received: input_shape=\(96, 96\)"),
        ({"pooling": "mean"}, ValueError, r"Received: pooling='mean'"),
        ({"freeze": "some"}, ValueError, r"Received: freeze='some'"),
        ({"bn": "moving"}, ValueError, r"Received: bn='moving'"),
        (
            {"weights": "/no/such/file.weights.h5"},
            FileNotFoundError,
            r"Received: weights='/no/such/file.weights.h5'",
        ),
        ({"weights": 3}, ValueError, r"Received: weights=3"),
        ({"backbone": "/no/such/model.keras"}, FileNotFoundError, r"Received: backbone="),
        ({"submodel": "x"}, ValueError, r"Received: submodel='x'"),
        ({"backbone": 42}, TypeError, r"Received: backbone=42"),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs, error, match):
    args = dict(backbone="mobilenet_v2", weights=None, **MOBILENET)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        kerastl.FeatureExtractor(**args)


def test_mismatched_weights_file_is_rejected(tmp_path):
    other = kerastl.backbones.get_backbone("mobilenet_v2").build((96, 96, 3), alpha=1.0)
    path = str(tmp_path / "alpha1.weights.h5")
    other.save_weights(path)
    with pytest.raises(
        ValueError, match=r"does not fit backbone 'mobilenet_v2'.*alpha.*Received: weights="
    ):
        extractor(path)


def test_wrong_images_at_call_time():
    layer = extractor(None, pooling="avg")
    with pytest.raises(
        ValueError, match=r"built for images of shape \(96, 96, 3\).*\(2, 96, 96, 1\)"
    ):
        layer(np.zeros((2, 96, 96, 1), "float32"))
    with pytest.raises(ValueError, match=r"image batch.*Received: input_shape=\(96, 96, 3\)"):
        layer.build((96, 96, 3))


def test_keras_hub_backbone_with_pyramid_outputs(photos, tmp_path):
    keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is an optional backbone source")
    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    layer = kerastl.FeatureExtractor(hub, outputs=["P2", "P3"], pooling="avg", name="hub_fx")
    images = tf_mode(photos[:2, :32, :32])
    out = layer(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"P2": (2, 64), "P3": (2, 16)}
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, layer(inputs)["P3"])
    path = str(tmp_path / "hub.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5
    )


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === FeatureExtractor: backbone ===
    bad.case("fe-backbone-int", lambda: bad.FE(3), TypeError, r"Received: backbone=3"),
    bad.case("fe-backbone-none", lambda: bad.FE(None), TypeError, r"Received: backbone=None"),
    bad.case(
        "fe-backbone-list", lambda: bad.FE([bad.REG]), TypeError, r"Received: backbone=\['mob"
    ),
    bad.case(
        "fe-backbone-unknown",
        lambda: bad.FE("mobilenet_v9"),
        ValueError,
        r"Received: backbone='mobilenet_v9'",
    ),
    bad.case("fe-backbone-empty", lambda: bad.FE(""), ValueError, r"Received: backbone=''"),
    bad.case(
        "fe-backbone-missing-file",
        lambda: bad.FE(bad.tmp("missing/model.keras")),
        FileNotFoundError,
        r"Received: backbone='.*missing/model.keras'",
    ),
    bad.case(
        "fe-backbone-missing-path-no-suffix",
        lambda: bad.FE(bad.tmp("missing/model")),
        FileNotFoundError,
        r"Received: backbone='.*missing/model'",
    ),
    bad.case(
        "fe-backbone-missing-pathlike",
        lambda: bad.FE(pathlib.Path(bad.tmp("nothing.h5"))),
        FileNotFoundError,
        r"Received: backbone='.*nothing.h5'",
    ),
    bad.case(
        "fe-backbone-directory",
        lambda: bad.FE(bad.a_directory()),
        IsADirectoryError,
        r"Received: backbone=",
    ),
    bad.case(
        "fe-backbone-directory-no-suffix",
        lambda: bad.FE(bad.tmp()),
        IsADirectoryError,
        r"Received: backbone=",
    ),
    bad.case(
        "fe-backbone-not-a-model-file",
        lambda: bad.FE(bad.a_text_file()),
        ValueError,
        r"Received: backbone='.*notes.keras'",
    ),
    bad.case(
        "fe-backbone-two-inputs",
        lambda: bad.FE(bad.two_input_model()),
        ValueError,
        r"one image input.*Received: backbone=",
    ),
    bad.case(
        "fe-backbone-vector-model",
        lambda: bad.FE(bad.dense_model()),
        ValueError,
        r"Received: backbone='dense_model'",
    ),
    # === FeatureExtractor: weights ===
    bad.case("fe-weights-int", lambda: bad.fe(weights=3), ValueError, r"Received: weights=3"),
    bad.case(
        "fe-weights-bool", lambda: bad.fe(weights=True), ValueError, r"Received: weights=True"
    ),
    bad.case(
        "fe-weights-typo",
        lambda: bad.fe(weights="imagent"),
        ValueError,
        r"Received: weights='imagent'",
    ),
    bad.case(
        "fe-weights-missing-file",
        lambda: bad.fe(weights=bad.tmp("missing.weights.h5")),
        FileNotFoundError,
        r"Received: weights='.*missing.weights.h5'",
    ),
    bad.case(
        "fe-weights-directory",
        lambda: bad.fe(weights=bad.tmp()),
        IsADirectoryError,
        r"Received: weights=",
    ),
    bad.case(
        "fe-weights-not-weights",
        lambda: bad.fe(weights=bad.a_text_file("w.weights.h5")),
        ValueError,
        r"Received: weights='.*w.weights.h5'",
    ),
    # === FeatureExtractor: input_shape ===
    bad.case(
        "fe-shape-zero",
        lambda: bad.fe(input_shape=(0, 96, 3)),
        ValueError,
        r"Received: input_shape=\(0, 96, 3\)",
    ),
    bad.case(
        "fe-shape-rank2",
        lambda: bad.fe(input_shape=(96, 96)),
        ValueError,
        r"Received: input_shape=\(96, 96\)",
    ),
    bad.case(
        "fe-shape-string",
        lambda: bad.fe(input_shape="96"),
        ValueError,
        r"Received: input_shape='96'",
    ),
    bad.case(
        "fe-shape-int", lambda: bad.fe(input_shape=96), ValueError, r"Received: input_shape=96"
    ),
    bad.case(
        "fe-shape-float",
        lambda: bad.fe(input_shape=(96.5, 96, 3)),
        ValueError,
        r"Received: input_shape=\(96.5",
    ),
    bad.case(
        "fe-shape-negative",
        lambda: bad.fe(input_shape=(-1, 96, 3)),
        ValueError,
        r"Received: input_shape=\(-1",
    ),
    bad.case(
        "fe-shape-bool",
        lambda: bad.fe(input_shape=(96, 96, True)),
        ValueError,
        r"Received: input_shape=\(96, 96, True\)",
    ),
    bad.case(
        "fe-shape-nan",
        lambda: bad.fe(input_shape=(bad.NAN, 96, 3)),
        ValueError,
        r"Received: input_shape=\(nan",
    ),
    bad.case(
        "fe-shape-2-channels",
        lambda: bad.fe(input_shape=(96, 96, 2)),
        ValueError,
        r"Received: input_shape=\(96, 96, 2\)",
    ),
    bad.case(
        "fe-shape-too-small",
        lambda: bad.fe(input_shape=(16, 16, 3)),
        ValueError,
        r"at least 32x32.*Received: input_shape=\(16, 16, 3\)",
    ),
    bad.case(
        "fe-shape-mismatch-model",
        lambda: bad.FE(bad.tiny_cnn(), input_shape=(32, 32, 3)),
        ValueError,
        r"Received: input_shape=\(32, 32, 3\)",
    ),
    # === FeatureExtractor: pooling, cut, outputs ===
    bad.case(
        "fe-pooling-mean", lambda: bad.fe(pooling="mean"), ValueError, r"Received: pooling='mean'"
    ),
    bad.case("fe-pooling-int", lambda: bad.fe(pooling=1), ValueError, r"Received: pooling=1"),
    bad.case(
        "fe-pooling-bool", lambda: bad.fe(pooling=True), ValueError, r"Received: pooling=True"
    ),
    bad.case("fe-cut-int", lambda: bad.fe(cut=3), TypeError, r"Received: cut=3"),
    bad.case("fe-cut-list", lambda: bad.fe(cut=["x"]), TypeError, r"Received: cut=\['x'\]"),
    bad.case("fe-cut-empty", lambda: bad.fe(cut=""), ValueError, r"Received: cut=''"),
    bad.case(
        "fe-cut-unknown",
        lambda: bad.tiny_extractor(cut="conv_z"),
        ValueError,
        r"Received: cut='conv_z'",
    ),
    bad.case(
        "fe-cut-and-outputs",
        lambda: bad.fe(cut="S8", outputs=["S16"]),
        ValueError,
        r"Received: cut='S8', outputs=\['S16'\]",
    ),
    bad.case(
        "fe-outputs-string", lambda: bad.fe(outputs="S8"), TypeError, r"Received: outputs='S8'"
    ),
    bad.case("fe-outputs-empty", lambda: bad.fe(outputs=[]), TypeError, r"Received: outputs=\[\]"),
    bad.case("fe-outputs-int", lambda: bad.fe(outputs=[1]), TypeError, r"Received: outputs=\[1\]"),
    bad.case(
        "fe-outputs-duplicate",
        lambda: bad.fe(outputs=["S8", "S8"]),
        TypeError,
        r"Received: outputs=\['S8', 'S8'\]",
    ),
    bad.case(
        "fe-outputs-empty-name",
        lambda: bad.fe(outputs=["S8", ""]),
        TypeError,
        r"Received: outputs=\['S8', ''\]",
    ),
    bad.case(
        "fe-outputs-unknown",
        lambda: bad.tiny_extractor(outputs=["conv_a", "S99"]),
        ValueError,
        r"Received: outputs='S99'",
    ),
    bad.case(
        "fe-outputs-dict",
        lambda: bad.fe(outputs={"S8": 1}),
        TypeError,
        r"Received: outputs=\{'S8': 1\}",
    ),
    # === FeatureExtractor: freeze, bn, submodel, backbone_kwargs ===
    bad.case(
        "fe-freeze-some", lambda: bad.fe(freeze="some"), ValueError, r"Received: freeze='some'"
    ),
    bad.case("fe-freeze-int", lambda: bad.fe(freeze=3), ValueError, r"Received: freeze=3"),
    bad.case("fe-freeze-none", lambda: bad.fe(freeze=None), ValueError, r"Received: freeze=None"),
    bad.case("fe-freeze-bool", lambda: bad.fe(freeze=True), ValueError, r"Received: freeze=True"),
    bad.case(
        "fe-freeze-bad-config",
        lambda: bad.fe(freeze={"class_name": "Nope"}),
        ValueError,
        r"Received: freeze=\{'class_name': 'Nope'\}",
    ),
    bad.case(
        "fe-freeze-too-many-blocks",
        lambda: bad.tiny_extractor(freeze=kerastl.freeze.TrainTopBlocks(9)),
        ValueError,
        r"2 blocks.*Received: n=9",
    ),
    bad.case("fe-bn-moving", lambda: bad.fe(bn="moving"), ValueError, r"Received: bn='moving'"),
    bad.case("fe-bn-bool", lambda: bad.fe(bn=True), ValueError, r"Received: bn=True"),
    bad.case(
        "fe-submodel-int",
        lambda: bad.tiny_extractor(submodel=3),
        TypeError,
        r"Received: submodel=3",
    ),
    bad.case(
        "fe-submodel-unknown",
        lambda: bad.tiny_extractor(submodel="nope"),
        ValueError,
        r"Received: submodel='nope'",
    ),
    bad.case("fe-arch-int", lambda: bad.tiny_extractor(arch=3), TypeError, r"Received: arch=3"),
    bad.case(
        "fe-arch-unknown",
        lambda: bad.tiny_extractor(arch="nope"),
        ValueError,
        r"Received: arch='nope'",
    ),
    bad.case(
        "fe-arch-not-it",
        lambda: bad.tiny_extractor(arch="mobilenet_v2"),
        ValueError,
        r"not the registry's 'mobilenet_v2'.*Received: arch='mobilenet_v2'",
    ),
    bad.case(
        "fe-arch-registry",
        lambda: bad.fe(arch="resnet50"),
        ValueError,
        r"Received: arch='resnet50'",
    ),
    bad.case(
        "fe-safe-mode-str", lambda: bad.fe(safe_mode="no"), TypeError, r"Received: safe_mode='no'"
    ),
    bad.case(
        "fe-safe-mode-none", lambda: bad.fe(safe_mode=None), TypeError, r"Received: safe_mode=None"
    ),
    bad.case(
        "fe-submodel-registry",
        lambda: bad.fe(submodel="mobilenet"),
        ValueError,
        r"Received: submodel='mobilenet'",
    ),
    bad.case(
        "fe-kwargs-string",
        lambda: bad.fe(backbone_kwargs="alpha"),
        TypeError,
        r"Received: backbone_kwargs='alpha'",
    ),
    bad.case(
        "fe-kwargs-bad-value",
        lambda: bad.fe(backbone_kwargs={"alpha": "big"}),
        ValueError,
        r"Received: backbone_kwargs=\{'alpha': 'big'\}",
    ),
    bad.case(
        "fe-kwargs-unknown",
        lambda: bad.fe(backbone_kwargs={"nope": 1}),
        ValueError,
        r"Received: backbone_kwargs=\{'nope': 1\}",
    ),
    bad.case(
        "fe-kwargs-with-model",
        lambda: bad.tiny_extractor(backbone_kwargs={"alpha": 1}),
        ValueError,
        r"Received: backbone_kwargs=",
    ),
    # === FeatureExtractor.set_freeze ===
    bad.case(
        "fe-set-freeze-some",
        lambda: bad.mobilenet().set_freeze("some"),
        ValueError,
        r"Received: freeze='some'",
    ),
    bad.case(
        "fe-set-freeze-int",
        lambda: bad.mobilenet().set_freeze(3),
        ValueError,
        r"Received: freeze=3",
    ),
    bad.case(
        "fe-set-freeze-bn",
        lambda: bad.mobilenet().set_freeze(bn="moving"),
        ValueError,
        r"Received: bn='moving'",
    ),
    bad.case(
        "fe-set-freeze-too-many-blocks",
        lambda: bad.mobilenet().set_freeze(kerastl.freeze.TrainTopBlocks(40)),
        ValueError,
        r"has 18 blocks.*Received: n=40",
    ),
    bad.case(
        "fe-set-freeze-no-match",
        lambda: bad.mobilenet().set_freeze(kerastl.freeze.TrainPattern("^nothing_here$")),
        ValueError,
        r"Received: pattern='\^nothing_here\$'",
    ),
    # === calling built models and layers ===
    bad.case(
        "call-extractor-rank3",
        lambda: bad.mobilenet()(bad.images((96, 96, 3))),
        ValueError,
        r"Received: input_shape=\(96, 96, 3\)",
    ),
    bad.case(
        "call-extractor-channels",
        lambda: bad.mobilenet()(bad.images((1, 96, 96, 1))),
        ValueError,
        r"Received: input_shape=\(1, 96, 96, 1\)",
    ),
    bad.case(
        "call-extractor-size",
        lambda: bad.mobilenet()(bad.images((1, 64, 64, 3))),
        ValueError,
        r"Received: input_shape=\(1, 64, 64, 3\)",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
