"""Freeze policies: which layers of a backbone train.

A policy is a small serialisable object. `trainable_layers(model, blocks)`
returns the names of the layers that train; everything else is frozen. A policy
that was asked to select something and selects nothing raises `ValueError`
(naming the policy and the closest layer names): it is never a silent no-op.
"""

import difflib
import math
import numbers
import re
from collections.abc import Sequence

import keras

from kerastl.freeze.lora import LoRA

BN_MODES = ("frozen", "affine", "train")


class FreezePolicy:
    """Base class: decides which layers of a backbone train.

    Subclasses implement `trainable_layers` and, when they take arguments,
    `get_config`. Policies compose: `a | b` trains what either trains
    (`AnyOf`), `a & b` what both train (`AllOf`).
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

    def asks_for_training(self):
        """Whether the policy asks for some layer to train (`FreezeAll`, `n=0`, `f=0` do not).

        A policy that asks and ends up training no weight raises when applied.
        """
        return True

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __or__(self, other: "FreezePolicy | str") -> "AnyOf":
        return AnyOf([self, get_policy(other)])

    def __and__(self, other: "FreezePolicy | str") -> "AllOf":
        return AllOf([self, get_policy(other)])

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

    def asks_for_training(self):
        return False


@keras.saving.register_keras_serializable(package="kerastl")
class FreezeNone(FreezePolicy):
    """Every backbone layer trains (`freeze="none"`): full fine-tuning."""

    def trainable_layers(self, model, blocks):
        return set(_layer_names(model))


@keras.saving.register_keras_serializable(package="kerastl")
class FreezeUpTo(FreezePolicy):
    """Freezes every layer up to and including `layer_name`; the layers after it train.

    Args:
        layer_name: a layer name, or a block name (`"block_12"`): then the
            whole block is frozen.

    Example:

    ```python
    policy = kerastl.freeze.FreezeUpTo("block_12_project_BN")
    ```
    """

    def __init__(self, layer_name: str) -> None:
        if not isinstance(layer_name, str) or not layer_name:
            raise ValueError(
                f"`layer_name` must be a layer or block name. Received: layer_name={layer_name!r}"
            )
        self.layer_name = layer_name

    def trainable_layers(self, model, blocks):
        names = _layer_names(model)
        last = self.layer_name
        block_layers = dict(blocks).get(self.layer_name)
        if last not in names and block_layers:
            last = block_layers[-1]
        if last not in names:
            candidates = list(dict.fromkeys(names + [b for b, _ in blocks]))
            _no_match(self, model, self.layer_name, candidates, "layer_name")
        return set(names[names.index(last) + 1 :])

    def get_config(self):
        return {"layer_name": self.layer_name}


@keras.saving.register_keras_serializable(package="kerastl")
class TrainTopBlocks(FreezePolicy):
    """Trains the last `n` blocks; the rest is frozen.

    Blocks come from the backbone registry (`block_1` ... `block_16` for
    MobileNetV2); a model without block information has one block per layer
    that holds weights. `n=0` trains none; `n` larger than the number of
    blocks raises `ValueError` when the policy is applied (`FreezeNone()`
    trains everything).

    Args:
        n: number of blocks to train, counted from the output.
    """

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"`n` must be an int >= 0. Received: n={n!r}")
        self.n = int(n)

    def trainable_layers(self, model, blocks):
        if self.n > len(blocks):
            raise ValueError(
                f"{self!r} asks for more blocks than model {model.name!r} has: it has "
                f"{len(blocks)} blocks (use FreezeNone() to train them all). "
                f"Received: n={self.n}"
            )
        if self.n == 0:
            return set()
        return {name for _, layers in blocks[-self.n :] for name in layers}

    def get_config(self):
        return {"n": self.n}

    def asks_for_training(self):
        return self.n > 0


@keras.saving.register_keras_serializable(package="kerastl")
class TrainFraction(FreezePolicy):
    """Trains the top fraction `f` of the layers that hold weights.

    `ceil(f * n)` of the `n` weighted layers train, counted from the output,
    with the weightless layers after the first of them.

    Args:
        f: float in [0, 1]; 0 freezes everything, 1 trains everything.
    """

    def __init__(self, f: float) -> None:
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 <= f <= 1:
            raise ValueError(f"`f` must be a number in [0, 1]. Received: f={f!r}")
        self.f = float(f)

    def trainable_layers(self, model, blocks):
        layers = _layers(model)
        weighted = [i for i, layer in enumerate(layers) if layer.weights]
        count = math.ceil(self.f * len(weighted) - 1e-9)
        if count == 0:
            return set()
        first = weighted[-count]
        return {layer.name for layer in layers[first:]}

    def get_config(self):
        return {"f": self.f}

    def asks_for_training(self):
        return self.f > 0


class _PatternPolicy(FreezePolicy):
    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise ValueError(f"`pattern` must be a regex string. Received: pattern={pattern!r}")
        try:
            self._regex = re.compile(pattern)
        except re.error as e:
            raise ValueError(
                f"`pattern` is not a valid regex ({e}). Received: pattern={pattern!r}"
            ) from None
        self.pattern = pattern

    def matching(self, model):
        names = _layer_names(model)
        matched = {name for name in names if self._regex.search(name)}
        if not matched:
            _no_match(self, model, self.pattern, names, "pattern")
        return matched

    def get_config(self):
        return {"pattern": self.pattern}


@keras.saving.register_keras_serializable(package="kerastl")
class FreezePattern(_PatternPolicy):
    """Freezes every layer whose name matches `pattern` (`re.search`); the rest trains.

    Example: `FreezePattern("conv")` freezes every layer with "conv" in its name.
    """

    def trainable_layers(self, model, blocks):
        return set(_layer_names(model)) - self.matching(model)


@keras.saving.register_keras_serializable(package="kerastl")
class TrainPattern(_PatternPolicy):
    """Trains only the layers whose name matches `pattern` (`re.search`).

    Example: `TrainPattern(r"^block_1[56]_")` trains the last two MobileNetV2 blocks.
    """

    def trainable_layers(self, model, blocks):
        return self.matching(model)


class _Composite(FreezePolicy):
    def __init__(self, policies: Sequence[FreezePolicy | str]) -> None:
        if not isinstance(policies, (list, tuple)) or not policies:
            raise ValueError(
                f"`policies` must be a non-empty list of policies. Received: policies={policies!r}"
            )
        self.policies = [get_policy(p) for p in policies]

    def get_config(self):
        return {"policies": [keras.saving.serialize_keras_object(p) for p in self.policies]}

    @classmethod
    def from_config(cls, config):
        return cls([get_policy(p) for p in config["policies"]])

    def __repr__(self):
        return f"{type(self).__name__}({self.policies!r})"


@keras.saving.register_keras_serializable(package="kerastl")
class AnyOf(_Composite):
    """A layer trains when any of `policies` trains it (also written `a | b`).

    Example: `FreezeAll() | TrainPattern("_BN$")` trains only BatchNorm layers.
    """

    def trainable_layers(self, model, blocks):
        return set().union(*(p.trainable_layers(model, blocks) for p in self.policies))

    def asks_for_training(self):
        return any(p.asks_for_training() for p in self.policies)


@keras.saving.register_keras_serializable(package="kerastl")
class AllOf(_Composite):
    """A layer trains when all of `policies` train it (also written `a & b`).

    Example: `TrainTopBlocks(3) & FreezePattern("depthwise")`.
    """

    def trainable_layers(self, model, blocks):
        sets = [p.trainable_layers(model, blocks) for p in self.policies]
        return set.intersection(*sets)

    def asks_for_training(self):
        return all(p.asks_for_training() for p in self.policies)


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
        try:
            policy = keras.saving.deserialize_keras_object(freeze)
        except (TypeError, ValueError, KeyError):
            policy = None
        if isinstance(policy, FreezePolicy):
            return policy
        freeze = policy if isinstance(policy, LoRA) else freeze
    if isinstance(freeze, LoRA):
        raise ValueError(
            "`kerastl.freeze.LoRA` adds adapters; it does not say which layers train: pass it "
            "as `lora=` (`FeatureExtractor(lora=...)`, `extractor.set_lora(...)`) or as "
            f"`fine_tune(unfreeze=...)`. Received: freeze={freeze!r}"
        )
    raise ValueError(
        f"`freeze` must be 'all', 'none' or a `kerastl.freeze` policy. Received: freeze={freeze!r}"
    )


def validate_bn(bn):
    if bn not in BN_MODES:
        raise ValueError(f"`bn` must be one of {BN_MODES}. Received: bn={bn!r}")
    return bn


def is_batchnorm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def check_policy(model, policy, blocks, bn="frozen"):
    """The names of the layers `policy` selects in `model`, without changing anything.

    Raises `ValueError` when the policy does not fit the model, or asks for
    training and would train no weight under `bn`.
    """
    chosen = policy.trainable_layers(model, blocks)
    if policy.asks_for_training():
        _check_trains_something(model, policy, chosen, bn)
    return chosen


def set_trainable(model, policy, blocks, bn="frozen"):
    """Sets `trainable` on each layer of `model` as `policy` and `bn` say.

    With `bn="frozen"` BatchNorm layers never train (their gamma and beta stay
    fixed too); with `"affine"` and `"train"` they follow the policy. Whether
    their statistics move is decided at call time (see `FeatureExtractor`).
    Returns the set of layer names that train. A policy that asks for training
    (`asks_for_training()`) but would train no weight raises `ValueError`,
    before anything changes, saying why.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model (a backbone). Received: model={model!r}")
    if not isinstance(policy, FreezePolicy):
        if not isinstance(policy, (str, dict)):
            raise TypeError(
                f"`policy` must be 'all', 'none' or a `kerastl.freeze` policy. "
                f"Received: policy={policy!r}"
            )
        policy = get_policy(policy)
    validate_bn(bn)
    chosen = check_policy(model, policy, blocks, bn)
    if chosen:
        # A trainable layer inside a frozen container would still be skipped.
        model.trainable = True
    for layer in model.layers:
        trains = layer.name in chosen and not (bn == "frozen" and is_batchnorm(layer))
        layer.trainable = trains
    if not chosen:
        model.trainable = False
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


