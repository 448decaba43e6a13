"""Restoring pretrained parameters by layer name, with a report of what happened.

A backbone takes a whole classifier file as `weights=` through here, and
`kerastl.load_weights_by_name` is its public face.
"""

import dataclasses
import os
import shutil
import tempfile

import h5py
import keras
import numpy as np

from kerastl._checks import check_bool
from kerastl._keras_private import flatten_layers
from kerastl.files.model_files import check_model_path, is_hdf5, load_model_file


@dataclasses.dataclass
class WeightsReport:
    """What `load_weights_by_name` did.

    Attributes:
        loaded: names of the target layers whose weights were set.
        skipped: name -> `{"source": [shapes], "target": [shapes]}` for layers
            found on both sides with different weight shapes (left as they were).
        missing: target layers with weights that the source does not have.
        unexpected: source layers that match no target layer.
        matched_by: `"name"` (layer names), or `"path"` for a Keras 3
            `.weights.h5` file, which stores no layer names: its entries are
            named by the layer's class and position (`layers/dense_1/vars`).
    """

    loaded: list
    skipped: dict
    missing: list
    unexpected: list
    matched_by: str = "name"

    def __str__(self):
        skipped = ", ".join(
            f"{name} {_shapes(s['source'])} -> {_shapes(s['target'])}"
            for name, s in self.skipped.items()
        )
        return (
            f"loaded {len(self.loaded)} layers by {self.matched_by}; "
            f"skipped {len(self.skipped)} (shape mismatch{': ' + skipped if skipped else ''}); "
            f"missing {len(self.missing)}; unexpected {len(self.unexpected)}"
        )


def load_weights_by_name(
    target: keras.layers.Layer,
    source: keras.layers.Layer | str | os.PathLike[str],
    skip_mismatch: bool = True,
    safe_mode: bool = True,
) -> WeightsReport:
    """Copies weights from `source` into the layers of `target` that have the same name.

    Like Keras 2's `load_weights(by_name=True)` and Hugging Face's
    `ignore_mismatched_sizes`: layers match by name at any depth (the backbone
    inside a `FeatureExtractor` included), a layer whose weight shapes differ is
    skipped (e.g. a classifier head with another number of classes) and
    everything is reported.

    Args:
        target: the `keras.Model` or layer (e.g. a `kerastl.FeatureExtractor`)
            to fill.
        source: a `keras.Model` or layer; a `.keras` or legacy full-model `.h5`
            file; a Keras 2 / tf.keras weights `.h5` file; or a Keras 3
            `.weights.h5` file (matched by position path, since it stores no
            layer names; the longest common path suffix is used, so the weights
            of a whole classifier load into its bare backbone and back).
        skip_mismatch: `False` raises on the first shape mismatch instead, with
            nothing assigned.
        safe_mode: for `.keras` and `.h5` model files, refuse files that hold
            Python code.

    Returns:
        A `WeightsReport`.
    """
    if not isinstance(target, keras.layers.Layer):
        raise TypeError(f"`target` must be a Keras model or layer. Received: target={target!r}")
    check_bool(skip_mismatch, "skip_mismatch")
    check_bool(safe_mode, "safe_mode")
    if isinstance(source, keras.layers.Layer):
        return _by_name(target, _layer_weights(source), skip_mismatch, source, "source")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "`source` must be a Keras model or layer, or the path of a .keras, .h5 or "
            f".weights.h5 file. Received: source={source!r}"
        )
    return load_file_by_name(target, source, skip_mismatch, safe_mode, arg="source")


def load_file_by_name(target, path, skip_mismatch=True, safe_mode=True, arg="source"):
    """`load_weights_by_name` from a file, with errors that name the caller's argument `arg`."""
    path = check_model_path(path, arg=arg)
    if is_hdf5(path):
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise ValueError(
                f"The HDF5 file cannot be read (truncated or corrupted: {e}). "
                f"Received: {arg}={path!r}"
            ) from None
        with f:
            if "model_config" not in f.attrs and "layer_names" not in f.attrs:
                return _by_path(target, path, skip_mismatch, arg)
            group = f.get("model_weights", f)
            weights = _legacy_h5_weights(group)
        return _by_name(target, weights, skip_mismatch, path, arg)
    model = load_model_file(path, safe_mode, arg=arg)
    return _by_name(target, _layer_weights(model), skip_mismatch, path, arg)


# --- matching by name ---------------------------------------------------------------


def _layers(layer):
    # Every depth: a FeatureExtractor's backbone layers are matched one by one.
    return flatten_layers(layer, include_self=True, recursive=True)


def _own_variables(layer):
    inner = {
        id(w)
        for sub in flatten_layers(layer, include_self=False, recursive=True)
        for w in sub.weights
    }
    return [w for w in layer.weights if id(w) not in inner]


def _layer_weights(model):
    """name -> list of variables, first occurrence of a name wins."""
    out = {}
    for layer in _layers(model):
        own = _own_variables(layer)
        if own:
            out.setdefault(layer.name, own)
    return out


