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
import math
import mmap

import keras
import numpy as np

from kerastl import _memory as memory
from kerastl import _processes as processes
from kerastl._checks import check_positive_int
from kerastl._keras_private import batch_shards, flatten_layers, output_values, shard_batch
from kerastl._processes import local_rows
from kerastl.data.adapter import DataAdapter, adapt
from kerastl.heads.task_head import TaskHead
from kerastl.layers.feature_extractor import FeatureExtractor, find_extractor
from kerastl.training.feature_store import (
    CACHE_DTYPES,
    NUMPY_DTYPES,
    FeatureCache,
    MemorySink,
    Store,
    cache_key,
)


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
            `tf.data.Dataset`, a torch `DataLoader` or another iterable of
            batches, in the order to keep (`kerastl.data.adapt`). Bad images
            (NaN, a wrong rank, strings) are refused, a stream's at the batch
            that has them.
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
    data = adapt(data, "data", batch_size=batch_size)
    if isinstance(model_or_extractor, FeatureExtractor):
        if not model_or_extractor.fully_frozen:
            raise ValueError(
                "The FeatureExtractor is not fully frozen, so its features change as it "
                f"trains: there is nothing to cache. Received: "
                f"model_or_extractor={model_or_extractor.name!r}"
            )
        front = model_or_extractor
    elif isinstance(model_or_extractor, keras.Model):
        front, head, reason = cacheable(model_or_extractor, allow_random=views is not None)
        if front is None:
            raise ValueError(
                f"Features of this model cannot be cached: {reason}. "
                f"Received: model_or_extractor={model_or_extractor.name!r}"
            )
        data.check_labels(head, required=False)  # the labels are cached for this head
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
        cache_dir=cache_dir,
        views=views,
        dtype=dtype,
        verbose=verbose,
    )


def features_of(
    front, data, *, batch_size=32, cache_dir=None, views=None, dtype="float32", verbose=0
):
    """The `FeatureCache` of a model `front` (images -> features) over `data`.

    `data` is a `kerastl.data.DataAdapter` (its checks, labels included, hold
    as the batches are drawn) or what `kerastl.data.adapt` takes (`batch_size`
    is then the size of array batches). `views=None` runs `front` in inference
    mode (random augmentation is then off); `views=K` runs it K times in
    training mode when it has random layers (augmented copies), once otherwise.
    The features are stored as `dtype`.
    """
    dtype = check_cache_dtype(dtype)
    if not isinstance(data, DataAdapter):
        data = adapt(data, "data", batch_size=batch_size)
    augment = views is not None and bool(random_layers(front))
    passes = views if augment else 1
    store = None if cache_dir is None else Store(cache_dir)
    fingerprint = None if store is None else data.fingerprint()
    key = None
    if fingerprint is not None:
        key = cache_key(front, f"{fingerprint}|augmented={passes if augment else 0}", dtype)
        found = store.read(key)
        if found is not None:
            return _with_views(found, views, augment)
    if augment:
        front = _Augmenting(front)
    if key is not None:
        computed = store.compute(
            key, dtype, lambda sink: _compute(front, data, verbose, sink, passes, dtype)
        )
        return _with_views(computed, views, augment)
    features, labels = _compute(front, data, verbose, MemorySink(), passes, dtype)
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


