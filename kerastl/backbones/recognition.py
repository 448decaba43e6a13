"""Recognising a registry architecture in a model someone else built or saved.

A saved classifier whose body is `keras.applications.MobileNetV2` is, to
kerastl, the registry's `mobilenet_v2` once its layers say so: it then gets
that entry's blocks (block-wise freezing, layer decay), feature keys (`cut="S16"`)
and input recipe (the preprocessing `build_model` adds and the metadata
records).

Two models have the same architecture when their layers have the same classes
and names, in order. Keras numbers the names it generates (`activation_19`),
and the number depends on what the process built before, so a trailing `_<n>`
is not compared. The registry side is built once per process, with random
weights, and only its layer signature is kept.
"""

import difflib
import re

import keras

from kerastl.backbones.registry import get_backbone, list_backbones

_SIGNATURES: dict[str, list] = {}


def layer_signature(model):
    """`[(class name, name without a generated `_<n>` suffix)]` of `model`'s layers."""
    return [
        (type(layer).__name__, re.sub(r"_\d+$", "", layer.name))
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]


def registry_signature(spec):
    """The layer signature of the registry backbone `spec`, built once per process."""
    if spec.name not in _SIGNATURES:
        size = spec.default_size
        model = spec.build((size, size, 3), weights=None)
        _SIGNATURES[spec.name] = layer_signature(model)
        del model
    return _SIGNATURES[spec.name]


def match_length(model, spec):
    """How many leading layers of `model` are the registry backbone `spec`; 0 if they are not.

    Equal to the number of layers of `model` for the bare backbone; smaller for a
    model that adds layers after it (a classifier top, a pooling).
    """
    if not spec.supports():
        return 0
    mine = layer_signature(model)
    try:
        theirs = registry_signature(spec)
    except Exception:  # noqa: BLE001 - a constructor that cannot build here matches nothing
        return 0
    if len(theirs) <= len(mine) and mine[: len(theirs)] == theirs:
        return len(theirs)
    return 0


def recognise(model):
    """The registry entry whose architecture `model` has (bare or with a top), or `None`.

    Only entries whose feature layers all appear in `model` are built and
    compared, the one whose name is closest to the model's first.
    """
    names = {layer.name for layer in model.layers}
    candidates = [
        get_backbone(name)
        for name in list_backbones()
        if get_backbone(name).feature_layers
        and set(get_backbone(name).feature_layers.values()) <= names
    ]
    own = _normalise(model.name)
    candidates.sort(
        key=lambda spec: -difflib.SequenceMatcher(None, own, _normalise(spec.name)).ratio()
    )
    for spec in candidates:
        if match_length(model, spec):
            return spec
    return None


def check_architecture(model, spec):
    """The number of leading layers of `model` that are `spec`; a clear error if none."""
    length = match_length(model, spec)
    if length:
        return length
    if not spec.supports():
        raise ValueError(
            f"Backbone {spec.name!r} does not run on the {keras.config.backend()!r} backend. "
            f"Received: arch={spec.name!r}"
        )
    mine, theirs = layer_signature(model), registry_signature(spec)
    at = next(
        (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
        min(len(mine), len(theirs)),
    )
    found = f"{mine[at][0]} {mine[at][1]!r}" if at < len(mine) else "the end of the model"
    wanted = f"{theirs[at][0]} {theirs[at][1]!r}" if at < len(theirs) else "the end"
    raise ValueError(
        f"Model {model.name!r} is not the registry's {spec.name!r}: its layer {at} is "
        f"{found} where {spec.name!r} has {wanted}. Leave `arch` unset to use the model "
        f"with one block per weighted layer, or name the architecture it has. "
        f"Received: arch={spec.name!r}"
    )


def _normalise(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())
