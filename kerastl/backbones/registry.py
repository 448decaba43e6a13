"""The backbone registry: one entry per named backbone.

An entry knows what a user must otherwise remember about a pretrained network:
how to build it, the input sizes it accepts, the input recipe its weights were
trained with, where its blocks begin and end (for block-wise freezing) and which
layers carry its multi-scale features.
"""

import dataclasses
import difflib
import re
from collections.abc import Callable, Sequence

import keras

from kerastl._checks import check_bool
from kerastl.backbones.recipes import PREPROCESSING_MODES

_REGISTRY: dict[str, "BackboneSpec"] = {}
BACKENDS = ("tensorflow", "jax", "torch")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What kerastl knows about one backbone.

    Args:
        name: registry name, snake_case (`"mobilenet_v2"`).
        constructor: callable with the `keras.applications` signature
            (`include_top`, `weights`, `input_shape`, `**kwargs`) returning a
            functional `keras.Model`.
        default_size: input height/width the published weights were trained at.
        min_size: smallest input height/width the architecture accepts.
        preprocessing: input recipe the weights expect, one of `"caffe"`
            (BGR, ImageNet mean subtracted), `"tf"` (scaled to [-1, 1]),
            `"torch"` (scaled to [0, 1], ImageNet mean/std) or `"none"` (the
            model rescales raw 0..255 inputs itself).
        block_pattern: regex searched in each layer name whose first group
            names the block the layer belongs to. Layers that match nothing join
            the current block (the "stem" before the first one).
        block_end_pattern: alternative to `block_pattern` for networks whose
            inner layers have generated names: a layer matching it ends a block.
        feature_layers: stride key (`"S4"`, `"S8"` ...) to the name of the last
            layer at that stride, shallow to deep.
        backends: the Keras backends the constructor works on (Keras itself
            refuses some, e.g. NASNetMobile on torch).
    """

    name: str
    constructor: Callable[..., keras.Model]
    default_size: int
    min_size: int
    preprocessing: str
    block_pattern: str | None = None
    block_end_pattern: str | None = None
    feature_layers: dict[str, str] = dataclasses.field(default_factory=dict)
    backends: tuple[str, ...] = BACKENDS

    def __post_init__(self):
        if not isinstance(self.name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(
                f"A backbone name must be snake_case (letters, digits, `_`). "
                f"Received: name={self.name!r}"
            )
        if not callable(self.constructor):
            raise ValueError(
                f"`constructor` must be callable. Received: constructor={self.constructor!r}"
            )
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(
                f"`preprocessing` must be one of {PREPROCESSING_MODES}. "
                f"Received: preprocessing={self.preprocessing!r}"
            )
        for arg in ("default_size", "min_size"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` must be a positive int. Received: {arg}={value!r}")
        if self.default_size < self.min_size:
            raise ValueError(
                f"`default_size` must be at least `min_size`. Received: "
                f"default_size={self.default_size}, min_size={self.min_size}"
            )
        _check_block_patterns(self.block_pattern, self.block_end_pattern)
        if not self.backends or not set(self.backends) <= set(BACKENDS):
            raise ValueError(
                f"`backends` must be a non-empty subset of {BACKENDS}. "
                f"Received: backends={self.backends!r}"
            )

    def supports(self, backend=None):
        """Whether the constructor works on `backend` (default: the current one)."""
        return (backend or keras.config.backend()) in self.backends

    def build(self, input_shape=None, weights=None, **kwargs):
        """Calls the constructor without the classifier top."""
        if not self.supports():
            raise ValueError(
                f"Backbone {self.name!r} does not run on the "
                f"{keras.config.backend()!r} backend; it runs on {list(self.backends)}. "
                f"Set KERAS_BACKEND to one of those before importing keras, or pick "
                f"another backbone (`kerastl.backbones.list_backbones()`)."
            )
        if input_shape is None:
            input_shape = (self.default_size, self.default_size, 3)
        return self.constructor(
            include_top=False, weights=weights, input_shape=tuple(input_shape), **kwargs
        )

    def blocks(self, model):
        """The model's layers grouped into blocks, in order: `[(block, [names])]`."""
        return split_blocks(
            model, block_pattern=self.block_pattern, block_end_pattern=self.block_end_pattern
        )


