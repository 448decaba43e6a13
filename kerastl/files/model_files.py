"""Opening a Keras model file: checks and errors shared by every part that reads one.

A load reads one version of the file: it is opened by name once (`open_once`)
and everything after reads that open file, or a private copy of it
(`snapshot`) where Keras needs a path. A save beside the load replaces the
name with a new file (an atomic rename) and leaves what is open unchanged.
"""

import contextlib
import json
import os
import shutil
import stat
import tempfile

import h5py
import keras

from kerastl.files import archive

H5_SUFFIXES = (".h5", ".hdf5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The JSON root attributes of a legacy HDF5 model file that kerastl and Keras parse.
LEGACY_JSON_ATTRS = ("model_config", "training_config")
_COPY_CHUNK = 1 << 20
# Opening a FIFO to read would wait for a writer; nonblocking, it is refused instead.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


def check_model_path(path, arg="path"):
    """`path` as a string, once it names an existing file; errors name `arg`."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"`{arg}` must be a file path. Received: {arg}={path!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at this path. Received: {arg}={path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"`{arg}` is a directory; kerastl loads .keras and .h5 files (a TF SavedModel "
            f"export loads with `keras.layers.TFSMLayer`). Received: {arg}={path!r}"
        )
    return path


@contextlib.contextmanager
def open_once(path, arg="path"):
    """`path` opened once, as a binary file: every read through it sees one version."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:  # removed since `check_model_path`
        raise FileNotFoundError(f"No model file at this path. Received: {arg}={path!r}") from None
    except OSError as e:
        raise type(e)(
            e.errno, f"The model file cannot be opened ({e.strerror}). Received: {arg}={path!r}"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(
                f"`{arg}` is not a regular file (a pipe, socket or device); kerastl loads "
                f".keras and .h5 files. Received: {arg}={path!r}"
            )
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


@contextlib.contextmanager
def snapshot(path, arg="path"):
    """A private copy of the one version of `path` that this call opened; yields its path.

    Keras opens a model file by name, and more than once; a save beside the
    load could swap versions between kerastl's reads and Keras's. Every read
    of a load goes to this copy instead: a fresh directory of its own (see
    `tempfile.mkdtemp`), removed on exit. It keeps `path`'s base name, since
    Keras tells formats apart by suffix. The copy is streamed.
    """
    work = tempfile.mkdtemp(prefix="kerastl-load-")
    try:
        local = os.path.join(work, os.path.basename(path))
        with open_once(path, arg) as source:
            try:
                with open(local, "xb") as target:
                    shutil.copyfileobj(source, target, _COPY_CHUNK)
            except OSError as e:
                raise type(e)(
                    e.errno,
                    f"Could not copy the model file to a private temporary file in {work} "
                    f"({e.strerror}); set TMPDIR to a directory with room for it. "
                    f"Received: {arg}={path!r}",
                ) from None
        yield local
    finally:
        shutil.rmtree(work, ignore_errors=True)


def is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def is_legacy_h5(path, arg="path", source=None):
    """Whether `path` is an HDF5 file; an `.h5` name on anything else is refused.

    `source` is what is read: an open binary file or a local copy of `path`
    (`path` itself by default); errors always name `path`.
    """
    if source is None or isinstance(source, (str, os.PathLike)):
        hdf5 = is_hdf5(path if source is None else source)
    else:
        source.seek(0)
        hdf5 = source.read(8) == HDF5_SIGNATURE
    if path.lower().endswith(H5_SUFFIXES) and not hdf5:
        raise ValueError(
            f"The file has an HDF5 suffix but is not an HDF5 file (truncated, corrupted or "
            f"mislabelled). Received: {arg}={path!r}"
        )
    return hdf5


def legacy_attrs(path, arg="path", source=None):
    """The root attributes of an HDF5 file; a weights-only file is refused as a model.

    `source` as for `is_legacy_h5`. A JSON attribute (`LEGACY_JSON_ATTRS`) over
    `archive.MAX_CONFIG_BYTES` is refused before anything parses it.
    """
    try:
        with h5py.File(path if source is None else source, "r") as f:
            attrs = dict(f.attrs)
    except OSError as e:
        raise ValueError(
            f"The HDF5 file cannot be read (truncated or corrupted: {e}). Received: {arg}={path!r}"
        ) from None
    if "model_config" not in attrs:
        raise ValueError(
            "The HDF5 file holds weights only, not a model; load it into a model with "
            f"`kerastl.load_weights_by_name`. Received: {arg}={path!r}"
        )
    limit = archive.MAX_CONFIG_BYTES
    for key in LEGACY_JSON_ATTRS:
        value = attrs.get(key)
        if isinstance(value, (str, bytes)) and len(value) > limit:
            raise ValueError(
                f"The HDF5 file's `{key}` is {len(value):,} bytes; kerastl reads at most "
                f"{limit:,} bytes ({limit / 2**20:g} MiB) of it. Received: {arg}={path!r}"
            )
    return attrs


def refuse_legacy_code(path, arg="path", source=None, attrs=None):
    """safe_mode for legacy .h5 files, checked here: older Keras (3.10) loads their
    Lambda bytecode even with safe_mode=True. `attrs`: those `legacy_attrs` read."""
    if attrs is None:
        attrs = legacy_attrs(path, arg, source)
    config = attrs.get("model_config")
    if isinstance(config, bytes):
        config = config.decode("utf-8", "replace")
    try:
        config = json.loads(config) if isinstance(config, str) else None
    except (ValueError, RecursionError):
        config = None
    if holds_code(config):
        raise ValueError(
            "The model file holds Python code (e.g. a Lambda layer) and safe_mode is "
            "on: loading it could run arbitrary code. Pass safe_mode=False only if "
            f"you trust the file. Received: {arg}={path!r}"
        )


def holds_code(obj):
    """Whether a model config holds Python code (a Lambda's bytecode, a pickled function)."""
    if isinstance(obj, list):
        return any(holds_code(item) for item in obj)
    if not isinstance(obj, dict):
        return False
    if obj.get("class_name") in ("__lambda__", "__function__") or (
        obj.get("class_name") == "Lambda"
        and not isinstance((obj.get("config") or {}).get("function"), str)
    ):
        return True
    return any(holds_code(value) for value in obj.values())


def keras_load(source, path, compile, safe_mode, custom_objects, arg="path"):
    """`keras.saving.load_model(source)` whose errors name `path` as argument `arg`.

    `source` is the file Keras reads: `path` or a private copy of it (`snapshot`).
    """
    # kerastl's own classes are found by their registered names: importing kerastl
    # ran `kerastl/__init__.py`, which imports every module that registers one.
    try:
        return keras.saving.load_model(
            source, compile=compile, safe_mode=safe_mode, custom_objects=custom_objects
        )
    except Exception as e:
        message = str(e).replace(os.fspath(source), path)
        if "safe_mode" in message:
            raise ValueError(
                "The model file holds Python code (e.g. a Lambda layer) and safe_mode is "
                "on: loading it could run arbitrary code. Pass safe_mode=False only if "
                f"you trust the file. Received: {arg}={path!r}"
            ) from None
        first = message.strip().splitlines()[0][:400] if message.strip() else ""
        raise ValueError(
            f"Could not load a Keras model from the file ({type(e).__name__}: {first}). "
            f"Received: {arg}={path!r}"
        ) from e


def load_model_file(path, safe_mode=True, arg="path"):
    """The uncompiled model of a `.keras` or legacy `.h5` file, checked first.

    What a backbone file or a weights source needs: no compile state and no
    kerastl metadata (`kerastl.saving.load_model` adds both). The checks and
    the load read one version of the file (`snapshot`).
    """
    path = check_model_path(path, arg)
    archive.remove_stale_staging(os.path.dirname(os.path.abspath(path)))
    with snapshot(path, arg) as local:
        if is_legacy_h5(path, arg, source=local):
            attrs = legacy_attrs(path, arg, source=local)
            if safe_mode:
                refuse_legacy_code(path, arg, attrs=attrs)
        else:
            with archive.open_keras_zip(path, arg, source=local) as zf:
                archive.check_integrity(zf, path, arg)
        return keras_load(local, path, False, safe_mode, None, arg)
