"""`load_model` and `read_metadata`: any `.keras` or legacy `.h5` file, on any backend."""

import os
import shutil
import tempfile
from typing import Any

import keras

from kerastl._checks import check_bool
from kerastl.files import archive, model_files
from kerastl.saving.metadata import describe_model, empty_metadata


def load_model(
    path: str | os.PathLike[str],
    compile: bool = True,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> keras.Model:
    """Loads a model saved by `save_model`, `model.save` or tf.keras, on any backend.

    A `.keras` file loads with its compile state made backend-neutral, whatever
    backend saved it: the optimizer is rebuilt from its public class (with its
    state) and `jit_compile` is decided by the loading backend. A legacy HDF5
    `.h5` file (Keras 2 / tf.keras `model.save("x.h5")`) loads uncompiled.

    The kerastl metadata is attached as `model.kerastl_metadata` (see
    `read_metadata`); files saved without kerastl get what can be read off the
    model (task, backbone) and `None` elsewhere.

    A load reads one version of the file, even while another process saves
    to the same path: the file is opened once and streamed to a private
    temporary directory (which needs room for it: see `TMPDIR`), and the
    metadata, the checks and Keras all read that copy. kerastl reads at most
    `kerastl.files.archive.MAX_CONFIG_BYTES` of `config.json` and
    `MAX_METADATA_BYTES` of `kerastl.json`; larger members are refused.

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
    # One version of the file: the metadata, the checks and Keras all read this copy.
    with model_files.snapshot(path, arg) as local:
        if model_files.is_legacy_h5(path, arg, source=local):
            attrs = model_files.legacy_attrs(path, arg, source=local)
            if safe_mode:
                model_files.refuse_legacy_code(path, arg, attrs=attrs)
            meta = _legacy_metadata(attrs)
            model = model_files.keras_load(local, path, False, safe_mode, custom_objects, arg)
        else:
            with archive.open_keras_zip(path, arg, source=local) as zf:
                archive.check_integrity(zf, path, arg)
                config = archive.read_json_member(zf, archive.CONFIG, path, arg)
                stored = archive.read_json_member(zf, archive.KERASTL_METADATA, path, arg)
                keras_meta = archive.read_json_member(zf, archive.KERAS_METADATA, path, arg)
            model = _load_neutral(local, path, config, compile, safe_mode, custom_objects, arg)
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


def read_metadata(path: str | os.PathLike[str] | keras.Model) -> dict[str, Any]:
    """The kerastl metadata of a model file (or of a loaded model), without building it.

    Returns a dict with the keys of `kerastl.saving.metadata.empty_metadata()`:
    `class_names`, `task`, `num_outputs`, `outputs`, `backbone`,
    `input_preprocessing`, `input_shape`, `history` (every epoch, phases end to
    end), `history_phases` (each phase of training on its own: name, first
    epoch, epochs, history), `backend`, `keras_version`, `kerastl_version`, ...
    `None` where the file does not say.
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
    with model_files.open_once(path) as f:  # one version, and no copy: nothing to build
        if model_files.is_legacy_h5(path, source=f):
            return _legacy_metadata(model_files.legacy_attrs(path, source=f))
        with archive.open_keras_zip(path, source=f) as zf:
            stored = archive.read_json_member(zf, archive.KERASTL_METADATA, path)
            keras_meta = archive.read_json_member(zf, archive.KERAS_METADATA, path)
    return _full_metadata(stored, keras_meta)


def _load_neutral(local, path, config, compile, safe_mode, custom_objects, arg):
    """Keras's load of `local` (the snapshot of `path`), its compile state made neutral."""
    compile_config = config.get("compile_config")
    neutral = archive.neutral_compile_config(compile_config)
    if not compile or neutral == compile_config:
        return model_files.keras_load(local, path, compile, safe_mode, custom_objects, arg)
    # Saved by plain Keras with backend-private compile state: load a neutral copy.
    config["compile_config"] = neutral
    work = tempfile.mkdtemp(prefix="kerastl-load-")
    try:
        patched = os.path.join(work, "model.keras")
        archive.rewrite(local, patched, config=config)
        return model_files.keras_load(patched, path, compile, safe_mode, custom_objects, arg)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _full_metadata(stored, keras_meta):
    meta = empty_metadata()
    meta["format"] = "keras"
    meta["keras_version"] = (keras_meta or {}).get("keras_version")
    if stored:
        meta.update(stored)
    return meta


def _legacy_metadata(attrs):
    """The metadata of a legacy HDF5 file, from its root attributes (`legacy_attrs`)."""
    meta = empty_metadata()
    meta["format"] = "legacy_h5"
    for key in ("keras_version", "backend"):
        value = attrs.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        meta[key] = None if value is None else str(value)
    return meta
