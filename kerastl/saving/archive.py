"""The `.keras` zip: checking it, rewriting it, making its compile state backend-neutral."""

import copy
import json
import os
import shutil
import tempfile
import time
import zipfile

import keras

CONFIG = "config.json"
KERAS_METADATA = "metadata.json"
KERASTL_METADATA = "kerastl.json"
_COPY_CHUNK = 1 << 20


def open_keras_zip(path, arg="path"):
    """The checked `zipfile.ZipFile` of a `.keras` file; clear errors for anything else."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise ValueError(
                f"The file is a truncated or corrupted .keras archive (its zip directory "
                f"is missing). Received: {arg}={path!r}"
            )
        raise ValueError(
            "The file is not a Keras model file (neither a .keras zip archive nor a "
            f"legacy HDF5 .h5 file). Received: {arg}={path!r}"
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"The .keras archive is corrupted ({e}). Received: {arg}={path!r}"
        ) from None
    if CONFIG not in archive.namelist():
        archive.close()
        raise ValueError(
            f"The zip archive holds no {CONFIG}: it is not a .keras model file. "
            f"Received: {arg}={path!r}"
        )
    return archive


def check_integrity(archive, path, arg="path"):
    """Reads every member once: a flipped byte fails its CRC here, not deep in h5py."""
    try:
        bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        bad, reason = None, str(e)
    else:
        reason = None
    if bad is not None or reason is not None:
        where = f"member {bad!r} fails its CRC check" if bad else reason
        raise ValueError(f"The .keras archive is corrupted ({where}). Received: {arg}={path!r}")


def read_json_member(archive, name):
    if name not in archive.namelist():
        return None
    return json.loads(archive.read(name))


def neutral_compile_config(config):
    """`compile_config` that every backend can rebuild.

    Keras records a torch-compiled optimizer under its backend-private module
    (`keras.src.backend.torch.optimizers.torch_adam`, which TF and JAX cannot import)
    and a JAX model with `jit_compile=True` (which on torch means `torch.compile`, a
    minutes-long first predict). Optimizers go back to their public `keras.optimizers`
    class; `jit_compile` goes back to "auto", resolved by the loading backend.
    """
    if not isinstance(config, dict):
        return config
    config = _public_classes(copy.deepcopy(config))
    if "jit_compile" in config:
        config["jit_compile"] = "auto"
    return config


def _public_classes(obj):
    if isinstance(obj, list):
        return [_public_classes(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    obj = {k: _public_classes(v) for k, v in obj.items()}
    module, name = obj.get("module"), obj.get("class_name")
    if (
        isinstance(module, str)
        and module.startswith("keras.src.backend.")
        and ".optimizers" in module
        and isinstance(getattr(keras.optimizers, str(name), None), type)
    ):
        obj["module"] = "keras.optimizers"
        obj["registered_name"] = None
    return obj


def rewrite(src, dst, config=None, extra=None):
    """Copies the zip `src` to `dst`, replacing `config.json` and adding `extra` members.

    Members are streamed, so a large weights file never sits in memory twice; `dst`
    is flushed to disk before returning.
    """
    extra = dict(extra or {})
    with zipfile.ZipFile(src) as source, open(dst, "wb") as raw:
        with zipfile.ZipFile(raw, "w") as target:
            for info in source.infolist():
                if info.filename in extra:
                    continue
                if info.filename == CONFIG and config is not None:
                    target.writestr(_info_like(info), json.dumps(config))
                    continue
                with (
                    source.open(info) as r,
                    target.open(_info_like(info), "w", force_zip64=True) as w,
                ):
                    shutil.copyfileobj(r, w, _COPY_CHUNK)
            for name, text in extra.items():
                target.writestr(zipfile.ZipInfo(name, date_time=_now()), text)
        raw.flush()
        os.fsync(raw.fileno())


def _info_like(info):
    new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    new.compress_type = info.compress_type
    new.external_attr = info.external_attr
    return new


def _now():
    return time.localtime()[:6]


def replace_atomically(tmp, path):
    """`os.replace` plus a directory fsync: after a crash the name holds old or new."""
    os.replace(tmp, path)
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:  # directories cannot be opened on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def staging_dir(path):
    """A hidden work directory beside `path` (same filesystem: the final rename is atomic).

    A killed save leaves only this directory behind, never a file that could be
    mistaken for the model.
    """
    directory = os.path.dirname(os.path.abspath(path))
    return tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.kerastl-tmp-", dir=directory)
