"""Data in: arrays, class folders, tf.data and torch, ready for `fit` on every backend."""

import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from kerastl._checks import check_class_names, check_positive_int
from kerastl.data.adapter import adapt
from kerastl.data.checks import (
    check_batch_size,
    check_finite,
    check_images,
    check_label_count,
    check_split,
    image_array,
    to_numpy,
    warn_if_rescaled,
)
from kerastl.data.image_batches import MIX_MODES, ImageBatches
from kerastl.data.images import check_size, import_pil
from kerastl.data.prepare_image import COLOR_MODES

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
LABEL_MODES = ("int", "categorical", "binary")


def _split(labels, n, validation_split, seed):
    """Row indices of the training and validation parts, drawn once with `seed`.

    Stratified by class where the labels name classes (`_strata`): each class
    gives its share of validation images (largest remainders), every class of
    2 or more images gives at least one while the split has room for that, and
    keeps at least one for training. Other labels (none, or continuous
    targets) split at random.
    """
    n_val = int(round(n * validation_split))
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"`validation_split` leaves an empty part of {n} images. "
            f"Received: validation_split={validation_split!r}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    strata = _strata(labels)
    if strata is None:
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    # Each row, in the random order, is a slot of its class: the j-th slot of class c
    # (j = 0, 1, ...) deserves `n_val * count_c / n - j` validation images (times n,
    # in integers). The first slot of a class of 2 or more comes first, its last
    # slot (and the one image of a class of 1) last; the best n_val slots validate.
    classes = strata[order]
    counts = np.bincount(classes)
    first_of_class = np.concatenate([[0], np.cumsum(counts)[:-1]])
    by_class = np.argsort(classes, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - first_of_class[classes[by_class]]
    count = counts[classes]
    tier = np.where(rank == count - 1, 0, np.where(rank == 0, 2, 1))
    deserved = n_val * count - rank * n
    chosen = np.lexsort((rng.random(n), -deserved, -tier))[:n_val]
    is_val = np.zeros(n, dtype=bool)
    is_val[order[chosen]] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _strata(labels):
    """The class of each row, or None where labels do not name one class per row.

    Integer, boolean and string labels, floats with whole values (binary 0/1)
    and one-hot rows name classes. Other floats are continuous targets, and
    multi-hot rows name several classes each: those split at random.
    """
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.dtype.kind in "biuf":
        one_hot = ((labels == 0) | (labels == 1)).all() and (labels.sum(axis=1) == 1).all()
        return np.argmax(labels, axis=1) if one_hot else None
    if labels.ndim != 1 or labels.dtype.kind not in "biufUS":
        return None
    if labels.dtype.kind == "f" and not (
        np.isfinite(labels).all() and (labels == np.round(labels)).all()
    ):
        return None
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _check_labels(y, count):
    """Labels `fit` can train on: one number per image (or row), finite."""
    check_label_count(y, count, arg="y")
    if y.dtype == object or y.dtype.kind not in "biuf":
        raise ValueError(
            "`y` must be numbers (class ids, one-hot rows or targets); map class names to "
            f"ids first (np.unique(y, return_inverse=True)). Received: y of dtype {y.dtype}"
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(
            "`y` holds NaN or infinite values. "
            f"Received: y with {int((~np.isfinite(y)).sum())} non-finite values"
        )
    return y


def _check_class_count(class_names, y):
    """Class names as many as the classes of one-hot rows, and more than any class id."""
    if class_names is None:
        return
    if y.ndim == 2 and y.shape[1] > 1:
        classes, what = y.shape[1], f"one-hot rows of {y.shape[1]} classes"
    elif y.ndim == 1 and y.dtype.kind in "iu" and len(y):
        classes, what = int(y.max()) + 1, f"class ids up to {int(y.max())}"
    else:
        return
    if len(class_names) < classes or (y.ndim == 2 and len(class_names) != classes):
        raise ValueError(
            f"`class_names` names {len(class_names)} classes, and `y` holds {what}. "
            f"Received: class_names={class_names!r}"
        )


def _check_mix(mix, labels):
    if mix not in MIX_MODES:
        raise ValueError(f"`mix` must be one of {MIX_MODES}. Received: mix={mix!r}")
    if mix is not None and (labels is None or labels.ndim != 2 or labels.dtype.kind != "f"):
        shape = None if labels is None else labels.shape
        raise ValueError(
            f"`mix={mix!r}` mixes labels too: they must be one-hot (or multi-hot) floats "
            "(label_mode='categorical', a multiclass head with sparse_labels=False). "
            f"Received: labels of shape {shape}"
        )


def from_arrays(
    x: ArrayLike,
    y: ArrayLike | None = None,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_split: float | None = None,
    seed: int | None = None,
    mix: str | None = None,
    class_names: Sequence[str] | None = None,
    workers: int = 1,
) -> ImageBatches | tuple[ImageBatches, ImageBatches]:
    """Image and label arrays as `ImageBatches`, shuffled every epoch.

    Args:
        x: images `(n, h, w, 1 or 3)`, raw 0..255 (uint8 or float).
        y: labels, `n` of them (integers, one-hot rows, floats), or None.
        batch_size: images per batch.
        shuffle: reshuffle the training part every epoch.
        validation_split: a float in (0, 1): return `(train, validation)`, the
            validation part fixed by `seed` and never shuffled nor mixed. Class
            labels (integers, one-hot rows, 0/1) split stratified: each class
            gives its share, and every class of 2 or more images at least one
            (while the split has room) and never its last. Other labels (none,
            continuous targets, multi-hot rows) split at random.
        seed: seed of the split, the shuffling and `mix`.
        mix: `None`, `"mixup"` or `"cutmix"` on training batches (one-hot labels).
        class_names: kept as `.class_names`.
        workers: threads that prefetch batches (1: none).

    Example:

    ```python
    x = np.random.randint(0, 256, (10, 32, 32, 3)).astype("uint8")
    train, val = kerastl.data.from_arrays(x, np.arange(10) % 2, batch_size=4,
                                          validation_split=0.2, seed=0)
    print(len(train), len(val))  # 2 1
    ```
    """
    x = image_array(x, arg="x")
    check_images(x, arg="x")
    if len(x) == 0:
        raise ValueError(f"`x` holds no images. Received: x of shape {x.shape}")
    check_finite(x, arg="x")
    warn_if_rescaled(x, arg="x")
    check_batch_size(batch_size)
    check_split(validation_split)
    check_positive_int(workers, "workers")
    if class_names is not None:
        class_names = check_class_names(class_names)
    if y is not None:
        y = _check_labels(to_numpy(y), len(x))
        _check_class_count(class_names, y)
    _check_mix(mix, y)

    return _split_batches(
        x,
        y,
        validation_split,
        shuffle=shuffle,
        seed=seed,
        mix=mix,
        batch_size=batch_size,
        class_names=class_names,
        workers=workers,
    )


def from_directory(
    directory: str | os.PathLike[str],
    image_size: int | tuple[int, int],
    batch_size: int = 32,
    label_mode: str = "int",
    color_mode: str = "rgb",
    shuffle: bool = True,
    validation_split: float | None = None,
    seed: int | None = None,
    mix: str | None = None,
    workers: int = 2,
) -> ImageBatches | tuple[ImageBatches, ImageBatches]:
    """A folder with one sub-folder of images per class, read batch by batch.

    Like `keras.utils.image_dataset_from_directory`, without needing
    TensorFlow: it works the same on the JAX and PyTorch backends. Class names
    are the sub-folder names in sorted order; label `i` is `class_names[i]`.

    Args:
        directory: path of the folder (`directory/<class>/<image>`).
        image_size: `(height, width)` (or an int) the images are resized to.
        batch_size: images per batch.
        label_mode: `"int"` (class ids), `"categorical"` (one-hot float32) or
            `"binary"` (float32 0/1; two classes).
        color_mode: `"rgb"` or `"grayscale"` (1 channel).
        shuffle: reshuffle the training files every epoch.
        validation_split: a float in (0, 1): return `(train, validation)`,
            stratified by class as in `from_arrays`.
        seed: seed of the split, the shuffling and `mix`.
        mix: `None`, `"mixup"` or `"cutmix"` (needs `label_mode="categorical"`).
        workers: threads that read and prefetch batches.

    Returns:
        `ImageBatches` (or a pair) with `.class_names`. Batches hold float32
        images, raw 0..255, read with `kerastl.data.load_image` (16-bit files
        scaled to 0..255, alpha dropped, resized with PIL's bilinear filter).
    """
    size = check_size(image_size, arg="image_size")
    if size is None:
        raise ValueError(
            "`image_size` must be an int or (height, width). Received: image_size=None"
        )
    check_batch_size(batch_size)
    check_split(validation_split)
    check_positive_int(workers, "workers")
    if label_mode not in LABEL_MODES:
        raise ValueError(
            f"`label_mode` must be one of {LABEL_MODES}. Received: label_mode={label_mode!r}"
        )
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"`color_mode` must be one of {COLOR_MODES}. Received: color_mode={color_mode!r}"
        )
    import_pil()  # fail early without Pillow
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"`directory` must be a folder path. Received: directory={type(directory).__name__}"
        )
    if os.path.isfile(directory):
        raise NotADirectoryError(
            "`directory` is a file, not a folder of class folders. "
            f"Received: directory={directory!r}"
        )
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No directory at this path. Received: directory={directory!r}")
    class_names, paths, ids = _class_files(directory)
    if label_mode == "binary" and len(class_names) != 2:
        raise ValueError(
            f"label_mode='binary' needs exactly 2 classes; found {len(class_names)}. "
            f"Received: label_mode={label_mode!r}"
        )
    labels = np.asarray(ids)
    if label_mode == "categorical":
        labels = np.eye(len(class_names), dtype="float32")[labels]
    elif label_mode == "binary":
        labels = labels.astype("float32")
    _check_mix(mix, labels)

    return _split_batches(
        paths,
        labels,
        validation_split,
        shuffle=shuffle,
        seed=seed,
        mix=mix,
        batch_size=batch_size,
        image_size=size,
        color_mode=color_mode,
        class_names=class_names,
        workers=workers,
    )


