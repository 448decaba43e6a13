"""The hidden staging directories of saves and exports: short names, crash litter cleaned."""

import fcntl
import importlib
import os
import signal
import subprocess
import sys
import textwrap
from unittest import mock

import keras
import numpy as np
import pytest

from kerastl.files import archive
from kerastl.saving import export, load_model, read_metadata, save_model

# File staging is kerastl's own, the same on any backend (conftest).
pytestmark = pytest.mark.one_backend

export_module = importlib.import_module("kerastl.saving.export")

CLASSES = ["astronaut", "coffee", "cat"]
LOCK = archive.STAGING_LOCK


def tiny():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    model(np.zeros((1, 16, 16, 3), "float32"))  # exports need a called model
    return model


def staging_dirs(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(archive.STAGING_PREFIX))


@pytest.mark.parametrize("length", [240, 255])
def test_longest_file_names_save_and_load(length, tmp_path):
    """The staging directory's name does not grow with the target's (255: Linux's limit)."""
    path = tmp_path / ("x" * (length - len(".keras")) + ".keras")
    save_model(tiny(), path, class_names=CLASSES)
    assert len(path.name) == length
    assert os.listdir(tmp_path) == [path.name]
    assert load_model(path).kerastl_metadata["class_names"] == CLASSES
    assert read_metadata(path)["class_names"] == CLASSES


def test_longest_file_name_exports(tmp_path):
    pytest.importorskip("onnx")
    path = tmp_path / ("x" * (255 - len(".onnx")) + ".onnx")
    assert export(tiny(), path, format="onnx") == str(path)
    assert os.listdir(tmp_path) == [path.name]
    assert path.stat().st_size > 0


_STALLED_SAVE = """
import os, sys, time
import keras
from kerastl.saving import save_model

def stall(fd):  # the archive is written; the fsync and the rename never come
    print("stalled", flush=True)
    time.sleep(600)

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3),
                          keras.layers.GlobalAveragePooling2D(),
                          keras.layers.Dense(3, activation="softmax")])
os.fsync = stall
save_model(model, sys.argv[1], class_names=["a", "b", "c"])
"""


def test_live_save_is_left_alone_and_a_killed_one_is_cleaned_up(tmp_path):
    saved = tmp_path / "model.keras"
    save_model(tiny(), saved, class_names=CLASSES)
    before = saved.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_STALLED_SAVE), str(saved)],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"stalled\n"
        (stage,) = staging_dirs(tmp_path)
        contents = sorted(os.listdir(tmp_path / stage))
        assert contents == sorted([LOCK, "model.keras", "final.keras"])
        # Alive, mid-save: a save, a load and a read in the same folder leave it be.
        save_model(tiny(), tmp_path / "other.keras", class_names=CLASSES)
        assert load_model(saved).kerastl_metadata["class_names"] == CLASSES
        assert read_metadata(saved)["class_names"] == CLASSES
        assert staging_dirs(tmp_path) == [stage]
        assert sorted(os.listdir(tmp_path / stage)) == contents
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        child.kill()
        child.wait()
    # Killed: the earlier file is whole, and its litter stays until the next save.
    assert saved.read_bytes() == before
    assert staging_dirs(tmp_path) == [stage]
    save_model(tiny(), saved, class_names=["x", "y", "z"])
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "other.keras"]
    assert load_model(saved).kerastl_metadata["class_names"] == ["x", "y", "z"]


def _dead_stage(directory, name):
    """What a killed save leaves: the OS released its lock."""
    stage = directory / f"{archive.STAGING_PREFIX}{name}"
    stage.mkdir()
    (stage / LOCK).write_bytes(b"")
    (stage / "model.keras").write_bytes(b"PK partial")
    return stage


def _not_ours(directory):
    """Things in the folder that kerastl must never remove."""
    prefix = archive.STAGING_PREFIX
    (directory / f"{prefix}nolock").mkdir()  # the prefix, but no lock file
    (directory / f"{prefix}nolock" / "data.txt").write_text("mine")
    (directory / f"{prefix}file").write_text("a user file named like one")
    (directory / "elsewhere").mkdir()
    (directory / "elsewhere" / LOCK).write_bytes(b"")
    (directory / f"{prefix}link").symlink_to(directory / "elsewhere")  # not followed
    (directory / ".m.keras.kerastl-tmp-abc123").mkdir()  # an old-style name
    (directory / ".m.keras.kerastl-tmp-abc123" / LOCK).write_bytes(b"")
    (directory / "photos").mkdir()
    (directory / "photos" / LOCK).write_bytes(b"")
    return sorted(os.listdir(directory))


def _save(path):
    save_model(tiny(), path, class_names=CLASSES)


def _export(path):
    model = tiny()
    # The staging is under test, not the exporter: a stand-in writes the artifact.
    model.export = lambda staged, **kwargs: open(staged, "wb").close()
    with mock.patch.object(export_module, "_check_onnx_runs"):  # the empty file would not run
        export(model, path.with_suffix(".onnx"), format="onnx")


CLEANERS = {
    "save_model": _save,
    "load_model": load_model,
    "read_metadata": read_metadata,
    "export": _export,
}


@pytest.mark.parametrize("cleaner", list(CLEANERS))
def test_stale_staging_is_removed_and_nothing_else(cleaner, tmp_path):
    path = tmp_path / "m.keras"
    save_model(tiny(), path, class_names=CLASSES)
    dead = _dead_stage(tmp_path, "dead0001")
    live = _dead_stage(tmp_path, "live0001")
    others = _not_ours(tmp_path)
    # A live save holds its lock (an flock on another open file: refused in-process too).
    held = os.open(live / LOCK, os.O_RDWR)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        CLEANERS[cleaner](path)
        assert not dead.exists()
        assert sorted(os.listdir(live)) == [LOCK, "model.keras"]
    finally:
        os.close(held)
    expected = sorted(set(others) - {dead.name} | ({"m.onnx"} if cleaner == "export" else set()))
    assert sorted(os.listdir(tmp_path)) == expected
    assert (tmp_path / f"{archive.STAGING_PREFIX}nolock" / "data.txt").read_text() == "mine"
    assert os.listdir(tmp_path / "elsewhere") == [LOCK]
