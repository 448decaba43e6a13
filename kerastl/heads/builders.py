"""One builder per task: the usual way to make a `TaskHead`."""

from typing import Any

from kerastl._checks import check_positive_int
from kerastl.heads.task_head import TaskHead


def binary(**options: Any) -> TaskHead:
    """Two classes, one sigmoid output (the probability of class 1).

    Loss: binary cross-entropy; metric: binary accuracy. `options` are those of
    `TaskHead` (`hidden`, `dropout`, `batchnorm`, `activation`, `pooling`,
    `logits`, `priors`, `class_names`, `name`).

    Example:

    ```python
    head = kerastl.heads.binary(priors=0.3)  # 30% positives
    print(head.info()["task"], head.num_outputs)  # binary 1
    ```
    """
    return TaskHead("binary", 1, **options)


def multiclass(num_classes: int, sparse_labels: bool = True, **options: Any) -> TaskHead:
    """One class per image out of `num_classes` (>= 2), softmax output.

    Loss: (sparse) categorical cross-entropy, matching `sparse_labels` (integer
    ids by default, one-hot with `sparse_labels=False`); metric: accuracy.
    """
    check_positive_int(num_classes, "num_classes")
    if num_classes == 1:
        raise ValueError(
            "A multiclass head needs at least 2 classes; for one yes/no output use "
            "kerastl.heads.binary(). Received: num_classes=1"
        )
    return TaskHead("multiclass", num_classes, sparse_labels=sparse_labels, **options)


def multilabel(num_labels: int, **options: Any) -> TaskHead:
    """Any number of `num_labels` labels per image: one sigmoid per label.

    Loss: binary cross-entropy over the labels (multi-hot targets); metric:
    binary accuracy.
    """
    check_positive_int(num_labels, "num_labels")
    return TaskHead("multilabel", num_labels, **options)


def regression(units: int = 1, **options: Any) -> TaskHead:
    """`units` real-valued outputs, linear. Loss: mean squared error; metric: MAE."""
    check_positive_int(units, "units")
    return TaskHead("regression", units, **options)
