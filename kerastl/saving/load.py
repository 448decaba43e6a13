"""`load_model` and `read_metadata`: any `.keras` or legacy `.h5` file, on any backend."""

import json
import os
import shutil
import tempfile

import h5py
import keras

from kerastl._checks import check_bool
from kerastl.saving import archive
from kerastl.saving.metadata import describe_model, empty_metadata

_H5_SUFFIXES = (".h5", ".hdf5")


def load_model(path, compile=True, safe_mode=True, custom_objects=None):
    """Loads a model saved by `save_model`, `model.save` or tf.keras, on any backend.

    A `.keras` file loads with its compile state made backend-neutral, whatever
    backend saved it: the optimizer is rebuilt from its public class (with its
    state) and `jit_compile` is decided by the loading backend. A legacy HDF5
    `.h5` file (Keras 2 / tf.keras `model.save("x.h5")`) loads uncompiled.

    The kerastl metadata is attached as `model.kerastl_metadata` (see
    `read_metadata`); files saved without kerastl get what can be read off the
    model (task, backbone) and `None` elsewhere.

    Args:
        path: a `.keras` or `.h5` file.
        compile: whether to restore the compile state (optimizer and its
            state, loss, metrics). Inference needs none of it.
        safe_mode: refuse files that hold Python code (a `Lambda` layer's
            bytecode). Pass `False` only for files you trust.
        custom_objects: passed to `keras.saving.load_model`.
    """
    check_bool(compile, "compile")
    check_bool(safe_mode, "safe_mode")
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(
            "`custom_objects` must be a dict mapping names to classes or functions. "
            f"Received: custom_objects={custom_objects!r}"
        )
    return _load_model(path, compile, safe_mode, custom_objects)


def _load_model(path, compile, safe_mode, custom_objects, arg="path"):
    """`load_model` whose errors name the caller's argument `arg`."""
    path = _check_exists(path, arg)
    archive.remove_stale_staging(os.path.dirname(os.path.abspath(path)))
    if _is_legacy_h5(path, arg):
        meta = _legacy_metadata(path, arg)
        if safe_mode:
            _refuse_legacy_code(path, arg)
        model = _keras_load(path, path, False, safe_mode, custom_objects, arg)
    else:
        with archive.open_keras_zip(path, arg) as zf:
            archive.check_integrity(zf, path, arg)
            config = json.loads(zf.read(archive.CONFIG))
            stored = archive.read_json_member(zf, archive.KERASTL_METADATA)
            keras_meta = archive.read_json_member(zf, archive.KERAS_METADATA) or {}
        model = _load_neutral(path, config, compile, safe_mode, custom_objects, arg)
        meta = _full_metadata(stored, keras_meta)
    if meta["task"] is None:  # saved without kerastl: read what the model shows
        inferred = describe_model(model, class_names=meta["class_names"])
        for key in (
            "task",
            "num_outputs",
            "outputs",
            "backbone",
            "input_preprocessing",
            "input_shape",
            "input_dtype",
        ):
            if meta[key] is None:
                meta[key] = inferred[key]
    model.__dict__["kerastl_metadata"] = meta  # plain attribute: not tracked, not saved
    return model


def read_metadata(path):
    """The kerastl metadata of a model file (or of a loaded model), without building it.

    Returns a dict with the keys of `kerastl.saving.metadata.empty_metadata()`:
    `class_names`, `task`, `num_outputs`, `outputs`, `backbone`,
    `input_preprocessing`, `input_shape`, `history`, `backend`, `keras_version`,
    `kerastl_version`, ... `None` where the file does not say.
    """
    if isinstance(path, keras.Model):
        meta = getattr(path, "kerastl_metadata", None)
        if meta is not None:
            return dict(meta)
        meta = describe_model(path)
        meta.update(format=None, saved_at=None)  # never saved
        return meta
    path = _check_exists(path)
    archive.remove_stale_staging(os.path.dirname(os.path.abspath(path)))
    if _is_legacy_h5(path):
        return _legacy_metadata(path)
    with archive.open_keras_zip(path) as zf:
        stored = archive.read_json_member(zf, archive.KERASTL_METADATA)
        keras_meta = archive.read_json_member(zf, archive.KERAS_METADATA) or {}
    return _full_metadata(stored, keras_meta)


