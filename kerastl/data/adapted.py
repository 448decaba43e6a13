"""`DataAdapter`, what `kerastl.data.adapt` returns, and its array and PyDataset kinds.

Arrays and kerastl's `ImageBatches` are checked whole when adapted; other
batches as they are drawn (`kerastl.data.checks` holds the messages).
"""

import hashlib
import itertools
import math
import os

import keras
import numpy as np

from kerastl.data.checks import (
    check_finite,
    check_head_labels,
    check_images,
    check_label_count,
    image_array,
    to_numpy,
)
from kerastl.data.image_batches import ImageBatches


class DataAdapter:
    """One data argument, whatever its form: made by `adapt`.

    Attributes:
        arg: the user's argument name, used in every message.
        batch_size: images per batch (a dataset's own when it has one).
        kind: `"arrays"`, `"batches"` (a `keras.utils.PyDataset`), `"tf"`,
            `"torch"` or `"iterable"`.
        one_shot: whether the source can be passed over once only (a generator).
    """

    kind = None

    def __init__(self, source, arg, batch_size, needs_labels):
        self.source = source
        self.arg = arg
        self.batch_size = batch_size
        self.needs_labels = bool(needs_labels)
        self.one_shot = False
        self.head = None
        self._steps = None
        self._error = None  # the last error a check raised (see `data_errors`)

    def __repr__(self):
        return f"DataAdapter(arg={self.arg!r}, kind={self.kind!r}, source={describe(self.source)})"

    # --- what is known without a pass ----------------------------------------------

    @property
    def steps(self):
        """Batches per pass; raises for infinite data and for a generator (no second pass)."""
        if self._steps is None:
            self._steps = self._count_steps()
            if self._steps == 0:
                raise ValueError(f"`{self.arg}` holds no batches. Received: {self._received()}")
        return self._steps

    @property
    def known_steps(self):
        """`steps` when known without a pass (or once counted); else None. Raises for
        infinite data."""
        return self.steps if self._steps is not None or self._steps_are_known() else None

    def _steps_are_known(self):
        return True

    @property
    def count(self):
        """The number of images, when known without a pass; else None."""
        return None

    @property
    def labels(self):
        """All labels, when known without a pass; else None."""
        return None

    @property
    def keeps_order(self):
        """Whether the batches come in one fixed order (kerastl batches without shuffle)."""
        return False

    @property
    def mixes(self):
        """Whether the batches mix images and labels at random (MixUp / CutMix)."""
        return getattr(self.source, "mix", None) is not None

    @property
    def has_weights(self):
        """Whether the data carries sample weights known without a pass (`(x, y, w)`)."""
        return False

    def fingerprint(self):
        """A stable digest of the data (array bytes; file paths, sizes, mtimes), or None."""
        return None

    # --- what fit takes -------------------------------------------------------------

    def fit_arguments(self):
        """The keyword arguments `model.fit` takes the data as (`x=...`, ...)."""
        raise NotImplementedError

    def evaluate_arguments(self):
        """The keyword arguments `model.evaluate` takes the data as."""
        arguments = self.fit_arguments()
        arguments.pop("shuffle", None)
        return arguments

    def validation_data(self):
        """What `fit`'s `validation_data` takes."""
        return self.fit_arguments()["x"]

    # --- batches ----------------------------------------------------------------------

    def numpy_batches(self, *, shuffle=False, seed=None, weights=False):
        """Checked `(x, y or None)` numpy batches of one pass; `(x, y, w)` with `weights`.

        `shuffle` and `seed` (an int, None or a `np.random.Generator`) order
        array data; datasets keep their own order. A pass that yields no batch
        raises; so does a second pass over a generator.
        """
        empty = True
        for index, batch in enumerate(self._raw_batches(shuffle, seed)):
            empty = False
            x, y, w = self._checked(batch, index)
            yield (x, y, w) if weights else (x, y)
        if empty:
            raise ValueError(f"`{self.arg}` holds no batches. Received: {self._received()}")

    def first_batch(self):
        """The first checked `(x, y)` batch (a generator keeps it for its pass)."""
        batches = self.numpy_batches()
        try:
            return next(batches)
        finally:
            batches.close()

    # --- checks ---------------------------------------------------------------------

    def require_labels(self):
        """From now on, data without labels is refused (here when that is known now)."""
        self.needs_labels = True

    def check_labels(self, head, *, required=True):
        """Refuses labels `head` (a `kerastl.heads.TaskHead`) cannot train on.

        Labels known now are checked now; a stream's are checked batch by batch.
        `required=False` lets data without labels through (features to cache).
        """
        if required:
            self.require_labels()
        self.head = head
        if self.labels is not None:
            self._fail(check_head_labels, self.labels, head, self.arg)

    def check_shards(self, shards):
        """Refuses batches that a distribution cannot split evenly over its `shards` devices.

        JAX (`keras.distribution`) splits every batch; TensorFlow (`tf.distribute`)
        takes uneven batches, except the first of each `fit` / `evaluate`, which
        Keras reduces across replicas to build the model.
        """
        count = self.count
        if shards == 1 or count is None or self.kind not in ("arrays", "batches"):
            return
        sizes = {min(self.batch_size, count)}
        if keras.config.backend() != "tensorflow":
            sizes.add(count % self.batch_size or self.batch_size)
        uneven = sorted(size for size in sizes if size % shards)
        if uneven:
            raise ValueError(
                f"`{self.arg}` gives a batch of {uneven[0]} image(s), which the active "
                f"distribution cannot split evenly over its {shards} devices. Use a batch "
                f"size and a number of images that are multiples of {shards}. Received: "
                f"batch_size={self.batch_size}, {self.arg} of {count} images"
            )

    # --- internals ------------------------------------------------------------------

    def _count_steps(self):
        raise NotImplementedError

    def _raw_batches(self, shuffle, seed):
        raise NotImplementedError

    def _received(self):
        return f"{self.arg}={describe(self.source)}"

    def _fail(self, check, *args, **kwargs):
        """Runs a check; keeps the error it raises for `data_errors`."""
        try:
            return check(*args, **kwargs)
        except (ValueError, TypeError) as e:
            self._error = e
            raise

    def _checked(self, batch, index):
        """`(x, y, w)` numpy of one drawn batch, checked."""
        return self._fail(self._check_batch, batch, index)

    def _check_batch(self, batch, index):
        arg, where = self.arg, f" (batch {index})"
        x, y, w = _unpack(batch, arg, index)
        x = image_array(x, arg, "images", where)
        check_images(x, arg, "images", where)
        check_finite(x, arg, "images", where)
        if y is None:
            if self.needs_labels:
                raise ValueError(
                    f"`{arg}` needs labels: its batches must be (images, labels). "
                    f"Received: {arg} batch {index} of images only"
                )
        else:
            y = _label_array(y, arg, where)
            check_label_count(y, len(x), arg, where=where)
            if self.head is not None:
                check_head_labels(y, self.head, arg, where)
        if w is not None:
            w = to_numpy(w)
            check_label_count(w, len(x), arg, where=f"{where} sample weights")
        return x, y, w


