"""kerastl under Keras' own distribution: `keras.distribution` on JAX, `tf.distribute` on TF.

Two CPU devices stand in for two accelerators (`--xla_force_host_platform_device_count=2`
on JAX, two logical CPU devices on TensorFlow). Both must be set before the backend
starts, so each backend's checks run in one fresh process: a single-device reference
and the distributed run of the same thing, whose weights must agree.
"""

import os

import keras
import pytest
from support import run_in_backend

BACKEND = keras.config.backend()
TORCH = (
    "Keras 3.15 has no distribution for the torch backend (keras.distribution is JAX only, "
    "tf.distribute TensorFlow only); docs/distributed.md says how torch users scale"
)

# What both backends' processes share: a tiny calibrated CNN, kerastl model, the checks.
_COMMON = """
import sys

import numpy as np
import keras
from support import calibrate_batchnorm, real_images, tf_mode

import kerastl

fine_tune_module = sys.modules["kerastl.training.fine_tune"]

photos = real_images(size=16, count=12, seed=0)
labels = np.arange(12) % 3


def make_model():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for i, filters in enumerate((8, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    backbone = calibrate_batchnorm(keras.Model(inputs, x, name="tiny"), tf_mode(photos))
    extractor = kerastl.FeatureExtractor(backbone, pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    keras.utils.set_random_seed(3)
    return kerastl.build_model(extractor, kerastl.heads.multiclass(3), prep)


def weights(model):
    return {w.path: np.array(keras.ops.convert_to_numpy(w)) for w in model.weights}


cache_calls = []
_features_of = fine_tune_module.features_of


def counting_features_of(*args, **kwargs):
    cache_calls.append(1)
    return _features_of(*args, **kwargs)


fine_tune_module.features_of = counting_features_of


def run_fine_tune(model):
    kerastl.fine_tune(
        model, (photos, labels), (photos, labels), epochs=1, head_epochs=1, lr=1e-2,
        batch_size=6, verbose=0,
    )
    return weights(model)


def run_per_layer_lr(model, compile_scope):
    with compile_scope:
        kerastl.set_freeze(model, "none")
        model.compile(
            kerastl.optimizers.PerLayerLR(
                keras.optimizers.SGD(0.5), multipliers={"conv_0": 0.0, "conv_1": 0.1}
            ),
            "sparse_categorical_crossentropy",
        )
    before = weights(model)
    model.fit(photos, labels, batch_size=6, epochs=1, shuffle=False, verbose=0)
    return before, weights(model)


def run_gradual(model, compile_scope):
    with compile_scope:
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    unfreeze = kerastl.callbacks.GradualUnfreezing(
        schedule={1: "none"}, lr_multiplier=0.1, verbose=0
    )
    model.fit(
        photos, labels, batch_size=6, epochs=2, shuffle=False, verbose=0, callbacks=[unfreeze]
    )
    return weights(model)


def run_cache(model):
    # 5 does not divide over 2 devices: the cache pads its batches itself.
    return {"features": kerastl.cache_features(model, photos, batch_size=5, verbose=0).features}


def largest_difference(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def largest_move(after, before, prefix):
    return max(
        float(np.max(np.abs(after[k] - before[k]))) for k in after if k.startswith(prefix)
    )


def refusal(model):
    try:
        kerastl.fine_tune(
            model, (photos[:11], labels[:11]), epochs=0, head_epochs=1, batch_size=5, verbose=0
        )
    except ValueError as e:
        return str(e)
    return None
"""

_JAX = (
    """
import contextlib

import jax
"""
    + _COMMON
    + """
result = {"devices": len(jax.devices())}
data_parallel = keras.distribution.DataParallel()
reference, distributed = {}, {}
for out, scope in ((reference, contextlib.nullcontext()), (distributed, data_parallel.scope())):
    with scope:
        calls = len(cache_calls)
        out["fine_tune"] = run_fine_tune(make_model())
        out["cached"] = len(cache_calls) > calls
        model = make_model()
        out["replicas"] = len(model.get_layer("head").weights[0].value.sharding.device_set)
        out["per_layer_lr"] = run_per_layer_lr(model, contextlib.nullcontext())
        out["gradual"] = run_gradual(make_model(), contextlib.nullcontext())
        out["cache"] = run_cache(make_model())
        out["refusal"] = refusal(make_model())

# A backbone too large for one device: its conv kernels split over the "model" axis.
mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], jax.devices())
layout_map = keras.distribution.LayoutMap(mesh)
layout_map["conv_.*/kernel"] = (None, None, None, "model")
layout_map["conv_.*/bias"] = ("model",)
model_parallel = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
with model_parallel.scope():
    model = make_model()
    kernel = next(w for w in model.weights if w.path == "conv_1/kernel").value
    result["model_parallel_shard"] = list(kernel.addressable_shards[0].data.shape)
    sharded = run_fine_tune(model)

result.update(
    replicas=distributed["replicas"],
    reference_replicas=reference["replicas"],
    cached=[reference["cached"], distributed["cached"]],
    fine_tune=largest_difference(reference["fine_tune"], distributed["fine_tune"]),
    fine_tune_moved=largest_move(distributed["fine_tune"], weights(make_model()), "conv_0"),
    model_parallel=largest_difference(reference["fine_tune"], sharded),
    gradual=largest_difference(reference["gradual"], distributed["gradual"]),
    cache=largest_difference(reference["cache"], distributed["cache"]),
    refusal=distributed["refusal"],
    reference_refusal=reference["refusal"],
)
(before, single), (_, multi) = reference["per_layer_lr"], distributed["per_layer_lr"]
result.update(
    frozen_moved=largest_move(multi, before, "conv_0/"),
    tenth_moved=largest_move(multi, before, "conv_1/"),
    head_moved=largest_move(multi, before, "head/"),
    per_layer_lr=largest_difference(single, multi),
)
print(json.dumps(result))
"""
)