# --- helpers ---------------------------------------------------------------------


def _check_trains_something(model, policy, chosen, bn):
    layers = [layer for layer in _layers(model) if layer.name in chosen]
    if any(layer.weights and not (bn == "frozen" and is_batchnorm(layer)) for layer in layers):
        return
    names = [layer.name for layer in layers]
    shown = f"{names[:6]}{' ...' if len(names) > 6 else ''}"
    if not layers:
        why = "it selects no layer"
    elif any(is_batchnorm(layer) for layer in layers):
        why = (
            f"it selects only BatchNorm and weightless layers ({shown}), and bn='frozen' "
            "keeps BatchNorm fixed: pass bn='affine' or bn='train' to train them, or "
            "select more"
        )
    else:
        why = f"it selects only layers without weights ({shown})"
    raise ValueError(
        f"{policy!r} would train nothing in model {model.name!r}: {why}. Use "
        f"freeze='all' to train no backbone layer on purpose. Received: freeze={policy!r}"
    )


def _layers(model):
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _layer_names(model):
    return [layer.name for layer in _layers(model)]


def _no_match(policy, model, wanted, names, arg):
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.5)
    if not close:  # a regex rarely looks like a name: fall back to shared substrings
        stem = re.sub(r"[^A-Za-z0-9_]", "", wanted).lower()
        close = [n for n in names if stem and stem[:4] in n.lower()][:5]
    hint = f" Close layer names: {close}." if close else f" Layers: {names[:8]} ..."
    raise ValueError(
        f"{policy!r} matches no layer of model {model.name!r}.{hint} Received: {arg}={wanted!r}"
    )
