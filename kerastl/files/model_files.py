"""Opening a Keras model file: checks and errors shared by every part that reads one."""

import json
import os

import h5py
import keras

from kerastl.files import archive

H5_SUFFIXES = (".h5", ".hdf5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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


def is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def is_legacy_h5(path, arg="path"):
    """Whether `path` is an HDF5 file; an `.h5` name on anything else is refused."""
    hdf5 = is_hdf5(path)
    if path.lower().endswith(H5_SUFFIXES) and not hdf5:
        raise ValueError(
            f"The file has an HDF5 suffix but is not an HDF5 file (truncated, corrupted or "
            f"mislabelled). Received: {arg}={path!r}"
        )
    return hdf5


def legacy_attrs(path, arg="path"):
    """The root attributes of an HDF5 file; a weights-only file is refused as a model."""
    try:
        with h5py.File(path, "r") as f:
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
    return attrs


def refuse_legacy_code(path, arg="path"):
    """safe_mode for legacy .h5 files, checked here: older Keras (3.10) loads their
    Lambda bytecode even with safe_mode=True."""
    config = legacy_attrs(path, arg).get("model_config")
    if isinstance(config, bytes):
        config = config.decode("utf-8", "replace")
    try:
        config = json.loads(config) if isinstance(config, str) else None
    except ValueError:
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
    """`keras.saving.load_model(source)` whose errors name `path` as argument `arg`."""
    # kerastl's own classes are found by their registered names: importing kerastl
    # ran `kerastl/__init__.py`, which imports every module that registers one.
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


def load_model_file(path, safe_mode=True, arg="path"):
    """The uncompiled model of a `.keras` or legacy `.h5` file, checked first.

    What a backbone file or a weights source needs: no compile state and no
    kerastl metadata (`kerastl.saving.load_model` adds both).
    """
    path = check_model_path(path, arg)
    archive.remove_stale_staging(os.path.dirname(os.path.abspath(path)))
    if is_legacy_h5(path, arg):
        if safe_mode:
            refuse_legacy_code(path, arg)
        else:
            legacy_attrs(path, arg)
    else:
        with archive.open_keras_zip(path, arg) as zf:
            archive.check_integrity(zf, path, arg)
    return keras_load(path, path, False, safe_mode, None, arg)
