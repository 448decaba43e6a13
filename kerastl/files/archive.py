"""The `.keras` zip: checking it, rewriting it, making its compile state backend-neutral."""

import contextlib
import copy
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
import zlib

from kerastl import _keras_private

try:
    import fcntl
except ImportError:  # Windows: staging directories are not cleaned up
    fcntl = None  # type: ignore[assignment]

CONFIG = "config.json"
KERAS_METADATA = "metadata.json"
KERASTL_METADATA = "kerastl.json"
# The most kerastl reads of an archive's JSON members. config.json: 64 MiB, over
# 60x the largest keras.applications config (NASNetLarge, 1.0 MB; EfficientNetV2L
# 0.96 MB; ConvNeXtXLarge 0.26 MB). kerastl.json and Keras's metadata.json:
# 16 MiB, room for over half a million history values (a dozen metrics over 40,000
# epochs) or 100,000 class names of 100 characters.
MAX_CONFIG_BYTES = 64 * 2**20
MAX_METADATA_BYTES = 16 * 2**20
_COPY_CHUNK = 1 << 20
# Staging directories: a short fixed name (the target's may already be 255
# characters) and the lock file that marks one as kerastl's.
STAGING_PREFIX = ".kerastl-staging-"
STAGING_LOCK = "kerastl-staging.lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_keras_zip(path, arg="path", source=None):
    """The checked `zipfile.ZipFile` of a `.keras` file; clear errors for anything else.

    `source` is what is read: an open binary file or a local copy of `path`
    (`path` itself by default); errors always name `path`.
    """
    source = path if source is None else source
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            head = f.read(4)
    else:
        source.seek(0)
        head = source.read(4)
    if not zipfile.is_zipfile(source):
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
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
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
    """Reads every member once: a flipped byte fails its CRC here, not deep in h5py.

    JSON members larger than kerastl reads (`member_limit`) are refused first, by
    their declared size.
    """
    for name in (CONFIG, KERAS_METADATA, KERASTL_METADATA):
        if name in archive.namelist():
            size = archive.getinfo(name).file_size
            if size > member_limit(name):
                raise _too_large(name, f"{size:,} bytes", path, arg)
    try:
        bad = archive.testzip()
    except _READ_ERRORS as e:
        bad, reason = None, str(e)
    else:
        reason = None
    if bad is not None or reason is not None:
        where = f"member {bad!r} fails its CRC check" if bad else reason
        raise ValueError(f"The .keras archive is corrupted ({where}). Received: {arg}={path!r}")


# What reading a damaged member can raise (RuntimeError: an encrypted member).
_READ_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    NotImplementedError,
    RuntimeError,
)


def member_limit(name):
    """The most bytes kerastl reads of the JSON member `name`."""
    return MAX_CONFIG_BYTES if name == CONFIG else MAX_METADATA_BYTES


def read_json_member(archive, name, path, arg="path"):
    """The JSON object in member `name` of `archive` (`None` if absent); errors name `path`.

    Bounded twice: a member declared larger than `member_limit(name)` is refused
    unread, and the read itself stops one byte past the limit, so a member
    whose stream outruns its declared size is refused too.
    """
    if name not in archive.namelist():
        return None
    limit = member_limit(name)
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise _too_large(name, f"{info.file_size:,} bytes", path, arg)
    try:
        with archive.open(info) as f:
            data = f.read(limit + 1)
    except _READ_ERRORS as e:
        raise ValueError(
            f"The .keras archive is corrupted (member {name!r}: {e}). Received: {arg}={path!r}"
        ) from None
    if len(data) > limit:
        raise _too_large(name, f"over {limit:,} bytes (more than it declares)", path, arg)
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as e:
        reason = f"{type(e).__name__}: {str(e)[:200]}"
        raise ValueError(
            f"The .keras archive member {name!r} is not valid JSON ({reason}). "
            f"Received: {arg}={path!r}"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f"The .keras archive member {name!r} must hold a JSON object, not a "
            f"{type(value).__name__}. Received: {arg}={path!r}"
        )
    return value


def _too_large(name, size, path, arg):
    limit = member_limit(name)
    return ValueError(
        f"The .keras archive member {name!r} is {size}; kerastl reads at most "
        f"{limit:,} bytes ({limit / 2**20:g} MiB) of it. Received: {arg}={path!r}"
    )


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
    config = _keras_private.public_classes(copy.deepcopy(config))
    if "jit_compile" in config:
        config["jit_compile"] = "auto"
    return config


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


@contextlib.contextmanager
def staging_dir(path):
    """A locked, hidden work directory beside `path`, removed on exit.

    Beside `path` so that the final `os.replace` stays on one filesystem (atomic);
    named `.kerastl-staging-XXXXXXXX` whatever `path` is called, so a target
    name of up to 255 characters still leaves room for it. A killed save leaves
    only this directory behind, never a file that could be mistaken for the
    model; the next save, load or export in the folder removes it (see
    `remove_stale_staging`).
    """
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_staging(directory)
    work = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=directory)
    lock = None
    try:
        lock = _lock(work)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if lock is not None:
            os.close(lock)  # released only once the directory is gone


def _lock(work):
    """Holds an exclusive `flock` on `work`'s lock file for as long as the save runs.

    The file is locked under another name and renamed into place, so a cleaner
    never finds the lock file unlocked while its save is alive.
    """
    if fcntl is None:
        return None
    pending = os.path.join(work, STAGING_LOCK + ".new")
    fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(pending, os.path.join(work, STAGING_LOCK))
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_stale_staging(directory):
    """Removes the staging directories that killed saves left in `directory`.

    Only kerastl's own (the `STAGING_PREFIX` name, a real directory, holding the
    lock file) and only dead ones (their lock can be taken without waiting: the
    OS releases a killed process's locks). Without `fcntl` (Windows) a live
    save cannot be told from a dead one, so nothing is removed. Never raises:
    a folder we may not clean is left as it is.
    """
    if fcntl is None:
        return
    try:
        with os.scandir(directory) as entries:
            stages = [
                e.path
                for e in entries
                if e.name.startswith(STAGING_PREFIX) and e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return
    for work in stages:
        _remove_if_dead(work)


def _remove_if_dead(work):
    lock_path = os.path.join(work, STAGING_LOCK)
    try:
        fd = os.open(lock_path, os.O_RDWR | _NOFOLLOW)
    except OSError:  # no lock file: not kerastl's, or not locked yet
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a save is running
            return
        try:  # still the same lock file (not a new save that reused the name)?
            same = os.path.samestat(os.fstat(fd), os.lstat(lock_path))
        except OSError:
            return
        if same:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        os.close(fd)
