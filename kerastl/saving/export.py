"""`export`: `model.export` with the dependency check done first and an atomic write."""

import importlib.util
import os
import warnings
from typing import Any

import keras
import numpy as np

from kerastl.files import archive
from kerastl.files.atomic import replace_atomically

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
    shapes = _input_shapes(model)
    if shapes is not None and not getattr(model, "_called", True):
        # Keras' ONNX export refuses a model that was never called, and a model just
        # loaded from a file never was: one call on zeros.
        model(_inputs(model, shapes, np.zeros, batch=1), training=False)
    fixed = (
        format == "onnx"
        and backend == "jax"
        and shapes is not None
        and "input_signature" not in kwargs
    )
    if fixed:
        # jax2onnx cannot trace a resize to a size unknown until run time: fix the
        # input at the size the model was probed with (the backbone's).
        kwargs["input_signature"] = _fixed_signature(model, shapes, batch=None)
    batch = 2  # what the ONNX check runs
    with archive.staging_dir(path) as work:
        # In a folder of its own: `path` may have any name, the lock file's included.
        staged = os.path.join(work, "artifact", os.path.basename(path))
        os.mkdir(os.path.dirname(staged))
        try:
            try:
                model.export(staged, format=format, verbose=False, **kwargs)
            except Exception as e:
                if not (fixed and "Symbolic dimension" in str(e)):
                    raise
                # ... nor a resize whose batch is unknown until run time.
                batch = 1
                kwargs["input_signature"] = _fixed_signature(model, shapes, batch=batch)
                warnings.warn(
                    "jax2onnx cannot export this model's in-model resize for a variable "
                    f"batch size: the ONNX file takes batches of 1 image of shape {shapes[0]}. "
                    "Pass `input_signature=[keras.InputSpec(shape=(N, ...))]` for another "
                    "batch size, or export on the torch or TensorFlow backend for a "
                    "variable one.",
                    stacklevel=2,
                )
                model.export(staged, format=format, verbose=False, **kwargs)
            if format == "onnx" and shapes is not None:
                _check_onnx_runs(staged, model, shapes, backend, batch)
        except ImportError as e:  # a dependency of a dependency
            raise ExportDependencyError(
                f"Exporting format={format!r} on the {backend} backend failed on a missing "
                f"package ({e}). Received: format={format!r}"
            ) from e
        _move_into_place(staged, path, work)
    return path


def _input_shapes(model):
    """Each input's shape without the batch, sizes unknown until run time filled in.

    A model that takes any image size is probed at its backbone's size. `None`
    for a model with no symbolic inputs (subclassed): Keras' own export handles it.
    """
    if not getattr(model, "inputs", None):
        return None
    shapes = []
    for tensor in model.inputs:
        shape = tuple(tensor.shape)[1:]
        if None in shape:
            shape = _first_fixed_shape(model, len(shape)) or tuple(d or 64 for d in shape)
        shapes.append(shape)
    return shapes


def _inputs(model, shapes, make, batch):
    """`make((batch, *shape))` for each input, as the model takes them (one, or a list)."""
    arrays = [
        make((batch,) + tuple(shape)).astype(tensor.dtype)
        for tensor, shape in zip(model.inputs, shapes, strict=True)
    ]
    return arrays[0] if len(arrays) == 1 else arrays


def _check_onnx_runs(file, model, shapes, backend, batch):
    # Some converters write files onnxruntime refuses (jax2onnx 0.17's MaxPool):
    # run the file once and compare with Keras before it replaces anything.
    try:
        import onnxruntime
    except ImportError:
        return
    rng = np.random.default_rng(0)
    inputs = _inputs(model, shapes, lambda shape: rng.uniform(0, 255, shape), batch)
    others = " or ".join(f"`KERAS_BACKEND={b}`" for b in ("torch", "tensorflow") if b != backend)
    try:
        session = onnxruntime.InferenceSession(file, providers=["CPUExecutionProvider"])
        arrays = inputs if isinstance(inputs, list) else [inputs]
        feed = {spec.name: x for spec, x in zip(session.get_inputs(), arrays, strict=True)}
        got = session.run(None, feed)[0]
    except Exception as e:
        raise RuntimeError(
            f"The ONNX file the {backend} backend's converter wrote does not run in "
            f"onnxruntime ({str(e).strip()}). Export from another backend: load the model "
            f"under {others} and export again. "
            "Received: format='onnx'"
        ) from e
    want = keras.ops.convert_to_numpy(model(inputs))
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-4):
        raise RuntimeError(
            f"The ONNX file the {backend} backend's converter wrote computes other values "
            f"than the model (largest difference {np.max(np.abs(got - want)):.3g}). Export "
            "from another backend. Received: format='onnx'"
        )


def _fixed_signature(model, shapes, batch):
    specs = [
        keras.InputSpec(shape=(batch,) + tuple(shape), dtype=tensor.dtype)
        for tensor, shape in zip(model.inputs, shapes, strict=True)
    ]
    return specs if len(specs) == 1 else [specs]


def _first_fixed_shape(model, rank):
    # A model that resizes its input takes any size; its backbone has the one to probe with.
    for layer in getattr(model, "layers", [])[1:]:
        try:
            shape = tuple(layer.input.shape)[1:]
        except (AttributeError, ValueError):
            continue
        if len(shape) == rank and None not in shape:
            return shape
    return None


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
    replace_atomically(staged, path)
