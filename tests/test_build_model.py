import bad_input as bad
import keras
import numpy as np
import pytest

import kerastl
from kerastl import heads, preprocessing
from kerastl.models import build_model

MOBILENET = dict(input_shape=(96, 96, 3), pooling="avg", backbone_kwargs={"alpha": 0.35})


def extractor(weights=None, **kwargs):
    return kerastl.FeatureExtractor("mobilenet_v2", weights=weights, **{**MOBILENET, **kwargs})


def test_parts_are_named_and_compiled_with_the_head_defaults():
    model = build_model(extractor(), heads.binary(logits=True))
    assert [layer.name for layer in model.layers] == [
        "images",
        "preprocessing",
        "feature_extractor",
        "head",
    ]
    # Names the user chose stay: build_model renames nothing the user named.
    fx, top = extractor(name="fx"), heads.binary(name="top")
    named = build_model(fx, top)
    assert [layer.name for layer in named.layers[2:]] == ["fx", "top"]
    assert (fx.name, top.name) == ("fx", "top")
    assert model.input_shape == (None, None, None, 3)  # any size: the pipeline resizes
    assert model.output_shape == (None, 1)
    assert isinstance(
        model.get_layer("preprocessing").layers[-1], preprocessing.BackboneNormalization
    )
    assert model.get_layer("preprocessing").layers[-1].mode == "tf"
    assert model.loss.name == "binary_crossentropy" and model.loss.from_logits
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert np.isclose(float(model.optimizer.learning_rate), 1e-3)
    assert model.name == "mobilenet_v2_binary"


def test_user_overrides_and_no_preprocessing():
    model = build_model(
        extractor(),
        heads.regression(3),
        preprocessing=False,
        optimizer=keras.optimizers.SGD(0.1),
        loss="mae",
        metrics=["mse"],
        name="custom",
    )
    assert [layer.name for layer in model.layers] == ["images", "feature_extractor", "head"]
    assert model.input_shape == (None, 96, 96, 3)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.loss == "mae"
    assert model.name == "custom"
    assert not getattr(build_model(extractor(), heads.binary(), compile=False), "compiled", False)


@pytest.mark.keras_floor
def test_uint8_32x32_batch_gives_probabilities_before_and_after_save(
    photos, mobilenet_weights, tmp_path
):
    head = heads.multiclass(5, hidden=(16,), class_names=list("abcde"))
    fx = extractor(mobilenet_weights)
    prep = preprocessing.pipeline(fx, augment="light", seed=0)
    model = build_model(fx, head, preprocessing=prep)
    cifar_like = photos[:, ::3, ::3]  # uint8 (24, 32, 32, 3)
    assert cifar_like.shape == (24, 32, 32, 3) and cifar_like.dtype == np.uint8
    probs = model.predict(cifar_like, verbose=0)
    assert probs.shape == (24, 5)
    assert (probs >= 0).all() and (probs <= 1).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert probs.std(axis=0).max() > 1e-4  # depends on the image
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.name for layer in loaded.layers[1:]] == [
        "preprocessing",
        "feature_extractor",
        "head",
    ]
    np.testing.assert_allclose(loaded.predict(cifar_like, verbose=0), probs, atol=1e-5)
    assert heads.head_info(loaded)["class_names"] == list("abcde")
    assert loaded.loss.name == "sparse_categorical_crossentropy"  # compile state kept


