import json

import bad_input as bad
import keras
import numpy as np
import pytest
from support import shapes_only

import kerastl
from kerastl import heads
from kerastl.models import build_model


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def _dense_layers(head):
    return [(d.units, d.activation.__name__) for d in head.dense_layers]


def test_seed_001_head_mobilenet_v2_160():
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(160, 160, 3), pooling="avg"
    )
    model = build_model(extractor, heads.binary(logits=True))
    head = model.get_layer("head")
    assert _dense_layers(head) == [(1, "linear")]
    assert _trainable(model) == 1_281
    assert model.count_params() == 2_257_984 + 1_281


def test_seed_002_head_xception():
    with shapes_only():  # counts and shapes: no initialiser runs (JAX compiles each)
        # Parameter counts do not depend on the input size: build at Xception's minimum.
        extractor = kerastl.FeatureExtractor(
            "xception", weights=None, input_shape=(71, 71, 3), pooling="avg"
        )
        model = build_model(extractor, heads.multiclass(100, hidden=(1024,)), compile=False)
        head = model.get_layer("head")
        assert _dense_layers(head) == [(1024, "relu"), (100, "linear")]
        assert head.output_activation == "softmax"
        assert _trainable(model) == 2_200_676
        assert head.count_params() == 2_200_676


def test_seed_003_head_densenet201_32():
    with shapes_only():  # counts and shapes: no initialiser runs (JAX compiles each)
        extractor = kerastl.FeatureExtractor("densenet201", weights=None, input_shape=(32, 32, 3))
        head = heads.multiclass(10, hidden=(256,), batchnorm=True, pooling="flatten")
        model = build_model(extractor, head, compile=False)
        assert extractor.compute_output_shape((None, 32, 32, 3)) == (None, 1, 1, 1920)
        bns = [(bn.gamma.shape[0]) for bn in head.norm_layers]
        assert bns == [1920, 256]  # Flatten, BN, Dense(256), BN, Dense(10)
        assert _dense_layers(head) == [(256, "relu"), (10, "linear")]
        # BN(1920) + Dense(1920->256) + BN(256) + Dense(256->10); moving stats do not train.
        assert head.count_params() == 4 * 1920 + 491_776 + 4 * 256 + 2_570 == 503_050
        assert _trainable(model) == 2 * 1920 + 491_776 + 2 * 256 + 2_570 == 498_698


@pytest.mark.parametrize(
    "head, loss, from_logits, metric",
    [
        (heads.binary(), "binary_crossentropy", False, "binary_accuracy"),
        (heads.binary(logits=True), "binary_crossentropy", True, "binary_accuracy"),
        (heads.multiclass(4), "sparse_categorical_crossentropy", False, "accuracy"),
        (heads.multiclass(4, sparse_labels=False), "categorical_crossentropy", False, "accuracy"),
        (heads.multiclass(4, logits=True), "sparse_categorical_crossentropy", True, "accuracy"),
        (heads.multilabel(5), "binary_crossentropy", False, "binary_accuracy"),
        (heads.regression(2), "mean_squared_error", False, "mean_absolute_error"),
    ],
    ids=["binary", "binary_logits", "multiclass", "onehot", "mc_logits", "multilabel", "regr"],
)
def test_each_head_knows_its_loss_and_metrics(head, loss, from_logits, metric):
    assert head.default_loss().name == loss
    assert getattr(head.default_loss(), "from_logits", False) is from_logits
    assert head.from_logits is from_logits
    assert [m.name for m in head.default_metrics()] == [metric]


