"""Reported figures are true after every sequence of set_freeze / compile / fit / evaluate.

Regression: `kerastl.freeze.apply` (now `kerastl.set_freeze`) followed by the
user's own `compile` made every later `fit` and `evaluate` report loss 0.0 and
accuracy 0.0 while the model trained: the recompile had put Keras's built
trackers back with attribute tracking on, so stale copies joined the model's
metric list and overwrote the live figures in every log.
"""

import bad_input as bad
import keras
import numpy as np
import pytest
from support import calibrated_cnn

import kerastl
from kerastl.freeze import TrainTopBlocks

# Keras' compile state and metric trackers: checked on the oldest Keras too.
pytestmark = pytest.mark.keras_floor


def _backbone(photos):
    """Three conv / BatchNorm / ReLU blocks (conv_0..2), calibrated on the 32 px photos."""
    return calibrated_cnn(photos[:, ::3, ::3])


def _model(photos, lr=0.0):
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(3), preprocessing=prep)
    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _truth(model, x, y):
    """(loss, accuracy) computed from `predict`."""
    p = model.predict(x, verbose=0).astype("float64")
    loss = float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0))))
    return loss, float(np.mean(p.argmax(-1) == y))


def _user_compile(model, lr=0.0):
    optimizer = kerastl.optimizers.PerLayerLR(keras.optimizers.SGD(lr), multipliers={"conv_2": 0.1})
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


SEQUENCES = {
    # The reported defect: set_freeze, then the user's own compile.
    "set_freeze-compile": lambda m, x, y: (
        kerastl.set_freeze(m, TrainTopBlocks(2), bn="affine"),
        _user_compile(m),
    ),
    "fit-set_freeze-compile": lambda m, x, y: (
        m.fit(x, y, epochs=1, verbose=0),
        kerastl.set_freeze(m, TrainTopBlocks(2), bn="affine"),
        _user_compile(m),
    ),
    "fit-set_freeze": lambda m, x, y: (
        m.fit(x, y, epochs=1, verbose=0),
        kerastl.set_freeze(m, TrainTopBlocks(1)),
    ),
    "set_freeze-twice-fit-compile": lambda m, x, y: (
        kerastl.set_freeze(m, TrainTopBlocks(1)),
        m.fit(x, y, epochs=1, verbose=0),
        kerastl.set_freeze(m, TrainTopBlocks(3), bn="affine"),
        _user_compile(m),
        m.evaluate(x, y, verbose=0),
        kerastl.set_freeze(m, "all"),
    ),
    "gradual_unfreezing-then-compile": lambda m, x, y: (
        m.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[kerastl.callbacks.GradualUnfreezing(every=1, verbose=0)],
        ),
        _user_compile(m),
    ),
}


@pytest.mark.parametrize("steps", list(SEQUENCES), ids=list(SEQUENCES))
def test_fit_and_evaluate_report_what_predict_computes(steps, photos):
    x, y = photos[:12], np.arange(12) % 3
    model = _model(photos)
    SEQUENCES[steps](model, x, y)
    loss, accuracy = _truth(model, x, y)
    assert loss > 0.1  # a 3-class model at chance: a log loss near log(3)

    results = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    assert results["loss"] == pytest.approx(loss, rel=1e-4)
    assert results["accuracy"] == pytest.approx(accuracy)

    # Learning rate 0 everywhere: the weights stay, so what fit reports for its
    # one epoch is what predict computes (BatchNorm frozen, no dropout).
    history = model.fit(x, y, epochs=1, batch_size=12, verbose=0).history
    assert set(history) == {"loss", "accuracy"}
    assert history["loss"][0] == pytest.approx(loss, rel=1e-4)
    assert history["accuracy"][0] == pytest.approx(accuracy)


def test_metric_list_does_not_grow_with_recompiles(photos):
    x, y = photos[:6], np.arange(6) % 3
    model = _model(photos)
    model.fit(x, y, epochs=1, verbose=0)
    count = len(model.metrics)
    for n in (1, 2, 3):
        kerastl.set_freeze(model, TrainTopBlocks(n))
        model.fit(x, y, epochs=1, verbose=0)
    _user_compile(model)
    model.fit(x, y, epochs=1, verbose=0)
    assert len(model.metrics) == count
    assert [m.name for m in model.metrics] == ["loss", "compile_metrics"]


def test_training_after_set_freeze_and_compile_changes_the_unfrozen_layers(photos):
    x, y = photos[:12], np.arange(12) % 3
    model = _model(photos, lr=0.05)
    kerastl.set_freeze(model, TrainTopBlocks(1), bn="affine")  # conv_2, bn_2
    _user_compile(model, lr=0.05)
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}
    history = model.fit(x, y, epochs=3, verbose=0).history
    changed = {
        p
        for p, v in ((v.path, keras.ops.convert_to_numpy(v)) for v in model.weights)
        if not np.array_equal(v, before[p])
    }
    assert any("conv_2" in p for p in changed) and any("bn_2/gamma" in p for p in changed)
    assert not any("conv_0" in p or "conv_1" in p or "bn_1" in p for p in changed)
    assert all(value > 0 for value in history["loss"])


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.set_freeze and kerastl.explain ===
    bad.case(
        "tr-recompile-uncompiled",
        lambda: kerastl.training.recompile_model(bad.dense_model()),
        ValueError,
        r"Received: model=<Functional",
    ),
    bad.case(
        "tr-recompile-optimizer",
        lambda: kerastl.training.recompile_model(bad.tiny_model(), optimizer="adam"),
        TypeError,
        r"Received: optimizer='adam'",
    ),
    bad.case(
        "tr-clone-optimizer",
        lambda: kerastl.training.clone_optimizer("adam"),
        TypeError,
        r"Received: optimizer='adam'",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
