"""Low-rank adapters (LoRA) on a backbone's convolutions and dense layers.

`LoRA` is the policy: rank, alpha and which layers. `apply_lora` rebuilds a
functional backbone with each chosen layer inside a `LoRAWrapper`, which keeps
the layer itself (its weights are shared, never copied, and never train) and
adds two small factors `A` and `B`: the layer then computes with the kernel
`W + (alpha / rank) * reshape(A @ B)`. `B` starts at zero, so a model predicts
exactly what it predicted before; training moves only `A` and `B`.

Keras's own `enable_lora` covers `Dense`, `EinsumDense`, `Embedding` and the
plain convolutions; the depthwise and separable convolutions that MobileNet,
EfficientNet and Xception are built of are adapted here too. A policy that
adapts no layer is an error, never a silent no-op.

`FeatureExtractor(lora=...)` (and its `set_lora`) is the usual way in;
`merge_lora` folds the adapters into the kernels for serving;
`save_adapters` / `load_adapters` keep the adapters alone in a small file.
"""

import difflib
import json
import math
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from kerastl._checks import check_positive_int, check_positive_number
from kerastl._keras_private import flatten_layers
from kerastl.backbones.registry import split_blocks

# The layer classes LoRA adapts (exact classes: a subclass may compute differently) and
# the kernels it adapts in each. A depthwise kernel `(kh, kw, channels, multiplier)` is
# adapted as the matrix `(kh * kw, channels * multiplier)`: one column per output
# channel, so rank 1 already gives each channel its own (scaled) spatial pattern and
# ranks up to `kh * kw` are meaningful. Every other kernel `(..., out)` is the matrix
# `(prod(...), out)` (a Conv2D's `(kh * kw * in / groups, out)`, as Keras's Conv LoRA).
_KERNELS = {
    keras.layers.Dense: ("kernel",),
    keras.layers.Conv2D: ("kernel",),
    keras.layers.DepthwiseConv2D: ("kernel",),
    keras.layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
}
_DEPTHWISE = {
    (keras.layers.DepthwiseConv2D, "kernel"),
    (keras.layers.SeparableConv2D, "depthwise_kernel"),
}
SUPPORTED_LAYERS = tuple(cls.__name__ for cls in _KERNELS)
ADAPTERS_FORMAT = "kerastl-lora-adapters"
_HEADER = "__kerastl_lora__"


