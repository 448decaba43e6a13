import bad_input as bad
import keras
import numpy as np
import pytest
from support import mobilenet_extractor

import kerastl
from kerastl.optimizers import PerLayerLR


def _parallel_model():
    """y = a(x) + b(x) + c(x): three zero-initialised Dense layers with identical gradients.

    Whatever the optimizer, `b` and `c` see the same gradients as `a`, so
    their updates differ only by their learning-rate multipliers.
    """
    inputs = keras.Input((4,))
    branches = [
        keras.layers.Dense(2, kernel_initializer="zeros", name=name)(inputs)
        for name in ("a", "b", "c")
    ]
    outputs = keras.layers.Add(name="add")(branches)
    return keras.Model(inputs, outputs, name="parallel")


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 2))).astype("float32")
    return x, y


def _kernels(model):
    return {name: keras.ops.convert_to_numpy(model.get_layer(name).kernel) for name in "abc"}


@pytest.mark.keras_floor
@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
        lambda: keras.optimizers.RMSprop(0.01),
    ],
    ids=["sgd", "sgd_momentum", "adam", "rmsprop"],
)
def test_update_is_multiplier_times_plain_update_in_fit(optimizer):
    """Through compile/fit: JAX's stateless path, torch's fused optimizers, TF's tf.function."""
    model = _parallel_model()
    model.compile(optimizer=PerLayerLR(optimizer(), multipliers={"b": 0.25, "c": 0.0}), loss="mse")
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    k = _kernels(model)
    assert np.abs(k["a"]).min() > 1e-4  # the plain update happened
    np.testing.assert_allclose(k["b"], 0.25 * k["a"], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(k["c"], 0.0)  # multiplier 0: no update
    # Biases start at zero too and follow the same rule.
    a_bias = keras.ops.convert_to_numpy(model.get_layer("a").bias)
    b_bias = keras.ops.convert_to_numpy(model.get_layer("b").bias)
    np.testing.assert_allclose(b_bias, 0.25 * a_bias, rtol=1e-6, atol=1e-9)


def test_sgd_update_equals_multiplier_times_plain_update_direct_apply():
    layer = keras.layers.Dense(3, kernel_initializer="zeros", name="dense")
    layer.build((None, 5))
    other = keras.layers.Dense(3, kernel_initializer="zeros", name="other")
    other.build((None, 5))
    grads = [np.random.default_rng(1).normal(size=(5, 3)).astype("float32"), np.ones(3, "float32")]
    tensors = [keras.ops.convert_to_tensor(g) for g in grads]
    optimizer = PerLayerLR(keras.optimizers.SGD(0.5), multipliers={"other": 0.3})
    optimizer.apply(tensors + tensors, layer.trainable_variables + other.trainable_variables)
    plain = keras.ops.convert_to_numpy(layer.kernel)
    np.testing.assert_allclose(plain, -0.5 * grads[0], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(other.kernel), 0.3 * plain, rtol=1e-6)


def test_adam_effective_step_scales_and_frozen_variables_get_no_slots():
    keras.utils.set_random_seed(0)
    model = _parallel_model()
    model.get_layer("a").bias.assign(np.ones(2, "float32"))
    frozen = keras.layers.Dense(2, name="frozen")
    inputs = keras.Input((4,))
    outputs = keras.layers.Add()([model(inputs), frozen(inputs)])
    full = keras.Model(inputs, outputs)
    frozen.trainable = False
    optimizer = PerLayerLR(keras.optimizers.Adam(0.01), multipliers={"b": 2.0, "c": 0})
    full.compile(optimizer=optimizer, loss="mse")
    x, y = _data()
    full.fit(x, y, batch_size=32, epochs=1, verbose=0)
    k = _kernels(model)
    # One Adam step moves a weight by ~lr whatever its gradient's size; b's step is 2x.
    np.testing.assert_allclose(np.median(np.abs(k["a"])), 0.01, rtol=1e-2)
    np.testing.assert_allclose(k["b"], 2.0 * k["a"], rtol=1e-6, atol=1e-9)
    slots = [
        v.path
        for v in optimizer.inner_optimizer.variables
        if "momentum" in v.path or "velocity" in v.path
    ]
    # Two slots each for a/kernel, a/bias, b/kernel, b/bias; none for c or frozen.
    assert len(slots) == 8
    assert not any(name in path for path in slots for name in ("c_", "frozen"))


@pytest.mark.keras_floor
def test_adamw_weight_decay_skips_multiplier_zero():
    model = _parallel_model()
    for name in "abc":
        model.get_layer(name).kernel.assign(np.ones((4, 2), "float32"))
    model.compile(
        optimizer=PerLayerLR(
            keras.optimizers.AdamW(0.01, weight_decay=0.5), multipliers={"c": 0.0}
        ),
        loss="mse",
    )
    model.fit(*_data(), batch_size=32, epochs=1, verbose=0)
    k = _kernels(model)
    np.testing.assert_array_equal(k["c"], 1.0)
    assert not np.allclose(k["a"], 1.0)


def test_layer_decay_follows_block_depth(mobilenet_weights):
    extractor = mobilenet_extractor(mobilenet_weights, freeze="none")
    optimizer = PerLayerLR(
        "sgd", layer_decay=0.75, blocks=extractor, multipliers={"block_16_project": 0.5}
    )
    n = len(extractor.blocks)
    assert n == 18  # stem, expanded_conv, block_1 ... block_16
    assert optimizer.multiplier_for_path("Conv1/kernel") == pytest.approx(0.75**n)
    assert optimizer.multiplier_for_path("block_1_expand/kernel") == pytest.approx(0.75 ** (n - 2))
    assert optimizer.multiplier_for_path("block_16_expand/kernel") == pytest.approx(0.75)
    assert optimizer.multiplier_for_path("Conv_1/kernel") == pytest.approx(0.75)
    assert optimizer.multiplier_for_path("block_16_project/kernel") == 0.5  # mapping wins
    assert optimizer.multiplier_for_path("head/kernel") == 1.0
    variables = {v.path: optimizer.multiplier(v) for v in extractor.trainable_variables}
    assert variables["Conv1/kernel"] == pytest.approx(0.75**n)


@pytest.mark.keras_floor
def test_compiled_model_with_per_layer_lr_saves_and_loads(tmp_path):
    model = _parallel_model()
    model.compile(
        optimizer=PerLayerLR(keras.optimizers.Adam(0.01), multipliers={"b": 0.5, "c": 0.0}),
        loss="mse",
    )
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, PerLayerLR)
    assert loaded.optimizer.multipliers == {"b": 0.5, "c": 0.0}
    assert [v.path for v in loaded.optimizer.variables] == [
        v.path for v in model.optimizer.variables
    ]
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(restored), keras.ops.convert_to_numpy(saved), rtol=1e-6
        )
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0)  # training resumes
    k = _kernels(loaded)
    np.testing.assert_array_equal(k["c"], 0.0)


