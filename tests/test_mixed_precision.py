"""Mixed precision: a low-precision backbone, a float32 head and loss; half-precision caches.

Every backend runs both mixed policies on CPU (convolutions included), so nothing
here is skipped.
"""

import os

import keras
import numpy as np
import pytest
from support import calibrate_batchnorm, tf_mode

import kerastl

POLICIES = ("mixed_float16", "mixed_bfloat16")


@pytest.fixture(params=POLICIES)
def policy(request):
    """The global dtype policy for the test; float32 again afterwards, whatever happens."""
    keras.config.set_dtype_policy(request.param)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy("float32")


def _backbone(photos, dtype=None):
    """A calibrated conv / BatchNorm / ReLU backbone: features of a useful size."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, filters in enumerate((8, 16)):
        x = keras.layers.Conv2D(
            filters, 3, strides=2, padding="same", name=f"conv_{i}", dtype=dtype
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}", dtype=dtype)(x)
        x = keras.layers.ReLU(name=f"relu_{i}", dtype=dtype)(x)
    backbone = keras.Model(inputs, x, name="tiny")
    return calibrate_batchnorm(backbone, tf_mode(photos[:, ::3, ::3]))


def _model(photos, dtype=None):
    extractor = kerastl.FeatureExtractor(_backbone(photos, dtype), pooling="avg", dtype=dtype)
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    keras.utils.set_random_seed(3)
    return kerastl.build_model(extractor, kerastl.heads.multiclass(3), preprocessing=prep)


def _data(photos):
    return photos[:, ::3, ::3][:12], np.arange(12) % 3


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def _float32_reference(photos):
    """A float32 model's weights, features and predictions, built under the float32 policy."""
    current = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = _model(photos)
        x, _ = _data(photos)
        features = keras.ops.convert_to_numpy(model.get_layer("feature_extractor")(tf_mode(x)))
        return model.get_weights(), features, model.predict(x, verbose=0)
    finally:
        keras.config.set_dtype_policy(current)


def test_the_backbone_computes_in_low_precision_and_the_head_in_float32(photos, policy):
    x, y = _data(photos)
    model = _model(photos)
    extractor, head = model.get_layer("feature_extractor"), model.get_layer("head")
    assert _dtype(extractor(tf_mode(x))) == policy.compute_dtype
    assert head.dtype_policy.name == model.dtype_policy.name == policy.name
    assert {w.dtype for w in head.weights} == {"float32"}
    predictions = model(x)
    assert _dtype(predictions) == "float32"
    assert _dtype(model.loss(y, predictions)) == "float32"
    # Keras scales the loss where float16 needs it, and only there.
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy.name == "mixed_float16")
    history = model.fit(x, y, batch_size=6, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_mixed_predictions_agree_with_float32(photos, policy):
    x, _ = _data(photos)
    weights, features, expected = _float32_reference(photos)
    assert features.std() > 0.1  # features that carry the images, not ~1e-11 everywhere
    model = _model(photos)
    model.set_weights(weights)
    mixed = model.get_layer("feature_extractor")(tf_mode(x))
    tolerance = 2**-8 if policy.compute_dtype == "float16" else 2**-5
    scale = np.abs(features).max()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(mixed, "float32")),
        features,
        atol=tolerance * scale,
    )
    predictions = model.predict(x, verbose=0)
    assert predictions.dtype == np.float32
    assert np.ptp(expected, axis=0).max() > 0.1  # predictions that differ between images
    np.testing.assert_allclose(predictions, expected, atol=tolerance)