@keras.saving.register_keras_serializable(package="kerastl")
class LoRA:
    """Low-rank adapters on a backbone's `Dense`, `Conv2D`, `DepthwiseConv2D`, `SeparableConv2D`.

    Each adapted layer keeps its weights, frozen; two factors `A` (`rows x r`)
    and `B` (`r x cols`, zeros at first) train, and the layer computes with
    `W + (alpha / rank) * reshape(A @ B)`. `r` is `rank`, or the smaller side
    of the layer's kernel matrix when that is smaller (a 3x3 depthwise kernel
    is the matrix `(9, channels * multiplier)`: at most rank 9).

    With neither `layers` nor `blocks` every layer of those four classes at
    the backbone's top level is adapted; with both, the layers of `blocks`
    whose names match `layers`. A policy that adapts no layer raises
    `ValueError` when applied.

    Args:
        rank: the rank `r` of the update, an int >= 1.
        alpha: the update's scale numerator (`alpha / rank`); defaults to
            `rank` (scale 1).
        layers: a regex (`re.search` on layer names); `None`: every supported
            layer.
        blocks: block names (`kerastl.backbones.split_blocks`, the registry's
            `"block_16"` ...); `None`: every block.

    Example:

    ```python
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    backbone = keras.Model(inputs, x)
    adapted = kerastl.freeze.apply_lora(backbone, kerastl.freeze.LoRA(rank=2))
    print([type(layer).__name__ for layer in adapted.layers[1:]])
    # ['LoRAWrapper', 'LoRAWrapper']
    ```
    """

    def __init__(
        self,
        rank: int = 4,
        alpha: float | None = None,
        layers: str | None = None,
        blocks: Sequence[str] | None = None,
    ) -> None:
        self.rank = check_positive_int(rank, "rank")
        self.alpha = None if alpha is None else check_positive_number(alpha, "alpha")
        if layers is not None and not isinstance(layers, str):
            raise TypeError(f"`layers` must be a regex string or None. Received: layers={layers!r}")
        try:
            self._regex = None if layers is None else re.compile(layers)
        except re.error as e:
            raise ValueError(
                f"`layers` is not a valid regex ({e}). Received: layers={layers!r}"
            ) from None
        self.layers = layers
        if isinstance(blocks, str):
            blocks = [blocks]
        if blocks is not None and (
            not isinstance(blocks, (list, tuple))
            or not blocks
            or not all(isinstance(b, str) and b for b in blocks)
        ):
            raise ValueError(
                f"`blocks` must be a non-empty list of block names or None. Received: "
                f"blocks={blocks!r}"
            )
        self.blocks = None if blocks is None else list(blocks)

    @property
    def scale(self):
        """`alpha / rank`: what multiplies the low-rank update."""
        return (self.rank if self.alpha is None else self.alpha) / self.rank

    def targets(self, model, blocks=None):
        """The names of the layers of `model` this policy adapts, in model order.

        Args:
            model: a functional model (a backbone).
            blocks: `[(block name, [layer names])]`; defaults to
                `kerastl.backbones.split_blocks(model)`.

        Raises `ValueError`, naming the argument at fault, when it adapts none.
        """
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        wrapped = [layer.name for layer in layers if isinstance(layer, LoRAWrapper)]
        if wrapped:
            raise ValueError(
                f"Model {model.name!r} already has LoRA adapters (on {wrapped[:4]} ...): merge "
                f"or remove them first. Received: lora={self!r}"
            )
        chosen = layers
        if self.blocks is not None:
            known = dict(split_blocks(model) if blocks is None else blocks)
            unknown = [b for b in self.blocks if b not in known]
            if unknown:
                close = difflib.get_close_matches(unknown[0], list(known), n=5, cutoff=0.5)
                hint = f"close block names: {close}" if close else f"blocks: {list(known)[:8]} ..."
                raise ValueError(
                    f"{self!r}: model {model.name!r} has no block {unknown[0]!r} ({hint}). "
                    f"Received: blocks={self.blocks!r}"
                )
            names = {name for b in self.blocks for name in known[b]}
            chosen = [layer for layer in chosen if layer.name in names]
        if self._regex is not None:
            chosen = [layer for layer in chosen if self._regex.search(layer.name)]
            if not chosen:
                names = [layer.name for layer in layers]
                close = difflib.get_close_matches(self.layers, names, n=5, cutoff=0.5)
                hint = f"Close layer names: {close}." if close else f"Layers: {names[:8]} ..."
                raise ValueError(
                    f"{self!r} matches no layer of model {model.name!r}. {hint} "
                    f"Received: layers={self.layers!r}"
                )
        for layer in chosen:
            if type(layer) in _KERNELS:
                _check_adaptable(layer, self)
        adapted = [layer.name for layer in chosen if type(layer) in _KERNELS]
        if not adapted:
            kinds = sorted({type(layer).__name__ for layer in chosen})
            arg, value = next(
                ((a, v) for a, v in (("layers", self.layers), ("blocks", self.blocks)) if v),
                ("lora", self),
            )
            raise ValueError(
                f"{self!r} adapts no layer of model {model.name!r}: the {len(chosen)} layers "
                f"it selects are of types {kinds[:8]}, and LoRA adapts only "
                f"{list(SUPPORTED_LAYERS)} (at the model's top level). Received: {arg}={value!r}"
            )
        return adapted

    def get_config(self):
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "layers": self.layers,
            "blocks": self.blocks,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if v is not None)
        return f"LoRA({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))