def test_outputs_match_the_task_and_logits_give_the_same_probabilities():
    features = np.random.default_rng(0).normal(size=(6, 16)).astype("float32")
    for make, check in [
        (lambda **kw: heads.binary(**kw), lambda p: (p > 0).all() and (p < 1).all()),
        (lambda **kw: heads.multiclass(4, **kw), lambda p: np.allclose(p.sum(-1), 1, atol=1e-5)),
        (lambda **kw: heads.multilabel(3, **kw), lambda p: (p > 0).all() and (p < 1).all()),
    ]:
        probs_head, logits_head = make(), make(logits=True)
        probs = keras.ops.convert_to_numpy(probs_head(features))
        logits_head(features)
        logits_head.set_weights(probs_head.get_weights())
        logits = keras.ops.convert_to_numpy(logits_head(features))
        assert check(probs)
        activation = keras.activations.get(probs_head.output_activation)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(activation(logits)), probs, rtol=1e-5, atol=1e-6
        )
        assert not np.allclose(logits, probs)
    out = keras.ops.convert_to_numpy(heads.regression(2)(features))
    assert out.shape == (6, 2) and out.min() < 0  # linear: no squashing


@pytest.mark.parametrize(
    "head, expected",
    [
        (heads.binary(priors=0.25), [0.25]),
        (heads.multiclass(3, priors=[0.5, 0.3, 0.2], hidden=(8,)), [0.5, 0.3, 0.2]),
        (heads.multilabel(2, priors=[0.1, 0.6]), [0.1, 0.6]),
    ],
    ids=["binary", "multiclass", "multilabel"],
)
def test_bias_starts_at_the_class_priors(head, expected):
    # Zero features: the output is the activation of the output bias alone.
    out = keras.ops.convert_to_numpy(head(np.zeros((2, 12), "float32")))
    np.testing.assert_allclose(out, [expected, expected], atol=1e-6)
    assert not np.allclose(
        keras.ops.convert_to_numpy(heads.binary()(np.zeros((1, 12), "float32"))), 0.25
    )


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax", "flatten", "gem"])
def test_pooling_of_feature_maps(pooling):
    maps = np.random.default_rng(1).uniform(0.1, 2, (3, 4, 5, 6)).astype("float32")
    head = heads.regression(1, pooling=pooling)
    head(maps)
    head.dense_layers[0].kernel.assign(np.ones_like(head.dense_layers[0].kernel))
    pooled = {
        "avg": maps.mean(axis=(1, 2)),
        "max": maps.max(axis=(1, 2)),
        "avgmax": np.concatenate([maps.mean(axis=(1, 2)), maps.max(axis=(1, 2))], -1),
        "flatten": maps.reshape(3, -1),
        "gem": (maps**3).mean(axis=(1, 2)) ** (1 / 3),
    }[pooling]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head(maps))[:, 0], pooled.sum(-1), rtol=1e-4
    )
    vectors = np.ones((2, 7), "float32")  # already pooled: pooling does not apply
    on_vectors = heads.multiclass(3, pooling=pooling)
    assert tuple(on_vectors(vectors).shape) == (2, 3)
    # ...and leaves no layer unbuilt: Keras would rebuild a model holding an unbuilt layer
    # on every train_on_batch (JAX, torch). The unused pooler makes no weights.
    assert all(layer.built for layer in on_vectors._flatten_layers())
    assert len(on_vectors.weights) == 2


def test_dropout_and_batchnorm_act_only_in_training():
    head = heads.multiclass(3, hidden=(32,), dropout=0.5, batchnorm=True)
    features = np.random.default_rng(2).normal(size=(16, 8)).astype("float32")
    infer = [keras.ops.convert_to_numpy(head(features, training=False)) for _ in range(2)]
    train = keras.ops.convert_to_numpy(head(features, training=True))
    np.testing.assert_array_equal(infer[0], infer[1])
    assert not np.allclose(train, infer[0], atol=1e-3)


