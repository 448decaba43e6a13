"""A directory kerastl writes into (checkpoints, feature caches), checked and created."""

import os


def prepare_directory(directory, arg):
    """`directory` as a string, created if missing; errors name the caller's argument `arg`."""
    if isinstance(directory, os.PathLike):
        directory = os.fspath(directory)
    if not isinstance(directory, str) or not directory:
        raise TypeError(f"`{arg}` must be a directory path. Received: {arg}={directory!r}")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(
            f"`{arg}` names a file, not a directory. Received: {arg}={directory!r}"
        )
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"`{arg}` cannot be created ({e.strerror}). Received: {arg}={directory!r}"
        ) from None
    return directory