# --- arrays ------------------------------------------------------------------------------


class _Arrays(DataAdapter):
    """`(x, y)` / `(x, y, sample_weight)` arrays, or `x` alone: all checked in `adapt`."""

    kind = "arrays"

    def __init__(self, data, arg, batch_size, needs_labels):
        super().__init__(data, arg, batch_size, needs_labels)
        x, y, w = (tuple(data) + (None, None))[:3]
        self._tuple = len(data)
        self.x = self._fail(_images, x, arg)
        self.y = None if y is None else self._fail(_label_array, y, arg)
        self.w = None if w is None else to_numpy(w)
        for values, what in ((self.y, ""), (self.w, " sample weights")):
            if values is not None:
                self._fail(check_label_count, values, len(self.x), arg, where=what)
        if needs_labels:
            self.require_labels()

    def require_labels(self):
        super().require_labels()
        if self.y is None:
            given = "(x, None)" if self._tuple >= 2 else f"images of shape {self.x.shape}"
            self._error = ValueError(
                f"`{self.arg}` needs labels: pass (images, labels). Received: {self.arg}={given}"
            )
            raise self._error

    def _count_steps(self):
        return math.ceil(len(self.x) / self.batch_size)

    @property
    def count(self):
        return len(self.x)

    @property
    def labels(self):
        return self.y

    @property
    def has_weights(self):
        return self.w is not None

    def fingerprint(self):
        digest = hashlib.sha256()
        for array in (self.x, self.y, self.w):
            if array is not None:
                update_digest(digest, array)
        return digest.hexdigest()

    def fit_arguments(self):
        arguments = {"x": self.x, "batch_size": self.batch_size}
        if self.y is not None:
            arguments["y"] = self.y
        if self.w is not None:
            arguments["sample_weight"] = self.w
        return arguments

    def validation_data(self):
        return tuple(v for v in (self.x, self.y, self.w) if v is not None)

    def _raw_batches(self, shuffle, seed):
        n = len(self.x)
        order = np.random.default_rng(seed).permutation(n) if shuffle else None
        for start in range(0, n, self.batch_size):
            rows = slice(start, start + self.batch_size)
            if order is not None:
                rows = order[rows]
            yield tuple(None if v is None else v[rows] for v in (self.x, self.y, self.w))

    def _checked(self, batch, index):
        return batch  # checked whole in `adapt` and `check_labels`


