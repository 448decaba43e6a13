"""Freeze policies: which layers of a backbone train.

A policy is a small serialisable object. `trainable_layers(model, blocks)`
returns the names of the layers that train; everything else is frozen.
"""

import keras

BN_MODES = ("frozen", "affine", "train")


class FreezePolicy:
    """Base class: decides which layers of a backbone train.

    Subclasses implement `trainable_layers` and, when they take arguments,
    `get_config`. A policy that selects nothing it was asked to select raises
    `ValueError`; it never silently does nothing.
    """

    def trainable_layers(self, model, blocks):
        """Names of the layers of `model` that train.

        Args:
            model: the functional backbone.
            blocks: `[(block_name, [layer names])]` in order (see
                `kerastl.backbones.split_blocks`).
        """
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))


@keras.saving.register_keras_serializable(package="kerastl")
class FreezeAll(FreezePolicy):
    """Every backbone layer frozen (`freeze="all"`): the backbone is a fixed feature map."""

    def trainable_layers(self, model, blocks):
        return set()


@keras.saving.register_keras_serializable(package="kerastl")
class FreezeNone(FreezePolicy):
    """Every backbone layer trains (`freeze="none"`): full fine-tuning."""

    def trainable_layers(self, model, blocks):
        return {layer.name for layer in model.layers}


_SHORTCUTS = {"all": FreezeAll, "none": FreezeNone}


def get_policy(freeze):
    """A `FreezePolicy` from a policy, a string shortcut or a serialised config."""
    if isinstance(freeze, FreezePolicy):
        return freeze
    if isinstance(freeze, str):
        if freeze in _SHORTCUTS:
            return _SHORTCUTS[freeze]()
        raise ValueError(
            f"Unknown freeze policy. Use one of {sorted(_SHORTCUTS)} or a "
            f"`kerastl.freeze` policy object. Received: freeze={freeze!r}"
        )
    if isinstance(freeze, dict):
        policy = keras.saving.deserialize_keras_object(freeze)
        if isinstance(policy, FreezePolicy):
            return policy
    raise ValueError(
        f"`freeze` must be 'all', 'none' or a `kerastl.freeze` policy. Received: freeze={freeze!r}"
    )


def validate_bn(bn):
    if bn not in BN_MODES:
        raise ValueError(f"`bn` must be one of {BN_MODES}. Received: bn={bn!r}")
    return bn


def is_batchnorm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def set_trainable(model, policy, blocks, bn="frozen"):
    """Sets `trainable` on each layer of `model` as `policy` and `bn` say.

    With `bn="frozen"` BatchNorm layers never train (their gamma and beta stay
    fixed too); with `"affine"` and `"train"` they follow the policy. Whether
    their statistics move is decided at call time (see `FeatureExtractor`).
    Returns the set of layer names that train.
    """
    chosen = policy.trainable_layers(model, blocks)
    if chosen:
        # A trainable layer inside a frozen container would still be skipped.
        model.trainable = True
    for layer in model.layers:
        trains = layer.name in chosen and not (bn == "frozen" and is_batchnorm(layer))
        layer.trainable = trains
    if not chosen:
        model.trainable = False
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}
