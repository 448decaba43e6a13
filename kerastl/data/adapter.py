"""The one door for data: every form users pass, answered one way for every consumer.

`adapt(data, arg)` takes `(x, y)` or `(x, y, sample_weight)` arrays (or `x`
alone), a `keras.utils.PyDataset` (kerastl's `ImageBatches` among them), a
`tf.data.Dataset`, a torch `DataLoader` (`kerastl.data.from_torch_dataset`)
or another iterable of batches (a generator), and returns a `DataAdapter`:
its steps, batch size, labels, a fingerprint, what `fit` takes, and checked
numpy batches. `fine_tune`, `cache_features`, `lr_find` and `rank_backbones`
all go through it, so bad data gets one set of messages (`kerastl.data.checks`)
naming the user's argument.

What can be known without a pass (arrays; `ImageBatches`) is checked in
`adapt` and `check_labels`; a streamed source is checked batch by batch as
it is drawn (by `numpy_batches`, or by the source `fit_arguments` gives),
the error naming the batch.
"""

import contextlib
import os
import sys

import keras
import numpy as np

from kerastl._checks import check_positive_int
from kerastl.data.adapted import DataAdapter, _Arrays, _Batches, _is_array, describe
from kerastl.data.streams import _Stream

__all__ = ["DataAdapter", "adapt", "data_errors"]

KINDS = ("arrays", "batches", "tf", "torch", "iterable")


def adapt(data, arg, *, batch_size=32, needs_labels=False):
    """The `DataAdapter` of a data argument; an adapter passes through unchanged.

    Args:
        data: what the user passed (see the module's text).
        arg: the user's argument name (`"train"`, `"validation"`, `"data"`),
            used in every message.
        batch_size: images per batch of array data (datasets bring their own).
        needs_labels: refuse data without labels (`(x, None)`, `x` alone,
            batches of images only).

    Example:

    ```python
    x = np.random.randint(0, 256, (10, 8, 8, 3)).astype("uint8")
    data = kerastl.data.adapt((x, np.arange(10) % 2), "train", batch_size=4)
    print(data.kind, data.steps, data.count)  # arrays 3 10
    ```
    """
    if isinstance(data, DataAdapter):
        if needs_labels:
            data.require_labels()
        return data
    if not isinstance(arg, str) or not arg:
        raise TypeError(f"`arg` must be the argument's name. Received: arg={arg!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    args = (data, arg, batch_size, needs_labels)
    if isinstance(data, keras.utils.PyDataset):
        return _Batches(*args)
    if _is_tf_dataset(data):
        return _Stream(*args, kind="tf")
    torch_data = sys.modules.get("torch.utils.data")
    if torch_data is not None and isinstance(data, torch_data.DataLoader):
        return _Stream(*args, kind="torch")
    if torch_data is not None and isinstance(data, torch_data.Dataset):
        raise TypeError(
            f"`{arg}` is a torch Dataset of single samples: batch it with "
            f"kerastl.data.from_torch_dataset({arg}). Received: {arg}={type(data).__name__}"
        )
    if isinstance(data, tuple) and 1 <= len(data) <= 3 or _is_pair(data):
        return _Arrays(*args)
    if _is_array(data) or _is_image_list(data):
        return _Arrays((data,), *args[1:])
    if isinstance(data, (str, bytes, dict, os.PathLike)) or not _iterable(data):
        raise TypeError(
            f"`{arg}` must be (x, y) arrays, a keras.utils.PyDataset (kerastl.data), a "
            f"tf.data.Dataset, a torch DataLoader or an iterable of (x, y) batches. "
            f"Received: {arg}={describe(data)}"
        )
    return _Stream(*args, kind="iterable")


@contextlib.contextmanager
def data_errors(*adapters):
    """Re-raises the door's own error when a backend wrapped it on its way out of `fit`.

    TensorFlow runs a `PyDataset` inside `tf.data`, which turns an error raised
    while drawing a batch into its `InvalidArgumentError`:

    ```
    with data_errors(train, validation):
        model.fit(**train.fit_arguments(), validation_data=validation.validation_data())
    ```
    """
    adapters = [a for a in adapters if a is not None]
    for adapter in adapters:
        adapter._error = None
    try:
        yield
    except Exception as e:
        for adapter in adapters:
            if adapter._error is not None and adapter._error is not e:
                raise adapter._error from None
        raise


# --- recognising forms -------------------------------------------------------------------


def _is_tf_dataset(data):
    tf = sys.modules.get("tensorflow")
    dataset = getattr(getattr(tf, "data", None), "Dataset", None)
    return dataset is not None and isinstance(data, dataset)


def _is_pair(data):
    """A list `[x, y]` / `[x, y, w]` of arrays (not a list of batches or of images)."""
    if not isinstance(data, list) or len(data) not in (2, 3):
        return False
    images = _is_array(data[0]) and np.ndim(data[0]) == 4 or isinstance(data[0], list)
    return images and (data[1] is None or not _is_array(data[1]) or np.ndim(data[1]) <= 2)


def _is_image_list(data):
    """A list of single images `(h, w, c)` (equal-sized or ragged), not a list of batches."""
    return isinstance(data, list) and bool(data) and _is_array(data[0]) and np.ndim(data[0]) == 3


def _iterable(value):
    try:
        iter(value)
    except TypeError:
        return False
    return True
