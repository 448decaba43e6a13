"""`interpret`: a classifier measured on labelled images, and where it goes wrong."""

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kerastl._checks import check_class_names, check_positive_int
from kerastl.data.adapter import adapt
from kerastl.evaluation import metrics, plots
from kerastl.evaluation.tta import check_tta, predict_probabilities
from kerastl.heads.head_info import find_head
from kerastl.saving.load import read_metadata

CLASSIFIER_TASKS = ("binary", "multiclass")


@dataclasses.dataclass
class Interpretation:
    """A classifier's predictions on labelled images, and the figures drawn from them.

    Attributes:
        class_names: the classes, in the order of the model's outputs.
        task: `"binary"` or `"multiclass"`: the model's head.
        labels: `(n,)` true class ids.
        probabilities: `(n, classes)` predicted probabilities (binary:
            `[1 - p, p]`), averaged over the views when `tta` is set.
        tta: the test-time augmentation used (`None`, `"flip"`, ...).
        top_losses: the images the model got most wrong, worst first: dicts
            with `index` (position in the data), `image`, `true`, `predicted`
            (class names), `probability` (of the predicted class),
            `true_probability` and `loss`.
    """

    class_names: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    task: str = "multiclass"
    tta: str | None = None
    top_losses: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def predictions(self) -> np.ndarray:
        """`(n,)` predicted class ids (the most probable class)."""
        return self.probabilities.argmax(axis=1)

    @property
    def losses(self) -> np.ndarray:
        """`(n,)` negative log-likelihood of each image's true class."""
        return metrics.log_loss(self.probabilities, self.labels)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels))

    @property
    def log_loss(self) -> float:
        """Mean negative log-likelihood (what calibration lowers)."""
        return float(self.losses.mean())

    @property
    def confusion_matrix(self) -> np.ndarray:
        """Counts, `[true class, predicted class]`."""
        return metrics.confusion_matrix(self.labels, self.predictions, len(self.class_names))

    @property
    def per_class(self) -> list[dict[str, Any]]:
        """Per class: `class`, `precision`, `recall`, `f1`, `support`."""
        precision, recall, f1, support = metrics.per_class(self.confusion_matrix)
        return [
            {
                "class": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(self.class_names)
        ]

    @property
    def ece(self) -> float:
        """Expected calibration error over 15 equal-width confidence bins."""
        return metrics.reliability(self.probabilities, self.labels)[0]

    @property
    def reliability(self) -> list[dict[str, Any]]:
        """The reliability diagram's bins: `lower`, `upper`, `count`, `confidence`, `accuracy`."""
        return metrics.reliability(self.probabilities, self.labels)[1]

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """`[(true, predicted, count), ...]`: the off-diagonal cells, most frequent first."""
        min_count = check_positive_int(min_count, "min_count")
        return metrics.most_confused(self.confusion_matrix, self.class_names, min_count)

    def summary(self) -> dict[str, Any]:
        """Every figure as plain JSON-serialisable values (what `save_model(evaluation=...)`
        and the report keep). Images are left out of `top_losses`."""
        per_class = self.per_class
        return {
            "images": int(len(self.labels)),
            "task": self.task,
            "class_names": list(self.class_names),
            "accuracy": self.accuracy,
            "log_loss": self.log_loss,
            "ece": self.ece,
            "macro_f1": float(np.mean([row["f1"] for row in per_class])),
            "tta": self.tta,
            "per_class": per_class,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "most_confused": [list(pair) for pair in self.most_confused()],
            "top_losses": [
                {key: value for key, value in item.items() if key != "image"}
                for item in self.top_losses
            ],
            "reliability": self.reliability,
        }

    def plot_confusion_matrix(self, path: str | os.PathLike[str] | None = None, **kwargs: Any):
        """The confusion matrix as a figure; a PNG at `path` if given (`plot` extra)."""
        return plots.plot_confusion_matrix(self.confusion_matrix, self.class_names, path, **kwargs)

    def plot_reliability(self, path: str | os.PathLike[str] | None = None, **kwargs: Any):
        """The reliability diagram (accuracy against confidence per bin), with the ECE."""
        return plots.plot_reliability(self.reliability, self.ece, path, **kwargs)

    def plot_top_losses(
        self,
        path: str | os.PathLike[str] | None = None,
        heatmaps: Sequence[np.ndarray] | None = None,
        **kwargs: Any,
    ):
        """The top-loss gallery (image, true and predicted class, probability, loss);
        `heatmaps` (from `kerastl.grad_cam`, one per image) are laid over the images."""
        return plots.plot_top_losses(self.top_losses, path, heatmaps=heatmaps, **kwargs)


def interpret(
    model: keras.Model,
    data: Any,
    *,
    class_names: Sequence[str] | None = None,
    tta: str | None = None,
    top_losses: int = 16,
    batch_size: int = 32,
) -> Interpretation:
    """Measures a classifier on labelled images: per class, confusion, calibration, mistakes.

    One pass of `model` over `data` (what `fit` takes: `(x, y)` arrays, a
    class-folder dataset from `kerastl.data`, a `tf.data.Dataset`, a torch
    `DataLoader`, ...; see `kerastl.data.adapt`). The result holds the
    probabilities and labels and derives everything else from them: accuracy,
    per-class precision / recall / F1 / support, the confusion matrix, the
    most confused pairs, the expected calibration error and reliability bins,
    and the `top_losses` images; with plots for each (the `plot` extra).

    Binary and multiclass classifiers (a binary head reads as two classes);
    multilabel and regression models are refused.

    Args:
        model: a `keras.Model` classifier (built by `kerastl.build_model`, or
            saved with kerastl metadata that names its task).
        data: labelled images, in any form `fit` takes.
        class_names: names of the classes; defaults to the model's.
        tta: test-time augmentation: `None`, `"flip"`, `"crops"` or
            `"flip+crops"` (see `kerastl.evaluation.tta.views`).
        top_losses: how many of the worst-predicted images to keep (0 for none).
        batch_size: images per batch of array data.

    Example:

    ```python
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              kerastl.heads.multiclass(3, class_names=["a", "b", "c"])])
    x = np.random.rand(12, 4, 4, 1).astype("float32")
    found = kerastl.interpret(model, (x, np.arange(12) % 3), top_losses=2)
    print(found.confusion_matrix.sum(), len(found.per_class), len(found.top_losses))  # 12 3 2
    ```
    """
    return measure(
        model,
        data,
        "data",
        class_names=class_names,
        tta=tta,
        top_losses=top_losses,
        batch_size=batch_size,
    )


def measure(model, data, arg, *, class_names=None, tta=None, top_losses=0, batch_size=32):
    """`interpret`, with the data's argument name for its messages (`calibrate`: validation)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    tta = check_tta(tta)
    if isinstance(top_losses, bool) or not isinstance(top_losses, int) or top_losses < 0:
        raise ValueError(
            "`top_losses` must be an int >= 0 (how many images to keep). "
            f"Received: top_losses={top_losses!r}"
        )
    task, logits, names = classifier_of(model, class_names)
    data = adapt(data, arg, batch_size=batch_size, needs_labels=True)
    head = find_head(model)
    if head is not None:
        data.check_labels(head)
    labels, probabilities, worst = [], [], _Worst(top_losses)
    seen = 0
    for x, y in data.numpy_batches():
        ids = class_ids(y, len(names), arg)
        if len(ids) != len(x):
            raise ValueError(
                f"`{arg}` gives {len(x)} images and {len(ids)} labels in one batch. "
                f"Received: a batch of x {np.shape(x)} and y {np.shape(y)}"
            )
        rows = predict_probabilities(model, x, task, logits, tta)
        worst.offer(x, ids, rows, seen)
        labels.append(ids)
        probabilities.append(rows)
        seen += len(x)
    return Interpretation(
        class_names=names,
        labels=np.concatenate(labels),
        probabilities=np.concatenate(probabilities),
        task=task,
        tta=tta,
        top_losses=worst.items(names),
    )


def classifier_of(model, class_names=None):
    """`(task, outputs are logits, class names)` of a binary or multiclass model."""
    meta = read_metadata(model)
    task = meta["task"]
    if task not in CLASSIFIER_TASKS:
        raise ValueError(
            f"This needs a binary or multiclass classifier; the model's task is {task!r} "
            "(multilabel and regression models are not supported: they have no confusion "
            "matrix, and their calibration is per output). Save the model with kerastl "
            "metadata naming its task if it does classify. "
            f"Received: model={model.name!r}"
        )
    count = 2 if task == "binary" else meta["num_outputs"]
    if class_names is not None:
        names = check_class_names(class_names)
        arg = "class_names"
    else:
        names = meta["class_names"] or [str(i) for i in range(count)]
        arg = "the model's class_names"
    if len(names) != count:
        raise ValueError(
            f"`class_names` must name the model's {count} classes ({task}). "
            f"Received: {arg}={names!r}"
        )
    return task, meta["outputs"] == "logits", [str(name) for name in names]


def class_ids(y, n_classes, arg):
    """Labels (class ids, or one-hot rows) as int class ids in `0 .. n_classes - 1`."""
    if y is None:
        raise ValueError(f"`{arg}` must hold labels. Received: images without labels")
    y = np.asarray(keras.ops.convert_to_numpy(y))
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.dtype.kind not in "biuf" or (
        y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all())
    ):
        raise ValueError(
            f"`{arg}` labels must be class ids (or one-hot rows). "
            f"Received: labels such as {y[:5].tolist()!r}"
        )
    ids = y.astype("int64")
    outside = ids[(ids < 0) | (ids >= n_classes)]
    if outside.size:
        raise ValueError(
            f"`{arg}` holds class ids the model lacks: it has {n_classes} classes "
            f"(0 .. {n_classes - 1}). Received: label {int(outside[0])}"
        )
    return ids


class _Worst:
    """The `k` highest-loss images of a stream, kept without holding the stream."""

    def __init__(self, k):
        self.k = k
        self.kept = []  # (loss, index, image, label, probabilities)

    def offer(self, x, labels, probabilities, offset):
        if not self.k:
            return
        losses = metrics.log_loss(probabilities, labels)
        for i in np.argsort(-losses, kind="stable")[: self.k]:
            self.kept.append(
                (float(losses[i]), offset + int(i), np.array(x[i]), labels[i], probabilities[i])
            )
        self.kept.sort(key=lambda item: (-item[0], item[1]))
        del self.kept[self.k :]

    def items(self, names):
        return [
            {
                "index": index,
                "image": image,
                "true": names[label],
                "predicted": names[int(np.argmax(row))],
                "probability": float(np.max(row)),
                "true_probability": float(row[label]),
                "loss": loss,
            }
            for loss, index, image, label, row in self.kept
        ]