def _class_files(directory):
    """`(class names, image paths, class ids)` of `directory/<class>/<image>`, sorted."""
    class_names = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    paths: list[str] = []
    ids: list[int] = []
    for label, name in enumerate(class_names):
        folder = os.path.join(directory, name)
        files = sorted(
            os.path.join(root, f)
            for root, _, names in os.walk(folder)
            for f in names
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ValueError(
                f"Class folder {name!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
                f"Received: directory={directory!r}"
            )
        paths += files
        ids += [label] * len(files)
    if not paths:
        raise ValueError(
            "`directory` holds no class folders with images (expected "
            f"directory/<class>/<image>). Received: directory={directory!r}"
        )
    if len(class_names) < 2:
        raise ValueError(
            f"`directory` must hold at least 2 class folders; found {class_names}. "
            f"Received: directory={directory!r}"
        )
    return class_names, paths, ids


def _split_batches(images, labels, validation_split, *, shuffle, seed, mix, **kwargs):
    """`ImageBatches` over all rows, or a (train, validation) pair of them.

    Only the training part shuffles and mixes. `images` is an array or a list
    of paths; `labels` an array or `None`.
    """

    def batches(rows, train):
        rows_of = images[rows] if isinstance(images, np.ndarray) else [images[i] for i in rows]
        return ImageBatches(
            rows_of,
            None if labels is None else labels[rows],
            shuffle=shuffle and train,
            seed=seed,
            mix=mix if train else None,
            **kwargs,
        )

    if validation_split is None:
        return batches(np.arange(len(images)), train=True)
    train_rows, val_rows = _split(labels, len(images), validation_split, seed)
    return batches(train_rows, train=True), batches(val_rows, train=False)


def from_tf_dataset(
    dataset: Any, batch_size: int = 32, shuffle: int | None = 1024, seed: int | None = None
) -> Any:
    """A `tf.data.Dataset` of `(image, label)` made ready for `fit`: shuffle, batch, prefetch.

    Seed 003's steps (`shuffle(1024).batch(32).prefetch(AUTOTUNE)`), after
    checking that the elements are images kerastl models take. A dataset of
    single images is shuffled with a buffer of `shuffle` (0 or None: not
    shuffled) and batched; an already batched one is only prefetched. Images
    stay raw (0..255): the model normalises inside, so no `map` is needed.

    Keras fits a `tf.data.Dataset` on every backend, provided TensorFlow is
    installed next to it.
    """
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"`dataset` must be a tf.data.Dataset. Received: dataset={type(dataset).__name__}"
        )
    check_batch_size(batch_size)
    if shuffle is not None and (
        isinstance(shuffle, bool) or not isinstance(shuffle, numbers.Integral) or shuffle < 0
    ):
        raise ValueError(
            "`shuffle` must be the size of the shuffle buffer, an int >= 0 (0 or None: not "
            f"shuffled). Received: shuffle={shuffle!r}"
        )
    spec = dataset.element_spec
    image_spec = spec[0] if isinstance(spec, tuple) else spec
    if not isinstance(image_spec, tf.TensorSpec):
        raise ValueError(
            "`dataset` elements must be images or (images, labels) tuples. "
            f"Received: element_spec={spec}"
        )
    batched = image_spec.shape.rank == 4
    shape = image_spec.shape if batched else tf.TensorShape([None]).concatenate(image_spec.shape)
    check_images(_Spec(tuple(shape.as_list()), image_spec.dtype), arg="dataset", part="images")
    if not batched:
        if shuffle:
            dataset = dataset.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