def _images(x, arg):
    x = image_array(x, arg, "images")
    check_images(x, arg, "images")
    if len(x) == 0:
        raise ValueError(f"`{arg}` holds no images. Received: {arg} images of shape {x.shape}")
    check_finite(x, arg, "images")
    return x


def _label_array(y, arg, where=""):
    try:
        return to_numpy(y)
    except (ValueError, TypeError):
        raise ValueError(
            f"`{arg}` labels must be an array, one label per image. "
            f"Received: {arg} labels{where} of type {type(y).__name__}"
        ) from None


def update_digest(digest, array):
    """Adds an array's dtype, shape and bytes to a hashlib digest."""
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype}|{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))


# --- keras.utils.PyDataset --------------------------------------------------------------


class _Batches(DataAdapter):
    """A `keras.utils.PyDataset`: kerastl's `ImageBatches` are checked whole in `adapt`."""

    kind = "batches"

    def __init__(self, data, arg, batch_size, needs_labels):
        super().__init__(data, arg, batch_size, needs_labels)
        self.batch_size = getattr(data, "batch_size", None) or batch_size
        self._known = isinstance(data, ImageBatches)
        if self._known:
            if isinstance(data.images, np.ndarray):
                self._fail(_images, data.images, arg)
            elif len(data.images) == 0:
                raise ValueError(f"`{arg}` holds no images. Received: {self._received()}")
        try:
            length = len(data)
        except (TypeError, NotImplementedError):
            length = None  # open-ended: drawn until IndexError
        if length == 0:
            raise ValueError(f"`{arg}` holds no batches. Received: {self._received()}")
        self._length = length
        if needs_labels:
            self.require_labels()

    def require_labels(self):
        super().require_labels()
        if self._known and self.source.labels is None:
            self._error = ValueError(
                f"`{self.arg}` needs labels: make it with labels (kerastl.data.from_arrays(x, "
                f"y)). Received: {self.arg}=ImageBatches without labels"
            )
            raise self._error

    def _steps_are_known(self):
        return self._length is not None

    def _count_steps(self):
        if self._length is None:
            raise ValueError(
                f"`{self.arg}` has no length (its `num_batches` is None): an epoch needs a "
                f"known number of batches. Received: {self._received()}"
            )
        return self._length

    @property
    def count(self):
        return len(self.source.images) if self._known else None

    @property
    def labels(self):
        labels = self.source.labels if self._known else None
        return None if labels is None else np.asarray(labels)

    @property
    def keeps_order(self):
        return self._known and not self.source.shuffle

    def fingerprint(self):
        data = self.source
        if not self._known or data.mix is not None:
            return None  # mixed labels are drawn anew every time
        digest = hashlib.sha256()
        if isinstance(data.images, np.ndarray):
            update_digest(digest, data.images)
        else:
            for path in data.images:
                stat = os.stat(path)
                digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            digest.update(repr((data.image_size, data.color_mode)).encode())
        if data.labels is not None:
            update_digest(digest, np.asarray(data.labels))
        digest.update(str(data.batch_size).encode())
        if data.shuffle:
            digest.update(b"|shuffled")
        return digest.hexdigest()

    def fit_arguments(self):
        if self._known:
            # kerastl batches keep their own order (shuffled by their seed, or not):
            # Keras would reshuffle the batch order from the global RNG, so a resumed
            # run could not see the batches an uninterrupted one would.
            return {"x": self.source, "shuffle": False}
        return {"x": _CheckedIndexed(self)}

    def _raw_batches(self, shuffle, seed):
        for index in itertools.count():
            if self._length is not None and index >= self._length:
                return
            try:
                yield self.source[index]
            except IndexError:
                if self._length is None:
                    return
                raise

    def _check_batch(self, batch, index):
        if not self._known:
            return super()._check_batch(batch, index)
        # Images and labels were checked whole; only the unpacking is left.
        return _unpack(batch, self.arg, index)


