"""The LoRA adapters file: an `.npz` of each adapted layer's factors and a JSON header.

Written by `kerastl.saving.save_adapters`, read by `load_adapters`; the header
(`__kerastl_lora__`) holds the format name, its version and, per adapted
layer, its class, rank, alpha and the norm of its frozen base kernels.
"""

import json
import os
import zipfile

import numpy as np

from kerastl.files.atomic import write_atomically

ADAPTERS_FORMAT = "kerastl-lora-adapters"
_HEADER = "__kerastl_lora__"


def write_adapters(path, adapters, arrays):
    """Writes `arrays` (`{key: float32 array}`) and the header of `adapters` to `path`, atomically.

    `adapters`: `{layer name: {"layer", "rank", "alpha", "base_norm"}}`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory to save into does not exist: {directory}. Received: path={path!r}"
        )
    header = {"format": ADAPTERS_FORMAT, "version": 1, "adapters": adapters}
    content = {**arrays, _HEADER: np.array(json.dumps(header))}
    write_atomically(path, lambda file: np.savez(file, **content))


def read_adapters(path):
    """`(header, arrays)` of the adapters file `path`; `ValueError` if it is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No adapters file at this path. Received: path={path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"The file is not an adapters file written by save_adapters ({type(e).__name__}). "
            f"Received: path={path!r}"
        ) from None
    try:
        header = json.loads(str(arrays.pop(_HEADER)))
    except (KeyError, ValueError):
        header = None
    if (
        not isinstance(header, dict)
        or header.get("format") != ADAPTERS_FORMAT
        or not isinstance(header.get("adapters"), dict)
    ):
        raise ValueError(
            f"The file is not an adapters file written by save_adapters (no kerastl LoRA "
            f"header). Received: path={path!r}"
        )
    return header, arrays


def check_path(path):
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"`path` must be a file path (str or PathLike). Received: path={path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"`path` is a directory. Received: path={path!r}")
    return path