@keras.saving.register_keras_serializable(package="kerastl")
class LoRAWrapper(keras.layers.Layer):
    """A layer with low-rank adapters: `W + (alpha / rank) * reshape(A @ B)` as its kernel.

    Holds `layer` itself (its variables are shared, not copied) and computes as
    it does, with the same strides, padding, dilation, groups, data format,
    bias and activation, with the adapted kernel. The wrapped layer never
    trains (whatever `trainable` is set to); the factors train when the
    wrapper does. It takes the wrapped layer's name and dtype policy.

    Args:
        layer: a `Dense`, `Conv2D`, `DepthwiseConv2D` or `SeparableConv2D`
            layer (exactly those classes).
        rank: the rank of the update (see `LoRA`).
        alpha: the scale numerator; defaults to `rank`.

    Call arguments:
        inputs: what `layer` takes.

    Example:

    ```python
    wrapper = kerastl.freeze.LoRAWrapper(keras.layers.DepthwiseConv2D(3), rank=2)
    y = wrapper(np.ones((1, 8, 8, 4), "float32"))
    print(tuple(y.shape), [tuple(w.shape) for w in wrapper.adapter_weights])
    # (1, 6, 6, 4) [(9, 2), (2, 4)]
    ```
    """

    def __init__(self, layer, rank: int = 4, alpha: float | None = None, **kwargs):
        if type(layer) not in _KERNELS:
            raise TypeError(
                f"`layer` must be one of {list(SUPPORTED_LAYERS)} (exactly: a subclass may "
                f"compute differently). Received: layer={layer!r}"
            )
        policy = LoRA(rank=rank, alpha=alpha)  # checks rank and alpha
        _check_adaptable(layer, policy)
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer = layer
        self.rank = policy.rank
        self.alpha = policy.alpha
        self.scale = policy.scale
        self.kernel_names = _KERNELS[type(layer)]

    @property
    def trainable(self):
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        keras.layers.Layer.trainable.fset(self, value)
        if hasattr(self, "layer"):
            self.layer.trainable = False  # the base weights never train

    @property
    def adapter_weights(self):
        """The factors, `[A, B]` per adapted kernel."""
        return [getattr(self, f"{name}_lora_{part}") for name in self.kernel_names for part in "ab"]

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.layer.trainable = False
        for name in self.kernel_names:
            rows, cols = _matrix_shape(self.layer, name)
            rank = min(self.rank, rows, cols)
            a = self.add_weight(
                name=f"{name}_lora_a",
                shape=(rows, rank),
                initializer=keras.initializers.HeUniform(),
            )
            b = self.add_weight(name=f"{name}_lora_b", shape=(rank, cols), initializer="zeros")
            setattr(self, f"{name}_lora_a", a)
            setattr(self, f"{name}_lora_b", b)

    def adapted_kernel(self, name):
        """The kernel `name` the layer computes with: `W + scale * reshape(A @ B)`."""
        base = getattr(self.layer, name)
        a = getattr(self, f"{name}_lora_a")
        b = getattr(self, f"{name}_lora_b")
        update = ops.reshape(ops.matmul(a, b), tuple(base.shape))
        return ops.add(base, ops.multiply(update, ops.cast(self.scale, update.dtype)))

    def call(self, inputs):
        layer = self.layer
        if isinstance(layer, keras.layers.Dense):
            x = ops.matmul(inputs, self.adapted_kernel("kernel"))
            if layer.bias is not None:
                x = ops.add(x, layer.bias)
        else:
            options = dict(
                strides=layer.strides,
                padding=layer.padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )
            if isinstance(layer, keras.layers.SeparableConv2D):
                x = ops.separable_conv(
                    inputs,
                    self.adapted_kernel("depthwise_kernel"),
                    self.adapted_kernel("pointwise_kernel"),
                    **options,
                )
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                x = ops.depthwise_conv(inputs, self.adapted_kernel("kernel"), **options)
            else:  # Conv2D: ops.conv takes groups from the kernel's input channels
                options["strides"] = list(layer.strides)
                x = ops.conv(inputs, self.adapted_kernel("kernel"), **options)
            if layer.use_bias:
                channels_last = layer.data_format == "channels_last"
                x = ops.add(
                    x, ops.reshape(layer.bias, (1, 1, 1, -1) if channels_last else (1, -1, 1, 1))
                )
        if layer.activation is not None:
            x = layer.activation(x)
        return x

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def merge(self):
        """Folds the update into the wrapped layer's kernels and zeroes `B`: outputs unchanged."""
        for name in self.kernel_names:
            merged = ops.convert_to_numpy(self.adapted_kernel(name))
            getattr(self.layer, name).assign(merged)
            b = getattr(self, f"{name}_lora_b")
            b.assign(np.zeros(tuple(b.shape), dtype="float32"))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer": keras.saving.serialize_keras_object(self.layer),
                "rank": self.rank,
                "alpha": self.alpha,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **config)