def test_config_round_trip_and_head_info_after_save(tmp_path):
    head = heads.multiclass(
        3,
        hidden=(8, 4),
        dropout=0.1,
        batchnorm=True,
        activation="gelu",
        pooling="gem",
        priors=[0.2, 0.3, 0.5],
        class_names=["cat", "dog", "fox"],
    )
    model = keras.Sequential([keras.Input((4, 4, 5)), head])
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(head)))
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.get_config() == head.get_config()
    maps = np.random.default_rng(3).normal(size=(2, 4, 4, 5)).astype("float32")
    clone(maps)
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(maps)),
        keras.ops.convert_to_numpy(head(maps)),
        atol=1e-6,
    )
    path = str(tmp_path / "head.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert heads.head_info(loaded) == {
        "task": "multiclass",
        "num_outputs": 3,
        "from_logits": False,
        "output_activation": "softmax",
        "sparse_labels": True,
        "class_names": ["cat", "dog", "fox"],
    }
    np.testing.assert_allclose(
        loaded.predict(maps, verbose=0), model.predict(maps, verbose=0), atol=1e-6
    )


def test_head_info_without_a_head():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no kerastl head"):
        heads.head_info(model)
    assert heads.head_info(heads.regression(3))["task"] == "regression"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: heads.multiclass(1), r"kerastl.heads.binary\(\). Received: num_classes=1"),
        (lambda: heads.multiclass(0), "Received: num_classes=0"),
        (lambda: heads.multiclass(2.5), "Received: num_classes=2.5"),
        (lambda: heads.multiclass(True), "Received: num_classes=True"),
        (lambda: heads.multilabel(0), "Received: num_labels=0"),
        (lambda: heads.regression(-1), "Received: units=-1"),
        (lambda: heads.binary(hidden=(16, 0)), r"Received: hidden=\(16, 0\)"),
        (lambda: heads.binary(dropout=1.0), "Received: dropout=1.0"),
        (lambda: heads.binary(pooling="mean"), "Received: pooling='mean'"),
        (lambda: heads.binary(priors=1.5), "Received: priors=1.5"),
        (lambda: heads.multiclass(3, priors=[0.5, 0.5]), r"Received: priors=\[0.5, 0.5\]"),
        (lambda: heads.multiclass(2, priors=[0.5, 0.4]), "must sum to 1"),
        (lambda: heads.regression(priors=[0.5]), "regression head has none"),
        (lambda: heads.regression(logits=True), "Received: logits=True"),
        (lambda: heads.binary(class_names=["a"]), r"Received: class_names=\['a'\]"),
        (lambda: heads.TaskHead("ranking", 2), "Received: task='ranking'"),
        (lambda: heads.TaskHead("binary", 2), "Received: num_outputs=2"),
    ],
)
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_feature_rank_is_an_error():
    with pytest.raises(ValueError, match=r"Received: input_shape=\(2, 5, 8\)"):
        heads.binary()(np.zeros((2, 5, 8), "float32"))


