"""Low-rank adapters (LoRA) in a model: the adapted layer and the model surgery.

`kerastl.freeze.LoRA` is the policy: rank, alpha and which layers. `apply_lora`
rebuilds a functional backbone with each chosen layer inside a `LoRAWrapper`,
which keeps the layer itself (its weights are shared, never copied, and never
train) and adds two small factors `A` and `B`: the layer then computes with
the kernel `W + (alpha / rank) * reshape(A @ B)`. `B` starts at zero, so a
model predicts exactly what it predicted before; training moves only `A` and `B`.

`FeatureExtractor(lora=...)` (and its `set_lora`) is the usual way in;
`merge_lora` folds the adapters into the kernels for serving;
`kerastl.saving.save_adapters` / `load_adapters` keep the adapters alone in a
small file.
"""

import math

import keras
import numpy as np
from keras import ops

from kerastl._keras_private import flatten_layers
from kerastl.freeze.lora import (
    DEPTHWISE,
    KERNELS,
    SUPPORTED_LAYERS,
    LoRA,
    check_adaptable,
    get_lora,
)


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
    wrapper = kerastl.layers.LoRAWrapper(keras.layers.DepthwiseConv2D(3), rank=2)
    y = wrapper(np.ones((1, 8, 8, 4), "float32"))
    print(tuple(y.shape), [tuple(w.shape) for w in wrapper.adapter_weights])
    # (1, 6, 6, 4) [(9, 2), (2, 4)]
    ```
    """

    is_lora_adapter = True  # `kerastl.freeze.lora.is_adapter`: the policy knows adapted layers

    def __init__(self, layer, rank: int = 4, alpha: float | None = None, **kwargs):
        if type(layer) not in KERNELS:
            raise TypeError(
                f"`layer` must be one of {list(SUPPORTED_LAYERS)} (exactly: a subclass may "
                f"compute differently). Received: layer={layer!r}"
            )
        policy = LoRA(rank=rank, alpha=alpha)  # checks rank and alpha
        check_adaptable(layer, policy)
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer = layer
        self.rank = policy.rank
        self.alpha = policy.alpha
        self.scale = policy.scale
        self.kernel_names = KERNELS[type(layer)]

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
    found = [layer for layer in in_order(model) if isinstance(layer, LoRAWrapper)]
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
    adapted = kerastl.layers.apply_lora(backbone, kerastl.freeze.LoRA(rank=2))
    merged = kerastl.layers.merge_lora(adapted)
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
        for layer in in_order(model)
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
    for inner in in_order(merged):
        if isinstance(inner, keras.Model):
            # A traced predict or evaluate function would still run the adapted graph.
            inner.make_predict_function(force=True)
            inner.make_test_function(force=True)
    return merged


# --- helpers ---------------------------------------------------------------------


def in_order(layer, seen=None):
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
        yield from in_order(child, seen)


def _matrix_shape(layer, name):
    shape = tuple(getattr(layer, name).shape)
    if (type(layer), name) in DEPTHWISE:
        return math.prod(shape[:-2]), shape[-2] * shape[-1]
    return math.prod(shape[:-1]), shape[-1]


def _check_model(model):
    try:
        graph = isinstance(model, keras.Model) and bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):  # a subclassed model has no graph to rebuild
        graph = False
    if not graph:
        raise TypeError(f"`model` must be a functional keras.Model. Received: model={model!r}")
