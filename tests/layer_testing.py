"""Layer test helpers in the style of keras-hub's `TestCase`, on public Keras API only.

`keras.src.testing` is private and may change with any Keras release; these two
helpers give every public kerastl layer the same checks:

- `run_layer_test`: symbolic and eager calls, `compute_output_shape`, weight
  counts, config round trip through JSON, one `fit` step and a dtype policy.
- `run_model_saving_test`: `.keras` save and reload (Keras's own and kerastl's),
  outputs equal.
"""

import json

import keras
import numpy as np

import kerastl


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    run_training_check=True,
    run_eagerly=False,
    dtype_policies=("mixed_bfloat16",),
    dtype_init_kwargs=None,
    expected_output_dtype=None,
    check_sublayer_dtypes=True,
    min_output_std=None,
    atol=1e-6,
):
    """Runs the checks every layer must pass; returns the `from_config` clone.

    The clone was built by an eager call and holds the weights `init_kwargs`
    gave the original (the fit step trains the original, not the clone): it can
    go to `run_model_saving_test`.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments; the layer is built from them
            several times (symbolic, eager, dtype policy).
        input_data: a NumPy batch (its dtype is the `keras.Input` dtype).
        expected_output_shape: the eager output shape, batch axis included (a
            dict of shapes for a dict output). The symbolic shape is the same
            with the batch axis `None`.
        expected_num_trainable_weights, expected_num_non_trainable_weights:
            counts of the built layer's variables (`None`: not checked).
        run_training_check: run one `fit` step (see `_check_one_fit_step`).
        run_eagerly: compile the fit step with `run_eagerly=True`: one step of
            a large layer is faster eagerly than compiled (XLA on JAX).
        dtype_policies: policies to build the layer with (see
            `_check_dtype_policy`); `()` skips the check.
        dtype_init_kwargs: constructor arguments for the dtype check (default:
            `init_kwargs`); a test may leave out what dtypes do not depend on
            and is slow to load, such as a weights file.
        expected_output_dtype: the output dtype under those policies; defaults
            to the policy's compute dtype.
        check_sublayer_dtypes: whether every nested layer that holds variables
            must follow the layer's policy too.
        min_output_std: if given, the output must vary across the batch by at
            least this much (mean over features of the per-feature std): an
            equality check on constant outputs checks nothing.
        atol: tolerance of the config round trip's output comparison.
    """
    input_shape = tuple(input_data.shape)
    symbolic_shape = _with_batch(expected_output_shape, None)

    # 1. Symbolic call and compute_output_shape.
    layer = layer_cls(**init_kwargs)
    inputs = keras.Input(shape=input_shape[1:], dtype=_dtype(input_data))
    symbolic = layer(inputs)
    assert _shapes(symbolic) == symbolic_shape, "symbolic output shape"
    assert _as_tuples(layer.compute_output_shape((None, *input_shape[1:]))) == symbolic_shape
    assert _as_tuples(layer.compute_output_shape(input_shape)) == _as_tuples(
        expected_output_shape
    ), "compute_output_shape with a known batch size"

    # 2. Eager call. (The clone of step 4 checks that an eager call builds a fresh layer.)
    output = layer(input_data)
    assert _shapes(output) == _as_tuples(expected_output_shape), "eager output shape"
    output = _to_numpy(output)
    for value in keras.tree.flatten(output):
        assert np.all(np.isfinite(value)), "eager output is not finite"
        if min_output_std is not None:
            spread = value.reshape(len(value), -1).std(axis=0).mean()
            assert spread > min_output_std, (
                f"outputs barely vary across the batch (std {spread:.2e}): "
                "comparing them would check nothing"
            )

    # 3. Weight counts.
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights

    # 4. Config round trip through JSON; same weights, same outputs.
    clone = _check_config_round_trip(layer, layer_cls, input_data, output, atol)

    # 5. One fit step.
    if run_training_check:
        _check_one_fit_step(layer, inputs, symbolic, input_data, run_eagerly)

    # 6. Dtype policies.
    for policy in dtype_policies:
        _check_dtype_policy(
            layer_cls,
            init_kwargs if dtype_init_kwargs is None else dtype_init_kwargs,
            input_data,
            policy,
            expected_output_dtype,
            check_sublayer_dtypes,
        )
    return clone


def run_model_saving_test(model_or_layer, input_data, tmp_path, min_output_std=None, atol=1e-6):
    """Saves and reloads through `model.save` and `kerastl.save_model`; outputs equal.

    A layer is first wrapped in a functional model. Returns the loaded models.
    """
    model = model_or_layer
    if not isinstance(model, keras.Model):
        inputs = keras.Input(shape=input_data.shape[1:], dtype=_dtype(input_data))
        model = keras.Model(inputs, model_or_layer(inputs))
    expected = _to_numpy(model(input_data, training=False))
    if min_output_std is not None:
        for value in keras.tree.flatten(expected):
            assert value.reshape(len(value), -1).std(axis=0).mean() > min_output_std

    keras_path = str(tmp_path / "keras_save.keras")
    model.save(keras_path)
    by_keras = keras.saving.load_model(keras_path)

    kerastl_path = str(tmp_path / "kerastl_save.keras")
    kerastl.save_model(model, kerastl_path)
    by_kerastl = kerastl.load_model(kerastl_path)

    for loaded in (by_keras, by_kerastl):
        assert _layer_types(loaded) == _layer_types(model), "the loaded model holds other layers"
        actual = _to_numpy(loaded(input_data, training=False))
        _assert_all_close(actual, expected, atol, "reloaded model output")
    return by_keras, by_kerastl


