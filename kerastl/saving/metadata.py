"""What kerastl records next to a model: class names, task, backbone, history, versions.

The metadata is a JSON object stored as the `kerastl.json` member of the `.keras`
zip. Every key below is always present (`None` where unknown), so readers never
need `.get` chains.
"""

import datetime
import json
import math
import numbers

import keras

from kerastl._checks import check_class_names
from kerastl._keras_private import flatten_layers
from kerastl._version import __version__
from kerastl.layers import FeatureExtractor

METADATA_VERSION = 1
MAX_SAVED_MATRIX = 50  # classes: a larger confusion matrix is not kept in the metadata
TASKS = ("binary", "multiclass", "multilabel", "regression")
_CROSSENTROPY = {
    "binary_crossentropy": "binary",
    "binary_focal_crossentropy": "binary",
    "categorical_crossentropy": "multiclass",
    "sparse_categorical_crossentropy": "multiclass",
    "categorical_focal_crossentropy": "multiclass",
}


def empty_metadata():
    """Every metadata key, unknown: what a file saved without kerastl reads as."""
    return {
        "kerastl_metadata_version": METADATA_VERSION,
        "format": None,  # "keras" (zip) or "legacy_h5"
        "kerastl_version": None,
        "keras_version": None,
        "backend": None,  # the backend the model was saved (trained) on
        "saved_at": None,
        "task": None,
        "num_outputs": None,
        "outputs": None,  # "probabilities" or "logits" for classifiers
        "class_names": None,
        "backbone": None,
        "input_preprocessing": None,  # recipe the caller applies; None: raw 0..255
        "input_shape": None,
        "input_dtype": None,
        "history": None,  # {metric: [value per epoch]}, every phase end to end
        "history_phases": None,  # [{"name", "first_epoch", "epochs", "history"}] per phase
        "evaluation": None,  # figures on labelled data (`kerastl.interpret(...).summary()`)
    }


def describe_model(model, class_names=None, history=None, metadata=None, evaluation=None):
    """The metadata of `model` as `save_model` writes it; validates the arguments.

    `class_names`, `history`, `evaluation` and `metadata` fall back to what is
    attached to the model already (by `load_model` or an earlier `save_model`).
    """
    attached = getattr(model, "kerastl_metadata", None) or {}
    meta = empty_metadata()
    meta.update(
        format="keras",
        kerastl_version=__version__,
        keras_version=keras.version(),
        backend=keras.config.backend(),
        saved_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        input_shape=_input_shape(model),
        input_dtype=_input_dtype(model),
    )
    meta.update(_describe_backbone(model))
    if metadata is not None:
        metadata = _check_metadata(metadata)
    if class_names is None:
        head = _head_config(model) or {}
        class_names = attached.get("class_names") or head.get("class_names")
    else:
        class_names = check_class_names(class_names)
    meta.update(_describe_head(model, class_names, overrides=metadata or {}))
    if history is None:
        meta["history"] = attached.get("history")
        meta["history_phases"] = attached.get("history_phases")
    else:
        meta["history"], meta["history_phases"] = history_record(history)
    if evaluation is None:
        meta["evaluation"] = attached.get("evaluation")
    else:
        meta["evaluation"] = evaluation_record(evaluation)
    if metadata:
        meta.update(metadata)
    if meta["task"] is not None and meta["task"] not in TASKS:
        raise ValueError(
            f"`metadata['task']` must be one of {TASKS}. Received: metadata={metadata!r}"
        )
    _check_class_count(meta, class_names)
    meta["class_names"] = class_names
    return meta


def evaluation_record(evaluation):
    """The figures to keep: a `kerastl.interpret` result (its `summary()`) or a dict.

    A confusion matrix of more than `MAX_SAVED_MATRIX` classes is left out (the
    metadata must stay small enough to read back); the per-class rows stay.
    """
    summary = getattr(evaluation, "summary", None)
    record = summary() if callable(summary) else evaluation
    if not isinstance(record, dict):
        raise TypeError(
            "`evaluation` must be what kerastl.interpret returned or a dict of figures. "
            f"Received: evaluation={evaluation!r}"
        )
    try:
        record = json.loads(finite_json(record))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`evaluation` must be JSON-serialisable ({e}). Received: evaluation={evaluation!r}"
        ) from None
    matrix = record.get("confusion_matrix")
    if isinstance(matrix, list) and len(matrix) > MAX_SAVED_MATRIX:
        record["confusion_matrix"] = None
    return record


