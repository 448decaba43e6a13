import numbers
import re

import keras
from keras import ops

from kerastl import _keras_private
from kerastl._checks import is_finite_number
from kerastl.backbones.registry import split_blocks
from kerastl.layers.feature_extractor import find_extractor


@keras.saving.register_keras_serializable(package="kerastl")
class PerLayerLR(keras.optimizers.Optimizer):
    """Wraps any Keras optimizer to give each layer its own learning-rate multiplier.

    A variable with multiplier `m` is updated with learning rate `m * lr`
    (decoupled weight decay scales with it too). Adam and its kin are
    invariant to gradient scale, so the learning rate itself is scaled per
    variable, not the gradient. Variables with `m == 0` are not updated and get
    no optimizer slots.

    A variable's multiplier is the first of:
    1. the first key of `multipliers` that fully matches (`re.fullmatch`) the
       name of a layer in the variable's path or the whole path
       (`"block_16_project/kernel"`): exact layer names and patterns such as
       `"block_1[0-6]_.*"` both work;
    2. the layer-decay multiplier of its layer's block, `layer_decay ** (n - i)`
       for block `i` of `n` (the head, in no block, keeps 1), as timm's
       `layer_decay`;
    3. 1.

    Args:
        optimizer: the optimizer to wrap: an instance, a name (`"adam"`) or a
            config.
        multipliers: dict `{layer name or regex: multiplier >= 0}`.
        layer_decay: float in (0, 1]; needs `blocks`.
        blocks: the blocks for `layer_decay`: a `FeatureExtractor`, a model
            holding one, any other model (one block per layer with weights),
            or `[(block_name, [layer names])]` shallow to deep.
        name: the optimizer's name.

    Example:

    ```python
    optimizer = kerastl.optimizers.PerLayerLR(
        keras.optimizers.Adam(1e-3), multipliers={"block_16_.*": 0.1, "bn_Conv1": 0.0}
    )
    print(optimizer.multiplier_for_path("block_16_project/kernel"))  # 0.1
    ```
    """

    def __init__(
        self, optimizer, multipliers=None, layer_decay=None, blocks=None, name="per_layer_lr"
    ):
        try:
            inner = keras.optimizers.get(optimizer)
        except (TypeError, ValueError):
            inner = None
        if not isinstance(inner, keras.optimizers.Optimizer) or isinstance(inner, PerLayerLR):
            raise ValueError(
                "`optimizer` must be a Keras optimizer (not a PerLayerLR). "
                f"Received: optimizer={optimizer!r}"
            )
        multipliers = _check_multipliers(multipliers)
        if layer_decay is not None:
            if (
                isinstance(layer_decay, bool)
                or not isinstance(layer_decay, numbers.Real)
                or not 0 < layer_decay <= 1
            ):
                raise ValueError(
                    "`layer_decay` must be a number in (0, 1]. "
                    f"Received: layer_decay={layer_decay!r}"
                )
            if blocks is None:
                raise ValueError(
                    "`layer_decay` needs `blocks` (a FeatureExtractor, a model or a block "
                    "list) to know each layer's depth. Received: blocks=None"
                )
        elif blocks is not None:
            raise ValueError(
                f"`blocks` is only used with `layer_decay`. Received: blocks={blocks!r}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner
        self.multipliers = multipliers
        self.layer_decay = None if layer_decay is None else float(layer_decay)
        self.blocks = _resolve_blocks(blocks) if blocks is not None else None
        self._patterns = [(re.compile(key), value) for key, value in multipliers.items()]
        self._depth = {}
        if self.blocks:
            n = len(self.blocks)
            for i, (_, layers) in enumerate(self.blocks):
                for layer in layers:
                    self._depth[layer] = self.layer_decay ** (n - i)
        self._scales = {}
        self._slices = {}  # variable key -> multipliers along its first axis (head sweeps)
        _install_scaling(inner, self)

    # --- multipliers ------------------------------------------------------------

    def multiplier_for_path(self, path):
        """The multiplier of a variable with this path (`"layer/.../variable"`)."""
        if not isinstance(path, str):
            raise TypeError(
                f"`path` must be a variable path such as 'dense/kernel'. Received: path={path!r}"
            )
        parts = path.split("/")
        layers = parts[:-1]
        for pattern, value in self._patterns:
            if pattern.fullmatch(path) or any(pattern.fullmatch(part) for part in layers):
                return value
        for layer in reversed(layers):
            if layer in self._depth:
                return self._depth[layer]
        return 1.0

    def multiplier(self, variable):
        """The multiplier of a model variable."""
        key = _keras_private.variable_key(self, variable)
        if key in self._scales:
            return self._scales[key]
        return self.multiplier_for_path(variable.path)

    def _scale_slices(self, variable, multipliers):
        """Gives each slice `variable[i]` its own multiplier `multipliers[i]` (private).

        The head sweep keeps its heads' weights stacked in one variable per
        kind; each head's step is scaled by its own multiplier (see
        `_install_scaling`). `variable` keeps the multiplier 1 otherwise.
        """
        scales = ops.reshape(
            ops.convert_to_tensor(multipliers, dtype=variable.dtype),
            (-1,) + (1,) * (len(variable.shape) - 1),
        )
        self._slices[_keras_private.variable_key(self, variable)] = scales

    # --- optimizer API ----------------------------------------------------------

    def build(self, var_list):
        if self.built:  # e.g. built by a recompile, then again by a LossScaleOptimizer around it
            return
        scales = {
            _keras_private.variable_key(self, v): self.multiplier_for_path(v.path) for v in var_list
        }
        self._scales = scales
        self.inner_optimizer.build(
            [v for v in var_list if scales[_keras_private.variable_key(self, v)] > 0]
        )
        super().build(var_list)

    @property
    def variables(self):
        return _keras_private.own_optimizer_variables(self) + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "Build the optimizer (`optimizer.build(variables)`) before passing "
                    "gradients without variables. Received: trainable_variables=None"
                )
            trainable_variables = _keras_private.built_trainable_variables(self)
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                # No name scope of our own: the inner slots keep the paths
                # ("adam/dense_kernel_momentum") they get when built on load.
                self.build(trainable_variables)
        pairs = []
        for grad, variable in zip(grads, trainable_variables, strict=True):
            key = _keras_private.variable_key(self, variable)
            if key not in self._scales:
                raise ValueError(
                    f"Variable {variable.path!r} was not among those this optimizer was "
                    "built with; recompile the model after changing what trains. "
                    f"Received: variable={variable.path!r}"
                )
            if grad is not None and self._scales[key] > 0:
                pairs.append((grad, variable))
        if pairs:
            sub_grads, sub_vars = zip(*pairs, strict=True)
            self.inner_optimizer.apply(list(sub_grads), list(sub_vars))

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        scales = self._scales
        self.inner_optimizer.finalize_variable_values(
            [v for v in var_list if scales.get(_keras_private.variable_key(self, v), 1.0) > 0]
        )

    # --- config -----------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": _keras_private.public_classes(
                keras.optimizers.serialize(self.inner_optimizer)
            ),
            "multipliers": dict(self.multipliers),
            "layer_decay": self.layer_decay,
            "blocks": [[block, list(layers)] for block, layers in self.blocks]
            if self.blocks
            else None,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizer"] = keras.optimizers.deserialize(
            config["optimizer"], custom_objects=custom_objects
        )
        return cls(**config)


