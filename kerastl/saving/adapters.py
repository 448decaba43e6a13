"""LoRA adapters alone in a small file: `save_adapters` / `load_adapters`.

The file format is `kerastl.files.adapters`; the adapters themselves are the
`kerastl.layers.LoRAWrapper`s of a model.
"""

import math
import warnings

import numpy as np
from keras import ops

from kerastl.files.adapters import check_path, read_adapters, write_adapters
from kerastl.layers.lora import adapters


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
    adapted = kerastl.layers.apply_lora(backbone, kerastl.freeze.LoRA(rank=2))
    print(kerastl.saving.save_adapters(adapted, "adapters.npz"))  # ['conv']
    print(kerastl.saving.load_adapters(adapted, "adapters.npz"))  # ['conv']
    ```
    """
    wrappers = adapters(model)
    path = check_path(path)
    if not wrappers:
        raise ValueError(
            f"Model {model.name!r} has no LoRA adapters to save. Received: model={model.name!r}"
        )
    arrays, described = {}, {}
    for wrapper in wrappers:
        described[wrapper.name] = _describe(wrapper)
        for variable in wrapper.adapter_weights:
            value = ops.convert_to_numpy(variable)
            arrays[f"{wrapper.name}/{variable.name}"] = np.asarray(value, dtype="float32")
    write_adapters(path, described, arrays)
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
    path = check_path(path)
    header, arrays = read_adapters(path)
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
