"""Recompiling a model for a new trainable set, keeping its optimizer state."""

import collections

import keras

from kerastl import _keras_private


def recompile_model(model, optimizer=None):
    """Recompiles `model` for its current trainable variables; safe inside `fit`.

    The optimizer is rebuilt from its config (or `optimizer` is used) and its
    state (iteration count, learning rate, slots of variables that keep
    training) copied over. Loss and metrics stay the same, and a callback can
    call this at the start of an epoch: the loss and metric trackers that the
    running `fit` built stay in place.

    Args:
        model: a compiled `keras.Model`.
        optimizer: the new optimizer; defaults to a copy of the current one.

    Returns:
        `model`.
    """
    if not isinstance(model, keras.Model) or not getattr(model, "compiled", False):
        raise ValueError(f"`model` must be a compiled keras.Model. Received: model={model!r}")
    if optimizer is not None and not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"`optimizer` must be a Keras optimizer or None. Received: optimizer={optimizer!r}"
        )
    # Under tf.distribute the new optimizer's variables must be made in the model's
    # strategy scope, wherever this is called from.
    with _keras_private.distribution_scope(model):
        old = model.optimizer
        new = optimizer if optimizer is not None else clone_optimizer(old)
        if model.built:
            new.build(model.trainable_variables)
            _carry_state(old, new)
        built = _keras_private.built_compile_objects(model)
        model.compile(**{**_keras_private.compile_arguments(model), "optimizer": new})
        if model.built and not model.optimizer.built:
            # `compile` wrapped it (a LossScaleOptimizer under mixed_float16): inside a
            # running fit nothing else builds the wrapper before the next step (JAX).
            model.optimizer.build(model.trainable_variables)
        if built is not None:
            # A running fit built its trackers once, before the first epoch, and
            # will not build the fresh ones: put the built ones back.
            _keras_private.restore_compile_objects(model, built)
        # fit() looks the step function up on every batch: a fresh one traces the
        # new trainable set.
        model.make_train_function(force=True)
    return model


def clone_optimizer(optimizer):
    """A new, unbuilt optimizer of the same class and config."""
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(f"`optimizer` must be a Keras optimizer. Received: optimizer={optimizer!r}")
    return type(optimizer).from_config(optimizer.get_config())


def _carry_state(old, new):
    # Optimizer variables are named after the model variable they shadow
    # ("adam/dense_kernel_momentum"), so state moves by path.
    by_path = collections.defaultdict(collections.deque)
    for variable in old.variables:
        by_path[variable.path].append(variable)
    for variable in new.variables:
        candidates = by_path.get(variable.path)
        if candidates:
            source = candidates.popleft()
            if tuple(source.shape) == tuple(variable.shape):
                variable.assign(source)