def history_record(history):
    """`(history, history_phases)`: the training history as the metadata keeps it.

    `history` is what `model.fit` returns (a `History` or its `.history` dict),
    a record of named phases (`kerastl.fine_tune`'s `FineTuneHistory`: a
    `.history` dict with `.phases` and `.phase_boundaries`), or a list of those
    for training in stages. `history_phases` holds one
    `{"name", "first_epoch", "epochs", "history"}` per phase (the name `None`
    for a `History` or dict), its metrics as recorded; `history` is every phase
    end to end, one value per epoch, `None` in the epochs of a phase that did
    not record the metric.
    """
    merged, phases, first = {}, [], 0
    for name, values in _phases(history):
        epochs = max((len(series) for series in values.values()), default=0)
        for key, series in values.items():
            merged.setdefault(key, [None] * first).extend(series)
        first += epochs
        for series in merged.values():
            series.extend([None] * (first - len(series)))
        phases.append(
            {"name": name, "first_epoch": first - epochs, "epochs": epochs, "history": values}
        )
    return merged, phases


def _phases(history):
    """`[(name or None, {metric: [float per epoch]})]`, one per phase of `history`."""
    if isinstance(history, (list, tuple)):
        return [phase for stage in history for phase in _phases_of(stage, history)]
    return _phases_of(history, history)


def _phases_of(history, received):
    values = getattr(history, "history", history)
    if not isinstance(values, dict):
        raise TypeError(
            "`history` must be what `model.fit` returns (a `keras.callbacks.History`), its "
            "`.history` dict, what `kerastl.fine_tune` returns, or a list of those. "
            f"Received: history={received!r}"
        )
    try:
        values = {str(k): [_number(v) for v in vs] for k, vs in values.items()}
    except (TypeError, ValueError):
        raise TypeError(
            f"`history` must map metric names to lists of numbers. Received: history={values!r}"
        ) from None
    names = getattr(history, "phases", None)
    if names is None:
        return [(None, values)]
    boundaries = getattr(history, "phase_boundaries", None)
    epochs = max((len(series) for series in values.values()), default=0)
    if (
        not isinstance(names, (list, tuple))
        or not all(isinstance(name, str) for name in names)
        or not isinstance(boundaries, (list, tuple))
        or len(boundaries) != len(names) - 1
        or not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in boundaries)
        or list(boundaries) != sorted(boundaries)
        or not all(0 <= b <= epochs for b in boundaries)
    ):
        raise ValueError(
            "`history.phases` must name each phase and `history.phase_boundaries` give the "
            f"epochs (in 0..{epochs}, in order) where the phases after the first begin, as "
            "`kerastl.fine_tune` returns them. Received: "
            f"history.phases={names!r}, history.phase_boundaries={boundaries!r}"
        )
    edges = [0, *map(int, boundaries), epochs]
    return [
        (name, {key: series[start:stop] for key, series in values.items() if series[start:stop]})
        for name, start, stop in zip(names, edges[:-1], edges[1:], strict=True)
    ]


def _number(value):
    if value is None:  # an epoch without the metric, as the merged `history` records it
        return None
    if isinstance(value, (str, bytes)):  # float("0.5") would take it
        raise TypeError(value)
    return float(value)


def _check_metadata(metadata):
    if not isinstance(metadata, dict):
        raise TypeError(f"`metadata` must be a dict. Received: metadata={metadata!r}")
    try:
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`metadata` must be JSON-serialisable ({e}). Received: metadata={metadata!r}"
        ) from None


def _check_class_count(meta, class_names):
    if class_names is None:
        return
    task, units = meta["task"], meta["num_outputs"]
    if task == "regression" or task is None:
        raise ValueError(
            f"`class_names` name the classes of a classifier, but the model's head is "
            f"task={task!r}; pass metadata={{'task': ...}} if it does classify. "
            f"Received: class_names={class_names!r}"
        )
    expected = 2 if task == "binary" else units
    if len(class_names) != expected:
        detail = "binary: one unit, two names (negative first)" if task == "binary" else task
        raise ValueError(
            f"`class_names` has {len(class_names)} names but the model's head has "
            f"{expected} classes ({detail}). Received: class_names={class_names!r}"
        )


def _input_shape(model):
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list) or (shape and isinstance(shape[0], tuple)):
        return None  # several inputs: no single image spec
    return list(shape)


