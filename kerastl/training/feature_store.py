"""The feature cache's files: features and labels on disk, keyed by what they depend on.

A cache entry is three files in `cache_dir`: the features (`.npy`, read back
memory-mapped; bfloat16 stored as its uint16 bits), the labels and a JSON
record of the key and both files' SHA-256. A file that does not match its
record is never used. The key (`cache_key`) digests the layers' kinds,
settings and code, every weight, the data's fingerprint and the dtype.
"""

import dataclasses
import hashlib
import inspect
import json
import marshal
import os

import keras
import ml_dtypes
import numpy as np

from kerastl._keras_private import flatten_layers
from kerastl._version import __version__
from kerastl.data.adapted import update_digest
from kerastl.files.atomic import replace_atomically, write_atomically
from kerastl.files.directories import prepare_directory

FORMAT = 2
# What features can be stored as, and their NumPy types. NumPy has no bfloat16 of
# its own: Keras' (ml_dtypes, what `convert_to_numpy` gives on every backend).
CACHE_DTYPES = ("float32", "float16", "bfloat16")
NUMPY_DTYPES = {
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


class MemorySink:
    def __init__(self):
        self.parts, self.rows = [], 0

    def append(self, array):
        self.parts.append(array)
        self.rows += len(array)

    def finish(self):
        return np.concatenate(self.parts)


class DiskSink:
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
        if array.dtype == NUMPY_DTYPES["bfloat16"]:
            array = array.view(np.uint16)
        if self.dtype is None:
            self.dtype, self.row_shape = array.dtype, array.shape[1:]
        self.file.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.rows += len(array)

    def discard(self):
        self.file.close()
        if os.path.exists(self.raw):
            os.remove(self.raw)

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


def cache_key(front, fingerprint, dtype="float32"):
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
        f"kerastl-feature-cache-{FORMAT}|{keras.config.backend()}|keras {keras.__version__}|"
        f"kerastl {__version__}".encode()
    )
    for layer in flatten_layers(front, include_self=False, recursive=True):
        digest.update(type(layer).__name__.encode())
        digest.update(code_of(type(layer)).encode())
        if not flatten_layers(layer, include_self=False, recursive=False):
            try:
                config = {k: v for k, v in layer.get_config().items() if k != "name"}
            except NotImplementedError:
                config = {}
            digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for weight in front.weights:
        update_digest(digest, np.asarray(keras.ops.convert_to_numpy(weight.value)))
    digest.update(f"{fingerprint}|dtype={dtype}".encode())
    return digest.hexdigest()


def code_of(cls):
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


class Store:
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
            if meta.get("key") != key or meta.get("format") != FORMAT:
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

    def compute(self, key, dtype, run):
        """Features `run(sink)` computes into a disk sink, written with their labels and key."""
        features_path, labels_path, meta_path = self._paths(key)
        sink = DiskSink(features_path)
        try:
            features, labels = run(sink)
        except BaseException:
            sink.discard()  # bad data found on the way: no partial file left behind
            raise
        features = _stored_as(features, dtype)
        meta = {"format": FORMAT, "key": key, "shape": list(features.shape), "dtype": dtype}
        meta["features_sha256"] = _file_digest(features_path)
        meta["labels_sha256"] = None if labels is None else _save(labels_path, labels)
        write_atomically(meta_path, lambda f: json.dump(meta, f), text=True)
        return FeatureCache(features, labels, key=key, path=features_path)


def _stored_as(features, dtype):
    """Features from disk as `dtype` (bfloat16 is stored as its uint16 bits); `None` if not."""
    stored = np.dtype("uint16") if dtype == "bfloat16" else NUMPY_DTYPES[dtype]
    if features.dtype != stored:
        return None
    return features.view(NUMPY_DTYPES[dtype])


def _save(path, array):
    write_atomically(path, lambda f: np.save(f, array))
    return _file_digest(path)


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
