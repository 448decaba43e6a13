"""Building a registry backbone with its weights: ImageNet download, local file or none."""

import contextlib
import os
import re
import socket

from kerastl._keras_private import keras_home

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


def build_with_weights(spec, input_shape, weights, **kwargs):
    """`spec.build(...)` with `weights` in {"imagenet", None, path}; clear errors otherwise."""
    weights = check_weights_arg(weights)
    if weights == "imagenet":
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                return _build(spec, input_shape, "imagenet", kwargs)
        except Exception as e:  # keras wraps every fetch failure in a plain Exception
            message = str(e)
            if "URL fetch failure" not in message and not isinstance(e, OSError):
                raise
            url = re.search(r"https?://\S+?(?=[:\s]|$)", message)
            url = url.group(0) if url else "the keras.applications weights URL"
            fname = url.rsplit("/", 1)[-1] if url.startswith("http") else "<file name>"
            raise WeightsDownloadError(
                f"Could not download the ImageNet weights of backbone {spec.name!r} from "
                f"{url} ({message.splitlines()[0][:200]}). Offline? Either copy the "
                f"file to the Keras cache directory ({os.path.join(keras_cache_dir(), fname)};"
                f" set KERAS_HOME to move it) or pass the path of a local weights file: "
                f"weights='/path/to/{fname}'. Received: weights='imagenet'"
            ) from None
    model = _build(spec, input_shape, None, kwargs)
    if weights is not None:
        load_weights_file(model, weights, owner=f"backbone {spec.name!r}")
    return model


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