def from_torch_dataset(
    dataset: Any,
    batch_size: int = 32,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
) -> Any:
    """A torch `Dataset` of `(image, label)` as a `DataLoader` that Keras fits.

    Images may be channels-last `(h, w, c)` or channels-first `(c, h, w)`, as
    torchvision gives them; batches come out channels-last, the Keras layout.
    Images must stay raw 0..255 (do not use torchvision's `ToTensor`, which
    divides by 255). An existing `DataLoader` is checked and returned as is.

    Keras fits a torch `DataLoader` on every backend, provided torch is
    installed next to it.
    """
    import torch
    from torch.utils.data import DataLoader, Dataset

    if isinstance(dataset, DataLoader):
        adapt(dataset, "dataset").first_batch()  # checked; empty refused
        return dataset
    if not isinstance(dataset, Dataset):
        raise ValueError(
            "`dataset` must be a torch Dataset or DataLoader. "
            f"Received: dataset={type(dataset).__name__}"
        )
    check_batch_size(batch_size)
    try:
        empty = len(dataset) == 0
    except TypeError:
        raise ValueError(
            "`dataset` must be a map-style torch Dataset (with a length); batch an "
            "IterableDataset with a DataLoader yourself. "
            f"Received: dataset={type(dataset).__name__}"
        ) from None
    if empty:
        raise ValueError("`dataset` holds no images. Received: dataset of length 0")
    first = dataset[0]
    image = to_numpy(first[0] if isinstance(first, (tuple, list)) else first)
    channels_first = image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3)
    if channels_first:
        image = np.moveaxis(image, 0, -1)
    check_images(image, arg="dataset", part="images", batched=False)
    check_finite(image[None], arg="dataset", part="images", where=" (image 0)")
    warn_if_rescaled(image, arg="dataset images")

    def collate(items):
        def stack(values):
            array = np.stack([np.asarray(v) for v in values])
            return np.moveaxis(array, 1, -1) if channels_first else array

        if isinstance(items[0], (tuple, list)):
            images, *rest = zip(*items, strict=True)
            return (torch.from_numpy(stack(images)),) + tuple(
                torch.from_numpy(np.stack([np.asarray(v) for v in part])) for part in rest
            )
        return torch.from_numpy(stack(items))

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
    )


class _Spec:
    def __init__(self, shape, dtype):
        self.shape = shape
        self.dtype = dtype
