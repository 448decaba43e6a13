"""The one atomic writer: every file kerastl writes goes through here.

A file is written to a temporary file in the same directory, synced, then
renamed over its name (`os.replace`, then the directory synced): after a crash
the name holds the old file or the new one, never half of one. A failed write
removes the temporary file, and its error names the user's path, never the
temporary one.
"""

import contextlib
import os
import tempfile

TEMP_PREFIX = ".kerastl-"


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


def write_atomically(path, write, *, arg="path", text=False, mode=0o644):
    """Writes the file `path` with `write(file)`, atomically.

    Args:
        path: the file to write (str or PathLike); its directory must exist.
        write: a function of an open file (binary, or text with `text=True`)
            that writes the content.
        arg: the name of the user's argument, for error messages.
        text: open the file in text mode (UTF-8).
        mode: the file's permissions (a temporary file is private at first).

    Returns:
        `path`.

    An `OSError` while writing (no space, no permission) is raised as the same
    kind of error naming `path`; the temporary file is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        descriptor, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=directory)
    except OSError as e:
        raise _naming(e, path, arg) from None
    try:
        with (
            os.fdopen(descriptor, "w", encoding="utf-8")
            if text
            else os.fdopen(descriptor, "wb") as file
        ):
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        replace_atomically(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and tmp in (e.filename, e.filename2):
            raise _naming(e, path, arg) from None
        raise
    return path


def _naming(error, path, arg):
    """The same kind of `OSError`, naming the user's `path` instead of a temporary file."""
    reason = error.strerror or str(error)
    return OSError(error.errno, f"Cannot write the file ({reason}). Received: {arg}={path!r}")
