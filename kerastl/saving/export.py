"""`export`: `model.export` with the dependency check done first and an atomic write."""

import importlib.util
import os
from typing import Any

import keras

from kerastl.files import archive

FORMATS = ("tf_saved_model", "onnx", "torch", "litert", "openvino")

# (format, backend) -> modules `model.export` imports, as (module, pip name).
# Absent pairs are combinations Keras 3 does not support.
_REQUIREMENTS = {
    ("tf_saved_model", "tensorflow"): [("tensorflow", "tensorflow")],
    ("tf_saved_model", "jax"): [("tensorflow", "tensorflow"), ("jax.experimental.jax2tf", "jax")],
    ("tf_saved_model", "torch"): [("tensorflow", "tensorflow"), ("torch_xla", "torch-xla")],
    ("onnx", "tensorflow"): [("tf2onnx", "tf2onnx"), ("onnx", "onnx")],
    ("onnx", "jax"): [("jax2onnx", "jax2onnx"), ("onnx", "onnx")],
    ("onnx", "torch"): [("onnx", "onnx"), ("onnxscript", "onnxscript")],
    ("torch", "torch"): [("torch", "torch")],
    ("litert", "tensorflow"): [("tensorflow", "tensorflow")],
    ("litert", "torch"): [("litert_torch", "litert-torch")],
    ("openvino", "tensorflow"): [("openvino", "openvino")],
    ("openvino", "jax"): [("openvino", "openvino")],
    ("openvino", "torch"): [("openvino", "openvino")],
}


class ExportDependencyError(ImportError):
    """An export format needs a package that is not installed."""


def export(
    model: keras.Model, path: str | os.PathLike[str], format: str = "tf_saved_model", **kwargs: Any
) -> str:
    """Exports `model` for inference outside Keras: `model.export` with clear errors.

    What each backend supports (Keras 3) and needs installed:

    | format | tensorflow | jax | torch |
    |---|---|---|---|
    | `"tf_saved_model"` (a directory) | tensorflow | tensorflow (jax2tf) | tensorflow, torch-xla |
    | `"onnx"` (a file) | tf2onnx, onnx | jax2onnx, onnx | onnx, onnxscript |
    | `"torch"` (a `.pt2` file) | - | - | torch |
    | `"litert"` (a `.tflite` file) | tensorflow | - | litert-torch |
    | `"openvino"` | openvino | openvino | openvino |

    The artifact is written beside `path` and renamed into place, so an export
    that fails leaves an earlier one intact.

    Args:
        model: a built `keras.Model` (called once, or functional).
        path: the file or directory to write.
        format: one of the formats above.
        **kwargs: passed to `model.export` (e.g. `input_signature`,
            `opset_version`).

    Raises:
        ValueError: the format does not exist or the backend cannot export it.
        ExportDependencyError: a package the format needs is missing (an
            `ImportError` naming what to install).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}. Received: format={format!r}")
    path = _check_path(path, format)
    backend = keras.config.backend()
    check_available(format, backend)
    with archive.staging_dir(path) as work:
        # In a folder of its own: `path` may have any name, the lock file's included.
        staged = os.path.join(work, "artifact", os.path.basename(path))
        os.mkdir(os.path.dirname(staged))
        try:
            model.export(staged, format=format, verbose=False, **kwargs)
        except ImportError as e:  # a dependency of a dependency
            raise ExportDependencyError(
                f"Exporting format={format!r} on the {backend} backend failed on a missing "
                f"package ({e}). Received: format={format!r}"
            ) from e
        _move_into_place(staged, path, work)
    return path


def _check_path(path: str | os.PathLike[str], format: str) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(
            f"`path` must be a file or directory path (str or PathLike). Received: path={path!r}"
        )
    if not path:
        raise ValueError(f"`path` is empty. Received: path={path!r}")
    if format == "torch" and not path.endswith(".pt2"):
        raise ValueError(f"A torch export is a `.pt2` file. Received: path={path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory to export into does not exist: {directory}. Received: path={path!r}"
        )
    return path


def check_available(format, backend=None):
    """Raises unless `format` can be exported on `backend` with what is installed."""
    backend = backend or keras.config.backend()
    requirements = _REQUIREMENTS.get((format, backend))
    if requirements is None:
        able = sorted(b for f, b in _REQUIREMENTS if f == format)
        raise ValueError(
            f"Keras cannot export format={format!r} on the {backend} backend; it can on "
            f"{able}. Save with `kerastl.save_model`, load under one of those backends "
            f"(KERAS_BACKEND) and export there. Received: format={format!r}"
        )
    missing = [pip for module, pip in requirements if not _importable(module)]
    if missing:
        raise ExportDependencyError(
            f"Exporting format={format!r} on the {backend} backend needs "
            f"{', '.join(missing)}: `pip install {' '.join(missing)}`. "
            f"Received: format={format!r}"
        )


def _importable(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def _move_into_place(staged, path, work):
    if os.path.isdir(staged) and os.path.exists(path):
        # Directories cannot be swapped in one rename: move the old one aside first.
        old = os.path.join(work, "previous")
        os.replace(path, old)
        os.replace(staged, path)
    else:
        os.replace(staged, path)