def get_lora(lora, arg="lora"):
    """A `LoRA` (or `None`) from a policy, `None` or its serialised config."""
    if lora is None or isinstance(lora, LoRA):
        return lora
    if isinstance(lora, dict):
        try:
            policy = keras.saving.deserialize_keras_object(lora)
        except (TypeError, ValueError, KeyError):
            policy = None
        if isinstance(policy, LoRA):
            return policy
    raise TypeError(f"`{arg}` must be a kerastl.freeze.LoRA or None. Received: {arg}={lora!r}")


def apply_lora(model, lora, blocks=None):
    """A copy of the functional `model` with `lora`'s layers inside `LoRAWrapper`s.

    The copy shares every layer (and so every weight) with `model`; only the
    wrappers and their factors are new. It predicts exactly what `model`
    predicts until the factors train. `FeatureExtractor(lora=...)` does this
    to its backbone.

    Args:
        model: a functional (or Sequential) `keras.Model`.
        lora: a `LoRA` policy.
        blocks: `[(block name, [layer names])]` for `LoRA(blocks=...)`;
            defaults to `kerastl.backbones.split_blocks(model)`.

    Returns:
        The new functional model, with `model`'s name.
    """
    _check_model(model)
    lora = get_lora(lora)
    if lora is None:
        raise TypeError("`lora` must be a kerastl.freeze.LoRA. Received: lora=None")
    targets = set(lora.targets(model, blocks))
    wrappers = {}

    def wrap(layer):
        if layer.name not in targets:
            return layer
        # A layer called at several places in the graph gets one wrapper, one adapter.
        if id(layer) not in wrappers:
            wrappers[id(layer)] = LoRAWrapper(layer, rank=lora.rank, alpha=lora.alpha)
        return wrappers[id(layer)]

    return keras.models.clone_model(model, clone_function=wrap)


def remove_adapters(model):
    """A copy of `model` with every `LoRAWrapper` at its top level replaced by the layer it wraps.

    The adapters are dropped, not merged (see `merge_lora`); the layers are shared.
    """
    _check_model(model)
    return keras.models.clone_model(
        model, clone_function=lambda layer: layer.layer if isinstance(layer, LoRAWrapper) else layer
    )


def train_adapters(model):
    """Makes every adapter at `model`'s top level train, other layers left as they are.

    Returns the names of the layers that hold weights and train.
    """
    wrappers = [layer for layer in model.layers if isinstance(layer, LoRAWrapper)]
    if wrappers and not model.trainable:
        # Reopen the frozen container without changing what its layers do.
        states = [(layer, layer.trainable) for layer in model.layers]
        model.trainable = True
        for layer, trainable in states:
            layer.trainable = trainable
    for wrapper in wrappers:
        wrapper.trainable = True
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


