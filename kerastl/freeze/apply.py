"""Changing what trains on a built, possibly compiled, model."""

import collections
import warnings

import keras

from kerastl.backbones.registry import split_blocks
from kerastl.freeze.policies import get_policy, set_trainable, validate_bn


class RecompileWarning(UserWarning):
    """The trainable set changed but the compiled model still trains the old one."""


def apply(model_or_layer, policy, bn=None, recompile=True):
    """Applies a freeze policy and BatchNorm mode, and recompiles a compiled model.

    Keras fixes the set of trained variables when a model is compiled, so a
    trainability change on a compiled model only takes effect after
    recompiling. `apply` recompiles with the same optimizer (its state carried
    over for the variables that keep training), loss and metrics.

    Args:
        model_or_layer: a `FeatureExtractor`, a model holding one (the policy
            then applies to its backbone; the head keeps training), or any
            other `keras.Model` (the policy applies to its own layers, one
            block per layer that holds weights).
        policy: a `kerastl.freeze` policy or `"all"` / `"none"`.
        bn: `"frozen"`, `"affine"` or `"train"` (see `FeatureExtractor`);
            `None` keeps the extractor's mode (`"frozen"` for a plain model).
            A plain model cannot fix BatchNorm statistics while training gamma
            and beta, so `"affine"` needs a `FeatureExtractor`.
        recompile: recompile a compiled model (default). With `False` a
            `RecompileWarning` says that `fit` still trains the old set.

    Returns:
        The sorted names of the layers that hold weights and now train.
    """
    trained = apply_policy(model_or_layer, policy, bn=bn)
    model = model_or_layer if isinstance(model_or_layer, keras.Model) else None
    if model is not None and getattr(model, "compiled", False) and model.optimizer is not None:
        if recompile:
            recompile_model(model)
        else:
            warnings.warn(
                f"The trainable layers of model {model.name!r} changed but the model was "
                "not recompiled: fit() keeps training the variables chosen at compile "
                "time. Call kerastl.freeze.apply(..., recompile=True) or model.compile().",
                RecompileWarning,
                stacklevel=2,
            )
    return sorted(trained)


def apply_policy(model_or_layer, policy, bn=None):
    """Sets trainability as `apply` does, without recompiling; returns what trains."""
    policy = get_policy(policy)
    if bn is not None:
        validate_bn(bn)
    extractor = find_extractor(model_or_layer)
    if extractor is not None:
        trained = extractor.set_freeze(policy, bn=bn)
    elif isinstance(model_or_layer, keras.Model):
        bn = bn or "frozen"
        if bn == "affine":
            raise ValueError(
                "bn='affine' (gamma and beta train, statistics fixed) needs a "
                "kerastl.FeatureExtractor, which calls its backbone in inference mode; "
                f"a plain model has no such switch. Received: bn={bn!r}"
            )
        trained = set_trainable(model_or_layer, policy, split_blocks(model_or_layer), bn=bn)
    else:
        raise ValueError(
            "`model_or_layer` must be a kerastl.FeatureExtractor or a keras.Model. "
            f"Received: model_or_layer={model_or_layer!r}"
        )
    return trained


def find_extractor(model_or_layer):
    """The `FeatureExtractor` that is, or is inside, `model_or_layer`; `None` if none."""
    from kerastl.layers.feature_extractor import FeatureExtractor

    if isinstance(model_or_layer, FeatureExtractor):
        return model_or_layer
    if not isinstance(model_or_layer, keras.layers.Layer):
        return None
    found = [
        layer
        for layer in model_or_layer._flatten_layers(include_self=False)
        if isinstance(layer, FeatureExtractor)
    ]
    if len(found) > 1:
        raise ValueError(
            f"Model {model_or_layer.name!r} holds {len(found)} FeatureExtractors "
            f"({[f.name for f in found]}); pass the one to change. "
            f"Received: model_or_layer={model_or_layer.name!r}"
        )
    return found[0] if found else None


def recompile_model(model, optimizer=None):
    """Recompiles `model` for its current trainable variables; safe inside `fit`.

    The optimizer is rebuilt from its config (or `optimizer` is used) and its
    state (iteration count, learning rate, slots of variables that keep
    training) copied over. Loss and metrics stay the same objects, so a
    callback can call this at the start of an epoch.
    """
    old = model.optimizer
    new = optimizer if optimizer is not None else clone_optimizer(old)
    if model.built:
        new.build(model.trainable_variables)
        _carry_state(old, new)
    # Keras keeps what compile() was given here; no public accessor returns the
    # live objects (get_compile_config() serialises them).
    args = dict(model._compile_config.config)
    built = (model._compile_loss, model._compile_metrics, model._loss_tracker)
    keep = built[0] is not None and built[0].built and (built[1] is None or built[1].built)
    model.compile(**{**args, "optimizer": new})
    if keep:
        # The fit loop built these once before its first epoch and will not
        # build them again: keep the built ones.
        model._compile_loss, model._compile_metrics, model._loss_tracker = built
    # fit() looks the step function up on every batch: a fresh one traces the
    # new trainable set.
    model.make_train_function(force=True)
    return model


def clone_optimizer(optimizer):
    """A new, unbuilt optimizer of the same class and config."""
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
