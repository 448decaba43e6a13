"""Save under this backend, load under each of the three (nox -s cross_backend: 9 pairs)."""

import json
import zipfile

import keras
import numpy as np
import pytest
from support import BACKENDS, mobilenet_classifier, run_in_backend, tf_mode

from kerastl.optimizers import PerLayerLR
from kerastl.saving import load_model, save_model

pytestmark = pytest.mark.cross_backend
CLASSES = ["astronaut", "coffee", "cat"]

_LOAD_PREDICT_FIT = """
import time, numpy as np, keras, kerastl
from kerastl.saving import load_model
start = time.perf_counter()
model = load_model(path)
loaded = time.perf_counter()
predictions = model.predict(np.load(images), verbose=0)
predicted = time.perf_counter()
assert isinstance(model.get_layer("feature_extractor"), kerastl.FeatureExtractor)
iterations = int(model.optimizer.iterations)
before = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
model.fit(np.load(images), np.arange(6) % 3, epochs=1, batch_size=6, verbose=0)
after = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
print(json.dumps({
    "predictions": predictions.tolist(),
    "load_s": loaded - start,
    "predict_s": predicted - loaded,
    "fit_s": time.perf_counter() - predicted,
    "iterations": [iterations, int(model.optimizer.iterations)],
    "head_moved": float(np.abs(after - before).max()),
    "jit_compile": model.jit_compile,
    "optimizer": type(model.optimizer).__name__,
    "meta": model.kerastl_metadata,
}))
"""


def optimizer():
    """kerastl's PerLayerLR around Adam: its config must cross the backends too."""
    return PerLayerLR(keras.optimizers.Adam(1e-2), multipliers={"head": 0.5})


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mobilenet_weights, photos):
    """A compiled, trained-for-one-step classifier saved by this backend."""
    keras.utils.set_random_seed(0)
    model = mobilenet_classifier(mobilenet_weights)
    model.compile(
        optimizer=optimizer(), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(tf_mode(photos[:6]), np.arange(6) % 3, batch_size=6, verbose=0)
    directory = tmp_path_factory.mktemp("cross")
    path = str(directory / f"saved_on_{keras.config.backend()}.keras")
    save_model(model, path, class_names=CLASSES, history=history)
    images = str(directory / "images.npy")
    np.save(images, tf_mode(photos[6:12]))
    expected = model.predict(np.load(images), verbose=0)
    return path, images, expected, history.history


@pytest.mark.parametrize("target", BACKENDS)
def test_saved_model_loads_predicts_and_trains_on(target, saved):
    path, images, expected, history = saved
    got = run_in_backend(target, _LOAD_PREDICT_FIT, path=path, images=images)
    source = keras.config.backend()
    print(
        f"\n{source} -> {target}: load {got['load_s']:.1f} s, predict "
        f"{got['predict_s']:.1f} s, fit step {got['fit_s']:.1f} s"
    )
    np.testing.assert_allclose(np.array(got["predictions"]), expected, atol=1e-4)
    assert expected.std() > 0.01  # the images give different predictions
    assert got["load_s"] + got["predict_s"] < 60, "loading must take seconds, not minutes"
    assert got["iterations"] == [1, 2]  # optimizer state crossed the backends
    assert got["head_moved"] > 0
    assert got["optimizer"] == type(optimizer()).__name__
    if target == "torch":
        assert got["jit_compile"] is False  # never torch.compile by inheritance
    meta = got["meta"]
    assert meta["class_names"] == CLASSES and meta["backend"] == source
    assert meta["history"]["loss"] == pytest.approx(history["loss"])


def test_plain_keras_file_of_this_backend_loads_everywhere(saved, tmp_path):
    """What Keras alone writes (torch: private optimizer module; JAX: jit_compile=True)."""
    path, images, expected, _ = saved
    model = load_model(path)
    # Plain Adam, as Keras records it on this backend.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    plain = str(tmp_path / "plain.keras")
    model.save(plain)
    with zipfile.ZipFile(plain) as zf:
        recorded = json.loads(zf.read("config.json"))["compile_config"]
    print(
        f"\nplain Keras on {keras.config.backend()} records optimizer module "
        f"{recorded['optimizer']['module']!r}, jit_compile={recorded['jit_compile']}"
    )
    for target in BACKENDS:
        if target == keras.config.backend():
            continue
        got = run_in_backend(target, _LOAD_PREDICT_FIT, path=plain, images=images)
        np.testing.assert_allclose(np.array(got["predictions"]), expected, atol=1e-4)
        assert got["load_s"] + got["predict_s"] < 60
        assert got["meta"]["class_names"] is None  # plain Keras keeps no names