def adapters(model):
    """The `LoRAWrapper`s inside `model` (a model or layer), at any depth, in order."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a Keras model or layer. Received: model={model!r}")
    found = [layer for layer in _in_order(model) if isinstance(layer, LoRAWrapper)]
    names = [w.name for w in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(
            f"Model {model.name!r} holds several adapted layers named {duplicated[:4]}: adapters "
            f"are keyed by layer name. Received: model={model.name!r}"
        )
    return found


def merge_lora(model):
    """Folds the LoRA adapters of `model` into its kernels and removes them.

    The merged model computes exactly the kernels the adapted one computed
    with (outputs equal up to float rounding) and holds no adapter variable:
    serve it, export it, or save it as a plain model. A `FeatureExtractor`
    with adapters (or a model holding one) is changed in place (its `lora`
    becomes `None`, and the traced predict and evaluate functions of the
    models in it are dropped); a functional model whose own layers are
    `LoRAWrapper`s (from `apply_lora`) is rebuilt. Recompile a compiled model
    before training it again.

    Args:
        model: a model or layer holding adapters.

    Returns:
        The merged model: `model` itself, or the rebuilt functional model.

    Example:

    ```python
    inputs = keras.Input((8, 8, 3))
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    adapted = kerastl.freeze.apply_lora(backbone, kerastl.freeze.LoRA(rank=2))
    merged = kerastl.freeze.merge_lora(adapted)
    print(type(merged.get_layer("conv")).__name__, len(merged.weights))  # Conv2D 2
    ```
    """
    wrappers = adapters(model)
    if not wrappers:
        raise ValueError(
            f"Model {getattr(model, 'name', model)!r} has no LoRA adapters to merge. "
            f"Received: model={getattr(model, 'name', model)!r}"
        )
    owners = [
        layer
        for layer in _in_order(model)
        if getattr(layer, "lora", None) is not None and callable(getattr(layer, "set_lora", None))
    ]
    top = model.layers if isinstance(model, keras.Model) else []
    own = {id(layer) for layer in top if isinstance(layer, LoRAWrapper)}
    held = {id(w) for owner in owners for w in adapters(owner)}
    stray = [w.name for w in wrappers if id(w) not in own | held]
    if stray:
        raise ValueError(
            f"Model {model.name!r} holds adapters that can be merged only by rebuilding the "
            f"model that holds them ({stray[:4]}): call merge_lora on that model. "
            f"Received: model={model.name!r}"
        )
    for wrapper in wrappers:
        wrapper.merge()
    for owner in owners:
        owner.set_lora(None)
    merged = remove_adapters(model) if own else model
    for inner in _in_order(merged):
        if isinstance(inner, keras.Model):
            # A traced predict or evaluate function would still run the adapted graph.
            inner.make_predict_function(force=True)
            inner.make_test_function(force=True)
    return merged


def save_adapters(model, path):
    """Writes the LoRA adapters of `model`, and nothing else, to the `.npz` file `path`.

    The file holds each adapted layer's factors (keyed by layer name), its
    rank and alpha, and a fingerprint of its frozen base kernels; it is a few
    hundred kilobytes where the model is megabytes. `load_adapters` puts them
    back onto a model with the same base. The write is atomic: a temporary
    file beside `path`, renamed over it.

    Args:
        model: a model or layer holding adapters (`FeatureExtractor(lora=...)`).
        path: the file to write (conventionally ending in `.npz`).

    Returns:
        The names of the adapted layers saved.

    Example:

    ```python
    inputs = keras.Input((8, 8, 3))
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    adapted = kerastl.freeze.apply_lora(backbone, kerastl.freeze.LoRA(rank=2))
    print(kerastl.freeze.save_adapters(adapted, "adapters.npz"))  # ['conv']
    print(kerastl.freeze.load_adapters(adapted, "adapters.npz"))  # ['conv']
    ```
    """
    wrappers = adapters(model)
    path = _check_path(path)
    if not wrappers:
        raise ValueError(
            f"Model {model.name!r} has no LoRA adapters to save. Received: model={model.name!r}"
        )
    arrays = {}
    header = {"format": ADAPTERS_FORMAT, "version": 1, "adapters": {}}
    for wrapper in wrappers:
        header["adapters"][wrapper.name] = _describe(wrapper)
        for variable in wrapper.adapter_weights:
            value = ops.convert_to_numpy(variable)
            arrays[f"{wrapper.name}/{variable.name}"] = np.asarray(value, dtype="float32")
    arrays[_HEADER] = np.array(json.dumps(header))
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory to save into does not exist: {directory}. Received: path={path!r}"
        )
    fd, tmp = tempfile.mkstemp(prefix=".kerastl-adapters-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return [w.name for w in wrappers]


def load_adapters(model, path):
    """Loads adapters written by `save_adapters` into the adapters of `model`.

    `model` must have adapters on the same layers, of the same shapes, rank
    and alpha (build it with the same `LoRA` policy); anything else raises
    `ValueError` before any weight changes. The base kernels are not in the
    file: a `UserWarning` says when they differ from those the adapters were
    trained on.

    Args:
        model: a model or layer holding adapters.
        path: a file written by `save_adapters`.

    Returns:
        The names of the adapted layers loaded.
    """
    wrappers = adapters(model)
    path = _check_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No adapters file at this path. Received: path={path!r}")
    header, arrays = _read_adapters(path)
    if not wrappers:
        raise ValueError(
            f"Model {model.name!r} has no LoRA adapters to load into (build it with the "
            f"same LoRA policy first). Received: model={model.name!r}"
        )
    stored = header["adapters"]
    mine = {w.name: w for w in wrappers}
    missing, extra = sorted(set(mine) - set(stored)), sorted(set(stored) - set(mine))
    if missing or extra:
        raise ValueError(
            f"The adapters in the file do not match those of model {model.name!r}: "
            f"not in the file: {missing[:6]}, not in the model: {extra[:6]}. Build the "
            f"model with the LoRA policy the adapters were trained with. Received: path={path!r}"
        )
    values = []
    drifted = []
    for name, wrapper in mine.items():
        theirs, ours = stored[name], _describe(wrapper)
        for key in ("layer", "rank", "alpha"):
            if theirs.get(key) != ours[key]:
                raise ValueError(
                    f"The adapter of layer {name!r} in the file has {key}={theirs.get(key)!r}; "
                    f"the model's has {key}={ours[key]!r}. Received: path={path!r}"
                )
        for variable in wrapper.adapter_weights:
            key = f"{name}/{variable.name}"
            value = arrays.get(key)
            if value is None or tuple(value.shape) != tuple(variable.shape):
                got = None if value is None else tuple(value.shape)
                raise ValueError(
                    f"The file's adapter {key!r} has shape {got}; the model's has "
                    f"{tuple(variable.shape)}. Received: path={path!r}"
                )
            values.append((variable, value))
        if not math.isclose(theirs["base_norm"], ours["base_norm"], rel_tol=1e-5):
            drifted.append(name)
    for variable, value in values:
        variable.assign(value)
    if drifted:
        warnings.warn(
            f"The base kernels of {drifted[:4]} differ from those the adapters in {path!r} "
            "were saved with: the adapters were trained on another base model, and the "
            "outputs will differ from those the adapters were trained for.",
            UserWarning,
            stacklevel=2,
        )
    return list(mine)


# --- helpers ---------------------------------------------------------------------


def _in_order(layer, seen=None):
    """`layer` and every layer inside it, depth first, a model's layers in graph order."""
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer
    children = (
        layer.layers
        if isinstance(layer, keras.Model)
        else flatten_layers(layer, include_self=False, recursive=False)
    )
    for child in children:
        yield from _in_order(child, seen)


