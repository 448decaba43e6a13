"""Nonsense in, a clear error out: what the bad-input tables of the test modules share.

Each test module of the public API ends with a table, `BAD_INPUT`, of cases (`case`):
each calls the library with one bad argument and expects an error of a user-facing
type whose message names the argument and shows the value (`Received: arg=...`),
checked by `check_refused`. Never an AttributeError, an error from deep inside
numpy / Keras / a backend, or silence. (Data, saving and Predictor have tables of
their own, in their modules.)

A table's test takes conftest's `bad_input_objects` fixture: the objects its cases
share are built lazily, at most once per module, and its cases skip conftest's
`clear_session` per test (a full gc pass, ~0.4 s each): no case depends on generated
layer names.
"""

import os
import pathlib
import re

import keras
import numpy as np
import pytest

import kerastl
from kerastl import backbones, heads, preprocessing

NAN = float("nan")
INF = float("inf")
MOBILENET = dict(weights=None, input_shape=(96, 96, 3), backbone_kwargs={"alpha": 0.35})

# --- shared objects, built lazily and at most once per test module -----------------------

_built = {}


def start_module(directory):
    """Called by conftest's `bad_input_objects` as a module's table starts: a fresh set."""
    _built.clear()
    _built["dir"] = directory


def end_module():
    _built.clear()


def once(key, make):
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
    return once("mobilenet", lambda: fe(pooling="avg"))


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

    return once("tiny_model", make)


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


def check_refused(call, error, match):
    """`call()` raises `error` (or a kerastl subclass of it) with `match` in its message."""
    with pytest.raises(Exception) as info:
        call()
    assert type(info.value) is error or (
        issubclass(type(info.value), error) and type(info.value).__module__.startswith("kerastl")
    ), f"expected {error.__name__}, got {type(info.value).__name__}: {info.value}"
    assert re.search(match, str(info.value)), f"{match!r} not in: {info.value}"


FE = kerastl.FeatureExtractor
REG = "mobilenet_v2"


FE = kerastl.FeatureExtractor
REG = "mobilenet_v2"
