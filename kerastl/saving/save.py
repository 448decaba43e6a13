"""`save_model`: one `.keras` file with the model, its neutral compile state and metadata."""

import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import keras

from kerastl import _processes as processes
from kerastl.files import archive
from kerastl.files.atomic import replace_atomically
from kerastl.saving.metadata import describe_model, finite_json


def save_model(
    model: keras.Model,
    path: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    history: Any = None,
    metadata: dict[str, Any] | None = None,
    evaluation: Any = None,
) -> dict[str, Any]:
    """Saves `model` as one `.keras` file that loads on every backend.

    The file is a standard `.keras` archive (`keras.saving.load_model` reads it)
    with a `kerastl.json` member: class names, task, backbone and its
    preprocessing, freeze and BatchNorm policy, versions, the backend it was
    saved on, the input spec and the training history. The compile state is
    written backend-neutral (public optimizer class, `jit_compile="auto"`).

    The write is atomic: the archive is built in a hidden directory beside
    `path` and renamed over it, so a crash or kill mid-save leaves the earlier
    file intact. Arguments are checked before anything is written. Trained in
    several processes (one per host: `keras.distribution.initialize`, or
    `torch.distributed`), every process calls it and process 0 writes the
    file; the others wait until it is there.

    Args:
        model: a `keras.Model`.
        path: destination, ending in `.keras`.
        class_names: names of the classes, in output order. A binary head (one
            unit) takes two names, negative class first. Defaults to the names
            already attached to the model (by `load_model`).
        history: what `model.fit` returned (a `History` or its `.history`
            dict), what `kerastl.fine_tune` returned (its phases kept by
            name), or a list of those for training in stages. The metadata
            keeps every phase (`history_phases`) and them end to end
            (`history`).
        metadata: dict of extra JSON-serialisable entries; its keys override
            the inferred ones (e.g. `{"task": "multilabel"}`).
        evaluation: how good the model is, kept with it: what
            `kerastl.interpret` returned (its `summary()`: accuracy, per-class
            figures, confusion matrix, ECE, the data's size) or a dict of
            figures. `kerastl info` shows it. Defaults to the evaluation
            already attached to the model.

    Returns:
        The metadata written, as a dict (also attached as
        `model.kerastl_metadata`).

    Example:

    ```python
    model = keras.Sequential([keras.Input((8,)), kerastl.heads.multiclass(2)])
    meta = kerastl.save_model(model, "flowers.keras", class_names=["daisy", "rose"])
    model = kerastl.load_model("flowers.keras")
    print(model.kerastl_metadata["class_names"])  # ['daisy', 'rose']
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    path = _check_path(path)
    meta = describe_model(
        model, class_names=class_names, history=history, metadata=metadata, evaluation=evaluation
    )
    text = finite_json(meta)
    _check_metadata_size(text, meta, metadata)

    # Several processes: each takes part in Keras' save (on JAX, fetching a variable
    # that spans processes is collective), process 0 alone renames the file into place.
    writer = processes.is_writer()
    staging = archive.staging_dir(path) if writer else tempfile.TemporaryDirectory()
    with staging as work:
        staged = os.path.join(work, "model.keras")
        model.save(staged)
        if not writer:
            processes.barrier(f"save_model {os.path.abspath(path)}")
            meta = json.loads(text)
            model.__dict__["kerastl_metadata"] = meta
            return meta
        with archive.open_keras_zip(staged) as zf:
            size = zf.getinfo(archive.CONFIG).file_size
            if size > archive.MAX_CONFIG_BYTES:
                raise ValueError(
                    f"The model's config.json is {size:,} bytes; kerastl loads at most "
                    f"{archive.MAX_CONFIG_BYTES:,}, so the file could not be loaded back. "
                    f"Received: model={model.name!r}"
                )
            config = json.loads(zf.read(archive.CONFIG))
        if "compile_config" in config:
            config["compile_config"] = archive.neutral_compile_config(config["compile_config"])
        final = os.path.join(work, "final.keras")
        archive.rewrite(staged, final, config=config, extra={archive.KERASTL_METADATA: text})
        replace_atomically(final, path)
    processes.barrier(f"save_model {os.path.abspath(path)}")
    meta = json.loads(text)
    model.__dict__["kerastl_metadata"] = meta  # plain attribute: not tracked, not saved
    return meta


def _check_metadata_size(text, meta, metadata):
    """Refuses metadata that `load_model` would refuse to read back (`MAX_METADATA_BYTES`)."""
    size = len(text.encode("utf-8"))
    limit = archive.MAX_METADATA_BYTES
    if size <= limit:
        return
    parts = {
        "class_names": meta["class_names"],
        "history": [meta["history"], meta["history_phases"]],
        "metadata": metadata,
        "evaluation": meta["evaluation"],
    }
    sizes = {name: len(finite_json(value)) for name, value in parts.items()}
    arg = max(sizes, key=sizes.get)
    raise ValueError(
        f"The kerastl metadata would be {size:,} bytes of JSON; kerastl reads at most "
        f"{limit:,} back, so the file could not be loaded. Most of it is `{arg}`. "
        f"Received: {arg}=<{sizes[arg]:,} bytes as JSON>"
    )


def _check_path(path):
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"`path` must be a file path (str or PathLike). Received: path={path!r}")
    if not path.endswith(".keras"):
        raise ValueError(
            "`path` must end in `.keras` (kerastl saves the native Keras format; "
            f"`kerastl.load_model` still reads legacy .h5 files). Received: path={path!r}"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory to save into does not exist: {directory}. Received: path={path!r}"
        )
    if os.path.isdir(path):
        raise IsADirectoryError(f"`path` is a directory. Received: path={path!r}")
    return path
