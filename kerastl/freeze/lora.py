"""The LoRA policy: low-rank adapters on a backbone's convolutions and dense layers.

`LoRA` is a pure policy object: rank, alpha and which layers. The layer that
carries the adapters and the model surgery (`LoRAWrapper`, `apply_lora`,
`merge_lora`) live in `kerastl.layers`; `kerastl.saving.save_adapters` /
`load_adapters` keep the adapters alone in a small file.

Keras's own `enable_lora` covers `Dense`, `EinsumDense`, `Embedding` and the
plain convolutions; the depthwise and separable convolutions that MobileNet,
EfficientNet and Xception are built of are adapted here too. A policy that
adapts no layer is an error, never a silent no-op.
"""

import difflib
import re
from collections.abc import Sequence

import keras

from kerastl._checks import check_positive_int, check_positive_number
from kerastl.backbones.registry import split_blocks

# The layer classes LoRA adapts (exact classes: a subclass may compute differently) and
# the kernels it adapts in each. A depthwise kernel `(kh, kw, channels, multiplier)` is
# adapted as the matrix `(kh * kw, channels * multiplier)`: one column per output
# channel, so rank 1 already gives each channel its own (scaled) spatial pattern and
# ranks up to `kh * kw` are meaningful. Every other kernel `(..., out)` is the matrix
# `(prod(...), out)` (a Conv2D's `(kh * kw * in / groups, out)`, as Keras's Conv LoRA).
KERNELS = {
    keras.layers.Dense: ("kernel",),
    keras.layers.Conv2D: ("kernel",),
    keras.layers.DepthwiseConv2D: ("kernel",),
    keras.layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
}
DEPTHWISE = {
    (keras.layers.DepthwiseConv2D, "kernel"),
    (keras.layers.SeparableConv2D, "depthwise_kernel"),
}
SUPPORTED_LAYERS = tuple(cls.__name__ for cls in KERNELS)


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
    adapted = kerastl.layers.apply_lora(backbone, kerastl.freeze.LoRA(rank=2))
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
        wrapped = [layer.name for layer in layers if is_adapter(layer)]
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
            if type(layer) in KERNELS:
                check_adaptable(layer, self)
        adapted = [layer.name for layer in chosen if type(layer) in KERNELS]
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


def is_adapter(layer):
    """Whether `layer` is a `kerastl.layers.LoRAWrapper` (an adapted layer)."""
    return getattr(layer, "is_lora_adapter", False) is True


def check_adaptable(layer, policy):
    quantized = getattr(layer.dtype_policy, "quantization_mode", None)
    if quantized or getattr(layer, "lora_enabled", False):
        what = f"is quantized ({quantized})" if quantized else "has Keras's own LoRA enabled"
        raise ValueError(
            f"Layer {layer.name!r} {what}: kerastl's LoRA cannot adapt it. Received: "
            f"lora={policy!r}"
        )
