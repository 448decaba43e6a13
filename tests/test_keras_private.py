"""Every private Keras API kerastl relies on (kerastl/_keras_private.py), checked one by one.

A Keras upgrade that renames or changes one of them fails here, by name, rather
than deep inside a training run.
"""

import os

import keras
import numpy as np
import pytest

from kerastl import _keras_private as private

# Run on the oldest Keras claimed too (nox -s keras_floor).
pytestmark = pytest.mark.keras_floor


def _nested_model():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="inner_dense")(inner_in), name="inner")
    x = keras.Input((4,))
    return keras.Model(x, keras.layers.Dense(2, name="outer_dense")(inner(x)), name="outer")


def test_flatten_layers_walks_every_depth():
    model = _nested_model()
    deep = [layer.name for layer in private.flatten_layers(model)]
    assert {"inner", "inner_dense", "outer_dense"} <= set(deep)
    assert "outer" not in deep
    assert private.flatten_layers(model, include_self=True)[0] is model
    top = [layer.name for layer in private.flatten_layers(model, recursive=False)]
    assert "inner_dense" not in top and "inner" in top


def test_replace_sublayer_swaps_a_built_layers_sublayer_without_counting_it_twice():
    class Holder(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.inner = keras.layers.Dense(3)

        def call(self, x):
            return self.inner(x)

    holder = Holder()
    holder(np.ones((1, 4), "float32"))
    assert len(holder.weights) == 2
    new = keras.layers.Dense(5)
    new.build((None, 4))
    private.replace_sublayer(holder, "inner", new)
    assert holder.inner is new and len(holder.weights) == 2
    assert tuple(holder(np.ones((1, 4), "float32")).shape) == (1, 5)
    assert holder._tracker.locked  # locked again, as Keras left it


def test_set_build_input_shape_lets_sequential_add_its_input():
    layer = keras.layers.Dense(2)
    private.set_build_input_shape(layer, (5,))
    model = keras.Sequential([layer])
    assert model.built and model.input_shape == (None, 5)


def test_output_values_counts_every_call_of_a_layer_per_example():
    dense = keras.layers.Dense(3)
    x = keras.Input((4,))
    keras.Model(x, keras.layers.Add()([dense(x), dense(x)]))
    assert private.output_values(dense) == 6  # two calls of 3 values
    conv = keras.layers.Conv2D(2, 3)
    conv(keras.Input((5, 5, 1)))
    assert private.output_values(conv) == 3 * 3 * 2
    assert private.output_values(keras.layers.Dense(2)) == 0  # never called symbolically
    flexible = keras.layers.Conv2D(2, 3)
    flexible(keras.Input((None, None, 1)))
    assert private.output_values(flexible) is None


def test_producer_names_the_call_that_made_a_tensor():
    images = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(3, 1, name="conv")
    first, second = conv(images), conv(conv(images))  # one layer, three calls (nodes)
    layer, inputs = private.producer(second)
    assert layer is conv and len(inputs) == 1 and private.producer(inputs[0])[0] is conv
    assert private.producer(first)[1][0] is images
    source, none = private.producer(images)
    assert isinstance(source, keras.layers.InputLayer) and none == []
    assert private.producer(np.zeros(3)) == (None, [])


def test_print_msg_prints_a_line(capsys):
    private.print_msg("cut at 'add_4'")
    assert capsys.readouterr().out == "cut at 'add_4'\n"


def test_keras_home_is_the_directory_keras_resolved():
    home = private.keras_home()
    assert isinstance(home, str) and home
    assert private._keras_home is not None, "keras.src.backend.config.keras_home moved"
    if os.environ.get("KERAS_HOME"):
        assert os.path.abspath(home) == os.path.abspath(os.environ["KERAS_HOME"])
    else:  # ~/.keras, or /tmp/.keras where the home directory is not writable
        assert os.path.basename(home) == ".keras"


def test_compile_arguments_are_what_compile_was_given():
    model = _nested_model()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"], steps_per_execution=2)
    args = private.compile_arguments(model)
    assert args["optimizer"] is optimizer
    assert args["loss"] == "mse" and args["metrics"] == ["mae"]
    assert args["steps_per_execution"] == 2
    model.compile(**args)  # the keys are compile's own arguments


def test_variable_key_is_unique_and_stable():
    model = _nested_model()
    optimizer = keras.optimizers.Adam()
    keys = [private.variable_key(optimizer, v) for v in model.weights]
    assert len(set(keys)) == len(keys)
    assert keys == [private.variable_key(optimizer, v) for v in model.weights]


@pytest.mark.parametrize("in_fit", [False, True], ids=["apply", "fit"])
def test_scale_update_step_scales_every_update(in_fit):
    def run(scale):
        keras.utils.set_random_seed(0)
        layer = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
        model = keras.Sequential([keras.Input((2,)), layer])
        optimizer = keras.optimizers.SGD(0.1)
        if scale is not None:
            private.scale_update_step(
                optimizer,
                lambda step, grads, variables, lr: step(grads, variables, lr * scale),
                lambda variables: None,
            )
        x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
        if in_fit:
            model.compile(optimizer=optimizer, loss="mse")
            model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        else:
            optimizer.build(model.trainable_variables)
            optimizer.apply([keras.ops.ones((2, 1))], model.trainable_variables)
        return 1.0 - keras.ops.convert_to_numpy(layer.kernel)

    plain, tripled = run(None), run(3.0)
    assert np.all(plain > 0)
    np.testing.assert_allclose(tripled, 3.0 * plain, rtol=1e-5)


def test_weight_decay_hooks():
    model = _nested_model()
    optimizer = keras.optimizers.AdamW(weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.build(model.trainable_variables)
    decays = {v.path: private.uses_weight_decay(optimizer, v) for v in model.trainable_variables}
    assert any(decays.values()) and not all(decays.values())
    assert all(not d for p, d in decays.items() if p.endswith("bias"))
    called = []
    private.scale_update_step(optimizer, lambda *a: a[0](*a[1:]), called.append)
    grads = [keras.ops.zeros(v.shape) for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    assert called, "Optimizer._apply_weight_decay is no longer where weight decay happens"


def test_optimizer_variable_lists():
    model = _nested_model()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    own = private.own_optimizer_variables(optimizer)
    assert any(v is optimizer.iterations for v in own)
    built = private.built_trainable_variables(optimizer)
    assert [v.path for v in built] == [v.path for v in model.trainable_variables]


def test_compile_objects_survive_a_recompile_without_joining_the_metric_list():
    model = _nested_model()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    assert private.built_compile_objects(model) is None  # nothing built before fit
    x, y = np.ones((4, 4), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    built = private.built_compile_objects(model)
    assert built is not None and built[2] is model._loss_tracker
    model.compile(**private.compile_arguments(model))
    private.restore_compile_objects(model, built)
    assert model._compile_loss is built[0] and model._compile_metrics is built[1]
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    assert [m.name for m in model.metrics] == ["loss", "compile_metrics"]
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    expected = float(np.mean(keras.ops.convert_to_numpy(model(x)) ** 2))
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_public_classes_names_torch_fused_optimizers_by_their_public_class():
    private_config = {
        "module": "keras.src.backend.torch.optimizers.torch_adam",
        "class_name": "Adam",
        "config": {"learning_rate": 0.1},
        "registered_name": "Adam",
    }
    public = private.public_classes({"optimizer": private_config, "loss": "mse"})
    assert public["optimizer"]["module"] == "keras.optimizers"
    assert public["optimizer"]["registered_name"] is None
    assert public["loss"] == "mse"
    optimizer = keras.optimizers.deserialize(public["optimizer"])
    assert type(optimizer).__name__ == "Adam"
    assert float(optimizer.learning_rate) == pytest.approx(0.1)
    # What this backend's Keras records for its own Adam loads back after the rewrite.
    recorded = keras.optimizers.serialize(keras.optimizers.Adam(0.2))
    rebuilt = keras.optimizers.deserialize(private.public_classes(recorded))
    assert float(rebuilt.learning_rate) == pytest.approx(0.2)


def test_rematerialized_gives_layers_a_scopes_mode_and_gives_theirs_back():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    outer_in = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(outer_in))
    model = keras.Model(outer_in, keras.layers.Dense(2, name="out")(pooled))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    y = np.arange(16) % 2
    before = [w.copy() for w in model.get_weights()]
    plain = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    after_plain = model.get_weights()
    model.set_weights(before)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with private.rematerialized(backbone, keras.RematScope(mode="full")) as layers:
        # BatchNorm and the nested model take `training`: left as they were.
        assert {layer.name for layer in layers} == {"conv", "relu"}
        assert backbone.get_layer("conv")._remat_mode.mode == "full"
        assert backbone.get_layer("bn")._remat_mode is None
        # A traced training step runs with them, to the same updates.
        remat = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    assert backbone.get_layer("conv")._remat_mode is None
    np.testing.assert_allclose(remat, plain, rtol=1e-6)
    for a, b in zip(model.get_weights(), after_plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
