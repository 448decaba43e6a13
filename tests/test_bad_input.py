"""Nonsense in, a clear error out: the public API outside data, saving and Predictor.

One table: each case calls the library with one bad argument and expects an
error of a user-facing type whose message names the argument and shows the
value (`Received: arg=...`). Never an AttributeError, an error from deep inside
numpy / Keras / a backend, or silence.
"""

import os
import pathlib
import re

import keras
import numpy as np
import pytest

import kerastl
from kerastl import backbones, heads, preprocessing
from kerastl.freeze import (
    AllOf,
    AnyOf,
    FreezeAll,
    FreezePattern,
    FreezeUpTo,
    TrainFraction,
    TrainPattern,
    TrainTopBlocks,
    get_policy,
)
from kerastl.layers import GeMPooling2D, GlobalPooling2D
from kerastl.preprocessing import BackboneNormalization, GrayscaleToRGB
from kerastl.training import clone_optimizer, recompile_model

NAN = float("nan")
INF = float("inf")
MOBILENET = dict(weights=None, input_shape=(96, 96, 3), backbone_kwargs={"alpha": 0.35})

# --- shared objects, built lazily and at most once per module ----------------------------

_built = {}


@pytest.fixture(scope="module", autouse=True)
def _shared_objects(tmp_path_factory):
    _built["dir"] = tmp_path_factory.mktemp("bad_input")
    yield
    _built.clear()


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    # Replaces conftest's clear_session per test (a full gc pass, ~0.4 s each): no
    # case here depends on generated layer names.
    yield


def _once(key, make):
    if key not in _built:
        _built[key] = make()
    return _built[key]


def tmp(name=""):
    """A path in the module's temporary directory (the directory itself for "")."""
    return str(_built["dir"] / name) if name else str(_built["dir"])


def a_directory(name="model.keras"):
    path = tmp(name)
    os.makedirs(path, exist_ok=True)
    return path


def a_text_file(name="notes.keras"):
    path = tmp(name)
    pathlib.Path(path).write_text("not a model")
    return path


def mobilenet():
    """The MobileNetV2 test extractor (alpha 0.35, 96 px, average pooled)."""
    return _once("mobilenet", lambda: fe(pooling="avg"))


def fe(**kwargs):
    """A MobileNetV2 extractor (no download: random init, small) with `kwargs` changed."""
    return kerastl.FeatureExtractor("mobilenet_v2", **{**MOBILENET, **kwargs})