def _check_adaptable(layer, policy):
    quantized = getattr(layer.dtype_policy, "quantization_mode", None)
    if quantized or getattr(layer, "lora_enabled", False):
        what = f"is quantized ({quantized})" if quantized else "has Keras's own LoRA enabled"
        raise ValueError(
            f"Layer {layer.name!r} {what}: kerastl's LoRA cannot adapt it. Received: "
            f"lora={policy!r}"
        )


def _matrix_shape(layer, name):
    shape = tuple(getattr(layer, name).shape)
    if (type(layer), name) in _DEPTHWISE:
        return math.prod(shape[:-2]), shape[-2] * shape[-1]
    return math.prod(shape[:-1]), shape[-1]


def _check_model(model):
    try:
        graph = isinstance(model, keras.Model) and bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):  # a subclassed model has no graph to rebuild
        graph = False
    if not graph:
        raise TypeError(f"`model` must be a functional keras.Model. Received: model={model!r}")


def _check_path(path):
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"`path` must be a file path (str or PathLike). Received: path={path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"`path` is a directory. Received: path={path!r}")
    return path


def _describe(wrapper):
    norm = sum(
        float(
            np.sum(np.square(ops.convert_to_numpy(getattr(wrapper.layer, name)), dtype="float64"))
        )
        for name in wrapper.kernel_names
    )
    return {
        "layer": type(wrapper.layer).__name__,
        "rank": wrapper.rank,
        "alpha": wrapper.alpha,
        "base_norm": math.sqrt(norm),
    }


def _read_adapters(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"The file is not an adapters file written by save_adapters ({type(e).__name__}). "
            f"Received: path={path!r}"
        ) from None
    try:
        header = json.loads(str(arrays.pop(_HEADER)))
    except (KeyError, ValueError):
        header = None
    if (
        not isinstance(header, dict)
        or header.get("format") != ADAPTERS_FORMAT
        or not isinstance(header.get("adapters"), dict)
    ):
        raise ValueError(
            f"The file is not an adapters file written by save_adapters (no kerastl LoRA "
            f"header). Received: path={path!r}"
        )
    return header, arrays
