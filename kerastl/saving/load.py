"""`load_model` and `read_metadata`: any `.keras` or legacy `.h5` file, on any backend."""

import json
import os
import shutil
import tempfile

import keras

from kerastl._checks import check_bool
from kerastl.files import archive, model_files
from kerastl.saving.metadata import describe_model, empty_metadata


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
    path = model_files.check_model_path(path, arg)
    archive.remove_stale_staging(os.path.dirname(os.path.abspath(path)))
    if model_files.is_legacy_h5(path, arg):
        meta = _legacy_metadata(path, arg)
        if safe_mode:
            model_files.refuse_legacy_code(path, arg)
        model = model_files.keras_load(path, path, False, safe_mode, custom_objects, arg)
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
    path = model_files.check_model_path(path)
    archive.remove_stale_staging(os.path.dirname(os.path.abspath(path)))
    if model_files.is_legacy_h5(path):
        return _legacy_metadata(path)
    with archive.open_keras_zip(path) as zf:
        stored = archive.read_json_member(zf, archive.KERASTL_METADATA)
        keras_meta = archive.read_json_member(zf, archive.KERAS_METADATA) or {}
    return _full_metadata(stored, keras_meta)


def _load_neutral(path, config, compile, safe_mode, custom_objects, arg):
    compile_config = config.get("compile_config")
    neutral = archive.neutral_compile_config(compile_config)
    if not compile or neutral == compile_config:
        return model_files.keras_load(path, path, compile, safe_mode, custom_objects, arg)
    # Saved by plain Keras with backend-private compile state: load a neutral copy.
    config["compile_config"] = neutral
    work = tempfile.mkdtemp(prefix="kerastl-load-")
    try:
        patched = os.path.join(work, "model.keras")
        archive.rewrite(path, patched, config=config)
        return model_files.keras_load(patched, path, compile, safe_mode, custom_objects, arg)
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    attrs = model_files.legacy_attrs(path, arg)
    for key in ("keras_version", "backend"):
        value = attrs.get(key)
        meta[key] = (
            value.decode() if isinstance(value, bytes) else (None if value is None else str(value))
        )
    return meta