# Loading on the other backends: tests/test_cross_backend.py (one matrix for every part).


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"multipliers": {"a": -1}}, r"Received: multipliers\['a'\]=-1"),
        ({"multipliers": {"(": 1}}, r"not a valid regex.*Received: multipliers key='\('"),
        ({"multipliers": [("a", 1)]}, r"Received: multipliers=\[\('a', 1\)\]"),
        ({"layer_decay": 0.0, "blocks": [("b", ["a"])]}, r"Received: layer_decay=0.0"),
        ({"layer_decay": 0.75}, r"needs `blocks`.*Received: blocks=None"),
        ({"blocks": [("b", ["a"])]}, r"only used with `layer_decay`"),
        ({"layer_decay": 0.5, "blocks": "block_1"}, r"Received: blocks='block_1'"),
        ({"optimizer": "nope"}, r"nope"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"optimizer": "sgd", **kwargs}
    with pytest.raises(ValueError, match=match):
        PerLayerLR(**args)


def test_multiplier_for_path_wants_a_path():
    optimizer = PerLayerLR("adam", multipliers={"b": 0.5})
    assert optimizer.multiplier_for_path("b/kernel") == 0.5
    with pytest.raises(TypeError, match=r"Received: path=3"):
        optimizer.multiplier_for_path(3)


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.optimizers.PerLayerLR ===
    bad.case(
        "lr-optimizer-int",
        lambda: kerastl.optimizers.PerLayerLR(3),
        ValueError,
        r"Received: optimizer=3",
    ),
    bad.case(
        "lr-optimizer-name",
        lambda: kerastl.optimizers.PerLayerLR("nope"),
        ValueError,
        r"Received: optimizer='nope'",
    ),
    bad.case(
        "lr-optimizer-nested",
        lambda: kerastl.optimizers.PerLayerLR(kerastl.optimizers.PerLayerLR("adam")),
        ValueError,
        r"Received: optimizer=<",
    ),
    bad.case(
        "lr-multipliers-list",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers=[0.1]),
        ValueError,
        r"Received: multipliers=\[0.1\]",
    ),
    bad.case(
        "lr-multipliers-negative",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": -1}),
        ValueError,
        r"Received: multipliers\['a'\]=-1",
    ),
    bad.case(
        "lr-multipliers-nan",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": bad.NAN}),
        ValueError,
        r"Received: multipliers\['a'\]=nan",
    ),
    bad.case(
        "lr-multipliers-inf",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": bad.INF}),
        ValueError,
        r"Received: multipliers\['a'\]=inf",
    ),
    bad.case(
        "lr-multipliers-bool",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": True}),
        ValueError,
        r"Received: multipliers\['a'\]=True",
    ),
    bad.case(
        "lr-multipliers-string",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"a": "0.1"}),
        ValueError,
        r"Received: multipliers\['a'\]='0.1'",
    ),
    bad.case(
        "lr-multipliers-key",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={3: 0.1}),
        ValueError,
        r"Received: multipliers key=3",
    ),
    bad.case(
        "lr-multipliers-regex",
        lambda: kerastl.optimizers.PerLayerLR("adam", multipliers={"[": 0.1}),
        ValueError,
        r"Received: multipliers key='\['",
    ),
    bad.case(
        "lr-decay-zero",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0, blocks=[("b", ["l"])]),
        ValueError,
        r"Received: layer_decay=0",
    ),
    bad.case(
        "lr-decay-above-1",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=1.5, blocks=[("b", ["l"])]),
        ValueError,
        r"Received: layer_decay=1.5",
    ),
    bad.case(
        "lr-decay-nan",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=bad.NAN, blocks=[("b", ["l"])]),
        ValueError,
        r"Received: layer_decay=nan",
    ),
    bad.case(
        "lr-decay-bool",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=True, blocks=[("b", ["l"])]),
        ValueError,
        r"Received: layer_decay=True",
    ),
    bad.case(
        "lr-decay-no-blocks",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0.5),
        ValueError,
        r"Received: blocks=None",
    ),
    bad.case(
        "lr-blocks-no-decay",
        lambda: kerastl.optimizers.PerLayerLR("adam", blocks=[("b", ["l"])]),
        ValueError,
        r"Received: blocks=\[\('b', \['l'\]\)\]",
    ),
    bad.case(
        "lr-blocks-string",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0.5, blocks="block_1"),
        ValueError,
        r"Received: blocks='block_1'",
    ),
    bad.case(
        "lr-blocks-empty",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0.5, blocks=[]),
        ValueError,
        r"Received: blocks=\[\]",
    ),
    bad.case(
        "lr-blocks-layers-string",
        lambda: kerastl.optimizers.PerLayerLR("adam", layer_decay=0.5, blocks=[("b", "layer")]),
        ValueError,
        r"Received: blocks=\[\('b', 'layer'\)\]",
    ),
    bad.case(
        "lr-blocks-plain-layer",
        lambda: kerastl.optimizers.PerLayerLR(
            "adam", layer_decay=0.5, blocks=keras.layers.Dense(2)
        ),
        ValueError,
        r"Received: blocks=<Dense",
    ),
    bad.case(
        "lr-name",
        lambda: kerastl.optimizers.PerLayerLR("adam", name=3),
        ValueError,
        r"Received: name=3",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
