"""The frozen-feature cache: the backbone runs once per image, the head trains on what it gave.

While the backbone is frozen (and its BatchNorm in inference mode) and nothing
random runs before the head, every epoch would compute the same features
again. `cache_features` computes them once (preprocessing and backbone,
batched, with a progress bar) and `fine_tune` trains the head on them: the head
layer is shared, so the full model holds the trained head afterwards.

Features are float32, or float16 / bfloat16 when asked (`dtype=`: half the
memory and disk; the head still trains in float32, its inputs cast batch by
batch). On disk (`cache_dir=`) features are memory-mapped `.npy` files, so a
data set larger than memory works (it needs `n_images x feature_size x 4`
bytes of disk, 2 in half precision, and memory for one batch), keyed by what
they depend on: the backbone's and preprocessing's weights, the model's
configuration up to the head (dtype policies included), the cache's dtype,
and the data (array bytes, or file paths with their sizes and modification
times). A second run on the same model and data reads the
cache; a file that does not match its recorded checksum is rebuilt, never used.
"""

import dataclasses
import hashlib
import inspect
import json
import marshal
import math
import os

import keras
import ml_dtypes
import numpy as np

from kerastl._checks import check_positive_int
from kerastl._keras_private import batch_shards, flatten_layers, shard_batch
from kerastl._version import __version__
from kerastl.data.image_batches import ImageBatches
from kerastl.files.archive import replace_atomically
from kerastl.files.directories import prepare_directory
from kerastl.heads.task_head import TaskHead
from kerastl.layers.feature_extractor import FeatureExtractor, find_extractor

