"""Building a registry backbone with its weights: ImageNet download, local file or none."""

import contextlib
import os
import re
import socket
import warnings
import zipfile

import h5py

from kerastl._keras_private import keras_home
from kerastl.backbones.weights_by_name import load_file_by_name
from kerastl.files.model_files import is_hdf5

# A download that cannot connect fails after this many seconds instead of
# hanging: offline machines must get the "use a local file" message fast.
DOWNLOAD_TIMEOUT_S = 20


class WeightsDownloadError(OSError):
    """Pretrained weights could not be downloaded (offline, proxy, server down)."""


@contextlib.contextmanager
def _socket_timeout(seconds):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def keras_cache_dir():
    """Where `keras.utils.get_file` keeps downloaded weights (`$KERAS_HOME/models`)."""
    return os.path.join(keras_home(), "models")


def check_weights_arg(weights):
    if weights is None or weights == "imagenet":
        return weights
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise ValueError(
            f"`weights` must be 'imagenet', None or the path to a weights file. "
            f"Received: weights={weights!r}"
        )
    if os.path.isdir(weights):
        raise IsADirectoryError(
            f"`weights` names a directory, not a weights file. Received: weights={weights!r}"
        )
    if not os.path.isfile(weights):
        if not os.path.splitext(weights)[1] and not any(sep in weights for sep in "/\\"):
            # A bare word is a misspelt option more likely than a missing file.
            raise ValueError(
                f"`weights` must be 'imagenet', None or the path to a weights file. "
                f"Received: weights={weights!r}"
            )
        raise FileNotFoundError(
            f"`weights` names a file that does not exist. Received: weights={weights!r}"
        )
    return weights


def build_with_weights(spec, input_shape, weights, safe_mode=True, **kwargs):
    """`spec.build(...)` with `weights` in {"imagenet", None, path}; clear errors otherwise.

    Returns `(model, report)`. A weights path may be a plain weights file
    (`.weights.h5`, a Keras 2 `_no_top.h5`), loaded as Keras does, or a whole
    model file (a classifier whose body is this architecture, `.keras` or `.h5`):
    its weights are then matched to the backbone's layers by name and shape,
    and `report` (a `WeightsReport`) says what was loaded and what was not.
    """
    weights = check_weights_arg(weights)
    if weights == "imagenet":
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                return _build(spec, input_shape, "imagenet", kwargs), None
        except Exception as e:  # keras wraps every fetch failure in a plain Exception
            message = str(e)
            if "URL fetch failure" not in message and not isinstance(e, OSError):
                raise
            url, cause = _download_failure(e)
            fname = url.rsplit("/", 1)[-1] if url.startswith("http") else "<file name>"
            raise WeightsDownloadError(
                f"Could not download the ImageNet weights of backbone {spec.name!r} from "
                f"{url}: {cause}. Offline? Either copy the file to the Keras cache directory "
                f"({os.path.join(keras_cache_dir(), fname)}; set KERAS_HOME to move it) or "
                f"pass the path of a local weights file: weights='/path/to/{fname}'. "
                "Received: weights='imagenet'"
            ) from None
    model = _build(spec, input_shape, None, kwargs)
    report = None
    if weights is not None and is_model_file(weights):
        report = _load_by_name(model, weights, spec, safe_mode)
    elif weights is not None:
        try:
            load_weights_file(model, weights, owner=f"backbone {spec.name!r}")
        except ValueError:
            if not weights.endswith(".weights.h5"):
                raise
            # The `.weights.h5` of a whole classifier: match its entries by path.
            report = _load_by_name(model, weights, spec, safe_mode)
    return model, report


def _download_failure(error):
    """`(url, cause)` of a failed `keras.utils.get_file`, the cause whole, on one line.

    Keras reports `URL fetch failure on <url>: <HTTP code or errno> -- <reason>`.
    """
    message = str(error)
    match = re.match(r"URL fetch failure on (\S+): (.*)", message, re.S)
    if match is None:
        url = re.search(r"https?://\S+?(?=[:\s]|$)", message)
        cause = message
        url = url.group(0) if url else "the keras.applications weights URL"
    else:
        url, cause = match.groups()
        code, separator, reason = cause.partition(" -- ")
        if separator and code == "None":  # a URLError: no HTTP code, the reason says it
            cause = reason
        elif separator:
            cause = f"HTTP error {code}: {reason}"
    return url, " ".join(cause.split()).rstrip(".") or type(error).__name__


def is_model_file(path):
    """Whether `path` holds a whole model (a `.keras` archive or an `.h5` with a model config)."""
    if is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                return "model_config" in f.attrs
        except OSError:
            return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "config.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _load_by_name(model, path, spec, safe_mode):
    """The file's weights into `model` by layer name, all shapes equal, else nothing."""
    try:
        report = load_file_by_name(
            model, path, skip_mismatch=False, safe_mode=safe_mode, arg="weights"
        )
    except ValueError as e:
        if "nothing was loaded" not in str(e):
            raise
        # The same names with other shapes: the file holds another width of the network.
        reason = str(e).split("; nothing was loaded")[0]
        raise ValueError(
            f"The model file does not fit backbone {spec.name!r} as built: {reason}. "
            f"It holds this architecture at another width or input: give the "
            f"`backbone_kwargs` (e.g. alpha) and `input_shape` it was built with. Nothing "
            f"was loaded. Received: weights={path!r}"
        ) from None
    _warn_incomplete(report, spec, path)
    return report


def _warn_incomplete(report, spec, path):
    """A backbone layer the model file did not fill keeps random weights: say so loudly."""
    left = report.missing
    if not left:
        return
    shown = ", ".join(left[:5]) + (" ..." if len(left) > 5 else "")
    warnings.warn(
        f"The model file filled {len(report.loaded)} layers of backbone {spec.name!r}; "
        f"{len(left)} have no layer of that name in the file and keep their random "
        f"initial weights ({shown}). Received: weights={path!r}",
        stacklevel=5,
    )


def _build(spec, input_shape, weights, kwargs):
    """`spec.build(...)`; a constructor that rejects `kwargs` says so by name."""
    if not kwargs:
        return spec.build(input_shape, weights=weights)
    try:
        return spec.build(input_shape, weights=weights, **kwargs)
    except (TypeError, ValueError) as e:
        reason = str(e).strip().split("\n")[0][:300]
        raise ValueError(
            f"Backbone {spec.name!r} could not be built with these `backbone_kwargs` "
            f"({type(e).__name__}: {reason}). Received: backbone_kwargs={kwargs!r}"
        ) from None


def load_weights_file(model, path, owner):
    """`model.load_weights(path)` with an error that names the file and the model."""
    try:
        model.load_weights(path)
    except Exception as e:
        reason = str(e).split("\n")[0][:300]
        raise ValueError(
            f"The weights file does not match {owner} (input shape "
            f"{model.input_shape}, {len(model.weights)} weight tensors): {reason} "
            f"Received: weights={path!r}"
        ) from None
