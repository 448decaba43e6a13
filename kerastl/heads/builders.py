"""One builder per task: the usual way to make a `TaskHead`."""

from kerastl.heads.task_head import TaskHead


def _check_count(value, arg):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{arg}` must be a positive int. Received: {arg}={value!r}")


def binary(**options):
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


def multiclass(num_classes, sparse_labels=True, **options):
    """One class per image out of `num_classes` (>= 2), softmax output.

    Loss: (sparse) categorical cross-entropy, matching `sparse_labels` (integer
    ids by default, one-hot with `sparse_labels=False`); metric: accuracy.
    """
    _check_count(num_classes, "num_classes")
    if num_classes == 1:
        raise ValueError(
            "A multiclass head needs at least 2 classes; for one yes/no output use "
            "kerastl.heads.binary(). Received: num_classes=1"
        )
    return TaskHead("multiclass", num_classes, sparse_labels=sparse_labels, **options)


def multilabel(num_labels, **options):
    """Any number of `num_labels` labels per image: one sigmoid per label.

    Loss: binary cross-entropy over the labels (multi-hot targets); metric:
    binary accuracy.
    """
    _check_count(num_labels, "num_labels")
    return TaskHead("multilabel", num_labels, **options)


def regression(units=1, **options):
    """`units` real-valued outputs, linear. Loss: mean squared error; metric: MAE."""
    _check_count(units, "units")
    return TaskHead("regression", units, **options)
