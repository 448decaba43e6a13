"""Every use of Keras's private API, in one place to audit.

Keras 3 offers no public way to do these few things. Each function names the
private attribute it relies on; `tests/test_keras_private.py` checks every one
against the installed Keras, so an upgrade that changes one fails there, loudly,
instead of deep inside a training run.
"""

import contextlib
import inspect
import math
import os
import sys

import keras
from keras.src.backend.common.remat import get_current_remat_mode
from keras.src.utils import io_utils
from keras.src.utils.tracking import DotNotTrackScope

try:
    from keras.src.backend.config import keras_home as _keras_home
except ImportError:  # moved: fall back to the documented default
    _keras_home = None


def flatten_layers(layer, include_self=False, recursive=True):
    """The sublayers of `layer` (`Layer._flatten_layers`): every depth by default.

    `Model.layers` is public but lists only the top level of a functional
    model, and plain layers (a `TaskHead`, a `FeatureExtractor`) have no public
    list of the layers they hold.
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


_MERGE_LAYERS = (
    keras.layers.Add,
    keras.layers.Average,
    keras.layers.Concatenate,
    keras.layers.Dot,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Multiply,
    keras.layers.Subtract,
)


@contextlib.contextmanager
def rematerialized(layer, scope):
    """Inside: the layers in `layer` called as if made inside `scope`; the layers rematerialised.

    `scope` is a `keras.RematScope`. Keras records the scope's mode on each layer
    when the layer is made (`Operation._remat_mode`) and reads it at call time; a
    layer made before (a loaded backbone) has none and no public way to get one.
    Layers whose `call` takes `training` or `mask` (BatchNormalization, Dropout,
    nested models) keep theirs: Keras' remat passes those as keyword arguments,
    which `tf.recompute_grad` refuses in a traced step and `jax.checkpoint` cannot
    trace (Keras 3.15, measured), and a recomputed BatchNorm in training mode would
    update its statistics twice (torch). So do merge layers (`Add`, `Concatenate`,
    ...): "larger_than" sizes a layer's output by tracing its call, which fails on a
    list of inputs in a TensorFlow step; they keep no activations of their own
    worth recomputing. The layers' own modes come back on exit.

    Returns (as the context's value) the layers given the mode.
    """
    with scope:
        mode = get_current_remat_mode()
    layers = [
        each
        for each in flatten_layers(layer, include_self=True, recursive=True)
        if not isinstance(each, (keras.layers.InputLayer, *_MERGE_LAYERS))
        and not {"training", "mask"} & set(inspect.signature(each.call).parameters)
    ]
    saved = [(each, each._remat_mode) for each in layers]
    for each in layers:
        each._remat_mode = mode
    try:
        yield layers
    finally:
        for each, own in saved:
            each._remat_mode = own


def replace_sublayer(layer, attr, new):
    """Sets `layer.<attr>` to `new`, the layer it held untracked (`Layer._tracker`).

    Keras locks a built layer's tracked state, so a built layer refuses a new
    sublayer; and a plain assignment would keep the old one in its lists (its
    weights counted twice). Used to swap a built extractor's backbone.
    """
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        tracker.untrack(getattr(layer, attr))
        setattr(layer, attr, new)
    finally:
        if locked:
            tracker.lock()


def set_build_input_shape(layer, shape):
    """Lets `keras.Sequential` add an `Input` before `layer` (`Layer._input_shape_arg`).

    A built-in layer gets this from its `input_shape=` keyword; a layer that
    knows its input shape from its own arguments (a `FeatureExtractor`) sets it.
    """
    layer._input_shape_arg = tuple(shape)


def producer(tensor):
    """`(layer, input tensors)` that made a symbolic tensor (`KerasTensor._keras_history`).

    `(None, [])` for a tensor no layer made. A model input comes from its
    `InputLayer`, with no input tensors. `Layer.input` would do for a layer
    called once, but it raises for a layer with several calls (nodes); the
    history names the very call that made this tensor.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, []
    operation, node_index = history[0], history[1]
    return operation, list(operation._inbound_nodes[node_index].input_tensors)


def output_values(layer):
    """Values a layer's calls output per example (`Layer._inbound_nodes`), or `None`.

    The sum over every call the layer makes in a functional graph (a layer called
    twice counts twice) of its outputs' sizes without the batch axis; `None` where
    a size is unknown (a `None` axis). A layer that was never called symbolically
    (a subclassed model's inner layers) has no calls: 0.
    """
    total = 0
    for node in getattr(layer, "_inbound_nodes", ()):
        for tensor in node.output_tensors:
            shape = tuple(tensor.shape)[1:]
            if any(size is None for size in shape):
                return None
            total += math.prod(int(size) for size in shape)
    return total


def print_msg(message):
    """Prints one informational line as Keras does (`keras.src.utils.io_utils.print_msg`).

    To stdout, or to the absl log once `keras.config.disable_interactive_logging()`
    was called: what silences Keras's progress bars silences kerastl's notes too.
    """
    io_utils.print_msg(message)


def keras_home():
    """The directory Keras resolved for its cache (`keras.src.backend.config.keras_home`)."""
    if _keras_home is None:
        return os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))
    return _keras_home()


def compile_arguments(model):
    """The arguments `model.compile` was last called with (`Model._compile_config`)."""
    return dict(model._compile_config.config)