# --- checks --------------------------------------------------------------------------


def _check_config_round_trip(layer, layer_cls, input_data, output, atol):
    config = layer.get_config()
    revived = json.loads(json.dumps(config))
    clone = layer_cls.from_config(revived)
    # JSON turns tuples into lists: compare the configs as JSON, as Keras's own tests do.
    assert _json(clone.get_config()) == _json(config), "config changed through from_config"
    clone(input_data)  # an eager call builds it, before it receives the weights
    assert clone.built
    assert [w.path for w in clone.trainable_weights] == [w.path for w in layer.trainable_weights]
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in layer.weights]
    clone.set_weights(layer.get_weights())
    _assert_all_close(_to_numpy(clone(input_data)), output, atol, "from_config clone output")
    return clone


def _check_one_fit_step(layer, inputs, symbolic, input_data, run_eagerly):
    """Fits one batch with SGD and mse; every trainable variable of `layer` must move.

    A small Dense layer goes on top when the output is not one float tensor or
    the layer has nothing to train, so the step always updates something.
    """
    outputs = symbolic
    flat = keras.tree.flatten(symbolic)
    if len(flat) > 1 or not layer.trainable_weights:
        flat = [keras.layers.Flatten()(t) if len(t.shape) > 2 else t for t in flat]
        x = flat[0] if len(flat) == 1 else keras.layers.Concatenate()(flat)
        outputs = keras.layers.Dense(2, name="fit_check_dense")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", run_eagerly=run_eagerly
    )
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(len(input_data), *outputs.shape[1:])).astype("float32")

    before = [_to_numpy(w) for w in model.trainable_weights]
    assert before, "nothing to train"
    history = model.fit(input_data, targets, batch_size=len(input_data), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    watched = {id(w) for w in layer.trainable_weights}
    for old, variable in zip(before, model.trainable_weights, strict=True):
        if id(variable) in watched or not layer.trainable_weights:
            assert not np.array_equal(old, _to_numpy(variable)), (
                f"{variable.path} did not change in one fit step"
            )


def _check_dtype_policy(
    layer_cls, init_kwargs, input_data, policy_name, expected_output_dtype, check_sublayers
):
    policy = keras.dtype_policies.get(policy_name)
    global_policy = keras.config.dtype_policy().name
    layer = layer_cls(**{**init_kwargs, "dtype": policy_name})
    assert keras.config.dtype_policy().name == global_policy, "the global policy changed"
    output = layer(input_data)
    assert layer.compute_dtype == policy.compute_dtype
    assert layer.variable_dtype == policy.variable_dtype
    expected = expected_output_dtype or policy.compute_dtype
    for value in keras.tree.flatten(output):
        assert keras.backend.standardize_dtype(value.dtype) == expected, (
            f"output dtype under {policy_name}"
        )
    # Under mixed policies the variables stay float32; BatchNorm statistics included.
    for variable in layer.weights:
        assert keras.backend.standardize_dtype(variable.dtype) == policy.variable_dtype, (
            f"{variable.path} under {policy_name}"
        )
    if check_sublayers:
        # Leaf layers only: a nested functional model's own policy computes nothing.
        for sublayer in layer._flatten_layers(include_self=False):  # tests may touch internals
            if sublayer.weights and not isinstance(sublayer, keras.Model):
                assert sublayer.compute_dtype == policy.compute_dtype, (
                    f"{sublayer.name} ignores the {policy_name} policy"
                )


# --- helpers -------------------------------------------------------------------------


def _dtype(array):
    return keras.backend.standardize_dtype(array.dtype)


def _as_tuples(shape):
    if isinstance(shape, dict):
        return {key: tuple(value) for key, value in shape.items()}
    return tuple(shape)


def _with_batch(shape, batch):
    if isinstance(shape, dict):
        return {key: (batch, *value[1:]) for key, value in shape.items()}
    return (batch, *shape[1:])


def _shapes(structure):
    return _as_tuples(keras.tree.map_structure(lambda t: tuple(t.shape), structure))


def _to_numpy(structure):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, structure)


def _json(config):
    return json.dumps(config, sort_keys=True)


def _layer_types(model):
    return [type(layer) for layer in model._flatten_layers(include_self=False)]


def _assert_all_close(actual, expected, atol, what):
    keras.tree.assert_same_structure(actual, expected)
    for a, e in zip(keras.tree.flatten(actual), keras.tree.flatten(expected), strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=what)