def _check_exists(path, arg="path"):
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


def _is_legacy_h5(path, arg="path"):
    with open(path, "rb") as f:
        signature = f.read(8)
    is_hdf5 = signature == b"\x89HDF\r\n\x1a\n"
    if path.lower().endswith(_H5_SUFFIXES) and not is_hdf5:
        raise ValueError(
            f"The file has an HDF5 suffix but is not an HDF5 file (truncated, corrupted or "
            f"mislabelled). Received: {arg}={path!r}"
        )
    return is_hdf5


def _load_neutral(path, config, compile, safe_mode, custom_objects, arg):
    compile_config = config.get("compile_config")
    neutral = archive.neutral_compile_config(compile_config)
    if not compile or neutral == compile_config:
        return _keras_load(path, path, compile, safe_mode, custom_objects, arg)
    # Saved by plain Keras with backend-private compile state: load a neutral copy.
    config["compile_config"] = neutral
    work = tempfile.mkdtemp(prefix="kerastl-load-")
    try:
        patched = os.path.join(work, "model.keras")
        archive.rewrite(path, patched, config=config)
        return _keras_load(patched, path, compile, safe_mode, custom_objects, arg)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _keras_load(source, path, compile, safe_mode, custom_objects, arg):
    # kerastl's own classes are found by their registered names: importing this
    # module ran `kerastl/__init__.py`, which imports every module that registers one.
    try:
        return keras.saving.load_model(
            source, compile=compile, safe_mode=safe_mode, custom_objects=custom_objects
        )
    except Exception as e:
        message = str(e)
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


def _refuse_legacy_code(path, arg):
    """safe_mode for legacy .h5 files, checked here: older Keras (3.10) loads their
    Lambda bytecode even with safe_mode=True."""
    with h5py.File(path, "r") as f:
        config = f.attrs.get("model_config")
    if isinstance(config, bytes):
        config = config.decode("utf-8", "replace")
    try:
        config = json.loads(config) if isinstance(config, str) else None
    except ValueError:
        config = None
    if _holds_code(config):
        raise ValueError(
            "The model file holds Python code (e.g. a Lambda layer) and safe_mode is "
            "on: loading it could run arbitrary code. Pass safe_mode=False only if "
            f"you trust the file. Received: {arg}={path!r}"
        )


def _holds_code(obj):
    if isinstance(obj, list):
        return any(_holds_code(item) for item in obj)
    if not isinstance(obj, dict):
        return False
    if obj.get("class_name") in ("__lambda__", "__function__") or (
        obj.get("class_name") == "Lambda"
        and not isinstance((obj.get("config") or {}).get("function"), str)
    ):
        return True
    return any(_holds_code(value) for value in obj.values())


def _full_metadata(stored, keras_meta):
    meta = empty_metadata()
    meta["format"] = "keras"
    meta["keras_version"] = keras_meta.get("keras_version")
    if stored:
        meta.update(stored)
    return meta


def _legacy_metadata(path, arg="path"):
    meta = empty_metadata()
    meta["format"] = "legacy_h5"
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as e:
        raise ValueError(
            f"The HDF5 file cannot be read (truncated or corrupted: {e}). Received: {arg}={path!r}"
        ) from None
    for key in ("keras_version", "backend"):
        value = attrs.get(key)
        meta[key] = (
            value.decode() if isinstance(value, bytes) else (None if value is None else str(value))
        )
    if "model_config" not in attrs:
        raise ValueError(
            "The HDF5 file holds weights only, not a model; load it into a model with "
            f"`kerastl.load_weights_by_name`. Received: {arg}={path!r}"
        )
    return meta
