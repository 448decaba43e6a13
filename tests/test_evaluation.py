"""`interpret`, `calibrate`, TTA and `TemperatureScaling`: figures equal scikit-learn's,
temperature scaling lowers held-out NLL and keeps every argmax, on every backend."""

import json

import bad_input as bad
import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, run_model_saving_test
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

import kerastl
from kerastl.evaluation import calibration, metrics, tta
from kerastl.layers import TemperatureScaling

# --- numpy figures: backend-free ---------------------------------------------------------


@pytest.mark.backend_free
def test_per_class_figures_equal_scikit_learns():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 4, 300))  # 4: never
    labels[labels == 3] = 2  # class 3 absent from the labels
    matrix = metrics.confusion_matrix(labels, predictions, 5)
    np.testing.assert_array_equal(matrix, confusion_matrix(labels, predictions, labels=range(5)))
    mine = metrics.per_class(matrix)
    theirs = precision_recall_fscore_support(labels, predictions, labels=range(5), zero_division=0)
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.backend_free
def test_ece_by_hand_and_most_confused():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    ece, rows = metrics.reliability(probabilities, labels, bins=2)
    # bin (0.5, 1]: all four; confidence mean 0.7375, accuracy 3/4.
    assert rows[0]["count"] == 0 and rows[0]["accuracy"] is None
    assert rows[1] == pytest.approx(
        {"lower": 0.5, "upper": 1.0, "count": 4, "confidence": 0.7375, "accuracy": 0.75}
    )
    assert ece == pytest.approx(0.0125)
    matrix = metrics.confusion_matrix(np.array([0, 0, 1, 1, 1, 2]), np.array([1, 1, 2, 0, 1, 2]), 3)
    assert metrics.most_confused(matrix, ["a", "b", "c"]) == [
        ("a", "b", 2),
        ("b", "a", 1),
        ("b", "c", 1),
    ]


@pytest.mark.backend_free
@pytest.mark.parametrize("truth", [0.5, 2.5])
def test_fit_temperature_recovers_the_temperature_that_made_the_labels(truth):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (20000, 4))
    scaled = np.exp(logits / truth)
    scaled /= scaled.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(4, p=row) for row in scaled])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert calibration.fit_temperature(probabilities, labels) == pytest.approx(truth, rel=0.05)
    honest = calibration.cross_fitted(probabilities, labels)
    assert honest["log_loss_after"] < honest["log_loss_before"]
    assert honest["ece_after"] < honest["ece_before"]
    assert honest["temperature"] == pytest.approx(truth, rel=0.05)
    assert calibration.cross_fitted(probabilities[:30], labels[:30])["ece_after"] is None


@pytest.mark.backend_free
def test_tta_views_are_the_flips_and_crops():
    batch = np.arange(2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3)
    assert tta.views(batch, None)[0] is not None and len(tta.views(batch, None)) == 1
    flip = tta.views(batch, "flip")
    np.testing.assert_array_equal(flip[1], batch[:, :, ::-1])
    assert len(tta.views(batch, "crops")) == 6 and len(tta.views(batch, "flip+crops")) == 12
    assert all(view.shape == batch.shape for view in tta.views(batch, "flip+crops"))


# --- on every backend ---------------------------------------------------------------------


def _digits():
    """sklearn's 8x8 digits as (n, 8, 8, 1) images, 0..16."""
    digits = load_digits()
    return digits.images[..., None].astype("float32"), digits.target


def _overfit(x, y, head=None, epochs=150):
    """A wide Dense classifier trained long on few images: over-confident, as fine-tuned
    networks are."""
    keras.utils.set_random_seed(0)
    head = head or kerastl.heads.multiclass(10)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Rescaling(1 / 16),
            keras.layers.Dense(128, activation="relu"),
            head,
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), head.default_loss())
    model.fit(x, y, epochs=epochs, batch_size=len(x), verbose=0)
    return model


@pytest.fixture(scope="module")
def digits_model():
    x, y = _digits()
    return _overfit(x[:150], y[:150]), x, y


def test_interpret_figures_match_the_predictions(digits_model):
    model, x, y = digits_model
    names = [f"digit {i}" for i in range(10)]
    found = kerastl.interpret(model, (x[300:700], y[300:700]), class_names=names, batch_size=64)
    predicted = np.argmax(model.predict(x[300:700], verbose=0), axis=1)
    np.testing.assert_array_equal(found.predictions, predicted)
    np.testing.assert_array_equal(found.confusion_matrix, confusion_matrix(y[300:700], predicted))
    precision, recall, f1, support = precision_recall_fscore_support(
        y[300:700], predicted, zero_division=0
    )
    np.testing.assert_allclose([row["f1"] for row in found.per_class], f1, atol=1e-12)
    np.testing.assert_allclose([row["recall"] for row in found.per_class], recall, atol=1e-12)
    assert [row["support"] for row in found.per_class] == support.tolist()
    assert found.accuracy == pytest.approx(np.mean(predicted == y[300:700]))
    # The top losses are the highest per-image losses, worst first, with their images.
    worst = np.argsort(-found.losses, kind="stable")[:16]
    assert [item["index"] for item in found.top_losses] == worst.tolist()
    for item in found.top_losses:
        np.testing.assert_array_equal(item["image"], x[300 + item["index"]])
        assert item["true"] == names[y[300 + item["index"]]]
    assert found.most_confused()[0][2] == max(
        found.confusion_matrix[t, p] for t in range(10) for p in range(10) if t != p
    )
    summary = json.loads(json.dumps(found.summary()))
    assert summary["images"] == 400 and summary["accuracy"] == found.accuracy