_FORMAT = 2
# What features can be stored as, and their NumPy types. NumPy has no bfloat16 of
# its own: Keras' (ml_dtypes, what `convert_to_numpy` gives on every backend).
CACHE_DTYPES = ("float32", "float16", "bfloat16")
_NUMPY_DTYPES = {
    "float32": np.dtype("float32"),
    "float16": np.dtype("float16"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


@dataclasses.dataclass
class FeatureCache:
    """Features computed once, with their labels.

    Attributes:
        features: `(n, ...)` array (a read-only memory map when on disk), float32
            or the `dtype` asked for.
        labels: `(n, ...)` array, or `None` for data without labels.
        key: the hex digest of what the features depend on (`None` when the
            data has no stable fingerprint, e.g. a `tf.data` pipeline).
        path: the `.npy` file of the features on disk, or `None`.
        reused: whether the features were read from an existing disk cache.
        views: `None`, or the number of augmented copies: `features` is then
            `(views, n, ...)`, copy `v` of image `i` at `features[v, i]`.
    """

    features: np.ndarray
    labels: np.ndarray | None
    key: str | None = None
    path: str | None = None
    reused: bool = False
    views: int | None = None

    def __len__(self):
        """The number of images (not of copies)."""
        return self.features.shape[1 if self.views else 0]


def cacheable(model, allow_random=False):
    """`(front, head, None)` when `model`'s head can train on cached features, else a reason.

    `front` maps the model's inputs to the head's inputs. The cache is valid
    only when the `FeatureExtractor` is fully frozen (its BatchNorm then runs in
    inference mode) and no layer before the head draws random numbers
    (augmentation, dropout, noise); with `allow_random=True` such layers are
    allowed (augmented copies, `views=`, sample them).
    """
    extractor = find_extractor(model)
    if extractor is None:
        return None, None, "the model holds no kerastl.FeatureExtractor"
    heads = [layer for layer in model.layers if isinstance(layer, TaskHead)]
    if len(heads) != 1 or model.layers[-1] is not heads[0]:
        return None, None, "the model does not end with one kerastl head"
    head = heads[0]
    if not extractor.fully_frozen:
        return (
            None,
            None,
            (
                f"the FeatureExtractor {extractor.name!r} is not fully frozen (its features "
                "change as it trains)"
            ),
        )
    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        front = keras.Model(inputs, head.input, name=f"{model.name}_features")
    except (AttributeError, ValueError) as e:
        return None, None, f"the head's input is not one tensor of the model ({e})"
    random = random_layers(front)
    if random and not allow_random:
        return (
            None,
            None,
            (
                f"layers before the head draw random numbers ({random}: augmentation, dropout "
                "or noise), so the features differ every epoch (views=K caches K augmented "
                "copies of each image)"
            ),
        )
    return front, head, None


def random_layers(front):
    """The names of the layers of `front` that draw random numbers."""
    return [layer.name for layer in front.layers if _draws_random_numbers(layer)]


def check_cache_dtype(dtype, arg="dtype"):
    """The name (one of `CACHE_DTYPES`) of a feature dtype: a name or a NumPy/backend dtype."""
    name = None
    if dtype is not None and not isinstance(dtype, bool):
        try:
            name = keras.backend.standardize_dtype(dtype)
        except (TypeError, ValueError, AttributeError):
            name = None
    if name not in CACHE_DTYPES:
        raise ValueError(
            f"`{arg}` must be the dtype to store features in, one of {CACHE_DTYPES}. "
            f"Received: {arg}={dtype!r}"
        )
    return name


def cache_features(
    model_or_extractor,
    data,
    *,
    batch_size=32,
    cache_dir=None,
    views=None,
    dtype="float32",
    verbose=1,
):
    """Runs the preprocessing and frozen backbone once per image; returns a `FeatureCache`.

    Args:
        model_or_extractor: a `kerastl.build_model` model (its layers up to the
            head run; the cache must be valid: see `cacheable`), or a fully
            frozen `FeatureExtractor` (its inputs must then be preprocessed).
        data: `(x, y)` or `x` arrays, a `kerastl.data` `PyDataset`, a
            `tf.data.Dataset` or a torch `DataLoader`, in the order to keep.
        batch_size: for arrays.
        cache_dir: a directory to keep the features in (memory-mapped), reused
            by later calls on the same model and data; `None` keeps them in
            memory.
        views: `None`, or the number of augmented copies of each image to
            cache: the layers before the head run in training mode (random
            augmentation, dropout; the frozen backbone stays in inference
            mode) `views` times over the data, and `features` has shape
            `(views, n, ...)`. Without random layers the copies are equal: it
            runs once and repeats them (no extra memory).
        dtype: what the features are stored as: `"float32"` (default),
            `"float16"` or `"bfloat16"` (half the memory and disk; a model
            under a mixed dtype policy computes them in that precision anyway).
            Each batch is cast as it comes; a feature beyond float16's range
            (65504) raises rather than being stored as infinity.
        verbose: 0 silent, 1 a progress bar.

    Example:

    ```python
    backbone = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, name="conv")], name="tiny"
    )
    extractor = kerastl.FeatureExtractor(backbone, pooling="avg")
    model = kerastl.build_model(
        extractor, kerastl.heads.multiclass(3), kerastl.preprocessing.pipeline(extractor, mode="tf")
    )
    x = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3)).astype("uint8")
    cache = kerastl.cache_features(model, (x, np.arange(10) % 3), verbose=0)
    print(cache.features.shape, cache.labels.shape)  # (10, 8) (10,)
    ```
    """
    check_positive_int(batch_size, "batch_size")
    if views is not None:
        check_positive_int(views, "views")
    dtype = check_cache_dtype(dtype)
    if verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")
    if isinstance(model_or_extractor, FeatureExtractor):
        if not model_or_extractor.fully_frozen:
            raise ValueError(
                "The FeatureExtractor is not fully frozen, so its features change as it "
                f"trains: there is nothing to cache. Received: "
                f"model_or_extractor={model_or_extractor.name!r}"
            )
        front = model_or_extractor
    elif isinstance(model_or_extractor, keras.Model):
        front, _, reason = cacheable(model_or_extractor, allow_random=views is not None)
        if front is None:
            raise ValueError(
                f"Features of this model cannot be cached: {reason}. "
                f"Received: model_or_extractor={model_or_extractor.name!r}"
            )
    else:
        raise TypeError(
            "`model_or_extractor` must be a kerastl model or a FeatureExtractor. "
            f"Received: model_or_extractor={model_or_extractor!r}"
        )
    if not isinstance(front, keras.Model):  # an extractor: a model around it, for predict
        images = keras.Input(front.image_shape)
        front = keras.Model(images, front(images), name=f"{front.name}_features")
    return features_of(
        front,
        data,
        batch_size=batch_size,
        cache_dir=cache_dir,
        views=views,
        dtype=dtype,
        verbose=verbose,
    )


def features_of(
    front, data, *, batch_size=32, cache_dir=None, views=None, dtype="float32", verbose=1
):
    """The `FeatureCache` of a model `front` (images -> features) over `data`.

    `views=None` runs `front` in inference mode (random augmentation is then
    off); `views=K` runs it K times in training mode when it has random layers
    (augmented copies), once otherwise. The features are stored as `dtype`.
    """
    dtype = check_cache_dtype(dtype)
    augment = views is not None and bool(random_layers(front))
    passes = views if augment else 1
    store = None if cache_dir is None else _Store(cache_dir)
    batches, fingerprint = _batches(data, batch_size, identify=store is not None)
    key = None
    if store is not None and fingerprint is not None:
        key = _key(front, f"{fingerprint}|augmented={passes if augment else 0}", dtype)
        found = store.read(key)
        if found is not None:
            return _with_views(found, views, augment)
    if augment:
        front = _Augmenting(front)
    if store is not None and key is not None:
        computed = store.compute(key, front, batches, verbose, passes, dtype)
        return _with_views(computed, views, augment)
    features, labels = _compute(front, batches, verbose, _MemorySink(), passes, dtype)
    return _with_views(FeatureCache(features, labels, key=key), views, augment)


class _Augmenting(keras.Model):
    """The layers before the head in training mode: each call draws new augmentations.

    A frozen FeatureExtractor keeps its backbone in inference mode whatever
    `training` says.
    """

    def __init__(self, front):
        super().__init__(name=f"{front.name}_augmenting")
        self.front = front

    def call(self, inputs):
        return self.front(inputs, training=True)


def _with_views(cache, views, augmented):
    """Features of `views` passes as `(views, n, ...)` (one repeated when not augmented)."""
    if views is None:
        return cache
    features = cache.features
    if augmented:
        features = features.reshape(views, len(features) // views, *features.shape[1:])
    else:  # no random layer: the copies are equal, one computed, repeated without copying
        features = np.broadcast_to(features[None], (views, *features.shape))
    return dataclasses.replace(cache, features=features, views=views)


class ViewBatches(keras.utils.PyDataset):
    """Batches of cached augmented views: each epoch, one random view of every image.

    Args:
        features: `(views, n, ...)` features.
        labels: `(n, ...)` labels.
        batch_size: images per batch.
        shuffle: a new image order every epoch (else the cached order).
        seed: the draws of epoch `e` depend on `(seed, e)` only, so a resumed
            run sees the batches an uninterrupted one would.
        epoch: the epoch the first draw is for.
    """

    def __init__(self, features, labels, batch_size, shuffle=True, seed=0, epoch=0):
        super().__init__()
        self.features, self.labels = features, np.asarray(labels)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = epoch
        self._draw()

    @property
    def feature_shape(self):
        return tuple(self.features.shape[2:])

    def _draw(self):
        views, n = self.features.shape[:2]
        rng = np.random.default_rng([self.seed, self.epoch])
        self.view = rng.integers(0, views, n)
        self.order = rng.permutation(n) if self.shuffle else np.arange(n)

    def __len__(self):
        return math.ceil(self.features.shape[1] / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        # Half-precision features go into the head as float32, a batch at a time.
        x = np.asarray(self.features[self.view[rows], rows], dtype="float32")
        y = self.labels[rows]
        return x, y

    def on_epoch_end(self):
        self.epoch += 1
        self._draw()


# --- computing -------------------------------------------------------------------------


def _compute(front, batches, verbose, sink, passes=1, dtype="float32"):
    """Runs `front` over every batch into `sink`, `passes` times; returns `(features, labels)`.

    The features of pass `p` follow those of pass `p - 1`, cast to `dtype` batch
    by batch; the labels are one pass's.
    Every batch goes in at the size of the first (a short last batch is padded with
    copies of its last image, their features dropped): one traced step on TensorFlow,
    one compilation on JAX, where a second batch shape would cost a second. Under a
    distribution that size is rounded up to a multiple of the devices a batch is split over.
    """
    total = len(batches) * passes
    progress = keras.utils.Progbar(total, verbose=verbose) if verbose else None
    labels = []
    size = None
    shards = batch_shards(front)
    for step in range(total):
        x, y = batches[step % len(batches)]
        count = len(x)
        size = size or -(-count // shards) * shards
        if count < size:
            x = np.concatenate([x, np.repeat(x[-1:], size - count, axis=0)])
        # predict_on_batch runs one compiled step (an eager call is 3-10x slower).
        sink.append(_cast(np.asarray(front.predict_on_batch(shard_batch(x)))[:count], dtype))
        if y is not None and step < len(batches):
            labels.append(np.asarray(keras.ops.convert_to_numpy(y)))
        if progress is not None:
            progress.update(step + 1)
    if not sink.rows:
        raise ValueError("`data` holds no images. Received: data with 0 batches")
    return sink.finish(), (np.concatenate(labels) if labels else None)


def _cast(features, dtype):
    with np.errstate(over="ignore"):  # an overflow raises below, with what to do
        cast = features.astype(_NUMPY_DTYPES[dtype], copy=False)
    if dtype == "float16" and not np.isfinite(cast).all() and np.isfinite(features).all():
        largest = float(np.max(np.abs(features.astype("float32"))))
        raise ValueError(
            f"The features reach {largest:.4g}, beyond float16's range (65504): store "
            f"them as 'bfloat16' or 'float32'. Received: dtype='float16'"
        )
    return cast


class _MemorySink:
    def __init__(self):
        self.parts, self.rows = [], 0

    def append(self, array):
        self.parts.append(array)
        self.rows += len(array)

    def finish(self):
        return np.concatenate(self.parts)


class _DiskSink:
    """Batches appended to a raw file, then one `.npy` written in chunks: bounded memory.

    The `.npy` format has no bfloat16: such features are stored as their bits
    (uint16) and read back through `_stored_as`.
    """

    _CHUNK = 1 << 26  # bytes copied at a time

    def __init__(self, path):
        self.path = path
        self.raw = f"{path}.{os.getpid()}.raw"
        self.file = open(self.raw, "wb")  # noqa: SIM115 - closed in finish()
        self.rows, self.dtype, self.row_shape = 0, None, None

    def append(self, array):
        if array.dtype == _NUMPY_DTYPES["bfloat16"]:
            array = array.view(np.uint16)
        if self.dtype is None:
            self.dtype, self.row_shape = array.dtype, array.shape[1:]
        self.file.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.rows += len(array)

    def finish(self):
        self.file.close()
        try:
            tmp = f"{self.path}.{os.getpid()}.tmp"
            shape = (self.rows, *self.row_shape)
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=shape)
            flat = out.reshape(-1)
            step = max(self._CHUNK // self.dtype.itemsize, 1)
            with open(self.raw, "rb") as f:
                for start in range(0, flat.size, step):
                    values = np.fromfile(f, dtype=self.dtype, count=min(step, flat.size - start))
                    flat[start : start + len(values)] = values
            out.flush()
            del out, flat
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            replace_atomically(tmp, self.path)
        finally:
            if os.path.exists(self.raw):
                os.remove(self.raw)
        return np.load(self.path, mmap_mode="r")


class _Arrays:
    """`(x, y)` arrays, in batches of `batch_size`."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[rows], None if self.y is None else self.y[rows]


class _Batches:
    """Indexable `(x, y)` batches of any data source, in its order."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _batches(data, batch_size, identify=True):
    """`(batches, fingerprint)`: fingerprint `None` when the data has no stable identity.

    `identify=False` skips the fingerprint (hashing every array) when nothing is kept.
    """
    if isinstance(data, np.ndarray):
        data = (data, None)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], np.ndarray):
        x, y = data
        if len(x) == 0:
            raise ValueError("`data` holds no images. Received: data with 0 images")
        y = None if y is None else np.asarray(y)
        if y is not None and len(y) != len(x):
            raise ValueError(
                f"`data` has {len(x)} images but {len(y)} labels. Received: data=(x, y)"
            )
        items = _Arrays(x, y, batch_size)
        if not identify:
            return items, None
        digest = hashlib.sha256()
        _update(digest, x)
        if y is not None:
            _update(digest, y)
        return items, digest.hexdigest()
    if isinstance(data, keras.utils.PyDataset):
        if len(data) == 0:
            raise ValueError("`data` holds no batches. Received: data with 0 batches")
        items = _Lazy(data)
        return items, (_dataset_fingerprint(data) if identify else None)
    module = type(data).__module__
    if module.startswith(("tensorflow", "torch")):
        items = [_pair(batch) for batch in data]
        if not items:
            raise ValueError(f"`data` holds no batches. Received: data={data!r}")
        return _Batches(items), None
    raise TypeError(
        "`data` must be (x, y) arrays, a keras.utils.PyDataset (kerastl.data), a "
        f"tf.data.Dataset or a torch DataLoader. Received: data={data!r}"
    )


class _Lazy:
    """A PyDataset read batch by batch (a large one never sits in memory whole)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return _pair(self.dataset[i])


def _pair(batch):
    if isinstance(batch, (tuple, list)):
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
    else:
        x, y = batch, None
    x = keras.ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x
    return x, y


def _dataset_fingerprint(data):
    """The identity of a kerastl `ImageBatches`; `None` for other datasets."""
    if not isinstance(data, ImageBatches) or data.shuffle or data.mix is not None:
        return None  # a reshuffled or mixed order is not one fixed sequence
    digest = hashlib.sha256()
    if isinstance(data.images, np.ndarray):
        _update(digest, data.images)
    else:
        for path in data.images:
            stat = os.stat(path)
            digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        digest.update(repr((data.image_size, data.color_mode)).encode())
    if data.labels is not None:
        _update(digest, np.asarray(data.labels))
    digest.update(str(data.batch_size).encode())
    return digest.hexdigest()


def _key(front, fingerprint, dtype="float32"):
    """What the features depend on: the layers' kinds, settings and code, all weights, the data.

    And the dtype they are stored as. The layers' settings hold their dtype
    policies, so a model under a mixed policy has keys of its own.

    Layer names are left out (Keras generates them, so two equal models differ
    there). A layer class of the user's own (not Keras' nor kerastl's) adds its
    source code, so editing it invalidates the cache; Keras' and kerastl's
    layers are their versions. Nothing runs the model: a disk cache found costs
    no trace or compilation.
    """
    digest = hashlib.sha256()
    digest.update(
        f"kerastl-feature-cache-{_FORMAT}|{keras.config.backend()}|keras {keras.__version__}|"
        f"kerastl {__version__}".encode()
    )
    for layer in flatten_layers(front, include_self=False, recursive=True):
        digest.update(type(layer).__name__.encode())
        digest.update(_code_of(type(layer)).encode())
        if not flatten_layers(layer, include_self=False, recursive=False):
            try:
                config = {k: v for k, v in layer.get_config().items() if k != "name"}
            except NotImplementedError:
                config = {}
            digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for weight in front.weights:
        _update(digest, np.asarray(keras.ops.convert_to_numpy(weight.value)))
    digest.update(f"{fingerprint}|dtype={dtype}".encode())
    return digest.hexdigest()


def _code_of(cls):
    """The source of a user's layer class (and its own bases); `""` for Keras' and kerastl's."""
    parts = []
    for klass in cls.__mro__:
        module = klass.__module__ or ""
        if module.split(".")[0] in ("keras", "kerastl", "builtins", "tensorflow", "torch", "jax"):
            continue
        try:
            parts.append(inspect.getsource(klass))
        except (OSError, TypeError):  # defined where no source is kept: its bytecode
            parts.append(f"{module}.{klass.__qualname__}")
            for name, member in sorted(vars(klass).items()):
                code = getattr(getattr(member, "__func__", member), "__code__", None)
                if code is not None:
                    parts.append(f"{name}:{marshal.dumps(code).hex()}")
    return "\n".join(parts)


def _update(digest, array):
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype}|{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))


# --- on disk -----------------------------------------------------------------------------


class _Store:
    def __init__(self, directory):
        directory = prepare_directory(directory, "cache_dir")
        if not os.access(directory, os.W_OK):
            raise PermissionError(f"`cache_dir` is not writable. Received: cache_dir={directory!r}")
        self.directory = directory

    def _paths(self, key):
        stem = os.path.join(self.directory, f"features-{key[:32]}")
        return f"{stem}.npy", f"{stem}.labels.npy", f"{stem}.json"

    def read(self, key):
        features_path, labels_path, meta_path = self._paths(key)
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if meta.get("key") != key or meta.get("format") != _FORMAT:
                return None
            if _file_digest(features_path) != meta["features_sha256"]:
                return None  # stale or corrupt: rebuilt by the caller
            features = _stored_as(np.load(features_path, mmap_mode="r"), meta["dtype"])
            if features is None:
                return None
            labels = None
            if meta.get("labels_sha256") is not None:
                if _file_digest(labels_path) != meta["labels_sha256"]:
                    return None
                labels = np.load(labels_path)
        except (OSError, ValueError, KeyError):
            return None
        return FeatureCache(features, labels, key=key, path=features_path, reused=True)

    def compute(self, key, front, batches, verbose, passes=1, dtype="float32"):
        features_path, labels_path, meta_path = self._paths(key)
        sink = _DiskSink(features_path)
        features, labels = _compute(front, batches, verbose, sink, passes, dtype)
        features = _stored_as(features, dtype)
        meta = {"format": _FORMAT, "key": key, "shape": list(features.shape), "dtype": dtype}
        meta["features_sha256"] = _file_digest(features_path)
        meta["labels_sha256"] = None if labels is None else _save(labels_path, labels)
        tmp = f"{meta_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        replace_atomically(tmp, meta_path)
        return FeatureCache(features, labels, key=key, path=features_path)


def _stored_as(features, dtype):
    """Features from disk as `dtype` (bfloat16 is stored as its uint16 bits); `None` if not."""
    stored = np.dtype("uint16") if dtype == "bfloat16" else _NUMPY_DTYPES[dtype]
    if features.dtype != stored:
        return None
    return features.view(_NUMPY_DTYPES[dtype])


def _save(path, array):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    digest = _file_digest(tmp)
    replace_atomically(tmp, path)
    return digest


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _draws_random_numbers(layer):
    """Whether a layer (or one inside it) has a seed generator: augmentation, dropout, noise."""
    inner = getattr(layer, "layers", None) or []
    if any(_draws_random_numbers(sub) for sub in inner):
        return True
    return any(isinstance(value, keras.random.SeedGenerator) for value in vars(layer).values())