class _CheckedIndexed(keras.utils.PyDataset):
    """A user's PyDataset with each batch checked as Keras draws it (its workers kept)."""

    def __init__(self, adapter):
        source = adapter.source
        super().__init__(
            workers=source.workers,
            use_multiprocessing=source.use_multiprocessing,
            max_queue_size=source.max_queue_size,
        )
        self.adapter = adapter

    def __len__(self):
        return self.adapter.steps

    def __getitem__(self, index):
        return _pack(*self.adapter._checked(self.adapter.source[index], index))

    def on_epoch_begin(self):
        self.adapter.source.on_epoch_begin()

    def on_epoch_end(self):
        self.adapter.source.on_epoch_end()


# --- batches ----------------------------------------------------------------------------


def _pack(x, y, w):
    return (x,) if y is None else (x, y) if w is None else (x, y, w)


def _unpack(batch, arg, index):
    """`(x, y, w)` of a batch: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`."""
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        return (*batch, None, None)[:3]
    if _is_array(batch):
        return batch, None, None
    parts = f" of {len(batch)} parts" if isinstance(batch, (tuple, list)) else ""
    raise ValueError(
        f"`{arg}` batches must be (images, labels) or (images, labels, sample_weight). "
        f"Received: {arg} batch {index}, a {type(batch).__name__}{parts}"
    )


def _is_array(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__len__")
    )


def describe(data):
    """A short description of data for messages (never the arrays themselves)."""
    if isinstance(data, (tuple, list)) and len(data) <= 4:
        parts = [tuple(v.shape) if hasattr(v, "shape") else type(v).__name__ for v in data]
        return f"{type(data).__name__} of {parts}"
    if isinstance(data, (str, bytes, int, float, os.PathLike)) or data is None:
        text = repr(data)
        return text if len(text) <= 80 else text[:77] + "..."
    if hasattr(data, "shape"):
        return f"{type(data).__name__} of shape {tuple(data.shape)}"
    try:
        return f"{type(data).__name__} of {len(data)} batches"
    except (TypeError, NotImplementedError):
        return type(data).__name__
