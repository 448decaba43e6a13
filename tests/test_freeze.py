import re
import warnings

import bad_input as bad
import keras
import numpy as np
import pytest
from support import calibrate_batchnorm, tf_mode

import kerastl
import kerastl.optimizers
from kerastl.freeze import (
    AllOf,
    AnyOf,
    FreezeAll,
    FreezeNone,
    FreezePattern,
    FreezeUpTo,
    TrainFraction,
    TrainPattern,
    TrainTopBlocks,
    get_policy,
)
from kerastl.training import RecompileWarning, explain, set_freeze

MOBILENET = dict(input_shape=(96, 96, 3), backbone_kwargs={"alpha": 0.35})
BLOCK_16 = {"block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}
BLOCK_15 = {"block_15_expand", "block_15_depthwise", "block_15_project"}


def mobilenet(weights=None, **kwargs):
    return kerastl.FeatureExtractor("mobilenet_v2", weights=weights, **{**MOBILENET, **kwargs})


def tiny_cnn():
    """Named conv layers and a BatchNorm, no block information: four blocks, one per weighted
    layer, the BatchNorm in conv_a's."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.Conv2D(4, 3, name="conv_b")(x)
    x = keras.layers.Dense(6, name="mix")(x)
    x = keras.layers.Conv2D(8, 3, name="conv_c")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def trained(extractor_or_model):
    layers = (
        extractor_or_model.backbone.layers
        if isinstance(extractor_or_model, kerastl.FeatureExtractor)
        else extractor_or_model.layers
    )
    return {layer.name for layer in layers if layer.trainable_weights}


# --- policies: exactly the right layers ---------------------------------------------


@pytest.mark.parametrize(
    "policy, bn, expected",
    [
        (FreezeAll(), "frozen", set()),
        (FreezeUpTo("block_15_project_BN"), "frozen", BLOCK_16),
        (FreezeUpTo("block_15"), "frozen", BLOCK_16),  # a block name freezes the whole block
        (
            FreezeUpTo("block_15_project"),
            "affine",
            BLOCK_16
            | {"block_15_project_BN"}
            | {f"block_16_{p}_BN" for p in ("expand", "depthwise", "project")}
            | {"Conv_1_bn"},
        ),
        (TrainTopBlocks(1), "frozen", BLOCK_16),
        (TrainTopBlocks(2), "frozen", BLOCK_16 | BLOCK_15),
        (TrainPattern(r"^block_16_"), "frozen", BLOCK_16 - {"Conv_1"}),
        (
            FreezeAll() | TrainPattern("project$"),
            "frozen",
            {f"block_{i}_project" for i in range(1, 17)} | {"expanded_conv_project"},
        ),
        (
            TrainTopBlocks(2) & FreezePattern("depthwise"),
            "frozen",
            (BLOCK_16 | BLOCK_15) - {"block_15_depthwise", "block_16_depthwise"},
        ),
        (AnyOf([TrainTopBlocks(1), TrainPattern("^Conv1$")]), "frozen", BLOCK_16 | {"Conv1"}),
    ],
    # Sets print in hash order, which differs between processes (pytest-xdist workers).
    ids=lambda v: f"{len(v)}_layers" if isinstance(v, set) else repr(v)[:40],
)
def test_registry_backbone_policies_train_exactly_these_layers(policy, bn, expected):
    extractor = mobilenet(freeze=policy, bn=bn)
    assert trained(extractor) == expected
    assert extractor.fully_frozen == (not expected)


def test_train_top_blocks_is_block_aware_and_layer_wise_without_block_info():
    extractor = mobilenet(freeze=TrainTopBlocks(3))
    # Three registry blocks, not three layers.
    assert trained(extractor) == BLOCK_16 | BLOCK_15 | {
        "block_14_expand",
        "block_14_depthwise",
        "block_14_project",
    }
    plain = kerastl.FeatureExtractor(tiny_cnn(), freeze=TrainTopBlocks(2))
    assert trained(plain) == {"mix", "conv_c"}  # one block per weighted layer
    assert trained(kerastl.FeatureExtractor(tiny_cnn(), freeze=TrainTopBlocks(4))) == {
        "conv_a",
        "conv_b",
        "mix",
        "conv_c",
    }  # all 4 blocks; bn="frozen" keeps bn_a out
    with_bn = kerastl.FeatureExtractor(tiny_cnn(), freeze=TrainTopBlocks(4), bn="affine")
    assert "bn_a" in trained(with_bn)  # a BatchNorm trains with the convolution before it
    with pytest.raises(ValueError, match=r"it has 4 blocks.*Received: n=5"):
        kerastl.FeatureExtractor(tiny_cnn(), freeze=TrainTopBlocks(5))


@pytest.mark.parametrize(
    "f, expected",
    [
        (0.0, set()),
        (0.2, {"conv_c"}),
        (0.3, {"mix", "conv_c"}),
        (0.6, {"conv_b", "mix", "conv_c"}),
        (1.0, {"conv_a", "bn_a", "conv_b", "mix", "conv_c"}),
    ],
)
def test_train_fraction_counts_weighted_layers_from_the_top(f, expected):
    # Five weighted layers: conv_a, bn_a, conv_b, mix, conv_c; ceil(f * 5) train.
    extractor = kerastl.FeatureExtractor(tiny_cnn(), freeze=TrainFraction(f), bn="affine")
    assert trained(extractor) == expected


def test_seed_004_freeze_every_layer_with_conv_in_its_name():
    extractor = kerastl.FeatureExtractor(tiny_cnn(), freeze=FreezePattern("conv"), bn="train")
    assert trained(extractor) == {"bn_a", "mix"}
    on_mobilenet = mobilenet(freeze=FreezePattern("conv"))
    names = trained(on_mobilenet)
    # MobileNetV2's "Conv1"/"Conv_1" are capitalised: a regex is case-sensitive.
    assert "Conv1" in names and "Conv_1" in names
    assert not any("conv" in name for name in names)
    assert "block_3_expand" in names


@pytest.mark.parametrize(
    "policy, match",
    [
        (
            FreezePattern("cnov"),
            r"FreezePattern\(pattern='cnov'\) matches no layer of model "
            r"'tiny_cnn'.*conv_a.*Received: pattern='cnov'",
        ),
        (TrainPattern("^block_"), r"TrainPattern.*matches no layer.*Received: pattern='\^block_'"),
        (
            FreezeUpTo("conv_d"),
            r"FreezeUpTo\(layer_name='conv_d'\) matches no layer.*"
            r"Close layer names: \['conv_c', 'conv_b', 'conv_a'\]. Received: layer_name='conv_d'",
        ),
        (FreezeAll() | TrainPattern("nothing"), r"TrainPattern\(pattern='nothing'\)"),
    ],
)
def test_policy_matching_no_layer_is_an_error(policy, match):
    with pytest.raises(ValueError, match=match):
        kerastl.FeatureExtractor(tiny_cnn(), freeze=policy)


def test_close_names_on_a_registry_backbone():
    with pytest.raises(ValueError, match=r"Close layer names: \['block_16_project'"):
        mobilenet(freeze=FreezeUpTo("block_16_projekt"))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: get_policy("some"), r"Received: freeze='some'"),
        (lambda: get_policy(3), r"Received: freeze=3"),
        (lambda: FreezePattern("("), r"not a valid regex.*Received: pattern='\('"),
        (lambda: TrainPattern(5), r"Received: pattern=5"),
        (lambda: TrainFraction(1.5), r"Received: f=1.5"),
        (lambda: TrainTopBlocks(-1), r"Received: n=-1"),
        (lambda: TrainTopBlocks(1.5), r"Received: n=1.5"),
        (lambda: FreezeUpTo(""), r"Received: layer_name=''"),
        (lambda: AnyOf([]), r"Received: policies=\[\]"),
        (lambda: AllOf("all"), r"Received: policies='all'"),
        (lambda: FreezeAll() | "some", r"Received: freeze='some'"),
    ],
)
def test_bad_policy_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "policy",
    [
        FreezeAll(),
        FreezeNone(),
        FreezeUpTo("block_3"),
        TrainTopBlocks(4),
        TrainFraction(0.3),
        FreezePattern("conv"),
        TrainPattern("_BN$"),
        AllOf([TrainTopBlocks(2), AnyOf([FreezePattern("a"), "none"])]),
    ],
    ids=lambda p: type(p).__name__,
)
def test_policies_round_trip_through_json(policy):
    import json

    config = json.loads(json.dumps(keras.saving.serialize_keras_object(policy)))
    assert config["registered_name"].startswith("kerastl>")
    clone = get_policy(config)
    assert clone == policy and clone is not policy


@pytest.mark.keras_floor
def test_freeze_and_batchnorm_state_survive_keras_save_and_load(tmp_path):
    policy = TrainTopBlocks(2) & FreezePattern("depthwise")
    inputs = keras.Input((96, 96, 3))
    features = mobilenet(freeze=policy, bn="affine", pooling="avg", name="fx")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(features))
    expected = {la.name: la.trainable for la in model.get_layer("fx").backbone.layers[1:]}
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path).get_layer("fx")
    assert loaded.freeze == policy and loaded.bn == "affine"
    assert {la.name: la.trainable for la in loaded.backbone.layers[1:]} == expected
    assert len(loaded.trainable_weights) == len(model.get_layer("fx").trainable_weights) > 0
    # A plain model's flags are Keras's own `trainable` configs.
    plain = tiny_cnn()
    set_freeze(plain, FreezePattern("conv"))
    plain.save(str(tmp_path / "plain.keras"))
    reloaded = keras.saving.load_model(str(tmp_path / "plain.keras"))
    assert trained(reloaded) == {"mix"}


# --- fit: the policy is what trains -------------------------------------------------


def _snapshot(layers):
    return {
        (la.name, i): keras.ops.convert_to_numpy(w).copy()
        for la in layers
        for i, w in enumerate(la.weights)
    }


def _changed(before, after):
    return {key for key in before if not np.array_equal(before[key], after[key])}


def _labels(n):
    return np.arange(n) % 3


def test_fit_changes_exactly_the_layers_the_policy_trains(mobilenet_weights, photos):
    inputs = keras.Input((96, 96, 3))
    extractor = mobilenet(mobilenet_weights, freeze=TrainTopBlocks(1), pooling="avg")
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(extractor(inputs)))
    backbone = extractor.backbone
    before = _snapshot(backbone.layers)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(tf_mode(photos[:16]), _labels(16), epochs=1, batch_size=8, verbose=0)
    changed = {name for name, _ in _changed(before, _snapshot(backbone.layers))}
    assert changed == BLOCK_16  # its BatchNorm layers stay frozen (bn="frozen")


# --- BatchNorm modes ------------------------------------------------------------------


@pytest.mark.keras_floor
@pytest.mark.parametrize(
    "bn, expected",
    [
        ("frozen", set()),
        ("affine", {"gamma", "beta"}),
        ("train", {"gamma", "beta", "moving_mean", "moving_variance"}),
    ],
)
def test_batchnorm_mode_decides_which_of_its_variables_change(
    bn, expected, mobilenet_weights, photos
):
    inputs = keras.Input((96, 96, 3))
    extractor = mobilenet(mobilenet_weights, freeze=TrainTopBlocks(1), bn=bn, pooling="avg")
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(extractor(inputs)))
    bns = [
        la for la in extractor.backbone.layers if isinstance(la, keras.layers.BatchNormalization)
    ]
    in_block = [la for la in bns if la.name.startswith("block_16_") or la.name == "Conv_1_bn"]
    before = {
        (la.name, v.name): keras.ops.convert_to_numpy(v).copy() for la in bns for v in la.weights
    }
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(tf_mode(photos[:16]), _labels(16), epochs=1, batch_size=8, verbose=0)
    after = {(la.name, v.name): keras.ops.convert_to_numpy(v) for la in bns for v in la.weights}
    changed = {key for key in before if not np.allclose(before[key], after[key], rtol=0, atol=0)}
    for layer in in_block:
        assert {v for name, v in changed if name == layer.name} == expected, layer.name
    # BatchNorm layers of frozen blocks never change, whatever the mode.
    assert {name for name, _ in changed} <= {la.name for la in in_block}


def test_plain_model_batchnorm_modes():
    model = tiny_cnn()
    set_freeze(model, "none", bn="frozen")
    assert not model.get_layer("bn_a").trainable and model.get_layer("conv_a").trainable
    set_freeze(model, "none", bn="train")
    assert model.get_layer("bn_a").trainable
    with pytest.raises(
        ValueError, match=r"needs a kerastl.FeatureExtractor.*Received: bn='affine'"
    ):
        set_freeze(model, "none", bn="affine")
    with pytest.raises(ValueError, match=r"Received: bn='moving'"):
        set_freeze(model, "none", bn="moving")


# --- set_freeze(): recompiles ------------------------------------------------------------


def _tiny_classifier(freeze="all"):
    backbone = tiny_cnn()
    calibrate_batchnorm(backbone, np.random.default_rng(0).normal(size=(8, 16, 16, 3)))
    inputs = keras.Input((16, 16, 3))
    features = kerastl.FeatureExtractor(backbone, freeze=freeze, pooling="avg", name="fx")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(features))


def _tiny_data(n=16):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 16, 16, 3)).astype("float32"), _labels(n)


@pytest.mark.keras_floor
def test_apply_recompiles_with_the_same_optimizer_loss_and_metrics():
    model = _tiny_classifier()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = _tiny_data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # traces the step: frozen backbone
    head_slots = {v.path: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables}
    backbone = model.get_layer("fx").backbone
    before = _snapshot(backbone.layers)
    names = set_freeze(model, TrainTopBlocks(1))
    assert names == ["conv_c"]
    # Same optimizer class and config, its state carried over for the head.
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.01)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    kept = {v.path: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables}
    for path in ("adam/head_kernel_momentum", "adam/head_bias_velocity"):
        np.testing.assert_array_equal(kept[path], head_slots[path])
    assert "adam/conv_c_kernel_momentum" in kept
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    changed = {name for name, _ in _changed(before, _snapshot(backbone.layers))}
    assert changed == {"conv_c"}


def test_apply_without_recompile_warns_loudly():
    model = _tiny_classifier()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(RecompileWarning, match=r"not recompiled: fit\(\) keeps training"):
        set_freeze(model, "none", recompile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecompileWarning)
        set_freeze(_tiny_classifier(), "none", recompile=False)  # not compiled: nothing to say


def test_apply_on_a_plain_model_trains_what_the_policy_says():
    model = tiny_cnn()
    assert set_freeze(model, FreezePattern("conv")) == ["mix"]
    assert set_freeze(model, FreezeUpTo("conv_b")) == ["conv_c", "mix"]
    assert not model.get_layer("bn_a").trainable
    with pytest.raises(TypeError, match=r"Received: model_or_layer=3"):
        set_freeze(3, "all")


# --- explain() ------------------------------------------------------------------------


def _summary_totals(model):
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    return {
        key: int(re.search(rf"{key} params: ([\d,]+)", text).group(1).replace(",", ""))
        for key in ("Total", "Trainable", "Non-trainable")
    }


def test_explain_rows_and_totals_match_summary():
    inputs = keras.Input((96, 96, 3))
    extractor = mobilenet(freeze=TrainTopBlocks(1), bn="affine", pooling="gem", name="fx")
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(extractor(inputs)))
    optimizer = kerastl.optimizers.PerLayerLR(
        "adam", multipliers={"block_16_.*": 0.1, "Conv_1_bn": 0.0}
    )
    model.compile(optimizer=optimizer, loss="mse")
    printed = []
    rows = explain(model, print_fn=printed.append)
    by_name = {row["name"]: row for row in rows}
    totals = _summary_totals(model)
    assert sum(r["params"] for r in rows) == totals["Total"]
    assert sum(r["trainable_params"] for r in rows) == totals["Trainable"]
    assert by_name["fx/block_16_project"] == {
        "name": "fx/block_16_project",
        "type": "Conv2D",
        "trainable": True,
        "bn": None,
        "lr_multiplier": 0.1,
        "params": 37_632,
        "trainable_params": 37_632,
    }
    assert by_name["fx/block_16_project_BN"]["bn"] == "affine"
    assert by_name["fx/Conv_1_bn"]["lr_multiplier"] == 0.0
    assert by_name["fx/block_15_project_BN"]["bn"] == "frozen"
    assert by_name["fx/block_15_project"]["trainable"] is False
    assert by_name["fx/block_15_project"]["lr_multiplier"] is None
    assert by_name["fx/pool_features/gem"]["trainable_params"] == 1
    assert by_name["head"]["lr_multiplier"] == 1.0
    table = printed[0]
    assert "fx/block_16_project " in table and f"Trainable params: {totals['Trainable']:,}" in table
    assert "Layer" in table.splitlines()[2] and "BatchNorm" in table.splitlines()[2]


@pytest.mark.backend_free
def test_set_trainable_names_a_wrong_model_or_policy():
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model.*Received: model='all'"):
        kerastl.freeze.set_trainable("all", "all", None)


def test_set_trainable_takes_a_shortcut_and_names_a_wrong_policy():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    assert kerastl.freeze.set_trainable(model, "none", [("b", ["d"])]) == {"d"}
    with pytest.raises(TypeError, match=r"Received: policy=3"):
        kerastl.freeze.set_trainable(model, 3, [("b", ["d"])])


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.freeze policies ===
    bad.case(
        "fz-upto-int", lambda: kerastl.freeze.FreezeUpTo(3), ValueError, r"Received: layer_name=3"
    ),
    bad.case(
        "fz-upto-empty",
        lambda: kerastl.freeze.FreezeUpTo(""),
        ValueError,
        r"Received: layer_name=''",
    ),
    bad.case(
        "fz-upto-unknown",
        lambda: bad.apply(kerastl.freeze.FreezeUpTo("conv_z")),
        ValueError,
        r"Received: layer_name='conv_z'",
    ),
    bad.case(
        "fz-top-negative", lambda: kerastl.freeze.TrainTopBlocks(-1), ValueError, r"Received: n=-1"
    ),
    bad.case(
        "fz-top-float", lambda: kerastl.freeze.TrainTopBlocks(2.5), ValueError, r"Received: n=2.5"
    ),
    bad.case(
        "fz-top-bool", lambda: kerastl.freeze.TrainTopBlocks(True), ValueError, r"Received: n=True"
    ),
    bad.case(
        "fz-top-string", lambda: kerastl.freeze.TrainTopBlocks("3"), ValueError, r"Received: n='3'"
    ),
    bad.case(
        "fz-top-nan", lambda: kerastl.freeze.TrainTopBlocks(bad.NAN), ValueError, r"Received: n=nan"
    ),
    bad.case(
        "fz-top-too-many",
        lambda: bad.apply(kerastl.freeze.TrainTopBlocks(4)),
        ValueError,
        r"2 blocks.*Received: n=4",
    ),
    bad.case(
        "fz-top-too-many-composed",
        lambda: bad.apply(kerastl.freeze.TrainTopBlocks(99) | kerastl.freeze.TrainPattern("conv")),
        ValueError,
        r"Received: n=99",
    ),
    bad.case(
        "fz-fraction-above-1",
        lambda: kerastl.freeze.TrainFraction(1.5),
        ValueError,
        r"Received: f=1.5",
    ),
    bad.case(
        "fz-fraction-negative",
        lambda: kerastl.freeze.TrainFraction(-0.1),
        ValueError,
        r"Received: f=-0.1",
    ),
    bad.case(
        "fz-fraction-nan",
        lambda: kerastl.freeze.TrainFraction(bad.NAN),
        ValueError,
        r"Received: f=nan",
    ),
    bad.case(
        "fz-fraction-bool",
        lambda: kerastl.freeze.TrainFraction(True),
        ValueError,
        r"Received: f=True",
    ),
    bad.case(
        "fz-fraction-string",
        lambda: kerastl.freeze.TrainFraction("0.5"),
        ValueError,
        r"Received: f='0.5'",
    ),
    bad.case(
        "fz-pattern-bad-regex",
        lambda: kerastl.freeze.FreezePattern("["),
        ValueError,
        r"Received: pattern='\['",
    ),
    bad.case(
        "fz-pattern-int",
        lambda: kerastl.freeze.FreezePattern(3),
        ValueError,
        r"Received: pattern=3",
    ),
    bad.case(
        "fz-train-pattern-bad-regex",
        lambda: kerastl.freeze.TrainPattern("("),
        ValueError,
        r"Received: pattern='\('",
    ),
    bad.case(
        "fz-pattern-no-match",
        lambda: bad.apply(kerastl.freeze.FreezePattern("^zzz")),
        ValueError,
        r"Received: pattern='\^zzz'",
    ),
    bad.case(
        "fz-anyof-empty", lambda: kerastl.freeze.AnyOf([]), ValueError, r"Received: policies=\[\]"
    ),
    bad.case(
        "fz-anyof-string", lambda: kerastl.freeze.AnyOf("x"), ValueError, r"Received: policies='x'"
    ),
    bad.case("fz-allof-int", lambda: kerastl.freeze.AllOf(3), ValueError, r"Received: policies=3"),
    bad.case(
        "fz-allof-policy",
        lambda: kerastl.freeze.AllOf(kerastl.freeze.FreezeAll()),
        ValueError,
        r"Received: policies=FreezeAll\(\)",
    ),
    bad.case(
        "fz-anyof-bad-member",
        lambda: kerastl.freeze.AnyOf(["all", "some"]),
        ValueError,
        r"Received: freeze='some'",
    ),
    bad.case(
        "fz-or-int", lambda: kerastl.freeze.FreezeAll() | 3, ValueError, r"Received: freeze=3"
    ),
    bad.case(
        "fz-and-string",
        lambda: kerastl.freeze.FreezeAll() & "most",
        ValueError,
        r"Received: freeze='most'",
    ),
    bad.case("fz-get-int", lambda: kerastl.freeze.get_policy(3), ValueError, r"Received: freeze=3"),
    bad.case(
        "fz-get-string",
        lambda: kerastl.freeze.get_policy("frozen"),
        ValueError,
        r"Received: freeze='frozen'",
    ),
    bad.case(
        "fz-get-none", lambda: kerastl.freeze.get_policy(None), ValueError, r"Received: freeze=None"
    ),
    bad.case(
        "fz-get-unknown-config",
        lambda: kerastl.freeze.get_policy({"class_name": "Nope", "config": {}}),
        ValueError,
        r"Received: freeze=\{'class_name': 'Nope'",
    ),
    bad.case(
        "fz-get-empty-config",
        lambda: kerastl.freeze.get_policy({}),
        ValueError,
        r"Received: freeze=\{\}",
    ),
    bad.case(
        "fz-get-not-a-policy-config",
        lambda: kerastl.freeze.get_policy(keras.saving.serialize_keras_object(keras.layers.ReLU())),
        ValueError,
        r"Received: freeze=\{",
    ),
    # === kerastl.set_freeze and kerastl.explain ===
    bad.case(
        "sf-on-int", lambda: kerastl.set_freeze(3, "all"), TypeError, r"Received: model_or_layer=3"
    ),
    bad.case(
        "sf-on-string",
        lambda: kerastl.set_freeze("model", "all"),
        TypeError,
        r"Received: model_or_layer='model'",
    ),
    bad.case(
        "sf-on-array",
        lambda: kerastl.set_freeze(np.zeros(3), "all"),
        TypeError,
        r"Received: model_or_layer=array",
    ),
    bad.case(
        "sf-on-plain-layer",
        lambda: kerastl.set_freeze(keras.layers.Dense(2), "all"),
        TypeError,
        r"Received: model_or_layer=<Dense",
    ),
    bad.case(
        "sf-policy",
        lambda: kerastl.set_freeze(bad.tiny_model(), "some"),
        ValueError,
        r"Received: freeze='some'",
    ),
    bad.case(
        "sf-bn",
        lambda: kerastl.set_freeze(bad.tiny_model(), "all", bn="moving"),
        ValueError,
        r"Received: bn='moving'",
    ),
    bad.case(
        "sf-bn-bool",
        lambda: kerastl.set_freeze(bad.tiny_model(), "all", bn=False),
        ValueError,
        r"Received: bn=False",
    ),
    bad.case(
        "sf-bn-affine-plain",
        lambda: kerastl.set_freeze(bad.tiny_cnn(), "all", bn="affine"),
        ValueError,
        r"Received: bn='affine'",
    ),
    bad.case(
        "sf-recompile",
        lambda: kerastl.set_freeze(bad.tiny_model(), "all", recompile="yes"),
        TypeError,
        r"Received: recompile='yes'",
    ),
    bad.case(
        "sf-too-many-blocks",
        lambda: kerastl.set_freeze(bad.tiny_model(), kerastl.freeze.TrainTopBlocks(5)),
        ValueError,
        r"2 blocks.*Received: n=5",
    ),
    bad.case("ex-on-int", lambda: kerastl.explain(3), TypeError, r"Received: model_or_layer=3"),
    bad.case(
        "ex-on-string",
        lambda: kerastl.explain("model"),
        TypeError,
        r"Received: model_or_layer='model'",
    ),
    bad.case(
        "ex-on-array",
        lambda: kerastl.explain(np.zeros(3)),
        TypeError,
        r"Received: model_or_layer=array",
    ),
    bad.case(
        "ex-print-fn",
        lambda: kerastl.explain(bad.dense_model(), print_fn=3),
        TypeError,
        r"Received: print_fn=3",
    ),
    bad.case(
        "ex-optimizer",
        lambda: kerastl.explain(bad.dense_model(), optimizer="adam"),
        TypeError,
        r"Received: optimizer='adam'",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