def _input_dtype(model):
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return None
    return keras.backend.standardize_dtype(inputs[0].dtype)


def _layers(model):
    # Layers at every depth (the backbone inside a FeatureExtractor included).
    return flatten_layers(model, include_self=False, recursive=True)


def _describe_backbone(model):
    extractors = [layer for layer in _layers(model) if isinstance(layer, FeatureExtractor)]
    if not extractors:
        return {"backbone": None, "input_preprocessing": None}
    extractor = extractors[0]
    config = extractor.get_config()
    source = config["backbone"]
    # The registry entry the extractor was named or recognised as carries the recipe.
    preprocessing = extractor.spec.preprocessing if extractor.spec is not None else None
    name = source if isinstance(source, str) else source.get("config", {}).get("name")
    backbone = {
        "name": name,
        "arch": extractor.arch,
        "layer": extractor.name,
        "preprocessing": preprocessing,
        "input_shape": list(config["input_shape"]),
        "pooling": config["pooling"],
        "freeze": config["freeze"],
        "bn": config["bn"],
    }
    # The extractor as the model's first layer means nothing in the model applies
    # the input recipe: whoever feeds the model must (the Predictor does).
    first = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    takes_raw = not (first and first[0] is extractor)
    recipe = None if takes_raw or preprocessing == "none" else preprocessing
    return {"backbone": backbone, "input_preprocessing": recipe}


def _head_config(model):
    # kerastl heads (TaskHead) carry `task`, `num_outputs`, `logits` and `class_names`
    # in their config; read them if present.
    for layer in reversed(_layers(model)):
        try:
            config = layer.get_config()
        except Exception:  # noqa: BLE001 - any layer may refuse; the head is what we want
            continue
        # `num_outputs` too: a TemperatureScaling layer after the head names a task.
        if isinstance(config, dict) and config.get("task") in TASKS and "num_outputs" in config:
            return config
    return None


def _output_activation(model):
    layer = model.layers[-1] if model.layers else None
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = layer.get_config().get("activation")
    if isinstance(activation, dict):  # a serialised callable
        activation = activation.get("config", {}).get("name") or activation.get("class_name")
    return activation or "linear"


def _loss_kind(model):
    """(task family, from_logits) of the compiled loss, or (None, None)."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    if isinstance(loss, str):
        return _CROSSENTROPY.get(loss), False
    if isinstance(loss, keras.losses.Loss):
        return _CROSSENTROPY.get(loss.name), bool(getattr(loss, "from_logits", False))
    return None, None


def _describe_head(model, class_names, overrides):
    outputs = getattr(model, "outputs", None) or []
    units = None
    if len(outputs) == 1 and outputs[0].shape:
        units = outputs[0].shape[-1]
    head = _head_config(model)
    if head is not None:
        task = head["task"]
        units = head.get("num_outputs", units)
        flag = head.get("logits", head.get("from_logits"))
        if task == "regression":
            kind = None
        elif flag is not None:
            kind = "logits" if flag else "probabilities"
        else:
            kind = _kind_from_activation(_output_activation(model))
        return _head(task, units, kind)
    if "task" in overrides:
        task = overrides["task"]
        if task == "regression":
            return _head(task, units, None)
        kind = overrides.get("outputs") or _kind_from_activation(_output_activation(model))
        return _head(task, units, kind)
    if units is None:
        return _head(None, None, None)
    activation = _output_activation(model)
    if activation == "softmax":
        return _head("multiclass", units, "probabilities")
    if activation == "sigmoid":
        return _head("binary" if units == 1 else "multilabel", units, "probabilities")
    if activation != "linear":
        return _head("regression", units, None)
    family, from_logits = _loss_kind(model)
    if family == "binary":
        return _head("binary" if units == 1 else "multilabel", units, "logits")
    if family == "multiclass":
        return _head("multiclass", units, "logits")
    if class_names is not None:  # named classes on a linear output: logits
        return _head("binary" if units == 1 else "multiclass", units, "logits")
    return _head("regression", units, None)


def _kind_from_activation(activation):
    return "probabilities" if activation in ("softmax", "sigmoid") else "logits"


def _head(task, units, kind):
    return {"task": task, "num_outputs": units, "outputs": kind}


def finite_json(meta):
    """JSON text of `meta`; NaN/inf history values (diverged runs) become null."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(meta), indent=1)