class FeatureBatches(keras.utils.PyDataset):
    """Batches of cached features, read as they are drawn: the head phase holds one batch.

    `fit` takes arrays whole (TensorFlow copies them into one tensor), so
    features memory-mapped from disk (`cache_dir=`) would come back into memory:
    this reads `batch_size` rows at a time, and a data set whose features exceed
    the memory trains from the file. With `views=True` the features are
    `(views, n, ...)` augmented copies and each epoch draws one copy of every image.

    Args:
        features: `(n, ...)` features, or `(views, n, ...)` with `views=True`.
        labels: `(n, ...)` labels.
        batch_size: images per batch.
        shuffle: a new image order every epoch (else the cached order).
        views: whether `features` holds augmented copies.
        seed: the draws of epoch `e` depend on `(seed, e)` only, so a resumed
            run sees the batches an uninterrupted one would.
        epoch: the epoch the first draw is for.
    """

    def __init__(self, features, labels, batch_size, *, shuffle=True, views=False, seed=0, epoch=0):
        super().__init__()
        self.features, self.labels = features, np.asarray(labels)
        self.batch_size, self.shuffle, self.views, self.seed = batch_size, shuffle, views, seed
        self.epoch = epoch
        if shuffle:
            _read_at_random(features)
        self._draw()

    @property
    def feature_shape(self):
        return tuple(self.features.shape[2 if self.views else 1 :])

    @property
    def images(self):
        return self.features.shape[1 if self.views else 0]

    def _draw(self):
        n = self.images
        rng = np.random.default_rng([self.seed, self.epoch])
        self.view = rng.integers(0, self.features.shape[0], n) if self.views else None
        self.order = rng.permutation(n) if self.shuffle else np.arange(n)

    def __len__(self):
        return math.ceil(self.images / self.batch_size)

    def _rows(self, index):
        # In file order within the batch: a memory map reads forward.
        return np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])

    def end_to_end(self):
        """`(features, labels)` with the copies laid end to end: copy `v` of image `i` is
        row `v * n + i` (the features as they are without `views=True`)."""
        if not self.views:
            return self.features, self.labels
        copies = self.features.shape[0]
        labels = np.tile(self.labels, (copies,) + (1,) * (self.labels.ndim - 1))
        return self.features.reshape((-1, *self.feature_shape)), labels

    def epoch_rows(self):
        """This epoch's rows, batch after batch: indices into `end_to_end()`'s features."""
        rows = np.concatenate([self._rows(index) for index in range(len(self))])
        return self.view[rows] * self.images + rows if self.views else rows

    def __getitem__(self, index):
        rows = self._rows(index)
        picked = self.features[self.view[rows], rows] if self.views else self.features[rows]
        # Half-precision features go into the head as float32, a batch at a time.
        return np.asarray(picked, dtype="float32"), self.labels[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self._draw()


def _read_at_random(features):
    """Tells the kernel that memory-mapped features are read at random rows.

    Without it each row read faults in a read-ahead window around it: with features
    larger than the memory, a shuffled epoch read the file about 20 times over
    (2 GB/s of disk reads for 100 MB/s of rows, measured). numpy keeps a memory
    map's `mmap` object in `_mmap`; without it (or `madvise`) nothing changes.
    """
    mapped = getattr(features, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapped.madvise(mmap.MADV_RANDOM)


# --- computing -------------------------------------------------------------------------


# Input values per forward pass of the frozen backbone: 256 images of 96x96x3, 46 of
# 224x224x3 (the activations of a large batch at full size would hold gigabytes);
# and at most 256 images (small gray images are few values but their first layers'
# activations are not: 1,728 images of 64x64x1 peaked 1.5 GB in a mini-Xception).
INFERENCE_VALUES = 256 * 96 * 96 * 3
INFERENCE_IMAGES = 256
# torch: at most 128 images a call (MobileNetV2 0.35 at 96 px ran 250 images/s at
# 32, 415 at 128, 350 at 256), and only while every layer's outputs for them take
# at most an eighth of the memory the process may still take.
TORCH_IMAGES = 128
TORCH_MEMORY_SHARE = 8
_TORCH_MODULE_WRAPPER = getattr(keras.layers, "TorchModuleWrapper", ())


def _compute(front, data, verbose, sink, passes=1, dtype="float32"):
    """Runs `front` over every batch of `data` into `sink`, `passes` times.

    Returns `(features, labels)`. The features of pass `p` follow those of pass
    `p - 1`, cast to `dtype` chunk by chunk; the labels are one pass's.
    Consecutive batches go through the backbone together, up to `INFERENCE_VALUES`
    input values and `INFERENCE_IMAGES` images a call (fewer calls: a frozen pass in
    inference mode gives the same features at any batch size). Every chunk goes in at
    the size of the first (a short last one is padded with copies of its last image,
    their features dropped): one traced step on TensorFlow, one compilation on JAX, where a second
    batch shape would cost a second. Under a distribution that size is rounded up
    to a multiple of the devices a batch is split over.
    """
    steps = None if data.one_shot else data.known_steps
    progress = keras.utils.Progbar(steps and steps * passes, verbose=verbose) if verbose else None
    labels = []
    size = None
    shards = batch_shards(front)
    values, images = _call_budget(front)
    step = 0
    for batches in _passes(data, passes):
        first_pass = step == 0
        for x, ys, merged in _chunks(batches, values, images):
            count = len(x)
            size = size or -(-count // shards) * shards
            if count < size:
                x = np.concatenate([x, np.repeat(x[-1:], size - count, axis=0)])
            # predict_on_batch runs one compiled step (an eager call is 3-10x slower).
            features = _predict(front, x)[:count]
            sink.append(_cast(features, dtype))
            if first_pass:
                labels.extend(y for y in ys if y is not None)
            step += merged
            if progress is not None:
                progress.update(step)
    return sink.finish(), (np.concatenate(labels) if labels else None)


def _call_budget(front):
    """`(input values, images)` one call of the frozen pass may hold (`0, 0`: each batch alone).

    TensorFlow: `INFERENCE_VALUES` and `INFERENCE_IMAGES` (a call costs a traced
    step: MobileNetV2 0.35 at 96 px ran 1,239 images/s in calls of 256 against 831
    in calls of 32). torch: up to `TORCH_IMAGES`, while the activations of the call
    fit in a `TORCH_MEMORY_SHARE`th of `available_bytes()` (divided again among
    the processes of a `torch.distributed` job): its eager calls run
    faster joined, but Keras' functional run keeps every layer's output until it
    returns, so a joined call holds all of them for every image (MobileNetV2 0.35 at
    96 px: 6.9 MB an image; calls of 128 small gray images were killed under an
    800 MB limit that single batches ran within, `benchmarks/bench_larger_than_memory.py`).
    Where the memory or the activations are unknown, torch runs each batch alone.
    JAX runs each batch alone: its compiled step ran as fast at 32 images as at
    64-256 (165-174 images/s).
    """
    backend = keras.config.backend()
    if backend == "tensorflow":
        return INFERENCE_VALUES, INFERENCE_IMAGES
    if backend == "torch":
        per_image = _activation_bytes(front)
        free = memory.available_bytes()
        if per_image and free:
            # Several processes (torch.distributed) may share this host's memory.
            share = free // (TORCH_MEMORY_SHARE * processes.count())
            return INFERENCE_VALUES, min(TORCH_IMAGES, share // per_image)
    return 0, 0


def _activation_bytes(front):
    """Bytes of every layer's outputs for one image (float32), or `None` where unknown.

    The inputs are not counted (the batch is there anyway, and a model taking any
    image size has inputs of unknown size). Layers that a layer calls in its own
    code (not in a functional graph) leave no record and are not counted either: a
    lower bound, where the backbone's functional graph weighs most. A torch module
    inside (`TorchModuleWrapper`) hides all of its own: unknown.
    """
    layers = flatten_layers(front, include_self=True)
    if any(isinstance(layer, _TORCH_MODULE_WRAPPER) for layer in layers):
        return None
    sizes = [
        output_values(layer) for layer in layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    if any(size is None for size in sizes):
        return None
    return 4 * sum(sizes)


def _chunks(batches, values, images):
    """`(x, [y of each batch], batches merged)`: consecutive batches joined while the
    next one still fits in `values` input values and `images` images (a batch larger
    alone goes alone)."""
    xs, ys, held, count = [], [], 0, 0
    for x, y in batches:
        xs.append(x)
        ys.append(y)
        held, count = held + x.size, count + len(x)
        if held + x.size > values or count + len(x) > images:
            yield (xs[0] if len(xs) == 1 else np.concatenate(xs)), ys, len(xs)
            xs, ys, held, count = [], [], 0, 0
    if xs:
        yield (xs[0] if len(xs) == 1 else np.concatenate(xs)), ys, len(xs)


def _predict(front, x):
    """`front`'s outputs for the batch `x`, as numpy.

    `predict_on_batch` runs one compiled step (an eager call is 3-10x slower). In
    several processes (JAX, `auto_shard_dataset=False`) Keras' `predict_on_batch`
    cannot fetch a batch that spans them: the call runs on the global batch made of
    every process's rows and each process keeps its own (`local_rows`).
    """
    if processes.count() > 1:
        return local_rows(front(shard_batch(x), training=False))
    return np.asarray(front.predict_on_batch(shard_batch(x)))


def _passes(data, passes):
    """`passes` iterables of `(x, y)` numpy batches over `data`, each in the same order.

    Arrays and PyDatasets give the same order on every pass; a stream (which may
    shuffle, or be a generator) is drawn once and kept in memory for the others.
    """
    if passes == 1 or data.kind in ("arrays", "batches"):
        return [data.numpy_batches() for _ in range(passes)]
    kept = list(data.numpy_batches())
    return [kept] * passes


def _cast(features, dtype):
    with np.errstate(over="ignore"):  # an overflow raises below, with what to do
        cast = features.astype(NUMPY_DTYPES[dtype], copy=False)
    if dtype == "float16" and not np.isfinite(cast).all() and np.isfinite(features).all():
        largest = float(np.max(np.abs(features.astype("float32"))))
        raise ValueError(
            f"The features reach {largest:.4g}, beyond float16's range (65504): store "
            f"them as 'bfloat16' or 'float32'. Received: dtype='float16'"
        )
    return cast


def _draws_random_numbers(layer):
    """Whether a layer (or one inside it) has a seed generator: augmentation, dropout, noise."""
    inner = getattr(layer, "layers", None) or []
    if any(_draws_random_numbers(sub) for sub in inner):
        return True
    return any(isinstance(value, keras.random.SeedGenerator) for value in vars(layer).values())