_TF = (
    """
import contextlib

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""
    + _COMMON
    + """
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = {"devices": strategy.num_replicas_in_sync}
reference, distributed = {}, {}
for out, scope in ((reference, contextlib.nullcontext), (distributed, strategy.scope)):
    # Keras' rule: models (and the optimizers given to compile) are made in the scope;
    # fine_tune, fit and the callbacks run outside it, where kerastl makes its own.
    with scope():
        models = [make_model() for _ in range(5)]
    out["mirrored"] = type(models[0].get_layer("head").weights[0].value).__name__
    calls = len(cache_calls)
    out["fine_tune"] = run_fine_tune(models[0])
    out["cached"] = len(cache_calls) > calls
    out["per_layer_lr"] = run_per_layer_lr(models[1], scope())
    out["gradual"] = run_gradual(models[2], scope())
    out["cache"] = run_cache(models[3])
    out["refusal"] = refusal(models[4])

(before, single), (_, multi) = reference["per_layer_lr"], distributed["per_layer_lr"]
result.update(
    replicas=2 if distributed["mirrored"] == "MirroredVariable" else 1,
    reference_replicas=1,
    cached=[reference["cached"], distributed["cached"]],
    fine_tune=largest_difference(reference["fine_tune"], distributed["fine_tune"]),
    fine_tune_moved=largest_move(distributed["fine_tune"], weights(make_model()), "conv_0"),
    gradual=largest_difference(reference["gradual"], distributed["gradual"]),
    cache=largest_difference(reference["cache"], distributed["cache"]),
    refusal=distributed["refusal"],
    reference_refusal=reference["refusal"],
    frozen_moved=largest_move(multi, before, "conv_0/"),
    tenth_moved=largest_move(multi, before, "conv_1/"),
    head_moved=largest_move(multi, before, "head/"),
    per_layer_lr=largest_difference(single, multi),
)
print(json.dumps(result))
"""
)


def _check(result):
    assert result["devices"] == 2
    # The distributed runs ran on both devices; the references on one.
    assert result["replicas"] == 2 and result["reference_replicas"] == 1
    # fine_tune: head phase on the cache, then the backbone at PerLayerLR's block rates.
    assert result["cached"] == [True, True]
    assert result["fine_tune_moved"] > 1e-6
    assert result["fine_tune"] < 1e-6
    assert result["gradual"] < 1e-6
    assert result["cache"] < 1e-5
    # Per-layer rates still apply: multiplier 0 leaves conv_0 bit-identical, 0.1 gives
    # conv_1 the step it gets on one device (a plain SGD would move it 10x as far).
    assert result["frozen_moved"] == 0.0
    assert result["tenth_moved"] > 1e-5 and result["head_moved"] > 1e-3
    assert result["per_layer_lr"] < 1e-6
    assert "cannot split evenly over its 2 devices" in result["refusal"]
    assert "batch_size=5, train of 11 images" in result["refusal"]
    assert result["reference_refusal"] is None  # one device: any batch size


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX process runs in the JAX session")
@pytest.mark.skipif(BACKEND == "torch", reason=TORCH)
def test_jax_data_parallel_and_model_parallel_train_as_one_device(monkeypatch):
    flags = os.environ.get("XLA_FLAGS", "")
    monkeypatch.setenv("XLA_FLAGS", f"{flags} --xla_force_host_platform_device_count=2".strip())
    result = run_in_backend("jax", _JAX)
    _check(result)
    # ModelParallel: each device holds half of conv_1's 16 output channels.
    assert result["model_parallel_shard"] == [3, 3, 8, 8]
    assert result["model_parallel"] < 1e-6


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TF process runs in the TF session")
@pytest.mark.skipif(BACKEND == "torch", reason=TORCH)
def test_tf_mirrored_strategy_trains_as_one_device():
    result = run_in_backend("tensorflow", _TF)
    _check(result)
