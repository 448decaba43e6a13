"""The frozen-feature cache: equal to end-to-end training, never used where invalid, on disk."""

import os
import sys

import keras
import numpy as np
import pytest
from support import calibrate_batchnorm, tf_mode

import kerastl
from kerastl.training import feature_cache
from kerastl.training.checkpoints import Checkpoints


def _backbone(photos):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, filters in enumerate((8, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    backbone = keras.Model(inputs, x, name="tiny")
    return calibrate_batchnorm(backbone, tf_mode(photos[:, ::3, ::3]))


def _model(photos, augment="none", seed=3):
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf", augment=augment, seed=0)
    keras.utils.set_random_seed(seed)
    head = kerastl.heads.multiclass(3)
    return kerastl.build_model(extractor, head, preprocessing=prep)


def _data(photos):
    return photos[:, ::3, ::3][:18], np.arange(18) % 3


def test_head_on_the_cache_equals_the_head_trained_end_to_end(photos):
    x, y = _data(photos)
    runs = {}
    for cache in (True, False):
        model = _model(photos)
        data = kerastl.data.from_arrays(x, y, batch_size=6, shuffle=False)
        history = kerastl.fine_tune(
            model, data, data, epochs=0, head_epochs=3, lr=1e-2, cache=cache, verbose=0
        )
        runs[cache] = (model, history)
    (cached, h_cached), (direct, h_direct) = runs[True], runs[False]
    head_weights = [keras.ops.convert_to_numpy(w) for w in cached.get_layer("head").weights]
    reference = [keras.ops.convert_to_numpy(w) for w in direct.get_layer("head").weights]
    assert any(not np.allclose(w, 0) for w in head_weights)
    for a, b in zip(head_weights, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(h_cached.history[key], h_direct.history[key], rtol=1e-4)
    assert h_cached.initial["loss"] == pytest.approx(h_direct.initial["loss"], rel=1e-5)
    # The full model holds the head trained on the cache.
    np.testing.assert_allclose(
        cached.predict(x, verbose=0), direct.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )


def test_the_cache_is_never_used_where_it_is_invalid(photos, monkeypatch):
    x, y = _data(photos)
    augmented = _model(photos, augment="light")
    with pytest.raises(ValueError, match=r"random numbers.*Received: cache=True"):
        kerastl.fine_tune(augmented, (x, y), epochs=0, head_epochs=1, cache=True, verbose=0)

    def refuse(*args, **kwargs):
        raise AssertionError("the cache was used")

    monkeypatch.setattr(sys.modules["kerastl.training.fine_tune"], "cache_features", refuse)
    kerastl.fine_tune(augmented, (x, y), epochs=0, head_epochs=1, verbose=0)  # auto: not used
    mixed = kerastl.data.from_arrays(
        x, keras.utils.to_categorical(y, 3), batch_size=6, mix="mixup", seed=0
    )
    one_hot = kerastl.build_model(
        kerastl.FeatureExtractor(_backbone(photos), pooling="avg"),
        kerastl.heads.multiclass(3, sparse_labels=False),
        kerastl.preprocessing.pipeline("mobilenet_v2", resize=32),
    )
    with pytest.raises(ValueError, match=r"mix.*Received: cache=True"):
        kerastl.fine_tune(one_hot, mixed, epochs=0, head_epochs=1, cache=True, verbose=0)
    with pytest.raises(ValueError, match=r"callbacks.*Received: cache=True"):
        kerastl.fine_tune(
            _model(photos),
            (x, y),
            epochs=0,
            head_epochs=1,
            cache=True,
            callbacks=[keras.callbacks.History()],
            verbose=0,
        )
    # A trainable extractor has no fixed features.
    model = _model(photos)
    kerastl.set_freeze(model, "none")
    with pytest.raises(ValueError, match=r"not fully frozen.*Received: model_or_extractor="):
        kerastl.cache_features(model, (x, y), verbose=0)
    # Dropout between the extractor and the head changes the features every step.
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    images = keras.Input((32, 32, 3))
    features = keras.layers.Dropout(0.5)(extractor(images))
    dropped = keras.Model(images, kerastl.heads.multiclass(3)(features))
    front, head, reason = feature_cache.cacheable(dropped)
    assert front is None and "dropout" in reason


def test_a_disk_cache_is_reused_and_a_corrupt_one_rebuilt(photos, tmp_path):
    x, y = _data(photos)
    model = _model(photos)
    first = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert not first.reused and first.features.shape == (18, 16)
    expected = np.array(first.features)
    again = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert again.reused and again.key == first.key
    np.testing.assert_array_equal(np.asarray(again.features), expected)
    # What the features depend on changes the key: other data, other weights.
    other = kerastl.cache_features(model, (x[:12], y[:12]), cache_dir=tmp_path, verbose=0)
    assert other.key != first.key and not other.reused
    bias = model.get_layer("feature_extractor").backbone.get_layer("conv_1").bias
    bias.assign(bias + 1.0)
    moved = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert moved.key != first.key and not moved.reused
    bias.assign(bias - 1.0)
    # A flipped byte: detected, rebuilt, never used.
    with open(first.path, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\xff" * 8)
    rebuilt = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert not rebuilt.reused
    np.testing.assert_allclose(np.asarray(rebuilt.features), expected, rtol=1e-6)


def test_fine_tune_reuses_its_disk_cache(photos, tmp_path, monkeypatch):
    x, y = _data(photos)
    kerastl.fine_tune(
        _model(photos), (x, y), epochs=0, head_epochs=1, cache_dir=tmp_path, verbose=0
    )
    computed = []
    original = feature_cache._compute

    def spy(*args, **kwargs):
        computed.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(feature_cache, "_compute", spy)
    kerastl.fine_tune(
        _model(photos), (x, y), epochs=0, head_epochs=1, cache_dir=tmp_path, verbose=0
    )
    assert computed == []  # same model, same data: read from disk


def test_bad_input(photos, tmp_path):
    x, y = _data(photos)
    model = _model(photos)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"Received: cache_dir="):
        kerastl.cache_features(model, (x, y), cache_dir=a_file, verbose=0)
    with pytest.raises(OSError, match=r"cannot be created.*Received: cache_dir="):
        kerastl.cache_features(model, (x, y), cache_dir=a_file / "below", verbose=0)
    with pytest.raises(ValueError, match=r"holds no images"):
        kerastl.cache_features(model, (x[:0], y[:0]), verbose=0)
    with pytest.raises(TypeError, match=r"Received: model_or_extractor='model'"):
        kerastl.cache_features("model", (x, y), verbose=0)
    with pytest.raises(TypeError, match=r"Received: data="):
        kerastl.cache_features(model, "images/", verbose=0)
    with pytest.raises(ValueError, match=r"Received: batch_size=0"):
        kerastl.cache_features(model, (x, y), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match=r"Received: cache='yes'"):
        kerastl.fine_tune(model, (x, y), epochs=1, cache="yes", verbose=0)


def test_a_head_phase_on_the_cache_resumes_without_it(photos, tmp_path):
    """Interrupted on the cache, resumed where the cache is off (callbacks given)."""
    x, y = _data(photos)
    args = dict(epochs=0, head_epochs=2, batch_size=6, checkpoint_dir=tmp_path, verbose=0)
    model = _model(photos)
    kerastl.fine_tune(model, (x, y), cache=True, **args)
    checkpoints = Checkpoints(str(tmp_path))
    state, _ = checkpoints.latest()
    assert state["on_cache"]
    # As if killed after the first epoch. The head phase's optimizer holds the head's
    # variables alone, on the cache or not: its state carries over.
    state["epochs_done"] = 1
    state["history"] = {k: v[:1] for k, v in state["history"].items()}
    model.optimizer.build(model.trainable_variables)
    checkpoints.write(model, state, optimizer_of=model)
    history = kerastl.fine_tune(
        _model(photos), (x, y), callbacks=[keras.callbacks.History()], **args
    )
    assert len(history.epoch) == 2
