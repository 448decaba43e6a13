import math
import numbers
import re

import keras

from kerastl._checks import is_finite_number
from kerastl._keras_private import distribution_scope, flatten_layers
from kerastl.backbones.registry import split_blocks
from kerastl.freeze.policies import TrainTopBlocks, get_policy
from kerastl.layers.feature_extractor import find_extractor
from kerastl.optimizers.per_layer_lr import PerLayerLR
from kerastl.training.policy import change_freeze
from kerastl.training.recompile import clone_optimizer, recompile_model


@keras.saving.register_keras_serializable(package="kerastl")
class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreezes the backbone step by step during `fit` (ULMFiT-style).

    At the start of each epoch the policy due for that epoch is applied to the
    model's `FeatureExtractor` (or, without one, to the model's own layers)
    and, when the trainable set changed, the model is recompiled in place: a
    new optimizer built for the new trainable variables, with the state of the
    variables that were already training carried over, the same loss and
    metrics, and a fresh train step. This is the right way to change what
    trains mid-`fit` on every backend: Keras fixes the trained variables when
    it builds the train step.

    Args:
        schedule: dict `{epoch: policy}` (policies as `freeze=` takes them),
            epochs as ints in increasing order. The policy of the latest
            epoch <= the current one applies, so a resumed `fit`
            (`initial_epoch`) starts in the right state.
        every: instead of `schedule`: one more block trains every `every`
            epochs (`TrainTopBlocks(epoch // every)`), up to all of them.
        lr_multiplier: optional learning-rate multiplier for the layers this
            callback unfreezes (the head keeps 1); the optimizer is wrapped in
            `kerastl.optimizers.PerLayerLR` for that.
        verbose: print what is unfrozen.

    Example:

    ```python
    callback = kerastl.callbacks.GradualUnfreezing(every=2, lr_multiplier=0.1)
    ```
    """

    def __init__(self, schedule=None, every=None, lr_multiplier=None, verbose=1):
        super().__init__()
        if (schedule is None) == (every is None):
            raise ValueError(
                "Give `schedule` or `every`, exactly one. "
                f"Received: schedule={schedule!r}, every={every!r}"
            )
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1
        ):
            raise ValueError(f"`every` must be an int >= 1. Received: every={every!r}")
        if lr_multiplier is not None and not is_finite_number(lr_multiplier, minimum=0):
            raise ValueError(
                f"`lr_multiplier` must be a finite number >= 0. "
                f"Received: lr_multiplier={lr_multiplier!r}"
            )
        if not isinstance(verbose, numbers.Integral):
            raise TypeError(f"`verbose` must be an int or bool. Received: verbose={verbose!r}")
        if verbose < 0:
            raise ValueError(f"`verbose` must be >= 0. Received: verbose={verbose!r}")
        self.schedule = _check_schedule(schedule) if schedule is not None else None
        self.every = every
        self.lr_multiplier = lr_multiplier
        self.verbose = verbose
        self.unfrozen = {}  # epoch -> names of the layers unfrozen then

    def policy_for(self, epoch, model=None):
        """The policy due at `epoch`, `None` before the first scheduled epoch.

        With `every`, `model` caps the number of blocks at the number it has.
        """
        if self.every is not None:
            n = epoch // self.every
            if model is not None:
                n = min(n, _block_count(model))
            return TrainTopBlocks(n)
        due = [policy for start, policy in self.schedule if start <= epoch]
        return due[-1] if due else None

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model
        policy = self.policy_for(epoch, model)
        if policy is None:
            return
        before = _trained_layers(model)
        change_freeze(model, policy)
        after = _trained_layers(model)
        if after == before:
            return
        new = sorted(after - before)
        self.unfrozen[epoch] = new
        # Under tf.distribute the new optimizer belongs in the model's strategy scope,
        # which `fit` (and so this callback) need not run in.
        with distribution_scope(model):
            optimizer = None
            if self.lr_multiplier is not None and new:
                optimizer = self._with_multiplier(model.optimizer, new)
            recompile_model(model, optimizer=optimizer)
        if self.verbose:
            trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
            print(
                f"\nGradualUnfreezing, epoch {epoch + 1}: {policy!r}; {len(new)} layers "
                f"unfrozen, {len(before - after)} frozen; {trainable:,} trainable params."
            )

    def _with_multiplier(self, optimizer, names):
        added = {re.escape(name): float(self.lr_multiplier) for name in names}
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # Mixed float16: `compile` wraps the new optimizer in a loss scaler again.
            optimizer = optimizer.inner_optimizer
        if isinstance(optimizer, PerLayerLR):
            config = optimizer.get_config()
            # The first matching key wins: the new layers' keys go first.
            older = {k: v for k, v in config["multipliers"].items() if k not in added}
            config["multipliers"] = {**added, **older}
            return PerLayerLR.from_config(config)
        return PerLayerLR(clone_optimizer(optimizer), multipliers=added)

    def get_config(self):
        schedule = None
        if self.schedule is not None:
            schedule = {
                str(epoch): keras.saving.serialize_keras_object(policy)
                for epoch, policy in self.schedule
            }
        return {
            "schedule": schedule,
            "every": self.every,
            "lr_multiplier": self.lr_multiplier,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("schedule") is not None:
            config["schedule"] = {int(k): v for k, v in config["schedule"].items()}
        return cls(**config)


def _check_schedule(schedule):
    if not isinstance(schedule, dict) or not schedule:
        raise ValueError(
            "`schedule` must be a non-empty dict {epoch: policy}. "
            f"Received: schedule={schedule!r}"
        )
    epochs = list(schedule)
    for epoch in epochs:
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(
                f"`schedule` epochs must be ints >= 0; {epoch!r} is not. "
                f"Received: schedule={schedule!r}"
            )
    if epochs != sorted(epochs):
        raise ValueError(
            f"`schedule` epochs must be in increasing order. Received: schedule={schedule!r}"
        )
    checked = []
    for epoch, policy in schedule.items():
        try:
            checked.append((int(epoch), get_policy(policy)))
        except ValueError as e:
            raise ValueError(f"{e} (epoch {epoch}). Received: schedule={schedule!r}") from None
    return checked


def _block_count(model):
    """The number of blocks `TrainTopBlocks` counts in `model` (as `change_freeze` applies it)."""
    extractor = find_extractor(model)
    return len(extractor.blocks if extractor is not None else split_blocks(model))


def _trained_layers(model):
    """Names of the innermost layers whose weights train."""
    return {
        layer.name
        for layer in flatten_layers(model)
        if layer.trainable_weights and not flatten_layers(layer)
    }