@pytest.mark.backend_free
def test_find_head_wants_a_model():
    with pytest.raises(
        TypeError, match=r"`model` must be a keras.Model or layer. Received: model='x'"
    ):
        heads.find_head("x")


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.heads: TaskHead ===
    bad.case("hd-task", lambda: kerastl.heads.TaskHead("x", 3), ValueError, r"Received: task='x'"),
    bad.case(
        "hd-outputs-zero",
        lambda: kerastl.heads.TaskHead("multiclass", 0),
        ValueError,
        r"Received: num_outputs=0",
    ),
    bad.case(
        "hd-outputs-float",
        lambda: kerastl.heads.TaskHead("multiclass", 2.5),
        ValueError,
        r"Received: num_outputs=2.5",
    ),
    bad.case(
        "hd-outputs-string",
        lambda: kerastl.heads.TaskHead("multiclass", "3"),
        ValueError,
        r"Received: num_outputs='3'",
    ),
    bad.case(
        "hd-outputs-bool",
        lambda: kerastl.heads.TaskHead("regression", True),
        ValueError,
        r"Received: num_outputs=True",
    ),
    bad.case(
        "hd-binary-two",
        lambda: kerastl.heads.TaskHead("binary", 2),
        ValueError,
        r"Received: num_outputs=2",
    ),
    bad.case(
        "hd-hidden-string",
        lambda: kerastl.heads.multiclass(3, hidden="64"),
        ValueError,
        r"Received: hidden='64'",
    ),
    bad.case(
        "hd-hidden-zero",
        lambda: kerastl.heads.multiclass(3, hidden=[0]),
        ValueError,
        r"Received: hidden=\[0\]",
    ),
    bad.case(
        "hd-hidden-negative",
        lambda: kerastl.heads.multiclass(3, hidden=[-1]),
        ValueError,
        r"Received: hidden=\[-1\]",
    ),
    bad.case(
        "hd-hidden-float",
        lambda: kerastl.heads.multiclass(3, hidden=2.5),
        ValueError,
        r"Received: hidden=2.5",
    ),
    bad.case(
        "hd-hidden-bool",
        lambda: kerastl.heads.multiclass(3, hidden=True),
        ValueError,
        r"Received: hidden=True",
    ),
    bad.case(
        "hd-hidden-dict",
        lambda: kerastl.heads.multiclass(3, hidden={64: 1}),
        ValueError,
        r"Received: hidden=\{64: 1\}",
    ),
    bad.case(
        "hd-dropout-one",
        lambda: kerastl.heads.multiclass(3, dropout=1),
        ValueError,
        r"Received: dropout=1",
    ),
    bad.case(
        "hd-dropout-negative",
        lambda: kerastl.heads.multiclass(3, dropout=-0.1),
        ValueError,
        r"Received: dropout=-0.1",
    ),
    bad.case(
        "hd-dropout-string",
        lambda: kerastl.heads.multiclass(3, dropout="x"),
        ValueError,
        r"Received: dropout='x'",
    ),
    bad.case(
        "hd-dropout-nan",
        lambda: kerastl.heads.multiclass(3, dropout=bad.NAN),
        ValueError,
        r"Received: dropout=nan",
    ),
    bad.case(
        "hd-dropout-bool",
        lambda: kerastl.heads.multiclass(3, dropout=False),
        ValueError,
        r"Received: dropout=False",
    ),
    bad.case(
        "hd-pooling-mean",
        lambda: kerastl.heads.multiclass(3, pooling="mean"),
        ValueError,
        r"Received: pooling='mean'",
    ),
    bad.case(
        "hd-pooling-none",
        lambda: kerastl.heads.multiclass(3, pooling=None),
        ValueError,
        r"Received: pooling=None",
    ),
    bad.case(
        "hd-logits-regression",
        lambda: kerastl.heads.regression(logits=True),
        ValueError,
        r"Received: logits=True",
    ),
    bad.case(
        "hd-logits-string",
        lambda: kerastl.heads.binary(logits="no"),
        TypeError,
        r"Received: logits='no'",
    ),
    bad.case(
        "hd-batchnorm-string",
        lambda: kerastl.heads.binary(batchnorm="no"),
        TypeError,
        r"Received: batchnorm='no'",
    ),
    bad.case(
        "hd-sparse-string",
        lambda: kerastl.heads.multiclass(3, sparse_labels="no"),
        TypeError,
        r"Received: sparse_labels='no'",
    ),
    bad.case(
        "hd-priors-count",
        lambda: kerastl.heads.multiclass(3, priors=[0.5, 0.5]),
        ValueError,
        r"Received: priors=\[0.5, 0.5\]",
    ),
    bad.case(
        "hd-priors-range",
        lambda: kerastl.heads.multilabel(2, priors=[0.5, 1.5]),
        ValueError,
        r"Received: priors=\[0.5, 1.5\]",
    ),
    bad.case(
        "hd-priors-zero", lambda: kerastl.heads.binary(priors=0), ValueError, r"Received: priors=0"
    ),
    bad.case(
        "hd-priors-nan",
        lambda: kerastl.heads.binary(priors=bad.NAN),
        ValueError,
        r"Received: priors=nan",
    ),
    bad.case(
        "hd-priors-sum",
        lambda: kerastl.heads.multiclass(3, priors=[0.2, 0.2, 0.2]),
        ValueError,
        r"sum to 1.*Received: priors=\[0.2, 0.2, 0.2\]",
    ),
    bad.case(
        "hd-priors-string",
        lambda: kerastl.heads.binary(priors="0.3"),
        ValueError,
        r"Received: priors='0.3'",
    ),
    bad.case(
        "hd-priors-bool",
        lambda: kerastl.heads.binary(priors=True),
        ValueError,
        r"Received: priors=True",
    ),
    bad.case(
        "hd-priors-regression",
        lambda: kerastl.heads.regression(priors=[0.5]),
        ValueError,
        r"Received: priors=\[0.5\]",
    ),
    bad.case(
        "hd-class-names-string",
        lambda: kerastl.heads.multiclass(3, class_names="abc"),
        TypeError,
        r"Received: class_names='abc'",
    ),
    bad.case(
        "hd-class-names-count",
        lambda: kerastl.heads.multiclass(3, class_names=["a", "b"]),
        ValueError,
        r"Received: class_names=\['a', 'b'\]",
    ),
    bad.case(
        "hd-class-names-binary-count",
        lambda: kerastl.heads.binary(class_names=["yes"]),
        ValueError,
        r"Received: class_names=\['yes'\]",
    ),
    bad.case(
        "hd-class-names-ints",
        lambda: kerastl.heads.multiclass(3, class_names=[1, 2, 3]),
        TypeError,
        r"Received: class_names=\[1, 2, 3\]",
    ),
    bad.case(
        "hd-class-names-duplicate",
        lambda: kerastl.heads.multiclass(3, class_names=["a", "b", "a"]),
        ValueError,
        r"Received: class_names=\['a', 'b', 'a'\]",
    ),
    bad.case(
        "hd-class-names-empty-name",
        lambda: kerastl.heads.multiclass(2, class_names=["a", ""]),
        ValueError,
        r"Received: class_names=\['a', ''\]",
    ),
    bad.case(
        "hd-activation",
        lambda: kerastl.heads.multiclass(3, hidden=[8], activation="nope"),
        ValueError,
        r"Received: activation='nope'",
    ),
    bad.case(
        "hd-activation-int",
        lambda: kerastl.heads.multiclass(3, activation=3),
        ValueError,
        r"Received: activation=3",
    ),
    bad.case(
        "hd-multiclass-one",
        lambda: kerastl.heads.multiclass(1),
        ValueError,
        r"Received: num_classes=1",
    ),
    bad.case(
        "hd-multiclass-float",
        lambda: kerastl.heads.multiclass(2.5),
        ValueError,
        r"Received: num_classes=2.5",
    ),
    bad.case(
        "hd-multiclass-bool",
        lambda: kerastl.heads.multiclass(True),
        ValueError,
        r"Received: num_classes=True",
    ),
    bad.case(
        "hd-multilabel-zero",
        lambda: kerastl.heads.multilabel(0),
        ValueError,
        r"Received: num_labels=0",
    ),
    bad.case(
        "hd-regression-units",
        lambda: kerastl.heads.regression(units="1"),
        ValueError,
        r"Received: units='1'",
    ),
    bad.case("hd-info-int", lambda: kerastl.heads.head_info(3), ValueError, r"Received: model=3"),
    bad.case(
        "hd-info-no-head",
        lambda: kerastl.heads.head_info(bad.dense_model()),
        ValueError,
        r"Received: model='dense_model'",
    ),
    # === calling built models and layers ===
    bad.case(
        "call-head-rank3",
        lambda: kerastl.heads.binary()(bad.images((2, 5, 8))),
        ValueError,
        r"Received: input_shape=\(2, 5, 8\)",
    ),
    bad.case(
        "call-head-dict",
        lambda: kerastl.heads.binary()({"S8": bad.images((2, 8))}),
        ValueError,
        r"Received: input_shape=",
    ),
    bad.case(
        "call-head-flatten-unknown",
        lambda: kerastl.heads.binary(pooling="flatten")(keras.Input((None, None, 4))),
        ValueError,
        r"Received: input_shape=\(None, None, None, 4\)",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