def variable_key(optimizer, variable):
    """The key an optimizer files a variable's state under (`Optimizer._var_key`)."""
    return optimizer._var_key(variable)


def scale_update_step(optimizer, scaled_step, scaled_weight_decay):
    """Replaces the two places an optimizer uses its learning rate.

    Every backend's update path (TF distribution, fused torch optimizers, JAX's
    stateless apply) ends in `Optimizer._backend_update_step(grads, variables,
    learning_rate)`; decoupled weight decay goes through
    `Optimizer._apply_weight_decay(variables)`. `scaled_step(original, grads,
    variables, learning_rate)` and `scaled_weight_decay(variables)` take their places.
    """
    original = optimizer._backend_update_step

    def update_step(grads, variables, learning_rate):
        return scaled_step(original, grads, variables, learning_rate)

    optimizer._backend_update_step = update_step
    optimizer._apply_weight_decay = scaled_weight_decay


def uses_weight_decay(optimizer, variable):
    """Whether decoupled weight decay applies to `variable` (`Optimizer._use_weight_decay`)."""
    return optimizer._use_weight_decay(variable)


def own_optimizer_variables(optimizer):
    """The variables an optimizer created itself, not its slots (`Optimizer._variables`)."""
    return list(optimizer._variables)


def built_trainable_variables(optimizer):
    """The variables a built optimizer was built for (`Optimizer._trainable_variables`)."""
    return list(optimizer._trainable_variables)


def built_compile_objects(model):
    """The loss, metrics and loss tracker `fit` built, or None when not all are built.

    (`Trainer._compile_loss`, `_compile_metrics`, `_loss_tracker`.)
    """
    loss, metrics, tracker = model._compile_loss, model._compile_metrics, model._loss_tracker
    if loss is None or not loss.built or (metrics is not None and not metrics.built):
        return None
    return loss, metrics, tracker


def restore_compile_objects(model, objects):
    """Puts back what `built_compile_objects` returned, as `compile` would set them.

    `Trainer.compile` assigns these with attribute tracking off
    (`keras.src.utils.tracking.DotNotTrackScope`). Assigned with tracking on,
    they would also join the model's own metric list, and after any later
    `compile` these stale copies, reset and never updated, would overwrite the
    live loss and metrics in every log: `fit` and `evaluate` reporting 0.0.
    """
    with DotNotTrackScope():
        model._compile_loss, model._compile_metrics, model._loss_tracker = objects


def public_classes(obj):
    """A serialised config with torch's private optimizer classes named by their public ones.

    On torch Keras swaps in fused optimizer classes from
    `keras.src.backend.torch.optimizers` and records that module; TF and JAX
    cannot import it. The public `keras.optimizers` class of the same name
    loads everywhere.
    """
    if isinstance(obj, list):
        return [public_classes(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    obj = {k: public_classes(v) for k, v in obj.items()}
    module, name = obj.get("module"), obj.get("class_name")
    if (
        isinstance(module, str)
        and module.startswith("keras.src.backend.")
        and ".optimizers" in module
        and isinstance(getattr(keras.optimizers, str(name), None), type)
    ):
        obj["module"] = "keras.optimizers"
        obj["registered_name"] = None
    return obj


def distribution_scope(model):
    """The scope of the `tf.distribute` strategy `model` belongs to; a no-op elsewhere.

    Keras' TensorFlow trainer records the strategy active when a model is
    created (`Trainer.distribute_strategy`, TensorFlow only) and trains under
    it, and every optimizer or model made for that model later (a recompile,
    `fine_tune`'s phases, the feature cache's head model) must be made in the
    same scope. JAX distributions (`keras.distribution`) are not tied to a
    model: the one active when `fit` runs applies.
    """
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def batch_shards(model):
    """Over how many devices each batch of `model` is split (1 when it is not).

    TensorFlow: the replicas of the model's strategy. JAX: the size of the
    batch axis of the active `keras.distribution` mesh (`Distribution.batch_dim_name`;
    one host). Keras needs every batch to split evenly on JAX, and the first
    batch of each `fit` / `evaluate` on TensorFlow (it is reduced across
    replicas to build the model).
    """
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None:
        return int(strategy.num_replicas_in_sync)
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    axis = getattr(distribution, "batch_dim_name", None)
    if axis not in mesh.axis_names:
        return 1
    return int(mesh.shape[list(mesh.axis_names).index(axis)])


def shard_batch(batch):
    """`batch` split over the devices of the active JAX distribution, by its data layout.

    `fit`, `evaluate` and `predict` shard their batches themselves; JAX's
    `predict_on_batch` does not (it would run the whole batch replicated).
    Its first dimension must be a multiple of `batch_shards`. Unchanged
    without a distribution (and on TensorFlow and torch).
    """
    distribution = keras.distribution.distribution()
    if distribution is None or keras.config.backend() != "jax":
        return batch
    layout = distribution.get_data_layout(tuple(batch.shape))
    jax = sys.modules["jax"]
    if jax.process_count() > 1:
        # Each process holds its own rows (`auto_shard_dataset=False`), as `fit` takes
        # them: the global batch is made of every process's, as Keras' JAX trainer
        # makes it (`TensorLayout.backend_layout`: the layout's JAX sharding).
        return jax.make_array_from_process_local_data(layout.backend_layout, batch)
    return keras.distribution.distribute_tensor(batch, layout)