def test_calibration_lowers_held_out_nll_and_keeps_every_argmax(digits_model, tmp_path):
    model, x, y = digits_model
    before = kerastl.interpret(model, (x[700:], y[700:]))
    fitted = kerastl.calibrate(model, (x[150:400], y[150:400]))
    assert fitted.temperature > 1.1  # over-confident, as made
    assert fitted.after["log_loss"] < fitted.before["log_loss"]
    after = kerastl.interpret(fitted.model, (x[700:], y[700:]))
    assert after.log_loss < before.log_loss - 0.05  # held out: images it never saw
    assert after.ece < before.ece
    np.testing.assert_array_equal(after.predictions, before.predictions)
    # The layer and the numpy scaling agree; the file keeps the temperature.
    np.testing.assert_allclose(
        after.probabilities,
        calibration.scale_probabilities(before.probabilities, fitted.temperature),
        atol=1e-5,
    )
    path = tmp_path / "calibrated.keras"
    kerastl.save_model(fitted.model, path)
    loaded = kerastl.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x[700:760], verbose=0),
        fitted.model.predict(x[700:760], verbose=0),
        atol=1e-6,
    )
    assert calibration.temperature_of(loaded) == fitted.temperature
    # Calibrating again replaces the temperature: one layer, refitted on the base.
    again = kerastl.calibrate(loaded, (x[150:400], y[150:400]))
    assert again.temperature == pytest.approx(fitted.temperature, rel=1e-4)
    assert len(again.model.layers) == len(fitted.model.layers)


@pytest.mark.one_backend
def test_the_evaluation_travels_with_the_saved_model(digits_model, tmp_path):
    model, x, y = digits_model
    found = kerastl.interpret(model, (x[300:400], y[300:400]))
    path = tmp_path / "digits.keras"
    kerastl.save_model(model, path, evaluation=found)
    kept = kerastl.read_metadata(path)["evaluation"]
    assert kept["images"] == 100 and kept["accuracy"] == pytest.approx(found.accuracy)
    assert kept["confusion_matrix"] == found.confusion_matrix.tolist()
    # Saved again without `evaluation`: the loaded model's figures stay.
    kerastl.save_model(kerastl.load_model(path), path)
    assert kerastl.read_metadata(path)["evaluation"] == kept
    with pytest.raises(TypeError, match=r"Received: evaluation=0.9"):
        kerastl.save_model(model, path, evaluation=0.9)


@pytest.mark.parametrize("logits", [False, True])
def test_binary_heads_calibrate_as_two_classes(logits):
    x, y = _digits()
    y = (y >= 5).astype("int64")
    model = _overfit(x[:150], y[:150], kerastl.heads.binary(logits=logits))
    fitted = kerastl.calibrate(model, (x[150:400], y[150:400]))
    before = kerastl.interpret(model, (x[700:], y[700:]))
    after = kerastl.interpret(fitted.model, (x[700:], y[700:]))
    assert before.probabilities.shape == (len(x) - 700, 2)
    assert after.log_loss < before.log_loss
    np.testing.assert_array_equal(after.predictions, before.predictions)
    assert kerastl.read_metadata(fitted.model)["outputs"] == (
        "logits" if logits else "probabilities"
    )


def test_tta_averages_the_views_in_interpret_and_predictor(digits_model):
    model, x, y = digits_model
    images = x[:20]
    found = kerastl.interpret(model, (images, y[:20]), tta="flip", top_losses=0)
    by_hand = (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(found.probabilities, by_hand, atol=1e-5)
    predictor = kerastl.Predictor(model, tta="flip", class_names=[str(i) for i in range(10)])
    rows = predictor.predict(list(images), top_k=None)
    got = np.array([[row.probabilities[str(i)] for i in range(10)] for row in rows])
    np.testing.assert_allclose(got, by_hand, atol=1e-5)
    crops = kerastl.interpret(model, (images, y[:20]), tta="flip+crops", top_losses=0)
    np.testing.assert_allclose(crops.probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.keras_floor
@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"temperature": 2.0}, (4, 3)),
        ({"temperature": 0.5, "task": "binary"}, (4, 1)),
        ({"temperature": 3.0, "inputs": "logits"}, (4, 3)),
    ],
    ids=["softmax", "binary", "logits"],
)
def test_temperature_scaling(kwargs, shape, tmp_path):
    rng = np.random.default_rng(0)
    if kwargs.get("inputs") == "logits":
        data = rng.normal(size=shape).astype("float32")
    elif shape[1] == 1:
        data = rng.uniform(0.05, 0.95, shape).astype("float32")
    else:
        data = rng.dirichlet(np.ones(shape[1]), shape[0]).astype("float32")
    layer = run_layer_test(
        TemperatureScaling,
        kwargs,
        data,
        shape,
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        run_training_check=False,
        dtype_policies=(),
    )
    run_model_saving_test(layer, data, tmp_path)
    out = keras.ops.convert_to_numpy(layer(data))
    if kwargs.get("inputs") != "logits" and shape[1] > 1:
        np.testing.assert_allclose(
            out, calibration.scale_probabilities(data, kwargs["temperature"]), atol=1e-5
        )
        np.testing.assert_array_equal(out.argmax(axis=1), data.argmax(axis=1))