def test_an_extractor_built_with_a_dtype_sets_the_head_and_the_loss_scaling(photos):
    model = _model(photos, dtype="mixed_float16")  # the global policy stays float32
    head = model.get_layer("head")
    assert keras.config.dtype_policy().name == "float32"
    assert head.dtype_policy.name == model.dtype_policy.name == "mixed_float16"
    assert {w.dtype for w in head.weights} == {"float32"}
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = _data(photos)
    assert _dtype(model.get_layer("feature_extractor")(tf_mode(x))) == "float16"
    assert _dtype(model(x)) == "float32"
    history = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_fine_tune_in_mixed_precision_scales_the_loss_and_the_head_learns(photos, policy):
    x, y = _data(photos)
    model = _model(photos)
    before = [keras.ops.convert_to_numpy(w) for w in model.get_layer("head").weights]
    history = kerastl.fine_tune(
        model, (x, y), epochs=1, head_epochs=2, lr=3e-2, batch_size=6, verbose=0
    )
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[1] < losses[0]
    after = [keras.ops.convert_to_numpy(w) for w in model.get_layer("head").weights]
    assert not np.allclose(before[0], after[0])
    # Phase 2 recompiled with fine_tune's per-layer rates, loss-scaled under float16.
    optimizer = model.optimizer
    if policy.name == "mixed_float16":
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        optimizer = optimizer.inner_optimizer
    assert isinstance(optimizer, kerastl.optimizers.PerLayerLR)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cached_half_features_equal_float32_ones_in_half_the_memory(photos, dtype, tmp_path):
    x, y = _data(photos)
    model = _model(photos)
    full = kerastl.cache_features(model, (x, y), batch_size=6, verbose=0).features
    half = kerastl.cache_features(model, (x, y), batch_size=6, dtype=dtype, verbose=0).features
    assert half.dtype.name == dtype and half.nbytes * 2 == full.nbytes
    relative = 2**-11 if dtype == "float16" else 2**-8  # rounding to nearest
    np.testing.assert_allclose(half.astype("float32"), full, rtol=relative, atol=1e-6)

    on_disk = kerastl.cache_features(
        model, (x, y), batch_size=6, dtype=dtype, cache_dir=tmp_path, verbose=0
    )
    float32 = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert on_disk.key != float32.key  # the dtype is part of the key
    assert np.load(on_disk.path, mmap_mode="r").dtype.itemsize == 2  # bfloat16: its bits
    assert os.path.getsize(on_disk.path) < os.path.getsize(float32.path)
    again = kerastl.cache_features(
        model, (x, y), batch_size=6, dtype=dtype, cache_dir=tmp_path, verbose=0
    )
    assert again.reused and again.features.dtype.name == dtype
    np.testing.assert_array_equal(again.features.astype("float32"), half.astype("float32"))


def test_a_head_trained_on_float16_features_matches_one_trained_on_float32(photos):
    x, y = _data(photos)
    heads = {}
    for dtype in ("float32", "float16"):
        model = _model(photos)
        data = kerastl.data.from_arrays(x, y, batch_size=6, shuffle=False)
        kerastl.fine_tune(
            model, data, epochs=0, head_epochs=2, lr=1e-2, cache=True, cache_dtype=dtype, verbose=0
        )
        heads[dtype] = [keras.ops.convert_to_numpy(w) for w in model.get_layer("head").weights]
        assert {w.dtype for w in model.get_layer("head").weights} == {"float32"}
    assert not np.allclose(heads["float32"][0], heads["float16"][0], atol=0)  # other inputs
    for a, b in zip(heads["float16"], heads["float32"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_cache_dtype_that_is_not_a_float_type_is_refused(photos):
    x, y = _data(photos)
    model = _model(photos)
    for bad in ("int8", "float64", "half-ish", True, None):
        with pytest.raises(ValueError, match=rf"`dtype`.*Received: dtype={bad!r}"):
            kerastl.cache_features(model, (x, y), dtype=bad, verbose=0)
    with pytest.raises(ValueError, match=r"Received: cache_dtype='float64'"):
        kerastl.fine_tune(model, (x, y), epochs=0, head_epochs=1, cache_dtype="float64")
    with pytest.raises(ValueError, match=r"Received: cache_dtype='float16', cache=False"):
        kerastl.fine_tune(
            model, (x, y), epochs=0, head_epochs=1, cache=False, cache_dtype="float16"
        )
    # Features beyond float16's range are refused, not stored as infinity.
    inputs = keras.Input((4, 4, 3))
    huge = keras.Model(inputs, keras.layers.Rescaling(1e5)(inputs), name="huge")
    extractor = kerastl.FeatureExtractor(huge, arch=None)
    with pytest.raises(ValueError, match=r"beyond float16's range.*Received: dtype='float16'"):
        kerastl.cache_features(extractor, np.ones((2, 4, 4, 3), "float32"), dtype="float16")
    cache = kerastl.cache_features(
        extractor, np.ones((2, 4, 4, 3), "float32"), dtype="bfloat16", verbose=0
    )
    assert np.isfinite(cache.features.astype("float32")).all()


def test_gradual_unfreezing_with_a_rate_multiplier_keeps_one_loss_scaler(photos):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        x, y = _data(photos)
        model = _model(photos)
        callback = kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=0.1, verbose=0)
        history = model.fit(x, y, epochs=2, batch_size=6, verbose=0, callbacks=[callback])
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.isfinite(history.history["loss"]).all()
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    inner = optimizer.inner_optimizer
    assert isinstance(inner, kerastl.optimizers.PerLayerLR)
    assert not isinstance(inner.inner_optimizer, keras.optimizers.LossScaleOptimizer)
