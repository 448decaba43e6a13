"""Temperature scaling: one scalar fitted on held-out data, put into the model as a layer."""

import dataclasses
from typing import Any

import keras
import numpy as np

from kerastl._checks import check_positive_int
from kerastl._keras_private import flatten_layers
from kerastl.evaluation import metrics
from kerastl.evaluation.interpretation import classifier_of, measure
from kerastl.heads.head_info import find_head
from kerastl.layers.temperature_scaling import TemperatureScaling

MIN_IMAGES = 20  # one temperature from fewer held-out images is noise
TEMPERATURES = (0.05, 20.0)  # the search's bounds
_SEARCH_STEPS = 80


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What `calibrate` returns.

    Attributes:
        model: the calibrated model: the original's layers and weights, then a
            `kerastl.layers.TemperatureScaling` layer (shared weights: training
            one trains the other).
        temperature: the fitted temperature (> 1: the model was over-confident).
        images: validation images the temperature was fitted on.
        before: `{"log_loss", "ece", "accuracy"}` on the validation data, uncalibrated.
        after: the same, calibrated (fitted on these images: measure held-out
            data with `kerastl.interpret` for an unbiased figure).
    """

    model: keras.Model
    temperature: float
    images: int
    before: dict[str, float]
    after: dict[str, float]


def calibrate(model: keras.Model, validation: Any, *, batch_size: int = 32) -> Calibration:
    """Fits a temperature on held-out images and returns the model with it inside.

    Fine-tuned networks are over-confident (Guo et al. 2017). Temperature
    scaling divides the logits by one scalar `T`, chosen to minimise the
    negative log-likelihood on `validation`: probabilities become honest and
    no prediction changes (the argmax of `z / T` is the argmax of `z`). The
    returned model ends in a `kerastl.layers.TemperatureScaling` layer, so
    `kerastl.save_model`, `kerastl.Predictor`, `kerastl.export` and every
    backend give the calibrated probabilities. A model calibrated before is
    re-fitted (its temperature is replaced, not stacked).

    Fit on data the model did not train on (a validation split), at least
    20 images; calibrate last, after all training. A weak prior keeps the
    temperature near 1 where the images cannot determine it (every one
    right with a margin; see `fit_temperature`).

    Args:
        model: a binary or multiclass classifier (`kerastl.build_model`, or a
            model with kerastl metadata naming its task).
        validation: labelled held-out images, in any form `fit` takes.
        batch_size: images per batch of array data.

    Example:

    ```python
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              kerastl.heads.multiclass(3)])
    x = np.random.rand(30, 4, 4, 1).astype("float32")
    calibrated = kerastl.calibrate(model, (x, np.arange(30) % 3))
    print(calibrated.model.layers[-1].__class__.__name__)  # TemperatureScaling
    print(calibrated.after["log_loss"] <= calibrated.before["log_loss"])  # True
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    base = _without_temperature(model)
    found = measure(base, validation, "validation", batch_size=batch_size)
    if len(found.labels) < MIN_IMAGES:
        raise ValueError(
            f"`validation` must hold at least {MIN_IMAGES} labelled images: one "
            "temperature fitted on fewer is noise. Received: "
            f"{len(found.labels)} image(s)"
        )
    temperature = fit_temperature(found.probabilities, found.labels)
    task, logits, _ = classifier_of(base)
    layer = TemperatureScaling(
        temperature,
        task=task,
        inputs="logits" if logits else "probabilities",
        name="temperature_scaling",
    )
    calibrated = keras.Model(_inputs(base), layer(base.outputs[0]), name=model.name)
    calibrated.dtype_policy = model.dtype_policy
    attached = getattr(model, "kerastl_metadata", None)
    if attached is not None:
        calibrated.__dict__["kerastl_metadata"] = dict(attached)  # names, history
    head = find_head(base)
    if head is not None:
        calibrated.compile(loss=head.default_loss(), metrics=head.default_metrics())
    scaled = scale_probabilities(found.probabilities, temperature)
    return Calibration(
        model=calibrated,
        temperature=temperature,
        images=int(len(found.labels)),
        before=_figures(found.probabilities, found.labels),
        after=_figures(scaled, found.labels),
    )


def fit_temperature(probabilities, labels):
    """The temperature that best explains `labels` (numpy): maximum a posteriori.

    The negative log-likelihood per image, plus a weak prior that keeps the
    temperature near 1 when the data cannot say: `(log T)^2 / (2 n)` (log T
    normal with standard deviation 1, over n images). Without it, held-out
    images that the model gets all right with a margin (separable data)
    drive `T` to 0: the likelihood keeps rising as the probabilities sharpen.
    On a few hundred images with mistakes the prior moves `T` by well under
    1%. The objective is convex in `1 / T`: a golden-section search over
    `1 / T` in [1/20, 1/0.05] finds it to ~1e-6.
    """
    logits = _logits(probabilities)
    labels = np.asarray(labels)
    prior = 1.0 / (2.0 * max(1, len(labels)))

    def loss(inverse):
        nll = metrics.log_loss(_softmax(logits * inverse), labels).mean()
        return nll + prior * np.log(inverse) ** 2

    low, high = 1.0 / TEMPERATURES[1], 1.0 / TEMPERATURES[0]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(_SEARCH_STEPS):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return float(1.0 / ((low + high) / 2.0))


def scale_probabilities(probabilities, temperature):
    """Probability rows as the `TemperatureScaling` layer makes them (numpy, float64)."""
    return _softmax(_logits(probabilities) / temperature)


def cross_fitted(probabilities, labels, *, folds=2, seed=0):
    """Calibration measured honestly on data that also fits it: each fold's temperature
    is fitted on the other folds, and the figures are taken on the held-out fold.

    Returns `temperature` (fitted on all the data), `ece_before`, `ece_after`,
    `log_loss_before`, `log_loss_after`, `reliability_before` and
    `reliability_after` (bins as `Interpretation.reliability` gives them).
    With fewer than `MIN_IMAGES` images per fold, the `after` figures are None.
    """
    probabilities, labels = np.asarray(probabilities, "float64"), np.asarray(labels)
    ece_before, bins_before = metrics.reliability(probabilities, labels)
    result = {
        "temperature": None,
        "folds": folds,
        "ece_before": ece_before,
        "log_loss_before": float(metrics.log_loss(probabilities, labels).mean()),
        "reliability_before": bins_before,
        "ece_after": None,
        "log_loss_after": None,
        "reliability_after": None,
    }
    if len(labels) < folds * MIN_IMAGES:
        return result
    order = np.random.default_rng(seed).permutation(len(labels))
    scaled = np.empty_like(probabilities)
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        temperature = fit_temperature(probabilities[rest], labels[rest])
        scaled[fold] = scale_probabilities(probabilities[fold], temperature)
    ece_after, bins_after = metrics.reliability(scaled, labels)
    result.update(
        temperature=fit_temperature(probabilities, labels),
        ece_after=ece_after,
        log_loss_after=float(metrics.log_loss(scaled, labels).mean()),
        reliability_after=bins_after,
    )
    return result


def temperature_of(model):
    """The temperature of the model's `TemperatureScaling` layer, or None."""
    for layer in flatten_layers(model, include_self=False):
        if isinstance(layer, TemperatureScaling):
            return layer.temperature
    return None


def _without_temperature(model):
    """`model` without the `TemperatureScaling` layer `calibrate` put at its end."""
    last = model.layers[-1] if model.layers else None
    if not isinstance(last, TemperatureScaling) or len(model.outputs) != 1:
        return model
    base = keras.Model(_inputs(model), last.input, name=model.name)
    attached = getattr(model, "kerastl_metadata", None)
    if attached is not None:
        base.__dict__["kerastl_metadata"] = dict(attached)
    return base


def _inputs(model):
    """The model's inputs in the structure it takes them (one tensor, not a list of one)."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _figures(probabilities, labels):
    return {
        "log_loss": float(metrics.log_loss(probabilities, labels).mean()),
        "ece": metrics.reliability(probabilities, labels)[0],
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
    }


def _logits(probabilities):
    return np.log(np.clip(np.asarray(probabilities, "float64"), metrics.EPSILON, 1.0))


def _softmax(logits):
    return metrics.probabilities_of(logits, "multiclass", logits=True)