@pytest.mark.keras_floor
def test_fit_trains_only_the_head_and_learns(photos, mobilenet_weights):
    model = build_model(
        extractor(mobilenet_weights), heads.binary(), optimizer=keras.optimizers.Adam(1e-2)
    )
    frozen = [w.copy() for w in model.get_layer("feature_extractor").get_weights()]
    images = photos[:16, ::3, ::3]
    labels = (np.arange(16) % 2).astype("float32")
    images[labels == 1] //= 4  # dark images are class 1: learnable from pooled features
    history = model.fit(images, labels, epochs=8, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for before, after in zip(
        frozen, model.get_layer("feature_extractor").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(before, after)


def test_grayscale_inputs(mobilenet_weights):
    from sklearn.datasets import load_digits

    digits = (load_digits().images[:6, :, :, None] * 16).astype("uint8")  # 0..16 -> 0..255
    model = build_model(
        extractor(mobilenet_weights), heads.multiclass(10), input_shape=(8, 8, 1), compile=False
    )
    assert model.input_shape == (None, 8, 8, 1)
    probs = model.predict(digits, verbose=0)
    assert probs.shape == (6, 10)
    rgb = np.repeat(digits, 3, axis=-1)
    np.testing.assert_allclose(
        build_model(
            model.get_layer("feature_extractor"), model.get_layer("head"), compile=False
        ).predict(rgb, verbose=0),
        probs,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(extractor="mobilenet_v2"), "Received: extractor='mobilenet_v2'"),
        (dict(head=keras.layers.Dense(2)), "Received: head=<Dense"),
        (dict(preprocessing="tf"), "Received: preprocessing='tf'"),
        (dict(input_shape=(32, 32, 2)), r"Received: input_shape=\(32, 32, 2\)"),
        (dict(input_shape=(32, 32)), r"Received: input_shape=\(32, 32\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(extractor=None, head=heads.binary())
    args.update(kwargs)
    if args["extractor"] is None:
        args["extractor"] = extractor()
    with pytest.raises(ValueError, match=match):
        build_model(**args)


# Loading on the other backends: tests/test_cross_backend.py (one matrix for every part).


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.build_model ===
    bad.case(
        "bm-extractor-int",
        lambda: kerastl.build_model(3, kerastl.heads.binary()),
        ValueError,
        r"Received: extractor=3",
    ),
    bad.case(
        "bm-extractor-layer",
        lambda: kerastl.build_model(keras.layers.Dense(2), kerastl.heads.binary()),
        ValueError,
        r"Received: extractor=<Dense",
    ),
    bad.case("bm-head-int", lambda: bad.build(head=3), ValueError, r"Received: head=3"),
    bad.case(
        "bm-head-dense",
        lambda: bad.build(head=keras.layers.Dense(2)),
        ValueError,
        r"Received: head=<Dense",
    ),
    bad.case(
        "bm-preprocessing-string",
        lambda: bad.build(preprocessing="yes"),
        ValueError,
        r"Received: preprocessing='yes'",
    ),
    bad.case(
        "bm-preprocessing-true",
        lambda: bad.build(preprocessing=True),
        ValueError,
        r"Received: preprocessing=True",
    ),
    bad.case(
        "bm-preprocessing-outside-registry",
        lambda: bad.build(preprocessing=None),
        ValueError,
        r"Received: backbone=",
    ),
    bad.case(
        "bm-shape-rank2",
        lambda: bad.build(input_shape=(32, 32)),
        ValueError,
        r"Received: input_shape=\(32, 32\)",
    ),
    bad.case(
        "bm-shape-2-channels",
        lambda: bad.build(input_shape=(32, 32, 2)),
        ValueError,
        r"Received: input_shape=\(32, 32, 2\)",
    ),
    bad.case(
        "bm-shape-string",
        lambda: bad.build(input_shape="x"),
        ValueError,
        r"Received: input_shape='x'",
    ),
    bad.case(
        "bm-shape-zero",
        lambda: bad.build(input_shape=(0, 32, 3)),
        ValueError,
        r"Received: input_shape=\(0, 32, 3\)",
    ),
    bad.case(
        "bm-shape-strings",
        lambda: bad.build(input_shape=("a", "b", 3)),
        ValueError,
        r"Received: input_shape=\('a', 'b', 3\)",
    ),
    bad.case(
        "bm-shape-mismatch-no-preprocessing",
        lambda: bad.build(preprocessing=False, input_shape=(32, 32, 3)),
        ValueError,
        r"Received: input_shape=\(None, 32, 32, 3\)",
    ),
    bad.case(
        "bm-compile-string", lambda: bad.build(compile="no"), TypeError, r"Received: compile='no'"
    ),
    bad.case(
        "bm-optimizer-int",
        lambda: bad.build(compile=True, optimizer=3),
        ValueError,
        r"Received: optimizer=3",
    ),
    bad.case(
        "bm-optimizer-name",
        lambda: bad.build(compile=True, optimizer="nope"),
        ValueError,
        r"Received: optimizer='nope'",
    ),
    bad.case(
        "bm-loss-int", lambda: bad.build(compile=True, loss=3), ValueError, r"Received: loss=3"
    ),
    bad.case(
        "bm-loss-name",
        lambda: bad.build(compile=True, loss="nope"),
        ValueError,
        r"Received: loss='nope'",
    ),
    bad.case(
        "bm-metrics-string",
        lambda: bad.build(compile=True, metrics="accuracy"),
        TypeError,
        r"Received: metrics='accuracy'",
    ),
    bad.case(
        "bm-metrics-int",
        lambda: bad.build(compile=True, metrics=[3]),
        ValueError,
        r"Received: metrics=\[3\]",
    ),
    bad.case("bm-name-int", lambda: bad.build(name=3), TypeError, r"Received: name=3"),
    # === calling built models and layers ===
    bad.case(
        "call-model-rank3",
        lambda: bad.tiny_model()(bad.images((16, 16, 3))),
        ValueError,
        r"incompatible shape \D*16, 16, 3\D",
    ),
    bad.case(
        "call-model-rank5",
        lambda: bad.tiny_model()(bad.images((1, 2, 16, 16, 3))),
        ValueError,
        r"shape=\(1, 2, 16, 16, 3\)",
    ),
    bad.case(
        "call-model-2-channels",
        lambda: bad.tiny_model()(bad.images((2, 16, 16, 2))),
        ValueError,
        r"found shape=\(2, 16, 16, 2\)",
    ),
    bad.case(
        "call-grayscale-model-2-channels",
        lambda: bad.build(input_shape=(None, None, 1))(bad.images((2, 16, 16, 2))),
        ValueError,
        r"Received: input_shape=\(2, 16, 16, 2\)",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