def _install_scaling(inner, owner):
    """Makes `inner` scale its learning rate (and weight decay) per variable.

    Calling the optimizer's own update step once per multiplier group, with
    the scaled learning rate, scales the step without touching its maths.
    """

    def scaled_update_step(update_step, grads, variables, learning_rate):
        # A variable with per-slice multipliers takes the full step, then keeps each
        # slice's share of it. The step of every Keras optimizer is linear in the
        # learning rate (momentum buffers too), so that is the step at the slice's rate.
        sliced = []
        for variable in variables:
            scales = owner._slices.get(_keras_private.variable_key(owner, variable))
            if scales is not None:
                sliced.append((variable, scales, ops.copy(variable.value)))
        for scale, (group_grads, group_vars) in _groups(owner, grads, variables).items():
            rate = learning_rate if scale == 1.0 else ops.multiply(learning_rate, scale)
            update_step(group_grads, group_vars, rate)
        for variable, scales, before in sliced:
            variable.assign(before + scales * (variable.value - before))

    def scaled_weight_decay(variables):
        if inner.weight_decay is None:
            return
        for variable in variables:
            if _keras_private.uses_weight_decay(inner, variable):
                key = _keras_private.variable_key(owner, variable)
                scale = owner._scales.get(key, 1.0)
                rate = ops.cast(inner.learning_rate, variable.dtype) * ops.cast(
                    inner.weight_decay * scale, variable.dtype
                )
                if key in owner._slices:
                    rate = rate * owner._slices[key]
                variable.assign(variable - variable * rate)

    _keras_private.scale_update_step(inner, scaled_update_step, scaled_weight_decay)


def _groups(owner, grads, variables):
    groups = {}
    for grad, variable in zip(grads, variables, strict=True):
        scale = owner._scales.get(_keras_private.variable_key(owner, variable), 1.0)
        group = groups.setdefault(scale, ([], []))
        group[0].append(grad)
        group[1].append(variable)
    return groups


def _check_multipliers(multipliers):
    if multipliers is None:
        return {}
    if not isinstance(multipliers, dict):
        raise ValueError(
            "`multipliers` must be a dict {layer name or regex: multiplier}. "
            f"Received: multipliers={multipliers!r}"
        )
    checked = {}
    for key, value in multipliers.items():
        if not isinstance(key, str):
            raise ValueError(
                "`multipliers` keys must be layer names or regexes. "
                f"Received: multipliers key={key!r}"
            )
        try:
            re.compile(key)
        except re.error as e:
            raise ValueError(
                f"`multipliers` key is not a valid regex ({e}). Received: multipliers key={key!r}"
            ) from None
        if not is_finite_number(value, minimum=0):
            raise ValueError(
                f"Learning-rate multipliers must be finite numbers >= 0 (0: no update). "
                f"Received: multipliers[{key!r}]={value!r}"
            )
        checked[key] = float(value)
    return checked


def _resolve_blocks(blocks):
    if isinstance(blocks, keras.layers.Layer):
        extractor = find_extractor(blocks)
        if extractor is not None:
            return [(name, list(layers)) for name, layers in extractor.blocks]
        if isinstance(blocks, keras.Model):
            return split_blocks(blocks)
    elif (
        isinstance(blocks, (list, tuple))
        and blocks
        and all(
            isinstance(b, (list, tuple))
            and len(b) == 2
            and isinstance(b[0], str)
            and isinstance(b[1], (list, tuple))
            for b in blocks
        )
    ):
        return [(name, list(layers)) for name, layers in blocks]
    raise ValueError(
        "`blocks` must be a FeatureExtractor, a keras.Model or a non-empty list of "
        f"(block_name, [layer names]). Received: blocks={blocks!r}"
    )
