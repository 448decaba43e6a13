"""LoRA: adapters on Conv2D, DepthwiseConv2D, SeparableConv2D and Dense; what trains; saving."""

import json
import os

import keras
import numpy as np
import pytest
from support import calibrate_batchnorm, shapes_only, tf_mode

import kerastl
from kerastl._keras_private import flatten_layers
from kerastl.freeze import LoRA
from kerastl.layers import LoRAWrapper, apply_lora, merge_lora
from kerastl.layers.lora import adapters
from kerastl.saving import load_adapters, save_adapters

# stem_conv, dw_conv, sep_conv (two kernels), group_conv, dense: six adapted kernels.
ADAPTED = ["stem_conv", "dw_conv", "sep_conv", "group_conv", "dense"]


def tiny_backbone(photos, seed=3):
    """Every kind LoRA adapts, BatchNorm calibrated on 32 px photos (same seed, same weights)."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw_conv")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(name="dw_relu")(x)
    x = layers.SeparableConv2D(16, 3, strides=2, padding="same", name="sep_conv")(x)
    x = layers.BatchNormalization(name="sep_bn")(x)
    x = layers.Conv2D(16, 1, groups=2, activation="relu", name="group_conv")(x)
    x = layers.Dense(12, activation="relu", name="dense")(x)
    model = keras.Model(inputs, x, name="tiny")
    return calibrate_batchnorm(model, tf_mode(small(photos)))


def small(photos):
    return photos[:12, ::3, ::3]


def extractor(photos, seed=3, **kwargs):
    return kerastl.FeatureExtractor(
        tiny_backbone(photos, seed), pooling="avg", arch=None, name="feature_extractor", **kwargs
    )


def classifier(fx):
    prep = kerastl.preprocessing.pipeline(fx, mode="tf")
    return kerastl.build_model(fx, kerastl.heads.multiclass(3), preprocessing=prep)


def features(fx, photos):
    return keras.ops.convert_to_numpy(fx(tf_mode(small(photos))))


def base_weights(fx):
    """Every backbone variable that is not an adapter factor, by path."""
    factors = {id(w) for wrapper in adapters(fx) for w in wrapper.adapter_weights}
    return {
        v.path: keras.ops.convert_to_numpy(v).copy()
        for v in fx.backbone.weights
        if id(v) not in factors
    }


def fit(model, photos, epochs=3):
    labels = np.arange(len(small(photos))) % 3
    model.fit(small(photos), labels, epochs=epochs, batch_size=6, verbose=0)


@pytest.fixture
def trained(photos):
    """A classifier with LoRA on the tiny backbone, fitted a few steps, and its input."""
    fx = extractor(photos, lora=LoRA(rank=2, alpha=4))
    model = classifier(fx)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    fit(model, photos)
    return model, fx


# --- the policy --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(rank=0), ValueError, r"Received: rank=0"),
        (dict(rank=2.5), ValueError, r"Received: rank=2.5"),
        (dict(rank="4"), ValueError, r"Received: rank='4'"),
        (dict(alpha=0), ValueError, r"Received: alpha=0"),
        (dict(alpha=float("nan")), ValueError, r"Received: alpha=nan"),
        (dict(layers=3), TypeError, r"Received: layers=3"),
        (dict(layers="conv("), ValueError, r"Received: layers='conv\('"),
        (dict(blocks=[]), ValueError, r"Received: blocks=\[\]"),
        (dict(blocks=[3]), ValueError, r"Received: blocks=\[3\]"),
    ],
)
def test_bad_policy_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LoRA(**kwargs)


def test_bad_arguments_elsewhere(photos, tmp_path):
    with pytest.raises(TypeError, match=r"Received: lora=4"):
        extractor(photos, lora=4)
    with pytest.raises(TypeError, match=r"Received: layer=<BatchNormalization"):
        LoRAWrapper(keras.layers.BatchNormalization())
    with pytest.raises(ValueError, match=r"Received: rank=-1"):
        LoRAWrapper(keras.layers.Dense(2), rank=-1)
    with pytest.raises(TypeError, match=r"Received: model=3"):
        apply_lora(3, LoRA())
    with pytest.raises(TypeError, match=r"Received: lora=None"):
        apply_lora(tiny_backbone(photos), None)
    plain = extractor(photos)
    for call in (lambda: merge_lora(plain), plain.merge_lora):
        with pytest.raises(ValueError, match=r"no LoRA adapters to merge"):
            call()
    with pytest.raises(ValueError, match=r"no LoRA adapters to save. Received: model="):
        save_adapters(plain, tmp_path / "a.npz")
    with pytest.raises(TypeError, match=r"Received: path=3"):
        save_adapters(extractor(photos, lora=LoRA()), 3)


def test_policy_round_trips_through_json():
    for policy in (LoRA(), LoRA(rank=8, alpha=16, layers="depthwise", blocks=["block_16"])):
        text = json.dumps(keras.saving.serialize_keras_object(policy))
        again = keras.saving.deserialize_keras_object(json.loads(text))
        assert again == policy and again.get_config() == policy.get_config()
    assert LoRA(rank=4).scale == 1.0 and LoRA(rank=4, alpha=8).scale == 2.0
    assert repr(LoRA(rank=2, layers="conv")) == "LoRA(rank=2, layers='conv')"


@pytest.mark.parametrize(
    "policy, match",
    [
        (LoRA(layers="_bn$"), r"adapts no layer .* \['BatchNormalization'\].* Received: layers="),
        (LoRA(layers="attention"), r"matches no layer .* Received: layers='attention'"),
        (LoRA(blocks=["stem_convv"]), r"close block names: \['stem_conv'.* Received: blocks="),
    ],
)
def test_policy_adapting_nothing_is_an_error(photos, policy, match):
    with pytest.raises(ValueError, match=match):
        extractor(photos, lora=policy)


def test_model_without_supported_layers_is_refused_and_nothing_changes(photos):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match=r"adapts no layer .* Received: lora=LoRA\(rank=4\)"):
        apply_lora(model, LoRA())
    fx = extractor(photos)
    backbone = fx.backbone
    with pytest.raises(ValueError, match=r"Received: layers="):
        fx.set_lora(LoRA(layers="relu"))
    assert fx.backbone is backbone and fx.lora is None


def test_blocks_and_pattern_select_layers(photos):
    model = tiny_backbone(photos)
    assert LoRA().targets(model) == ADAPTED
    assert LoRA(layers="conv").targets(model) == ["stem_conv", "dw_conv", "sep_conv", "group_conv"]
    # Without registry blocks each weighted layer starts one (with its BatchNorm and ReLU).
    assert LoRA(blocks=["dw_conv", "dense"]).targets(model) == ["dw_conv", "dense"]
    assert LoRA(blocks="sep_conv", layers="^sep").targets(model) == ["sep_conv"]


# --- adapters: shapes, exact start, what trains ---------------------------------------


def test_adapters_start_at_zero_and_change_nothing(photos):
    before = features(extractor(photos), photos)
    assert before.std(axis=0).mean() > 1e-2  # calibrated: the features depend on the image
    fx = extractor(photos, lora=LoRA(rank=2))
    np.testing.assert_array_equal(features(fx, photos), before)
    wrappers = adapters(fx)
    assert [w.name for w in wrappers] == ADAPTED
    shapes = {w.name: [tuple(v.shape) for v in w.adapter_weights] for w in wrappers}
    assert shapes == {
        "stem_conv": [(27, 2), (2, 8)],
        "dw_conv": [(9, 2), (2, 16)],  # (kh * kw, channels * multiplier)
        "sep_conv": [(9, 2), (2, 16), (16, 2), (2, 16)],
        "group_conv": [(8, 2), (2, 16)],  # (kh * kw * channels / groups, filters)
        "dense": [(16, 2), (2, 12)],
    }
    assert all(not np.any(keras.ops.convert_to_numpy(w.adapter_weights[1])) for w in wrappers)
    trainable = {id(v) for v in fx.trainable_weights}
    assert trainable == {id(v) for w in wrappers for v in w.adapter_weights}
    # The adapted model holds the very layers of the base model: weights shared, not copied.
    base = tiny_backbone(photos)
    adapted = apply_lora(base, LoRA(rank=2))
    assert all(adapted.get_layer(name).layer is base.get_layer(name) for name in ADAPTED)
    # Rank is capped by the kernel matrix: a 3x3 depthwise kernel has rank 9 at most.
    wide = extractor(photos, lora=LoRA(rank=12, layers="dw_conv"))
    assert [tuple(v.shape) for v in adapters(wide)[0].adapter_weights] == [(9, 9), (9, 16)]


@pytest.mark.keras_floor
def test_fit_moves_only_adapters_and_head(photos):
    fx = extractor(photos, lora=LoRA(rank=2, alpha=4))
    model = classifier(fx)
    start = base_weights(fx)
    outputs = features(fx, photos)
    assert len(model.trainable_weights) == 12 + 2  # six kernels' A and B, the head's Dense
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    fit(model, photos)
    end = base_weights(fx)
    assert len(start) == 23 and any("moving_mean" in path for path in start)
    for path, value in start.items():
        np.testing.assert_array_equal(end[path], value, err_msg=path)
    for wrapper in adapters(fx):
        assert np.any(keras.ops.convert_to_numpy(wrapper.adapter_weights[1])), wrapper.name
    assert np.abs(features(fx, photos) - outputs).max() > 1e-3


def test_freeze_still_decides_what_else_trains(photos):
    fx = extractor(photos, lora=LoRA(layers="conv"), freeze="none", bn="affine")
    trains = {layer.name for layer in fx.backbone.layers if layer.trainable_weights}
    assert trains == set(ADAPTED) | {"stem_bn", "dw_bn", "sep_bn"}
    dense = fx.backbone.get_layer("dense")
    assert isinstance(dense, keras.layers.Dense) and dense.trainable
    # Whatever is set on it, an adapted layer's own weights stay frozen.
    fx.backbone.trainable = True
    assert not fx.backbone.get_layer("stem_conv").layer.trainable_weights
    assert fx.set_freeze("all", bn="frozen") == set(ADAPTED) - {"dense"}


# --- adding, removing, merging ---------------------------------------------------------


def test_set_lora_on_a_built_model_then_fit(photos):
    fx = extractor(photos)
    model = classifier(fx)
    images = small(photos)
    before = model.predict(images, verbose=0)
    count = len(model.weights)
    assert fx.set_lora(LoRA(rank=2)) == set(ADAPTED)
    assert len(model.weights) == count + 12
    # The old backbone is no longer tracked: its layers are not seen twice.
    models = [m for m in flatten_layers(fx, recursive=False) if isinstance(m, keras.Model)]
    assert models == [fx.backbone]
    np.testing.assert_array_equal(model.predict(images, verbose=0), before)
    start = base_weights(fx)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    fit(model, photos, epochs=2)
    assert np.abs(model.predict(images, verbose=0) - before).max() > 1e-4
    end = base_weights(fx)
    for path, value in start.items():
        np.testing.assert_array_equal(end[path], value, err_msg=path)
    # Removing the adapters drops what they learned: back to the base's features.
    head_only = classifier(extractor(photos))
    head_only.get_layer("head").set_weights(model.get_layer("head").get_weights())
    fx.set_lora(None)
    assert fx.lora is None and not adapters(model) and len(model.weights) == count
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # a new graph
    np.testing.assert_allclose(
        model.predict(images, verbose=0), head_only.predict(images, verbose=0), atol=1e-6
    )


def test_merge_keeps_predictions_and_drops_the_adapters(trained, photos):
    model, fx = trained
    images = small(photos)
    expected = model.predict(images, verbose=0)
    adapted = len(model.weights)
    assert merge_lora(model) is model
    assert fx.lora is None and not adapters(model)
    assert not any(isinstance(layer, LoRAWrapper) for layer in fx.backbone.layers)
    assert len(model.weights) == adapted - 12
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)
    # A functional model from apply_lora is rebuilt without its wrappers.
    plain = tiny_backbone(photos)
    adapted_model = apply_lora(plain, LoRA(rank=2))
    for wrapper in adapters(adapted_model):
        b = wrapper.adapter_weights[1]
        b.assign(np.full(tuple(b.shape), 0.05, "float32"))
    x = tf_mode(images)
    out = adapted_model.predict(x, verbose=0)
    merged = merge_lora(adapted_model)
    assert not adapters(merged)
    np.testing.assert_allclose(merged.predict(x, verbose=0), out, atol=1e-5)


# --- saving --------------------------------------------------------------------------


def test_adapters_file_restores_predictions_on_a_fresh_model(trained, photos, tmp_path):
    model, fx = trained
    path = tmp_path / "adapters.npz"
    assert save_adapters(model, path) == ADAPTED
    assert os.path.getsize(path) < 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["adapters.npz"]  # no temporary file left
    fresh = extractor(photos, lora=LoRA(rank=2, alpha=4))
    assert np.abs(features(fresh, photos) - features(fx, photos)).max() > 1e-3
    assert load_adapters(fresh, str(path)) == ADAPTED
    np.testing.assert_allclose(features(fresh, photos), features(fx, photos), atol=1e-6)


@pytest.mark.parametrize(
    "policy, match",
    [
        (LoRA(rank=3, alpha=4), r"has rank=2; the model's has rank=3"),
        (LoRA(rank=2, alpha=2), r"has alpha=4.0; the model's has alpha=2.0"),
        (LoRA(rank=2, alpha=4, layers="conv"), r"not in the model: \['dense'\]"),
    ],
)
def test_adapters_file_that_does_not_match_is_refused(photos, tmp_path, policy, match):
    path = tmp_path / "adapters.npz"
    save_adapters(extractor(photos, lora=LoRA(rank=2, alpha=4)), path)
    other = extractor(photos, lora=policy)
    before = [keras.ops.convert_to_numpy(v) for v in other.weights]
    with pytest.raises(ValueError, match=match + r".*Received: path="):
        load_adapters(other, path)
    for b, v in zip(before, other.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), b)


def test_adapters_file_checks(photos, tmp_path):
    path = tmp_path / "adapters.npz"
    save_adapters(extractor(photos, lora=LoRA(rank=2, alpha=4)), path)
    other_base = extractor(photos, seed=4, lora=LoRA(rank=2, alpha=4))
    with pytest.warns(UserWarning, match=r"base kernels of .* differ"):
        load_adapters(other_base, path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match=r"not an adapters file .*Received: path="):
        load_adapters(other_base, bad)
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match=r"no kerastl LoRA header"):
        load_adapters(other_base, tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError, match=r"Received: path="):
        load_adapters(other_base, tmp_path / "missing.npz")


@pytest.mark.keras_floor
def test_keras_file_round_trip(trained, photos, tmp_path):
    model, _ = trained
    images = small(photos)
    path = str(tmp_path / "lora.keras")
    kerastl.save_model(model, path)
    for loaded in (kerastl.load_model(path), keras.saving.load_model(path)):
        fx = loaded.get_layer("feature_extractor")
        assert fx.lora == LoRA(rank=2, alpha=4)
        assert [w.name for w in adapters(fx)] == ADAPTED
        trainable = {id(v) for v in fx.trainable_weights}
        assert trainable == {id(v) for w in adapters(fx) for v in w.adapter_weights}
        np.testing.assert_allclose(
            loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
        )


def test_config_round_trip_rebuilds_the_adapted_backbone(photos):
    fx = extractor(photos, lora=LoRA(rank=2, layers="conv"))
    config = json.loads(json.dumps(fx.get_config()))
    assert config["lora"]["config"] == LoRA(rank=2, layers="conv").get_config()
    again = kerastl.FeatureExtractor.from_config(config)
    assert [w.name for w in adapters(again)] == ADAPTED[:-1]
    no_lora = {k: v for k, v in extractor(photos).get_config().items() if k != "lora"}
    assert kerastl.FeatureExtractor.from_config(no_lora).lora is None  # configs from before LoRA


# Loading on the other backends: tests/test_cross_backend.py (one matrix for every part).


# --- a registry backbone, explain ---------------------------------------------------


def test_mobilenet_v2_gets_adapters_on_its_depthwise_convolutions():
    args = dict(weights=None, input_shape=(32, 32, 3), backbone_kwargs={"alpha": 0.35})
    with shapes_only():
        fx = kerastl.FeatureExtractor("mobilenet_v2", lora=LoRA(rank=4), **args)
        kinds = [type(w.layer).__name__ for w in adapters(fx)]
        assert kinds.count("DepthwiseConv2D") == 17 and kinds.count("Conv2D") == 35
        depthwise = fx.backbone.get_layer("block_16_depthwise")
        channels = depthwise.layer.kernel.shape[2]
        assert [tuple(v.shape) for v in depthwise.adapter_weights] == [(9, 4), (4, channels)]
        assert len(fx.trainable_weights) == 2 * len(kinds)
        top = kerastl.FeatureExtractor(
            "mobilenet_v2", lora=LoRA(rank=4, blocks=["block_16"]), **args
        )
        assert [w.name for w in adapters(top)] == [
            "block_16_expand",
            "block_16_depthwise",
            "block_16_project",
            "Conv_1",
        ]


def test_explain_shows_adapters_and_the_trainable_fraction(photos):
    fx = extractor(photos, lora=LoRA(rank=2, layers="dw_conv"))
    printed = []
    rows = kerastl.explain(fx, print_fn=printed.append)
    by_name = {row["name"]: row for row in rows}
    assert by_name["dw_conv"]["type"] == "DepthwiseConv2D"
    assert by_name["dw_conv"]["trainable_params"] == 0
    assert by_name["dw_conv/lora"]["type"] == "LoRA(rank=2)"
    assert by_name["dw_conv/lora"]["trainable_params"] == 9 * 2 + 2 * 16
    total = sum(row["params"] for row in rows)
    assert total == sum(int(np.prod(w.shape)) for w in fx.weights)
    assert f"Trainable params: 50 ({100 * 50 / total:.3g}% of the total)" in printed[0]


def test_fine_tune_with_a_lora_policy_caches_the_head_phase_then_trains_adapters(photos):
    fx = extractor(photos)
    model = classifier(fx)
    before = base_weights(fx)
    labels = np.arange(len(small(photos))) % 3
    data = kerastl.data.from_arrays(small(photos), labels, batch_size=6, shuffle=False)
    policy = LoRA(rank=2, layers="stem|group")
    history = kerastl.fine_tune(
        model, data, head_epochs=2, epochs=2, lr=1e-2, unfreeze=policy, verbose=0
    )
    assert history.phases == ["head", "fine-tune"] and fx.lora == policy
    assert sorted(w.name for w in adapters(fx)) == ["group_conv", "stem_conv"]
    for wrapper in adapters(fx):  # the adapters trained
        assert np.abs(keras.ops.convert_to_numpy(wrapper.adapter_weights[1])).max() > 0
    after = base_weights(fx)
    assert after.keys() == before.keys()
    for path, value in before.items():  # the backbone's own weights never moved
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    # Checked before the head phase runs: a policy that adapts nothing.
    with pytest.raises(ValueError, match=r"adapts no layer.*Received: unfreeze="):
        kerastl.fine_tune(classifier(extractor(photos)), data, epochs=1, unfreeze=LoRA(layers="bn"))


def test_lora_as_the_freeze_policy_is_freeze_all_with_adapters(photos):
    policy = LoRA(rank=2, layers="stem|group")
    fx = extractor(photos, freeze=policy)
    assert fx.lora == policy and isinstance(fx.freeze, kerastl.freeze.FreezeAll)
    assert sorted(w.name for w in adapters(fx)) == ["group_conv", "stem_conv"]
    assert {layer.name for layer in fx.backbone.layers if layer.trainable} == {
        "group_conv",
        "stem_conv",
    }
    with pytest.raises(ValueError, match=r"pass the adapters once, as `lora=`. Received: freeze="):
        extractor(photos, freeze=policy, lora=LoRA(rank=4))


@pytest.mark.backend_free
def test_lora_where_a_freeze_policy_goes_says_to_pass_it_as_lora():
    with pytest.raises(ValueError, match=r"as `lora=`.*Received: freeze=LoRA\(rank=4\)"):
        kerastl.freeze.get_policy(LoRA(rank=4))