def _legacy_h5_weights(group):
    """name -> arrays from the Keras 2 layout (`layer_names`, `weight_names` attributes).

    A nested model is one group whose weight names carry the inner layer
    (`mobilenetv2_1.00_160/Conv1/kernel:0`): weights go to that inner name.
    """
    out = {}
    for layer_name in _names(group.attrs.get("layer_names", [])):
        g = group[layer_name]
        for weight_name in _names(g.attrs.get("weight_names", [])):
            parts = weight_name.split("/")
            owner = parts[-2] if len(parts) >= 2 else layer_name
            out.setdefault(owner, []).append(np.asarray(g[weight_name]))
    return out


def _names(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _by_name(target, source_weights, skip_mismatch, source, arg):
    targets = {}
    for layer in _layers(target):
        own = _own_variables(layer)
        if own:
            targets.setdefault(layer.name, []).append(own)
    loaded, skipped, missing, assign = [], {}, [], []
    for name, groups in targets.items():
        if name not in source_weights:
            missing.append(name)
            continue
        values = source_weights[name]
        source_shapes = [tuple(v.shape) for v in values]
        for variables in groups:
            target_shapes = [tuple(v.shape) for v in variables]
            if source_shapes != target_shapes:
                skipped[name] = {"source": source_shapes, "target": target_shapes}
                continue
            assign.extend(zip(variables, values, strict=True))
            if name not in loaded:
                loaded.append(name)
    unexpected = [name for name in source_weights if name not in targets]
    report = WeightsReport(loaded, skipped, missing, unexpected, "name")
    _check_report(report, skip_mismatch, source, list(targets), list(source_weights), arg)
    for variable, value in assign:
        # A Variable converts through its backend tensor: np.asarray on it warns (numpy 2).
        value = value.value if isinstance(value, keras.Variable) else value
        variable.assign(keras.ops.convert_to_numpy(value))
    return report


def _check_report(report, skip_mismatch, source, target_names, source_names, arg):
    if report.skipped and not skip_mismatch:
        name, shapes = next(iter(report.skipped.items()))
        raise ValueError(
            f"Layer {name!r} has weights of shapes {_shapes(shapes['source'])} in the "
            f"source but {_shapes(shapes['target'])} in the target; nothing was loaded. "
            f"Pass skip_mismatch=True to skip such layers. Received: {arg}={source!r}"
        )
    if not report.loaded:
        raise ValueError(
            f"No layer of the source matches a layer of the target by "
            f"{report.matched_by} with equal shapes (target: {target_names[:5]}..., "
            f"source: {source_names[:5]}...). Received: {arg}={source!r}"
        )


def _shapes(shapes):
    return "[" + ", ".join(str(tuple(s)) for s in shapes) + "]"


# --- matching by path (Keras 3 .weights.h5) -----------------------------------------


def _var_groups(f):
    """path -> list of datasets, for every group holding a layer's `vars`."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and name.endswith("/vars") and len(obj):
            keys = sorted(obj.keys(), key=int)
            out[name[: -len("/vars")]] = [obj[k] for k in keys]

    f.visititems(visit)
    return out


def _by_path(target, path, skip_mismatch, arg):
    model = (
        target.backbone
        if hasattr(target, "backbone") and not isinstance(target, keras.Model)
        else target
    )
    if not isinstance(model, keras.Model):
        raise TypeError(
            "A .weights.h5 file loads into a keras.Model (or a FeatureExtractor's "
            f"backbone). Received: target={target!r}"
        )
    work = tempfile.mkdtemp(prefix="kerastl-weights-")
    try:
        # The target's own file gives the exact paths Keras will read back.
        merged = os.path.join(work, "merged.weights.h5")
        model.save_weights(merged)
        with h5py.File(merged, "r+") as out, h5py.File(path, "r") as src:
            mine, theirs = _var_groups(out), _var_groups(src)
            to_source = _align(list(mine), list(theirs))
            loaded, skipped, missing = [], {}, []
            for name, datasets in mine.items():
                other = to_source.get(name)
                if other is None:
                    missing.append(name)
                    continue
                target_shapes = [tuple(d.shape) for d in datasets]
                source_shapes = [tuple(d.shape) for d in theirs[other]]
                if target_shapes != source_shapes:
                    skipped[name] = {"source": source_shapes, "target": target_shapes}
                    continue
                loaded.append(name)
            used = {to_source[n] for n in loaded} | {to_source[n] for n in skipped}
            unexpected = [n for n in theirs if n not in used]
            report = WeightsReport(loaded, skipped, missing, unexpected, "path")
            _check_report(report, skip_mismatch, path, list(mine), list(theirs), arg)
            for name in loaded:
                for d, s in zip(mine[name], theirs[to_source[name]], strict=True):
                    d[...] = s[()]
        model.load_weights(merged)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _align(target_paths, source_paths):
    """target path -> source path, under the prefix change that matches the most paths."""
    sources = set(source_paths)
    best, best_map = -1, {}
    candidates = {("", "")}
    for t in target_paths:
        for s in source_paths:
            if s.endswith("/" + t):
                candidates.add((s[: -len(t)], ""))
            elif t.endswith("/" + s):
                candidates.add(("", t[: -len(s)]))
    for add, strip in candidates:
        mapping = {}
        for t in target_paths:
            if t.startswith(strip) and add + t[len(strip) :] in sources:
                mapping[t] = add + t[len(strip) :]
        if len(mapping) > best:
            best, best_map = len(mapping), mapping
    return best_map