def tiny_cnn():
    """A small functional backbone without registry entry: two blocks (conv_a + bn_a, conv_b)."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.Conv2D(8, 3, name="conv_b")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def tiny_extractor(**kwargs):
    return kerastl.FeatureExtractor(tiny_cnn(), **kwargs)


def tiny_model():
    """raw images -> pipeline -> tiny extractor -> multiclass head, compiled."""

    def make():
        extractor = tiny_extractor(pooling="avg")
        prep = preprocessing.pipeline(extractor, mode="tf")
        return kerastl.build_model(extractor, heads.multiclass(3), prep)

    return _once("tiny_model", make)


def build(**kwargs):
    """`build_model` on a fresh tiny extractor and head, with `kwargs` changed."""
    extractor = tiny_extractor(pooling="avg")
    args = dict(preprocessing=preprocessing.pipeline(extractor, mode="tf"), compile=False)
    args.update(kwargs)
    return kerastl.build_model(
        args.pop("extractor", extractor), args.pop("head", heads.multiclass(3)), **args
    )


def dense_model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense_a")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="dense_b")(x), name="dense_model")


def two_input_model():
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    return keras.Model([a, b], keras.layers.Add()([a, b]), name="two_inputs")


def images(shape, dtype="float32", fill=128):
    return np.full(shape, fill, dtype)


def register(**kwargs):
    def constructor(include_top=False, weights=None, input_shape=(32, 32, 3)):
        return tiny_cnn()

    args = dict(
        name="bad_input_cnn",
        constructor=constructor,
        default_size=32,
        min_size=16,
        preprocessing="tf",
        overwrite=True,
    )
    args.update(kwargs)
    name = args.pop("name")
    known = name in backbones.list_backbones() if isinstance(name, str) else True
    try:
        return backbones.register_backbone(name, args.pop("constructor"), **args)
    finally:
        if not known:  # a case that fails to fail must not leave an entry behind
            from kerastl.backbones.registry import _REGISTRY

            _REGISTRY.pop(name, None)


def apply(policy, model=None):
    """Applies `policy` to `model` (default: the tiny CNN) without recompiling."""
    return kerastl.set_freeze(model if model is not None else tiny_cnn(), policy)


def callback_fit(callback, epochs=1):
    model = tiny_model()
    x, y = images((4, 16, 16, 3)), np.arange(4) % 3
    return model.fit(x, y, epochs=epochs, verbose=0, callbacks=[callback])


def case(case_id, call, error, match):
    return pytest.param(call, error, match, id=case_id)


FE = kerastl.FeatureExtractor
REG = "mobilenet_v2"

CASES = [
    # === FeatureExtractor: backbone ===
    case("fe-backbone-int", lambda: FE(3), TypeError, r"Received: backbone=3"),
    case("fe-backbone-none", lambda: FE(None), TypeError, r"Received: backbone=None"),
    case("fe-backbone-list", lambda: FE([REG]), TypeError, r"Received: backbone=\['mob"),
    case(
        "fe-backbone-unknown",
        lambda: FE("mobilenet_v9"),
        ValueError,
        r"Received: backbone='mobilenet_v9'",
    ),
    case("fe-backbone-empty", lambda: FE(""), ValueError, r"Received: backbone=''"),
    case(
        "fe-backbone-missing-file",
        lambda: FE(tmp("missing/model.keras")),
        FileNotFoundError,
        r"Received: backbone='.*missing/model.keras'",
    ),
    case(
        "fe-backbone-missing-path-no-suffix",
        lambda: FE(tmp("missing/model")),
        FileNotFoundError,
        r"Received: backbone='.*missing/model'",
    ),
    case(
        "fe-backbone-missing-pathlike",
        lambda: FE(pathlib.Path(tmp("nothing.h5"))),
        FileNotFoundError,
        r"Received: backbone='.*nothing.h5'",
    ),
    case(
        "fe-backbone-directory",
        lambda: FE(a_directory()),
        IsADirectoryError,
        r"Received: backbone=",
    ),
    case(
        "fe-backbone-directory-no-suffix",
        lambda: FE(tmp()),
        IsADirectoryError,
        r"Received: backbone=",
    ),
    case(
        "fe-backbone-not-a-model-file",
        lambda: FE(a_text_file()),
        ValueError,
        r"Received: backbone='.*notes.keras'",
    ),
    case(
        "fe-backbone-two-inputs",
        lambda: FE(two_input_model()),
        ValueError,
        r"one image input.*Received: backbone=",
    ),
    case(
        "fe-backbone-vector-model",
        lambda: FE(dense_model()),
        ValueError,
        r"Received: backbone='dense_model'",
    ),
    # === FeatureExtractor: weights ===
    case("fe-weights-int", lambda: fe(weights=3), ValueError, r"Received: weights=3"),
    case("fe-weights-bool", lambda: fe(weights=True), ValueError, r"Received: weights=True"),
    case(
        "fe-weights-typo", lambda: fe(weights="imagent"), ValueError, r"Received: weights='imagent'"
    ),
    case(
        "fe-weights-missing-file",
        lambda: fe(weights=tmp("missing.weights.h5")),
        FileNotFoundError,
        r"Received: weights='.*missing.weights.h5'",
    ),
    case(
        "fe-weights-directory", lambda: fe(weights=tmp()), IsADirectoryError, r"Received: weights="
    ),
    case(
        "fe-weights-not-weights",
        lambda: fe(weights=a_text_file("w.weights.h5")),
        ValueError,
        r"Received: weights='.*w.weights.h5'",
    ),
    # === FeatureExtractor: input_shape ===
    case(
        "fe-shape-zero",
        lambda: fe(input_shape=(0, 96, 3)),
        ValueError,
        r"Received: input_shape=\(0, 96, 3\)",
    ),
    case(
        "fe-shape-rank2",
        lambda: fe(input_shape=(96, 96)),
        ValueError,
        r"Received: input_shape=\(96, 96\)",
    ),
    case(
        "fe-shape-string", lambda: fe(input_shape="96"), ValueError, r"Received: input_shape='96'"
    ),
    case("fe-shape-int", lambda: fe(input_shape=96), ValueError, r"Received: input_shape=96"),
    case(
        "fe-shape-float",
        lambda: fe(input_shape=(96.5, 96, 3)),
        ValueError,
        r"Received: input_shape=\(96.5",
    ),
    case(
        "fe-shape-negative",
        lambda: fe(input_shape=(-1, 96, 3)),
        ValueError,
        r"Received: input_shape=\(-1",
    ),
    case(
        "fe-shape-bool",
        lambda: fe(input_shape=(96, 96, True)),
        ValueError,
        r"Received: input_shape=\(96, 96, True\)",
    ),
    case(
        "fe-shape-nan",
        lambda: fe(input_shape=(NAN, 96, 3)),
        ValueError,
        r"Received: input_shape=\(nan",
    ),
    case(
        "fe-shape-2-channels",
        lambda: fe(input_shape=(96, 96, 2)),
        ValueError,
        r"Received: input_shape=\(96, 96, 2\)",
    ),
    case(
        "fe-shape-too-small",
        lambda: fe(input_shape=(16, 16, 3)),
        ValueError,
        r"at least 32x32.*Received: input_shape=\(16, 16, 3\)",
    ),
    case(
        "fe-shape-mismatch-model",
        lambda: FE(tiny_cnn(), input_shape=(32, 32, 3)),
        ValueError,
        r"Received: input_shape=\(32, 32, 3\)",
    ),
    # === FeatureExtractor: pooling, cut, outputs ===
    case("fe-pooling-mean", lambda: fe(pooling="mean"), ValueError, r"Received: pooling='mean'"),
    case("fe-pooling-int", lambda: fe(pooling=1), ValueError, r"Received: pooling=1"),
    case("fe-pooling-bool", lambda: fe(pooling=True), ValueError, r"Received: pooling=True"),
    case("fe-cut-int", lambda: fe(cut=3), TypeError, r"Received: cut=3"),
    case("fe-cut-list", lambda: fe(cut=["x"]), TypeError, r"Received: cut=\['x'\]"),
    case("fe-cut-empty", lambda: fe(cut=""), ValueError, r"Received: cut=''"),
    case(
        "fe-cut-unknown",
        lambda: tiny_extractor(cut="conv_z"),
        ValueError,
        r"Received: cut='conv_z'",
    ),
    case(
        "fe-cut-and-outputs",
        lambda: fe(cut="S8", outputs=["S16"]),
        ValueError,
        r"Received: cut='S8', outputs=\['S16'\]",
    ),
    case("fe-outputs-string", lambda: fe(outputs="S8"), TypeError, r"Received: outputs='S8'"),
    case("fe-outputs-empty", lambda: fe(outputs=[]), TypeError, r"Received: outputs=\[\]"),
    case("fe-outputs-int", lambda: fe(outputs=[1]), TypeError, r"Received: outputs=\[1\]"),
    case(
        "fe-outputs-duplicate",
        lambda: fe(outputs=["S8", "S8"]),
        TypeError,
        r"Received: outputs=\['S8', 'S8'\]",
    ),
    case(
        "fe-outputs-empty-name",
        lambda: fe(outputs=["S8", ""]),
        TypeError,
        r"Received: outputs=\['S8', ''\]",
    ),
    case(
        "fe-outputs-unknown",
        lambda: tiny_extractor(outputs=["conv_a", "S99"]),
        ValueError,
        r"Received: outputs='S99'",
    ),
    case(
        "fe-outputs-dict",
        lambda: fe(outputs={"S8": 1}),
        TypeError,
        r"Received: outputs=\{'S8': 1\}",
    ),
    # === FeatureExtractor: freeze, bn, submodel, backbone_kwargs ===
    case("fe-freeze-some", lambda: fe(freeze="some"), ValueError, r"Received: freeze='some'"),
    case("fe-freeze-int", lambda: fe(freeze=3), ValueError, r"Received: freeze=3"),
    case("fe-freeze-none", lambda: fe(freeze=None), ValueError, r"Received: freeze=None"),
    case("fe-freeze-bool", lambda: fe(freeze=True), ValueError, r"Received: freeze=True"),
    case(
        "fe-freeze-bad-config",
        lambda: fe(freeze={"class_name": "Nope"}),
        ValueError,
        r"Received: freeze=\{'class_name': 'Nope'\}",
    ),
    case(
        "fe-freeze-too-many-blocks",
        lambda: tiny_extractor(freeze=TrainTopBlocks(9)),
        ValueError,
        r"2 blocks.*Received: n=9",
    ),
    case("fe-bn-moving", lambda: fe(bn="moving"), ValueError, r"Received: bn='moving'"),
    case("fe-bn-bool", lambda: fe(bn=True), ValueError, r"Received: bn=True"),
    case("fe-submodel-int", lambda: tiny_extractor(submodel=3), TypeError, r"Received: submodel=3"),
    case(
        "fe-submodel-unknown",
        lambda: tiny_extractor(submodel="nope"),
        ValueError,
        r"Received: submodel='nope'",
    ),
    case("fe-arch-int", lambda: tiny_extractor(arch=3), TypeError, r"Received: arch=3"),
    case(
        "fe-arch-unknown", lambda: tiny_extractor(arch="nope"), ValueError, r"Received: arch='nope'"
    ),
    case(
        "fe-arch-not-it",
        lambda: tiny_extractor(arch="mobilenet_v2"),
        ValueError,
        r"not the registry's 'mobilenet_v2'.*Received: arch='mobilenet_v2'",
    ),
    case("fe-arch-registry", lambda: fe(arch="resnet50"), ValueError, r"Received: arch='resnet50'"),
    case("fe-safe-mode-str", lambda: fe(safe_mode="no"), TypeError, r"Received: safe_mode='no'"),
    case("fe-safe-mode-none", lambda: fe(safe_mode=None), TypeError, r"Received: safe_mode=None"),
    case(
        "fe-submodel-registry",
        lambda: fe(submodel="mobilenet"),
        ValueError,
        r"Received: submodel='mobilenet'",
    ),
    case(
        "fe-kwargs-string",
        lambda: fe(backbone_kwargs="alpha"),
        TypeError,
        r"Received: backbone_kwargs='alpha'",
    ),
    case(
        "fe-kwargs-bad-value",
        lambda: fe(backbone_kwargs={"alpha": "big"}),
        ValueError,
        r"Received: backbone_kwargs=\{'alpha': 'big'\}",
    ),
    case(
        "fe-kwargs-unknown",
        lambda: fe(backbone_kwargs={"nope": 1}),
        ValueError,
        r"Received: backbone_kwargs=\{'nope': 1\}",
    ),
    case(
        "fe-kwargs-with-model",
        lambda: tiny_extractor(backbone_kwargs={"alpha": 1}),
        ValueError,
        r"Received: backbone_kwargs=",
    ),
    # === FeatureExtractor.set_freeze ===
    case(
        "fe-set-freeze-some",
        lambda: mobilenet().set_freeze("some"),
        ValueError,
        r"Received: freeze='some'",
    ),
    case("fe-set-freeze-int", lambda: mobilenet().set_freeze(3), ValueError, r"Received: freeze=3"),
    case(
        "fe-set-freeze-bn",
        lambda: mobilenet().set_freeze(bn="moving"),
        ValueError,
        r"Received: bn='moving'",
    ),
    case(
        "fe-set-freeze-too-many-blocks",
        lambda: mobilenet().set_freeze(TrainTopBlocks(40)),
        ValueError,
        r"has 18 blocks.*Received: n=40",
    ),
    case(
        "fe-set-freeze-no-match",
        lambda: mobilenet().set_freeze(TrainPattern("^nothing_here$")),
        ValueError,
        r"Received: pattern='\^nothing_here\$'",
    ),
    # === kerastl.backbones ===
    case("bb-get-int", lambda: backbones.get_backbone(3), TypeError, r"Received: name=3"),
    case("bb-get-empty", lambda: backbones.get_backbone(""), ValueError, r"Received: backbone=''"),
    case(
        "bb-get-unknown",
        lambda: backbones.get_backbone("resnet49"),
        ValueError,
        r"Did you mean.*Received: backbone='resnet49'",
    ),
    case("bb-list-int", lambda: backbones.list_backbones(3), TypeError, r"Received: pattern=3"),
    case("bb-split-string", lambda: backbones.split_blocks("x"), TypeError, r"Received: model='x'"),
    case(
        "bb-split-bad-regex",
        lambda: backbones.split_blocks(tiny_cnn(), block_pattern="["),
        ValueError,
        r"Received: block_pattern='\['",
    ),
    case(
        "bb-split-no-group",
        lambda: backbones.split_blocks(tiny_cnn(), block_pattern="conv"),
        ValueError,
        r"Received: block_pattern='conv'",
    ),
    case(
        "bb-split-both-patterns",
        lambda: backbones.split_blocks(tiny_cnn(), block_pattern="(conv)", block_end_pattern="bn"),
        ValueError,
        r"Received: block_pattern='\(conv\)', block_end_pattern='bn'",
    ),
    case(
        "bb-resolve-int", lambda: backbones.resolve_backbone(3), TypeError, r"Received: backbone=3"
    ),
    case(
        "bb-resolve-weights",
        lambda: backbones.resolve_backbone(REG, weights=2.5),
        ValueError,
        r"Received: weights=2.5",
    ),
    case(
        "bb-resolve-dtype",
        lambda: backbones.resolve_backbone(REG, **MOBILENET, dtype=3),
        ValueError,
        r"Received: dtype=3",
    ),
    case(
        "bb-register-name",
        lambda: register(name="Bad Name"),
        ValueError,
        r"Received: name='Bad Name'",
    ),
    case("bb-register-name-int", lambda: register(name=3), ValueError, r"Received: name=3"),
    case(
        "bb-register-constructor",
        lambda: register(constructor=3),
        ValueError,
        r"Received: constructor=3",
    ),
    case(
        "bb-register-size-zero",
        lambda: register(default_size=0),
        ValueError,
        r"Received: default_size=0",
    ),
    case(
        "bb-register-size-bool",
        lambda: register(default_size=True, min_size=1),
        ValueError,
        r"Received: default_size=True",
    ),
    case(
        "bb-register-size-float",
        lambda: register(min_size=16.5),
        ValueError,
        r"Received: min_size=16.5",
    ),
    case(
        "bb-register-min-above-default",
        lambda: register(min_size=64),
        ValueError,
        r"Received: default_size=32, min_size=64",
    ),
    case(
        "bb-register-preprocessing",
        lambda: register(preprocessing="bgr"),
        ValueError,
        r"Received: preprocessing='bgr'",
    ),
    case(
        "bb-register-pattern-regex",
        lambda: register(block_pattern="["),
        ValueError,
        r"Received: block_pattern='\['",
    ),
    case(
        "bb-register-pattern-group",
        lambda: register(block_pattern="^conv"),
        ValueError,
        r"Received: block_pattern='\^conv'",
    ),
    case(
        "bb-register-end-pattern-int",
        lambda: register(block_end_pattern=3),
        ValueError,
        r"Received: block_end_pattern=3",
    ),
    case(
        "bb-register-both-patterns",
        lambda: register(block_pattern="^(conv)", block_end_pattern="bn"),
        ValueError,
        r"Received: block_pattern='\^\(conv\)', block_end_pattern='bn'",
    ),
    case(
        "bb-register-features-string",
        lambda: register(feature_layers="S8"),
        TypeError,
        r"Received: feature_layers='S8'",
    ),
    case(
        "bb-register-features-values",
        lambda: register(feature_layers={"S8": 3}),
        TypeError,
        r"Received: feature_layers=\{'S8': 3\}",
    ),
    case(
        "bb-register-backends-string",
        lambda: register(backends="jax"),
        ValueError,
        r"Received: backends='jax'",
    ),
    case(
        "bb-register-backends-unknown",
        lambda: register(backends=("cntk",)),
        ValueError,
        r"Received: backends=\('cntk',\)",
    ),
    case(
        "bb-register-overwrite-string",
        lambda: register(overwrite="no"),
        TypeError,
        r"Received: overwrite='no'",
    ),
    case(
        "bb-register-duplicate",
        lambda: register(name=REG, overwrite=False),
        ValueError,
        r"Received: name='mobilenet_v2'",
    ),
    # === kerastl.freeze policies ===
    case("fz-upto-int", lambda: FreezeUpTo(3), ValueError, r"Received: layer_name=3"),
    case("fz-upto-empty", lambda: FreezeUpTo(""), ValueError, r"Received: layer_name=''"),
    case(
        "fz-upto-unknown",
        lambda: apply(FreezeUpTo("conv_z")),
        ValueError,
        r"Received: layer_name='conv_z'",
    ),
    case("fz-top-negative", lambda: TrainTopBlocks(-1), ValueError, r"Received: n=-1"),
    case("fz-top-float", lambda: TrainTopBlocks(2.5), ValueError, r"Received: n=2.5"),
    case("fz-top-bool", lambda: TrainTopBlocks(True), ValueError, r"Received: n=True"),
    case("fz-top-string", lambda: TrainTopBlocks("3"), ValueError, r"Received: n='3'"),
    case("fz-top-nan", lambda: TrainTopBlocks(NAN), ValueError, r"Received: n=nan"),
    case(
        "fz-top-too-many", lambda: apply(TrainTopBlocks(4)), ValueError, r"2 blocks.*Received: n=4"
    ),
    case(
        "fz-top-too-many-composed",
        lambda: apply(TrainTopBlocks(99) | TrainPattern("conv")),
        ValueError,
        r"Received: n=99",
    ),
    case("fz-fraction-above-1", lambda: TrainFraction(1.5), ValueError, r"Received: f=1.5"),
    case("fz-fraction-negative", lambda: TrainFraction(-0.1), ValueError, r"Received: f=-0.1"),
    case("fz-fraction-nan", lambda: TrainFraction(NAN), ValueError, r"Received: f=nan"),
    case("fz-fraction-bool", lambda: TrainFraction(True), ValueError, r"Received: f=True"),
    case("fz-fraction-string", lambda: TrainFraction("0.5"), ValueError, r"Received: f='0.5'"),
    case("fz-pattern-bad-regex", lambda: FreezePattern("["), ValueError, r"Received: pattern='\['"),
    case("fz-pattern-int", lambda: FreezePattern(3), ValueError, r"Received: pattern=3"),
    case(
        "fz-train-pattern-bad-regex",
        lambda: TrainPattern("("),
        ValueError,
        r"Received: pattern='\('",
    ),
    case(
        "fz-pattern-no-match",
        lambda: apply(FreezePattern("^zzz")),
        ValueError,
        r"Received: pattern='\^zzz'",
    ),
    case("fz-anyof-empty", lambda: AnyOf([]), ValueError, r"Received: policies=\[\]"),
    case("fz-anyof-string", lambda: AnyOf("x"), ValueError, r"Received: policies='x'"),
    case("fz-allof-int", lambda: AllOf(3), ValueError, r"Received: policies=3"),
    case(
        "fz-allof-policy",
        lambda: AllOf(FreezeAll()),
        ValueError,
        r"Received: policies=FreezeAll\(\)",
    ),
    case(
        "fz-anyof-bad-member",
        lambda: AnyOf(["all", "some"]),
        ValueError,
        r"Received: freeze='some'",
    ),
    case("fz-or-int", lambda: FreezeAll() | 3, ValueError, r"Received: freeze=3"),
    case("fz-and-string", lambda: FreezeAll() & "most", ValueError, r"Received: freeze='most'"),
    case("fz-get-int", lambda: get_policy(3), ValueError, r"Received: freeze=3"),
    case("fz-get-string", lambda: get_policy("frozen"), ValueError, r"Received: freeze='frozen'"),
    case("fz-get-none", lambda: get_policy(None), ValueError, r"Received: freeze=None"),
    case(
        "fz-get-unknown-config",
        lambda: get_policy({"class_name": "Nope", "config": {}}),
        ValueError,
        r"Received: freeze=\{'class_name': 'Nope'",
    ),
    case("fz-get-empty-config", lambda: get_policy({}), ValueError, r"Received: freeze=\{\}"),
    case(
        "fz-get-not-a-policy-config",
        lambda: get_policy(keras.saving.serialize_keras_object(keras.layers.ReLU())),
        ValueError,
        r"Received: freeze=\{",
    ),
    # === kerastl.set_freeze and kerastl.explain ===
    case(
        "sf-on-int", lambda: kerastl.set_freeze(3, "all"), TypeError, r"Received: model_or_layer=3"
    ),
    case(
        "sf-on-string",
        lambda: kerastl.set_freeze("model", "all"),
        TypeError,
        r"Received: model_or_layer='model'",
    ),
    case(
        "sf-on-array",
        lambda: kerastl.set_freeze(np.zeros(3), "all"),
        TypeError,
        r"Received: model_or_layer=array",
    ),
    case(
        "sf-on-plain-layer",
        lambda: kerastl.set_freeze(keras.layers.Dense(2), "all"),
        TypeError,
        r"Received: model_or_layer=<Dense",
    ),
    case(
        "sf-policy",
        lambda: kerastl.set_freeze(tiny_model(), "some"),
        ValueError,
        r"Received: freeze='some'",
    ),
    case(
        "sf-bn",
        lambda: kerastl.set_freeze(tiny_model(), "all", bn="moving"),
        ValueError,
        r"Received: bn='moving'",
    ),
    case(
        "sf-bn-bool",
        lambda: kerastl.set_freeze(tiny_model(), "all", bn=False),
        ValueError,
        r"Received: bn=False",
    ),
    case(
        "sf-bn-affine-plain",
        lambda: kerastl.set_freeze(tiny_cnn(), "all", bn="affine"),
        ValueError,
        r"Received: bn='affine'",
    ),
    case(
        "sf-recompile",
        lambda: kerastl.set_freeze(tiny_model(), "all", recompile="yes"),
        TypeError,
        r"Received: recompile='yes'",
    ),
    case(
        "sf-too-many-blocks",
        lambda: kerastl.set_freeze(tiny_model(), TrainTopBlocks(5)),
        ValueError,
        r"2 blocks.*Received: n=5",
    ),
    case("ex-on-int", lambda: kerastl.explain(3), TypeError, r"Received: model_or_layer=3"),
    case(
        "ex-on-string",
        lambda: kerastl.explain("model"),
        TypeError,
        r"Received: model_or_layer='model'",
    ),
    case(
        "ex-on-array",
        lambda: kerastl.explain(np.zeros(3)),
        TypeError,
        r"Received: model_or_layer=array",
    ),
    case(
        "ex-print-fn",
        lambda: kerastl.explain(dense_model(), print_fn=3),
        TypeError,
        r"Received: print_fn=3",
    ),
    case(
        "ex-optimizer",
        lambda: kerastl.explain(dense_model(), optimizer="adam"),
        TypeError,
        r"Received: optimizer='adam'",
    ),
    case(
        "tr-recompile-uncompiled",
        lambda: recompile_model(dense_model()),
        ValueError,
        r"Received: model=<Functional",
    ),
    case(
        "tr-recompile-optimizer",
        lambda: recompile_model(tiny_model(), optimizer="adam"),
        TypeError,
        r"Received: optimizer='adam'",
    ),
    case(
        "tr-clone-optimizer",
        lambda: clone_optimizer("adam"),
        TypeError,
        r"Received: optimizer='adam'",
    ),
    # === kerastl.optimizers.PerLayerLR ===
    case(
        "lr-optimizer-int",
        lambda: kerastl.optimizers.PerLayerLR(3),
        ValueError,
        r"Received: optimizer=3",
    ),
    case(
        "lr-optimizer-name",
        lambda: kerastl.optimizers.PerLayerLR("nope"),
        ValueError,
        r"Received: optimizer='nope'",
    ),
    case(
        "lr-optimizer-nested",
        lambda: kerastl.optimizers.PerLayerLR(kerastl.optimizers.PerLayerLR("adam")),
        ValueError,
        r"Received: optimizer=<",
    ),
    case(
        "lr-multipliers-list",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers=[0.1]),
        ValueError,
        r"Received: multipliers=\[0.1\]",
    ),
    case(
        "lr-multipliers-negative",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": -1}),
        ValueError,
        r"Received: multipliers\['a'\]=-1",
    ),
    case(
        "lr-multipliers-nan",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": NAN}),
        ValueError,
        r"Received: multipliers\['a'\]=nan",
    ),
    case(
        "lr-multipliers-inf",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": INF}),
        ValueError,
        r"Received: multipliers\['a'\]=inf",
    ),
    case(
        "lr-multipliers-bool",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": True}),
        ValueError,
        r"Received: multipliers\['a'\]=True",
    ),
    case(
        "lr-multipliers-string",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": "0.1"}),
        ValueError,
        r"Received: multipliers\['a'\]='0.1'",
    ),
    case(
        "lr-multipliers-key",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={3: 0.1}),
        ValueError,
        r"Received: multipliers key=3",
    ),
    case(
        "lr-multipliers-regex",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"[": 0.1}),
        ValueError,
        r"Received: multipliers key='\['",
    ),
    case(
        "lr-decay-zero",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0, blocks=[("b", ["l"])]),
        ValueError,
        r"Received: layer_decay=0",
    ),
    case(
        "lr-decay-above-1",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=1.5, blocks=[("b", ["l"])]),
        ValueError,
        r"Received: layer_decay=1.5",
    ),
    case(
        "lr-decay-nan",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=NAN, blocks=[("b", ["l"])]),
        ValueError,
        r"Received: layer_decay=nan",
    ),
    case(
        "lr-decay-bool",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=True, blocks=[("b", ["l"])]),
        ValueError,
        r"Received: layer_decay=True",
    ),
    case(
        "lr-decay-no-blocks",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0.5),
        ValueError,
        r"Received: blocks=None",
    ),
    case(
        "lr-blocks-no-decay",
        lambda: kerastl.optimizers.PerLayerLR("adam", blocks=[("b", ["l"])]),
        ValueError,
        r"Received: blocks=\[\('b', \['l'\]\)\]",
    ),
    case(
        "lr-blocks-string",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0.5, blocks="block_1"),
        ValueError,
        r"Received: blocks='block_1'",
    ),
    case(
        "lr-blocks-empty",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0.5, blocks=[]),
        ValueError,
        r"Received: blocks=\[\]",
    ),
    case(
        "lr-blocks-layers-string",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0.5, blocks=[("b", "layer")]),
        ValueError,
        r"Received: blocks=\[\('b', 'layer'\)\]",
    ),
    case(
        "lr-blocks-plain-layer",
        lambda: kerastl.optimizers.PerLayerLR(
            "adam", layer_decay=0.5, blocks=keras.layers.Dense(2)
        ),
        ValueError,
        r"Received: blocks=<Dense",
    ),
    case(
        "lr-name",
        lambda: kerastl.optimizers.PerLayerLR("adam", name=3),
        ValueError,
        r"Received: name=3",
    ),
    # === kerastl.callbacks.GradualUnfreezing ===
    case(
        "gu-schedule-empty",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={}),
        ValueError,
        r"Received: schedule=\{\}",
    ),
    case(
        "gu-schedule-list",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule=[(0, "all")]),
        ValueError,
        r"Received: schedule=\[\(0, 'all'\)\]",
    ),
    case(
        "gu-schedule-negative",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={-1: "all"}),
        ValueError,
        r"Received: schedule=\{-1: 'all'\}",
    ),
    case(
        "gu-schedule-string-epoch",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={"1": "all"}),
        ValueError,
        r"Received: schedule=\{'1': 'all'\}",
    ),
    case(
        "gu-schedule-float-epoch",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={1.5: "all"}),
        ValueError,
        r"Received: schedule=\{1.5: 'all'\}",
    ),
    case(
        "gu-schedule-bool-epoch",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={True: "all"}),
        ValueError,
        r"Received: schedule=\{True: 'all'\}",
    ),
    case(
        "gu-schedule-unordered",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={2: "none", 0: "all"}),
        ValueError,
        r"increasing.*Received: schedule=\{2: 'none', 0: 'all'\}",
    ),
    case(
        "gu-schedule-bad-policy",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={0: "most"}),
        ValueError,
        r"Received: schedule=\{0: 'most'\}",
    ),
    case(
        "gu-every-zero",
        lambda: kerastl.callbacks.GradualUnfreezing(every=0),
        ValueError,
        r"Received: every=0",
    ),
    case(
        "gu-every-float",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1.5),
        ValueError,
        r"Received: every=1.5",
    ),
    case(
        "gu-every-bool",
        lambda: kerastl.callbacks.GradualUnfreezing(every=True),
        ValueError,
        r"Received: every=True",
    ),
    case(
        "gu-both",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={0: "all"}, every=1),
        ValueError,
        r"Received: schedule=\{0: 'all'\}, every=1",
    ),
    case(
        "gu-neither",
        lambda: kerastl.callbacks.GradualUnfreezing(),
        ValueError,
        r"Received: schedule=None, every=None",
    ),
    case(
        "gu-lr-negative",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=-1),
        ValueError,
        r"Received: lr_multiplier=-1",
    ),
    case(
        "gu-lr-string",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier="x"),
        ValueError,
        r"Received: lr_multiplier='x'",
    ),
    case(
        "gu-lr-nan",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=NAN),
        ValueError,
        r"Received: lr_multiplier=nan",
    ),
    case(
        "gu-lr-inf",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=INF),
        ValueError,
        r"Received: lr_multiplier=inf",
    ),
    case(
        "gu-lr-bool",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=True),
        ValueError,
        r"Received: lr_multiplier=True",
    ),
    case(
        "gu-verbose-string",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, verbose="no"),
        TypeError,
        r"Received: verbose='no'",
    ),
    case(
        "gu-verbose-negative",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, verbose=-1),
        ValueError,
        r"Received: verbose=-1",
    ),
    case(
        "gu-scheduled-policy-too-many-blocks",
        lambda: callback_fit(
            kerastl.callbacks.GradualUnfreezing(schedule={0: TrainTopBlocks(7)}, verbose=0)
        ),
        ValueError,
        r"Received: n=7",
    ),
    # === kerastl.heads: TaskHead ===
    case("hd-task", lambda: heads.TaskHead("x", 3), ValueError, r"Received: task='x'"),
    case(
        "hd-outputs-zero",
        lambda: heads.TaskHead("multiclass", 0),
        ValueError,
        r"Received: num_outputs=0",
    ),
    case(
        "hd-outputs-float",
        lambda: heads.TaskHead("multiclass", 2.5),
        ValueError,
        r"Received: num_outputs=2.5",
    ),
    case(
        "hd-outputs-string",
        lambda: heads.TaskHead("multiclass", "3"),
        ValueError,
        r"Received: num_outputs='3'",
    ),
    case(
        "hd-outputs-bool",
        lambda: heads.TaskHead("regression", True),
        ValueError,
        r"Received: num_outputs=True",
    ),
    case(
        "hd-binary-two", lambda: heads.TaskHead("binary", 2), ValueError, r"Received: num_outputs=2"
    ),
    case(
        "hd-hidden-string",
        lambda: heads.multiclass(3, hidden="64"),
        ValueError,
        r"Received: hidden='64'",
    ),
    case(
        "hd-hidden-zero",
        lambda: heads.multiclass(3, hidden=[0]),
        ValueError,
        r"Received: hidden=\[0\]",
    ),
    case(
        "hd-hidden-negative",
        lambda: heads.multiclass(3, hidden=[-1]),
        ValueError,
        r"Received: hidden=\[-1\]",
    ),
    case(
        "hd-hidden-float",
        lambda: heads.multiclass(3, hidden=2.5),
        ValueError,
        r"Received: hidden=2.5",
    ),
    case(
        "hd-hidden-bool",
        lambda: heads.multiclass(3, hidden=True),
        ValueError,
        r"Received: hidden=True",
    ),
    case(
        "hd-hidden-dict",
        lambda: heads.multiclass(3, hidden={64: 1}),
        ValueError,
        r"Received: hidden=\{64: 1\}",
    ),
    case(
        "hd-dropout-one", lambda: heads.multiclass(3, dropout=1), ValueError, r"Received: dropout=1"
    ),
    case(
        "hd-dropout-negative",
        lambda: heads.multiclass(3, dropout=-0.1),
        ValueError,
        r"Received: dropout=-0.1",
    ),
    case(
        "hd-dropout-string",
        lambda: heads.multiclass(3, dropout="x"),
        ValueError,
        r"Received: dropout='x'",
    ),
    case(
        "hd-dropout-nan",
        lambda: heads.multiclass(3, dropout=NAN),
        ValueError,
        r"Received: dropout=nan",
    ),
    case(
        "hd-dropout-bool",
        lambda: heads.multiclass(3, dropout=False),
        ValueError,
        r"Received: dropout=False",
    ),
    case(
        "hd-pooling-mean",
        lambda: heads.multiclass(3, pooling="mean"),
        ValueError,
        r"Received: pooling='mean'",
    ),
    case(
        "hd-pooling-none",
        lambda: heads.multiclass(3, pooling=None),
        ValueError,
        r"Received: pooling=None",
    ),
    case(
        "hd-logits-regression",
        lambda: heads.regression(logits=True),
        ValueError,
        r"Received: logits=True",
    ),
    case(
        "hd-logits-string", lambda: heads.binary(logits="no"), TypeError, r"Received: logits='no'"
    ),
    case(
        "hd-batchnorm-string",
        lambda: heads.binary(batchnorm="no"),
        TypeError,
        r"Received: batchnorm='no'",
    ),
    case(
        "hd-sparse-string",
        lambda: heads.multiclass(3, sparse_labels="no"),
        TypeError,
        r"Received: sparse_labels='no'",
    ),
    case(
        "hd-priors-count",
        lambda: heads.multiclass(3, priors=[0.5, 0.5]),
        ValueError,
        r"Received: priors=\[0.5, 0.5\]",
    ),
    case(
        "hd-priors-range",
        lambda: heads.multilabel(2, priors=[0.5, 1.5]),
        ValueError,
        r"Received: priors=\[0.5, 1.5\]",
    ),
    case("hd-priors-zero", lambda: heads.binary(priors=0), ValueError, r"Received: priors=0"),
    case("hd-priors-nan", lambda: heads.binary(priors=NAN), ValueError, r"Received: priors=nan"),
    case(
        "hd-priors-sum",
        lambda: heads.multiclass(3, priors=[0.2, 0.2, 0.2]),
        ValueError,
        r"sum to 1.*Received: priors=\[0.2, 0.2, 0.2\]",
    ),
    case(
        "hd-priors-string",
        lambda: heads.binary(priors="0.3"),
        ValueError,
        r"Received: priors='0.3'",
    ),
    case("hd-priors-bool", lambda: heads.binary(priors=True), ValueError, r"Received: priors=True"),
    case(
        "hd-priors-regression",
        lambda: heads.regression(priors=[0.5]),
        ValueError,
        r"Received: priors=\[0.5\]",
    ),
    case(
        "hd-class-names-string",
        lambda: heads.multiclass(3, class_names="abc"),
        TypeError,
        r"Received: class_names='abc'",
    ),
    case(
        "hd-class-names-count",
        lambda: heads.multiclass(3, class_names=["a", "b"]),
        ValueError,
        r"Received: class_names=\['a', 'b'\]",
    ),
    case(
        "hd-class-names-binary-count",
        lambda: heads.binary(class_names=["yes"]),
        ValueError,
        r"Received: class_names=\['yes'\]",
    ),
    case(
        "hd-class-names-ints",
        lambda: heads.multiclass(3, class_names=[1, 2, 3]),
        TypeError,
        r"Received: class_names=\[1, 2, 3\]",
    ),
    case(
        "hd-class-names-duplicate",
        lambda: heads.multiclass(3, class_names=["a", "b", "a"]),
        ValueError,
        r"Received: class_names=\['a', 'b', 'a'\]",
    ),
    case(
        "hd-class-names-empty-name",
        lambda: heads.multiclass(2, class_names=["a", ""]),
        ValueError,
        r"Received: class_names=\['a', ''\]",
    ),
    case(
        "hd-activation",
        lambda: heads.multiclass(3, hidden=[8], activation="nope"),
        ValueError,
        r"Received: activation='nope'",
    ),
    case(
        "hd-activation-int",
        lambda: heads.multiclass(3, activation=3),
        ValueError,
        r"Received: activation=3",
    ),
    case("hd-multiclass-one", lambda: heads.multiclass(1), ValueError, r"Received: num_classes=1"),
    case(
        "hd-multiclass-float",
        lambda: heads.multiclass(2.5),
        ValueError,
        r"Received: num_classes=2.5",
    ),
    case(
        "hd-multiclass-bool",
        lambda: heads.multiclass(True),
        ValueError,
        r"Received: num_classes=True",
    ),
    case("hd-multilabel-zero", lambda: heads.multilabel(0), ValueError, r"Received: num_labels=0"),
    case(
        "hd-regression-units",
        lambda: heads.regression(units="1"),
        ValueError,
        r"Received: units='1'",
    ),
    case("hd-info-int", lambda: heads.head_info(3), ValueError, r"Received: model=3"),
    case(
        "hd-info-no-head",
        lambda: heads.head_info(dense_model()),
        ValueError,
        r"Received: model='dense_model'",
    ),
    # === kerastl.preprocessing ===
    case("pp-backbone-int", lambda: preprocessing.pipeline(3), ValueError, r"Received: backbone=3"),
    case(
        "pp-backbone-unknown",
        lambda: preprocessing.pipeline("mobilenet_v9"),
        ValueError,
        r"Received: backbone='mobilenet_v9'",
    ),
    case("pp-no-mode", lambda: preprocessing.pipeline(), ValueError, r"Received: backbone=None"),
    case(
        "pp-resize-zero",
        lambda: preprocessing.pipeline(REG, resize=0),
        ValueError,
        r"Received: resize=0",
    ),
    case(
        "pp-resize-negative",
        lambda: preprocessing.pipeline(REG, resize=-1),
        ValueError,
        r"Received: resize=-1",
    ),
    case(
        "pp-resize-short",
        lambda: preprocessing.pipeline(REG, resize=(1,)),
        ValueError,
        r"Received: resize=\(1,\)",
    ),
    case(
        "pp-resize-string",
        lambda: preprocessing.pipeline(REG, resize="x"),
        ValueError,
        r"Received: resize='x'",
    ),
    case(
        "pp-resize-float",
        lambda: preprocessing.pipeline(REG, resize=2.5),
        ValueError,
        r"Received: resize=2.5",
    ),
    case(
        "pp-resize-bool-pair",
        lambda: preprocessing.pipeline(REG, resize=(True, 96)),
        ValueError,
        r"Received: resize=\(True, 96\)",
    ),
    case(
        "pp-augment-preset",
        lambda: preprocessing.pipeline(REG, augment="heavy"),
        ValueError,
        r"Received: augment='heavy'",
    ),
    case(
        "pp-augment-list",
        lambda: preprocessing.pipeline(REG, augment=[3]),
        ValueError,
        r"Received: augment=\[3\]",
    ),
    case(
        "pp-augment-none",
        lambda: preprocessing.pipeline(REG, augment=None),
        ValueError,
        r"Received: augment=None",
    ),
    case(
        "pp-mode",
        lambda: preprocessing.pipeline(REG, mode="bgr"),
        ValueError,
        r"Received: mode='bgr'",
    ),
    case(
        "pp-interpolation",
        lambda: preprocessing.pipeline(REG, interpolation="cubic-ish"),
        ValueError,
        r"Received: interpolation='cubic-ish'",
    ),
    case(
        "pp-crop-string",
        lambda: preprocessing.pipeline(REG, crop_to_aspect_ratio="no"),
        TypeError,
        r"Received: crop_to_aspect_ratio='no'",
    ),
    case(
        "pp-seed-string",
        lambda: preprocessing.pipeline(REG, augment="light", seed="x"),
        TypeError,
        r"Received: seed='x'",
    ),
    case(
        "pp-seed-float",
        lambda: preprocessing.pipeline(REG, augment="light", seed=2.5),
        TypeError,
        r"Received: seed=2.5",
    ),
    case(
        "pp-seed-bool",
        lambda: preprocessing.pipeline(REG, augment="medium", seed=True),
        TypeError,
        r"Received: seed=True",
    ),
    case("pp-name", lambda: preprocessing.pipeline(REG, name=3), TypeError, r"Received: name=3"),
    case(
        "pp-augmentation-preset",
        lambda: preprocessing.augmentation("x"),
        ValueError,
        r"Received: augment='x'",
    ),
    case(
        "pp-augmentation-seed",
        lambda: preprocessing.augmentation("strong", seed="x"),
        TypeError,
        r"Received: seed='x'",
    ),
    case(
        "pp-normalization-mode",
        lambda: BackboneNormalization("bgr"),
        ValueError,
        r"Received: mode='bgr'",
    ),
    case(
        "pp-gray-rank3",
        lambda: GrayscaleToRGB()(images((8, 8, 3))),
        ValueError,
        r"Received: input_shape=\(8, 8, 3\)",
    ),
    case(
        "pp-gray-2-channels",
        lambda: GrayscaleToRGB()(images((1, 8, 8, 2))),
        ValueError,
        r"Received: input_shape=\(1, 8, 8, 2\)",
    ),
    case(
        "pp-gray-4-channels",
        lambda: GrayscaleToRGB()(images((1, 8, 8, 4))),
        ValueError,
        r"Received: input_shape=\(1, 8, 8, 4\)",
    ),
    case(
        "pp-gray-bool",
        lambda: GrayscaleToRGB()(np.zeros((1, 8, 8, 3), bool)),
        ValueError,
        r"Received: dtype=bool",
    ),
    case(
        "pp-gray-string",
        lambda: GrayscaleToRGB()(np.full((1, 2, 2, 3), "a")),
        ValueError,
        r"Received: dtype=",
    ),
    case(
        "pp-pipeline-rank3",
        lambda: preprocessing.pipeline(REG)(images((96, 96, 3))),
        ValueError,
        r"Received: input_shape=\(96, 96, 3\)",
    ),
    # === kerastl.layers ===
    case("ly-gem-p-zero", lambda: GeMPooling2D(p=0), ValueError, r"Received: p=0"),
    case("ly-gem-p-negative", lambda: GeMPooling2D(p=-1), ValueError, r"Received: p=-1"),
    case("ly-gem-p-string", lambda: GeMPooling2D(p="3"), ValueError, r"Received: p='3'"),
    case("ly-gem-p-nan", lambda: GeMPooling2D(p=NAN), ValueError, r"Received: p=nan"),
    case("ly-gem-p-inf", lambda: GeMPooling2D(p=INF), ValueError, r"Received: p=inf"),
    case("ly-gem-p-bool", lambda: GeMPooling2D(p=True), ValueError, r"Received: p=True"),
    case("ly-gem-eps-zero", lambda: GeMPooling2D(eps=0), ValueError, r"Received: eps=0"),
    case("ly-gem-eps-nan", lambda: GeMPooling2D(eps=NAN), ValueError, r"Received: eps=nan"),
    case(
        "ly-gem-trainable-string",
        lambda: GeMPooling2D(trainable_p="no"),
        TypeError,
        r"Received: trainable_p='no'",
    ),
    case(
        "ly-gem-rank3",
        lambda: GeMPooling2D()(images((2, 5, 8))),
        ValueError,
        r"Received: input_shape=\(2, 5, 8\)",
    ),
    case("ly-pool-mean", lambda: GlobalPooling2D("mean"), ValueError, r"Received: mode='mean'"),
    case("ly-pool-none", lambda: GlobalPooling2D(None), ValueError, r"Received: mode=None"),
    case(
        "ly-pool-rank2",
        lambda: GlobalPooling2D()(images((2, 5))),
        ValueError,
        r"Received: input_shape=\(2, 5\)",
    ),
    # === kerastl.build_model ===
    case(
        "bm-extractor-int",
        lambda: kerastl.build_model(3, heads.binary()),
        ValueError,
        r"Received: extractor=3",
    ),
    case(
        "bm-extractor-layer",
        lambda: kerastl.build_model(keras.layers.Dense(2), heads.binary()),
        ValueError,
        r"Received: extractor=<Dense",
    ),
    case("bm-head-int", lambda: build(head=3), ValueError, r"Received: head=3"),
    case(
        "bm-head-dense",
        lambda: build(head=keras.layers.Dense(2)),
        ValueError,
        r"Received: head=<Dense",
    ),
    case(
        "bm-preprocessing-string",
        lambda: build(preprocessing="yes"),
        ValueError,
        r"Received: preprocessing='yes'",
    ),
    case(
        "bm-preprocessing-true",
        lambda: build(preprocessing=True),
        ValueError,
        r"Received: preprocessing=True",
    ),
    case(
        "bm-preprocessing-outside-registry",
        lambda: build(preprocessing=None),
        ValueError,
        r"Received: backbone=",
    ),
    case(
        "bm-shape-rank2",
        lambda: build(input_shape=(32, 32)),
        ValueError,
        r"Received: input_shape=\(32, 32\)",
    ),
    case(
        "bm-shape-2-channels",
        lambda: build(input_shape=(32, 32, 2)),
        ValueError,
        r"Received: input_shape=\(32, 32, 2\)",
    ),
    case(
        "bm-shape-string", lambda: build(input_shape="x"), ValueError, r"Received: input_shape='x'"
    ),
    case(
        "bm-shape-zero",
        lambda: build(input_shape=(0, 32, 3)),
        ValueError,
        r"Received: input_shape=\(0, 32, 3\)",
    ),
    case(
        "bm-shape-strings",
        lambda: build(input_shape=("a", "b", 3)),
        ValueError,
        r"Received: input_shape=\('a', 'b', 3\)",
    ),
    case(
        "bm-shape-mismatch-no-preprocessing",
        lambda: build(preprocessing=False, input_shape=(32, 32, 3)),
        ValueError,
        r"Received: input_shape=\(None, 32, 32, 3\)",
    ),
    case("bm-compile-string", lambda: build(compile="no"), TypeError, r"Received: compile='no'"),
    case(
        "bm-optimizer-int",
        lambda: build(compile=True, optimizer=3),
        ValueError,
        r"Received: optimizer=3",
    ),
    case(
        "bm-optimizer-name",
        lambda: build(compile=True, optimizer="nope"),
        ValueError,
        r"Received: optimizer='nope'",
    ),
    case("bm-loss-int", lambda: build(compile=True, loss=3), ValueError, r"Received: loss=3"),
    case(
        "bm-loss-name",
        lambda: build(compile=True, loss="nope"),
        ValueError,
        r"Received: loss='nope'",
    ),
    case(
        "bm-metrics-string",
        lambda: build(compile=True, metrics="accuracy"),
        TypeError,
        r"Received: metrics='accuracy'",
    ),
    case(
        "bm-metrics-int",
        lambda: build(compile=True, metrics=[3]),
        ValueError,
        r"Received: metrics=\[3\]",
    ),
    case("bm-name-int", lambda: build(name=3), TypeError, r"Received: name=3"),
    # === calling built models and layers ===
    case(
        "call-model-rank3",
        lambda: tiny_model()(images((16, 16, 3))),
        ValueError,
        r"incompatible shape \D*16, 16, 3\D",
    ),
    case(
        "call-model-rank5",
        lambda: tiny_model()(images((1, 2, 16, 16, 3))),
        ValueError,
        r"shape=\(1, 2, 16, 16, 3\)",
    ),
    case(
        "call-model-2-channels",
        lambda: tiny_model()(images((2, 16, 16, 2))),
        ValueError,
        r"found shape=\(2, 16, 16, 2\)",
    ),
    case(
        "call-grayscale-model-2-channels",
        lambda: build(input_shape=(None, None, 1))(images((2, 16, 16, 2))),
        ValueError,
        r"Received: input_shape=\(2, 16, 16, 2\)",
    ),
    case(
        "call-extractor-rank3",
        lambda: mobilenet()(images((96, 96, 3))),
        ValueError,
        r"Received: input_shape=\(96, 96, 3\)",
    ),
    case(
        "call-extractor-channels",
        lambda: mobilenet()(images((1, 96, 96, 1))),
        ValueError,
        r"Received: input_shape=\(1, 96, 96, 1\)",
    ),
    case(
        "call-extractor-size",
        lambda: mobilenet()(images((1, 64, 64, 3))),
        ValueError,
        r"Received: input_shape=\(1, 64, 64, 3\)",
    ),
    case(
        "call-head-rank3",
        lambda: heads.binary()(images((2, 5, 8))),
        ValueError,
        r"Received: input_shape=\(2, 5, 8\)",
    ),
    case(
        "call-head-dict",
        lambda: heads.binary()({"S8": images((2, 8))}),
        ValueError,
        r"Received: input_shape=",
    ),
    case(
        "call-head-flatten-unknown",
        lambda: heads.binary(pooling="flatten")(keras.Input((None, None, 4))),
        ValueError,
        r"Received: input_shape=\(None, None, None, 4\)",
    ),
]


@pytest.mark.parametrize("call, error, match", CASES)
def test_nonsense_is_refused_clearly(call, error, match):
    with pytest.raises(Exception) as info:
        call()
    assert type(info.value) is error or (
        issubclass(type(info.value), error) and type(info.value).__module__.startswith("kerastl")
    ), f"expected {error.__name__}, got {type(info.value).__name__}: {info.value}"
    assert re.search(match, str(info.value)), f"{match!r} not in: {info.value}"
