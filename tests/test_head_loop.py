"""The head's epochs without `fit` (TensorFlow, torch): the same run as `fit`."""

import sys

import keras
import numpy as np
import pytest

import kerastl
from kerastl.training import head_loop
from kerastl.training.feature_cache import FeatureBatches

LOOP = pytest.mark.skipif(
    keras.config.backend() == "jax", reason="JAX keeps fit (its head epoch costs under 1%)"
)


def _head(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _features(n=70, views=None):
    rng = np.random.default_rng(0)
    shape = (n, 12) if views is None else (views, n, 12)
    return rng.normal(size=shape).astype("float32"), np.arange(n) % 3


class Seen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("end", epoch, sorted(logs)))
        if epoch == 2:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def _close(a, b):
    for key in b.history:
        np.testing.assert_allclose(a.history[key], b.history[key], rtol=1e-5, atol=1e-6)
    assert a.history.keys() == b.history.keys()


@LOOP
def test_the_loop_runs_the_epochs_fit_runs(capsys):
    """In order and shuffled with augmented views: the history, weights and callbacks of fit."""
    x, y = _features()
    vx, vy = _features(20)
    model, seen = _head(), Seen()
    history = head_loop.fit_epochs(
        model,
        FeatureBatches(x, y, 16, shuffle=False),
        epochs=5,
        initial_epoch=1,
        validation=(vx, vy, 16),
        callbacks=[seen],
        verbose=0,
    )
    reference, seen_fit = _head(), Seen()
    expected = reference.fit(
        x,
        y,
        batch_size=16,
        epochs=5,
        initial_epoch=1,
        shuffle=False,
        validation_data=(vx, vy),
        callbacks=[seen_fit],
        verbose=0,
    )
    _close(history, expected)
    assert history is model.history and len(history.epoch) == 2  # stopped at epoch 2
    assert seen.calls == seen_fit.calls
    for a, b in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # Augmented views, shuffled: the batches `FeatureBatches` hands fit, epoch by epoch.
    copies, y = _features(views=3)
    model = _head()
    history = head_loop.fit_epochs(
        model, FeatureBatches(copies, y, 16, views=True, seed=4), epochs=3, verbose=1
    )
    assert "3/3" in capsys.readouterr().out  # the progress bar, as fit shows it
    # The same batches as fit given the FeatureBatches (which first looks at two
    # batches and ends an epoch: the draws are those fit's epochs get).
    reference = _head()
    batches = FeatureBatches(copies, y, 16, views=True, seed=4)
    _close(history, reference.fit(batches, epochs=3, shuffle=False, verbose=0))
    for a, b in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_the_loop_is_for_in_memory_features_on_one_device(tmp_path):
    x, _ = _features()
    mapped = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", "float32", x.shape)
    assert head_loop.applies(_head(), x) is (keras.config.backend() != "jax")
    assert not head_loop.applies(_head(), mapped)  # read a batch at a time by fit


@LOOP
def test_fine_tune_trains_its_cached_head_with_the_loop(photos, monkeypatch):
    x = photos[:, ::3, ::3][:18]
    y = np.arange(18) % 3
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    maps = keras.layers.Conv2D(8, 3, strides=4, name="conv")(inputs)
    extractor = kerastl.FeatureExtractor(keras.Model(inputs, maps, name="tiny"), pooling="avg")
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(3), preprocessing=False)
    ran = []
    original = head_loop.fit_epochs

    def spy(*args, **kwargs):
        ran.append(kwargs["epochs"])
        return original(*args, **kwargs)

    monkeypatch.setattr(sys.modules["kerastl.training.head_loop"], "fit_epochs", spy)
    history = kerastl.fine_tune(model, (x, y), (x, y), epochs=0, head_epochs=3, verbose=0)
    assert ran == [3] and len(history.history["val_loss"]) == 3
    evaluated = model.evaluate(x, y, verbose=0, return_dict=True)
    assert history.final["loss"] == pytest.approx(evaluated["loss"], rel=1e-4)