def split_blocks(model, block_pattern=None, block_end_pattern=None):
    """Groups `model.layers` into consecutive blocks.

    With neither pattern every layer that holds weights starts a block (with
    the weightless and normalisation layers after it, so a convolution and its
    BatchNorm train together), and block-aware code still works on any model.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    _check_block_patterns(block_pattern, block_end_pattern)
    blocks: list[tuple[str, list[str]]] = []
    current = None
    end_next = False
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if block_pattern is not None:
            match = re.search(block_pattern, layer.name)
            block = match.group(1) if match else (current or "stem")
        elif block_end_pattern is not None:
            block = f"block_{len(blocks)}" if (current is None or end_next) else current
            end_next = re.search(block_end_pattern, layer.name) is not None
        else:
            starts = layer.weights and current is not None and not _is_normalization(layer)
            block = layer.name if (current is None or starts) else current
        if block != current:
            blocks.append((block, []))
            current = block
        blocks[-1][1].append(layer.name)
    return blocks


def register_backbone(
    name: str,
    constructor: Callable[..., keras.Model],
    *,
    default_size: int,
    min_size: int,
    preprocessing: str,
    block_pattern: str | None = None,
    block_end_pattern: str | None = None,
    feature_layers: dict[str, str] | None = None,
    backends: Sequence[str] = BACKENDS,
    overwrite: bool = False,
) -> BackboneSpec:
    """Adds a backbone to the registry and returns its `BackboneSpec`.

    Example:

    ```python
    def tiny_cnn(include_top=False, weights=None, input_shape=(32, 32, 3)):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, strides=2, name="stage1_conv")(inputs)
        return keras.Model(inputs, x, name="tiny_cnn")

    kerastl.backbones.register_backbone(
        "tiny_cnn", tiny_cnn, default_size=32, min_size=8, preprocessing="tf",
        block_pattern=r"^(stage\\d+)_", feature_layers={"S2": "stage1_conv"},
    )
    ```
    """
    if feature_layers is not None and not (
        isinstance(feature_layers, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in feature_layers.items())
    ):
        raise TypeError(
            "`feature_layers` must be a dict {feature key: layer name}. "
            f"Received: feature_layers={feature_layers!r}"
        )
    if not isinstance(backends, (list, tuple)):
        raise ValueError(
            f"`backends` must be a non-empty subset of {BACKENDS}. Received: backends={backends!r}"
        )
    check_bool(overwrite, "overwrite")
    spec = BackboneSpec(
        name=name,
        constructor=constructor,
        default_size=default_size,
        min_size=min_size,
        preprocessing=preprocessing,
        block_pattern=block_pattern,
        block_end_pattern=block_end_pattern,
        feature_layers=dict(feature_layers or {}),
        backends=tuple(backends),
    )
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A backbone named {name!r} is registered already; pass overwrite=True "
            f"to replace it. Received: name={name!r}"
        )
    _REGISTRY[name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """The `BackboneSpec` registered under `name`; unknown names list close matches."""
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string. Received: name={name!r}")
    spec = _REGISTRY.get(name)
    if spec is None:
        key = name.lower().replace("-", "_")
        spec = _REGISTRY.get(key)
    if spec is None:
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"Unknown backbone.{hint} `kerastl.backbones.list_backbones()` lists all "
            f"{len(_REGISTRY)}. Received: backbone={name!r}"
        )
    return spec


def list_backbones(pattern: str | None = None) -> list[str]:
    """Sorted registry names, optionally only those containing `pattern`."""
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"`pattern` must be a string or None. Received: pattern={pattern!r}")
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if pattern in n]
    return names


def _is_normalization(layer):
    return isinstance(
        layer,
        (
            keras.layers.BatchNormalization,
            keras.layers.LayerNormalization,
            keras.layers.GroupNormalization,
        ),
    )


def _check_block_patterns(block_pattern, block_end_pattern):
    for arg, pattern in (
        ("block_pattern", block_pattern),
        ("block_end_pattern", block_end_pattern),
    ):
        if pattern is None:
            continue
        if not isinstance(pattern, str):
            raise ValueError(f"`{arg}` must be a regex string. Received: {arg}={pattern!r}")
        try:
            groups = re.compile(pattern).groups
        except re.error as e:
            raise ValueError(
                f"`{arg}` is not a valid regex ({e}). Received: {arg}={pattern!r}"
            ) from None
        if arg == "block_pattern" and groups < 1:
            raise ValueError(
                "`block_pattern` needs a group that names the block, e.g. r'^(block\\d+)_'. "
                f"Received: block_pattern={pattern!r}"
            )
    if block_pattern is not None and block_end_pattern is not None:
        raise ValueError(
            "Give `block_pattern` or `block_end_pattern`, not both. "
            f"Received: block_pattern={block_pattern!r}, block_end_pattern={block_end_pattern!r}"
        )
