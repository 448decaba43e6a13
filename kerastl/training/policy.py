"""Changing what trains on a built, possibly compiled, model."""

import warnings

import keras

from kerastl._checks import check_bool
from kerastl.backbones.registry import split_blocks
from kerastl.freeze.policies import get_policy, set_trainable, validate_bn
from kerastl.layers.feature_extractor import find_extractor
from kerastl.training.recompile import recompile_model


class RecompileWarning(UserWarning):
    """The trainable set changed but the compiled model still trains the old one."""


def set_freeze(model_or_layer, policy, bn=None, recompile=True):
    """Applies a freeze policy and BatchNorm mode, and recompiles a compiled model.

    Keras fixes the set of trained variables when a model is compiled, so a
    trainability change on a compiled model only takes effect after
    recompiling. `set_freeze` recompiles with the same optimizer (its state
    carried over for the variables that keep training), loss and metrics.
    Compiling again yourself afterwards (e.g. with a `PerLayerLR`) is fine too.

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

    Example:

    ```python
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(96, 96, 3), pooling="avg",
        backbone_kwargs={"alpha": 0.35},
    )
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(3))
    trained = kerastl.set_freeze(model, kerastl.freeze.TrainTopBlocks(1))
    print(trained)  # ['Conv_1', 'block_16_depthwise', 'block_16_expand', 'block_16_project']
    ```
    """
    check_bool(recompile, "recompile")
    trained = change_freeze(model_or_layer, policy, bn=bn)
    model = model_or_layer if isinstance(model_or_layer, keras.Model) else None
    if model is not None and getattr(model, "compiled", False) and model.optimizer is not None:
        if recompile:
            recompile_model(model)
        else:
            warnings.warn(
                f"The trainable layers of model {model.name!r} changed but the model was "
                "not recompiled: fit() keeps training the variables chosen at compile "
                "time. Call kerastl.set_freeze(..., recompile=True) or model.compile().",
                RecompileWarning,
                stacklevel=2,
            )
    return sorted(trained)


def change_freeze(model_or_layer, policy, bn=None):
    """Sets trainability as `set_freeze` does, without recompiling; returns what trains."""
    policy = get_policy(policy)
    if bn is not None:
        validate_bn(bn)
    extractor = find_extractor(model_or_layer)
    if extractor is not None:
        return extractor.set_freeze(policy, bn=bn)
    if isinstance(model_or_layer, keras.Model):
        bn = bn or "frozen"
        if bn == "affine":
            raise ValueError(
                "bn='affine' (gamma and beta train, statistics fixed) needs a "
                "kerastl.FeatureExtractor, which calls its backbone in inference mode; "
                f"a plain model has no such switch. Received: bn={bn!r}"
            )
        return set_trainable(model_or_layer, policy, split_blocks(model_or_layer), bn=bn)
    raise TypeError(
        "`model_or_layer` must be a kerastl.FeatureExtractor or a keras.Model. "
        f"Received: model_or_layer={model_or_layer!r}"
    )
