"""What trains, layer by layer: a table to read before calling `fit`."""

import keras
import numpy as np

from kerastl._keras_private import flatten_layers
from kerastl.freeze.policies import is_batchnorm
from kerastl.layers.feature_extractor import FeatureExtractor
from kerastl.layers.lora import LoRAWrapper

_COLUMNS = (
    ("name", "Layer", "<"),
    ("type", "Type", "<"),
    ("trainable", "Trains", "<"),
    ("bn", "BatchNorm", "<"),
    ("lr_multiplier", "LR x", ">"),
    ("params", "Params", ">"),
    ("trainable_params", "Trainable", ">"),
)


def explain(model_or_layer, optimizer=None, print_fn=print):
    """Per-layer trainable state, BatchNorm mode, learning-rate multiplier and parameters.

    Containers (models, `FeatureExtractor`s) are opened: each row is a layer
    that holds weights or does work, named by its path (`"feature_extractor/
    block_16_project"`). A layer with LoRA adapters (`kerastl.freeze.LoRA`)
    has two rows: the layer itself (its frozen weights) and its adapters,
    named `"<layer>/lora"`, of type `"LoRA(rank=r)"`. Totals are those of
    `model.summary()`; the table also gives the trainable fraction.

    Args:
        model_or_layer: a model or layer.
        optimizer: whose learning-rate multipliers to show; defaults to the
            model's compiled optimizer. A `kerastl.optimizers.PerLayerLR`
            gives per-layer multipliers, any other optimizer 1.
        print_fn: called with the table; `None` prints nothing.

    Returns:
        A list of dicts, one per layer, with keys `name`, `type`, `trainable`,
        `bn` (`"frozen"`, `"affine"`, `"train"` or `None` for other layers),
        `lr_multiplier` (`None` when nothing in the layer trains; a tuple when
        the layer's variables differ), `params` and `trainable_params`.

    Example:

    ```python
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="dense")])
    rows = kerastl.explain(model, print_fn=None)
    print(rows[0]["name"], rows[0]["params"])  # dense 36
    ```
    """
    if not isinstance(model_or_layer, keras.layers.Layer):
        raise TypeError(
            f"`model_or_layer` must be a Keras model or layer. "
            f"Received: model_or_layer={model_or_layer!r}"
        )
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"`print_fn` must be callable or None. Received: print_fn={print_fn!r}")
    if optimizer is None:
        optimizer = getattr(model_or_layer, "optimizer", None)
    elif not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"`optimizer` must be a Keras optimizer or None. Received: optimizer={optimizer!r}"
        )
    rows = []
    seen = set()
    for path, layer, bn_mode in _walk(model_or_layer, [], None, seen, root=True):
        weights = _own_weights(layer)
        trainable_weights = [w for w in weights if _trains(w, layer)]
        trains = bool(trainable_weights) if weights else layer.trainable
        rows.append(
            {
                "name": path,
                "type": _type_name(layer),
                "trainable": trains,
                "bn": _bn_mode(layer, trains, bn_mode) if is_batchnorm(layer) else None,
                "lr_multiplier": _multiplier(optimizer, trainable_weights),
                "params": _count(weights),
                "trainable_params": _count(trainable_weights),
            }
        )
    if print_fn is not None:
        print_fn(format_table(rows, getattr(model_or_layer, "name", "")))
    return rows


def format_table(rows, title=""):
    """The rows of `explain` as a fixed-width text table with totals."""
    cells = [[_cell(row[key]) for key, _, _ in _COLUMNS] for row in rows]
    headers = [header for _, header, _ in _COLUMNS]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(
            f"{v:{align}{w}}" for v, w, (_, _, align) in zip(values, widths, _COLUMNS, strict=True)
        ).rstrip()

    rule = "-" * len(line(headers))
    total = sum(row["params"] for row in rows)
    trainable = sum(row["trainable_params"] for row in rows)
    out = [f"Trainability of {title!r}" if title else "Trainability", rule, line(headers), rule]
    out += [line(c) for c in cells]
    out += [
        rule,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,} ({_percent(trainable, total)} of the total)",
        f"Non-trainable params: {total - trainable:,}",
    ]
    return "\n".join(out)


# --- helpers ---------------------------------------------------------------------


def _walk(layer, path, bn_mode, seen, root=False):
    """Yields `(path, layer, extractor bn mode)` for leaves and weight-owning containers."""
    if id(layer) in seen:
        return
    seen.add(id(layer))
    if isinstance(layer, FeatureExtractor):
        bn_mode = layer.bn
    children = [
        child
        for child in flatten_layers(layer, include_self=False, recursive=False)
        if not isinstance(child, keras.layers.InputLayer)
    ]
    if isinstance(layer, LoRAWrapper):
        # The wrapped layer under its own name, then its adapters.
        name = "/".join(path + [layer.name])
        seen.add(id(layer.layer))
        yield name, layer.layer, bn_mode
        yield f"{name}/lora", layer, bn_mode
        return
    if not children or _own_weights(layer):
        yield "/".join(path + [layer.name]), layer, bn_mode
    inner_path = path if root else path + [layer.name]
    for child in children:
        # An extractor's backbone model adds nothing to its layers' names.
        transparent = isinstance(layer, FeatureExtractor) and child is layer.backbone
        yield from _walk(child, inner_path, bn_mode, seen, root=transparent)


def _type_name(layer):
    if isinstance(layer, LoRAWrapper):
        return f"LoRA(rank={layer.rank})"
    return type(layer).__name__


def _percent(part, total):
    return f"{100 * part / total:.3g}%" if total else "0%"


def _own_weights(layer):
    """Weights created by `layer` itself, not by its sublayers."""
    children = flatten_layers(layer, include_self=False, recursive=True)
    inner = {id(w) for child in children for w in child.weights}
    return [w for w in layer.weights if id(w) not in inner]


def _trains(weight, layer):
    return any(weight is w for w in layer.trainable_weights)


def _bn_mode(layer, trains, extractor_bn):
    if not trains:
        return "frozen"
    # Inside a FeatureExtractor the statistics move only under bn="train".
    return extractor_bn or "train"


def _multiplier(optimizer, weights):
    if not weights:
        return None
    if not hasattr(optimizer, "multiplier"):
        return 1.0
    values = sorted({float(optimizer.multiplier(w)) for w in weights})
    return values[0] if len(values) == 1 else tuple(values)


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, tuple):
        return "..".join(f"{v:.3g}" for v in (value[0], value[-1]))
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
