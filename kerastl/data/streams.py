"""The streamed kinds of `DataAdapter`: `tf.data`, a torch `DataLoader`, other iterables.

Nothing of a stream is known before it is drawn (a `tf.data` set's element
spec aside): each batch is checked as it comes, by `numpy_batches` or by the
`PyDataset` that `fit_arguments` gives Keras.
"""

import keras

from kerastl.data.adapted import DataAdapter, _pack
from kerastl.data.checks import check_images


class _Stream(DataAdapter):
    """Batches drawn by iterating: `tf.data`, a torch `DataLoader`, a list or a generator."""

    def __init__(self, data, arg, batch_size, needs_labels, kind):
        super().__init__(data, arg, batch_size, needs_labels)
        self.kind = kind
        self.batch_size = getattr(data, "batch_size", None) or batch_size
        self.one_shot = kind == "iterable" and iter(data) is data
        self._pending = []  # a generator's batch drawn by first_batch
        self._consumed = False
        if kind == "tf":
            self._check_spec(data.element_spec)
            if int(data.cardinality()) == 0:
                raise ValueError(f"`{arg}` holds no batches. Received: {self._received()}")
        elif kind == "torch":
            try:
                empty = len(data) == 0
            except TypeError:  # an IterableDataset: known after a pass
                empty = False
            if empty:
                raise ValueError(f"`{arg}` holds no batches. Received: {self._received()}")

    def fit_arguments(self):
        # Checked batch by batch, in the stream's own order.
        return {"x": _CheckedStream(self), "shuffle": False}

    def _check_spec(self, spec):
        """A `tf.data` set's images and labels, from its element spec (nothing drawn)."""
        parts = spec if isinstance(spec, tuple) else (spec,)
        if not hasattr(parts[0], "shape") or not hasattr(parts[0], "dtype"):
            raise ValueError(
                f"`{self.arg}` elements must be (images, labels) tuples. "
                f"Received: {self.arg} element_spec={spec}"
            )
        if parts[0].shape.rank is not None:
            shape = _Spec(tuple(parts[0].shape.as_list()), parts[0].dtype)
            self._fail(check_images, shape, self.arg, "images")
        if self.needs_labels and len(parts) < 2:
            self._error = ValueError(
                f"`{self.arg}` needs labels: its elements must be (images, labels). "
                f"Received: {self.arg} element_spec={spec}"
            )
            raise self._error

    def _count_steps(self):
        data = self.source
        if self.kind == "tf":
            steps = int(data.cardinality())
            if steps == -1:  # tf.data.INFINITE_CARDINALITY
                raise ValueError(
                    f"`{self.arg}` is an infinite dataset (repeat()): a pass over it never "
                    f"ends. Remove the repeat(). Received: {self._received()}"
                )
            return steps if steps >= 0 else sum(1 for _ in data)  # unknown: one pass
        try:
            return len(data)
        except TypeError:
            if self.one_shot:
                raise ValueError(
                    f"`{self.arg}` is a one-shot iterator (a generator): it has no length "
                    "and cannot be passed over again. Give a list of batches, a "
                    f"keras.utils.PyDataset or arrays. Received: {self._received()}"
                ) from None
            return sum(1 for _ in data)

    def _steps_are_known(self):
        if self.kind == "tf":
            return int(self.source.cardinality()) != -2  # unknown: counted by a pass
        try:
            len(self.source)
        except TypeError:
            return False
        return True

    @property
    def count(self):
        if self.kind != "torch" or getattr(self.source, "drop_last", False):
            return None
        try:
            return len(self.source.dataset)
        except (TypeError, AttributeError):
            return None

    def _raw_batches(self, shuffle, seed):
        if not self.one_shot:
            yield from self.source
            return
        if self._consumed and not self._pending:
            raise ValueError(
                f"`{self.arg}` is a one-shot iterator (a generator) and was already passed "
                f"over: give a list of batches, a keras.utils.PyDataset or arrays. "
                f"Received: {self._received()}"
            )
        self._consumed = True
        while self._pending:
            yield self._pending.pop(0)
        yield from self.source

    def first_batch(self):
        if not self.one_shot:
            return super().first_batch()
        if not self._pending:
            batch = next(self.source, None)
            if batch is None:
                raise ValueError(f"`{self.arg}` holds no batches. Received: {self._received()}")
            self._pending.append(batch)
            self._consumed = True
        x, y, _ = self._checked(self._pending[0], 0)
        return x, y


class _Spec:
    def __init__(self, shape, dtype):
        self.shape = shape
        self.dtype = dtype


class _CheckedStream(keras.utils.PyDataset):
    """A stream (tf.data, DataLoader, list) as batches Keras draws in order, each checked.

    Keras draws batch 0, 1, ... of a PyDataset in turn (it may peek at the first
    ones before); a batch asked for out of turn starts a new pass.
    """

    def __init__(self, adapter):
        super().__init__()
        self.adapter = adapter
        self._batches = None
        self._next = 0

    def __len__(self):
        return self.adapter.steps

    def __getitem__(self, index):
        if self._batches is None or index != self._next:
            self._batches = self.adapter.numpy_batches(weights=True)
            self._next = 0
        for batch in self._batches:
            self._next += 1
            if self._next > index:
                return _pack(*batch)
        self._batches = None
        arg = self.adapter.arg
        raise ValueError(
            f"`{arg}` gave fewer batches than its length ({len(self)}) in this pass. "
            f"Received: {arg} without batch {index}"
        )

    def on_epoch_end(self):
        self._batches = None