# --- bad input ----------------------------------------------------------------------------


def _regression():
    return bad.once(
        "regression",
        lambda: keras.Sequential(
            [keras.Input((2, 2, 1)), keras.layers.Flatten(), kerastl.heads.regression(1)]
        ),
    )


def _multilabel():
    return bad.once(
        "multilabel",
        lambda: keras.Sequential(
            [keras.Input((2, 2, 1)), keras.layers.Flatten(), kerastl.heads.multilabel(3)]
        ),
    )


def _classifier():
    return bad.once(
        "classifier",
        lambda: keras.Sequential(
            [keras.Input((2, 2, 1)), keras.layers.Flatten(), kerastl.heads.multiclass(3)]
        ),
    )


def _rows(n, labels=None):
    return np.ones((n, 2, 2, 1), "float32"), np.arange(n) % 3 if labels is None else labels


BAD_INPUT = [
    bad.case(
        "ev-model-not-a-model",
        lambda: kerastl.interpret("model.keras", _rows(4)),
        TypeError,
        r"Received: model='model.keras'",
    ),
    bad.case(
        "ev-regression",
        lambda: kerastl.interpret(_regression(), _rows(4)),
        ValueError,
        r"task is 'regression'.*Received: model=",
    ),
    bad.case(
        "ev-multilabel",
        lambda: kerastl.interpret(_multilabel(), _rows(4)),
        ValueError,
        r"multilabel and regression models are not supported.*Received: model=",
    ),
    bad.case(
        "ev-class-the-model-lacks",
        lambda: kerastl.interpret(_classifier(), _rows(4, np.array([0, 1, 2, 7]))),
        ValueError,
        r"data",
    ),
    bad.case(
        "ev-no-labels",
        lambda: kerastl.interpret(_classifier(), np.ones((4, 2, 2, 1), "float32")),
        ValueError,
        r"data",
    ),
    bad.case(
        "ev-empty",
        lambda: kerastl.interpret(_classifier(), (np.ones((0, 2, 2, 1), "float32"), np.zeros(0))),
        ValueError,
        r"data",
    ),
    bad.case(
        "ev-tta",
        lambda: kerastl.interpret(_classifier(), _rows(4), tta="mirror"),
        ValueError,
        r"Received: tta='mirror'",
    ),
    bad.case(
        "ev-top-losses",
        lambda: kerastl.interpret(_classifier(), _rows(4), top_losses=-1),
        ValueError,
        r"Received: top_losses=-1",
    ),
    bad.case(
        "ev-class-names-count",
        lambda: kerastl.interpret(_classifier(), _rows(4), class_names=["a", "b"]),
        ValueError,
        r"Received: class_names=\['a', 'b'\]",
    ),
    bad.case(
        "ev-most-confused",
        lambda: kerastl.interpret(_classifier(), _rows(4)).most_confused(min_count=0),
        ValueError,
        r"Received: min_count=0",
    ),
    bad.case(
        "cal-one-image",
        lambda: kerastl.calibrate(_classifier(), _rows(1)),
        ValueError,
        r"`validation` must hold at least 20.*Received: 1 image",
    ),
    bad.case(
        "cal-class-the-model-lacks",
        lambda: kerastl.calibrate(_classifier(), _rows(30, np.arange(30) % 5)),
        ValueError,
        r"validation",
    ),
    bad.case(
        "cal-regression",
        lambda: kerastl.calibrate(_regression(), _rows(30)),
        ValueError,
        r"Received: model=",
    ),
    bad.case(
        "cal-batch-size",
        lambda: kerastl.calibrate(_classifier(), _rows(30), batch_size=0),
        ValueError,
        r"Received: batch_size=0",
    ),
    bad.case(
        "predictor-tta",
        lambda: kerastl.Predictor(_classifier(), tta=True),
        ValueError,
        r"Received: tta=True",
    ),
    bad.case(
        "ts-temperature-zero",
        lambda: TemperatureScaling(0),
        ValueError,
        r"Received: temperature=0",
    ),
    bad.case(
        "ts-temperature-nan",
        lambda: TemperatureScaling(float("nan")),
        ValueError,
        r"Received: temperature=nan",
    ),
    bad.case(
        "ts-task",
        lambda: TemperatureScaling(2.0, task="multilabel"),
        ValueError,
        r"Received: task='multilabel'",
    ),
    bad.case(
        "ts-inputs",
        lambda: TemperatureScaling(2.0, inputs="scores"),
        ValueError,
        r"Received: inputs='scores'",
    ),
]


@pytest.mark.one_backend
@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
