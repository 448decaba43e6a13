"""Loads read one version of a file, open no file a config names, and read bounded members.

The concurrency tests swap saved versions under the loader as fast as a
process can (`os.replace` of whole files, what `save_model` ends with); a
loader that opens the file by name twice mixes versions within a few tries.
The 2,000-try run with a `save_model` writer is `benchmarks/load_consistency.py`.
"""

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile

import h5py
import keras
import numpy as np
import pytest

import kerastl
from kerastl.files import archive, model_files

# File reads, the same on any backend: one session runs it (conftest).
pytestmark = pytest.mark.one_backend

TRIES = 60  # per test; the old double-open loader mixed about one load in two
IMAGE = np.zeros((4, 4, 3), "uint8")

# Swaps the versions into place until killed (or orphaned); prints "ready" once each is in.
SWAPPER = textwrap.dedent(
    """
    import os, shutil, sys, time
    path, *versions = sys.argv[1:]
    pending = path + ".swapping"
    parent = os.getppid()
    swaps = 0
    while os.getppid() == parent:
        for source in versions:
            shutil.copyfile(source, pending)
            os.replace(pending, path)
            swaps += 1
            if swaps == len(versions):
                print("ready", flush=True)
            time.sleep(0.0005)
    """
)


def version(k):
    """Version `k` (0 or 1) of a tiny classifier: its class names and its outputs say `k`."""
    model = keras.Sequential(
        [
            keras.Input((4, 4, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    dense = model.get_layer("out")
    dense.set_weights([np.zeros((3, 2), "float32"), np.array([0.0, 4.0 * k - 2.0], "float32")])
    return model, [f"v{k}-first", f"v{k}-second"]


def outputs_version(probabilities):
    """The version whose weights gave `probabilities` (the second class wins in version 1)."""
    return int(probabilities[1] > probabilities[0])


def names_version(names):
    return int(names[0].startswith("v1"))


@pytest.fixture
def swapping(tmp_path):
    """`swapping(files, name)`: `name` in tmp_path, replaced by each of `files` in turn."""
    procs = []

    def start(files, name):
        path = tmp_path / name
        path.write_bytes(files[0].read_bytes())
        proc = subprocess.Popen(
            [sys.executable, "-c", SWAPPER, str(path), *map(str, files)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return path

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def saved_versions(tmp_path, suffix=".keras"):
    files = []
    for k in (0, 1):
        model, names = version(k)
        path = tmp_path / f"version{k}{suffix}"
        if suffix == ".keras":
            kerastl.save_model(model, path, class_names=names)
        else:  # legacy HDF5: the version is marked in a root attribute kerastl reads
            model.save(path)
            with h5py.File(path, "r+") as f:
                f.attrs["backend"] = f"v{k}"
        files.append(path)
    return files


def check_versions(pairs):
    """Every (names version, weights version) pair agrees, and both versions were read."""
    mixed = [pair for pair in pairs if pair[0] != pair[1]]
    assert not mixed, f"{len(mixed)} of {len(pairs)} loads mixed two versions"
    # Both versions came through: the file did change under the loader.
    assert {pair[0] for pair in pairs} == {0, 1}


def test_load_model_reads_one_version(swapping, tmp_path):
    path = swapping(saved_versions(tmp_path), "model.keras")
    pairs = []
    for _ in range(TRIES):
        model = kerastl.load_model(path)
        probabilities = keras.ops.convert_to_numpy(model(IMAGE[None].astype("float32")))[0]
        pairs.append(
            (names_version(model.kerastl_metadata["class_names"]), outputs_version(probabilities))
        )
    check_versions(pairs)


def test_predictor_reads_one_version(swapping, tmp_path):
    path = swapping(saved_versions(tmp_path), "model.keras")
    pairs = []
    for _ in range(TRIES // 2):
        predictor = kerastl.Predictor(path)
        # The model called directly: `predict` would trace each new model (slow on CI).
        probabilities = keras.ops.convert_to_numpy(predictor.model(IMAGE[None].astype("float32")))
        pairs.append((names_version(predictor.class_names), outputs_version(probabilities[0])))
    check_versions(pairs)


def test_legacy_h5_load_reads_one_version(swapping, tmp_path):
    path = swapping(saved_versions(tmp_path, ".h5"), "model.h5")
    pairs = []
    for _ in range(TRIES):
        model = kerastl.load_model(path)
        probabilities = keras.ops.convert_to_numpy(model(IMAGE[None].astype("float32")))[0]
        marker = model.kerastl_metadata["backend"]
        pairs.append((int(marker == "v1"), outputs_version(probabilities)))
    check_versions(pairs)


def test_a_load_opens_the_file_by_name_once(tmp_path):
    """Every later read goes through the one open (or a private copy of it, for Keras)."""
    files = saved_versions(tmp_path)
    with recorded_opens() as opened:
        model = kerastl.load_model(files[0])
    assert model.kerastl_metadata["class_names"] == ["v0-first", "v0-second"]
    assert opened.count(str(files[0])) == 1


_RECORDERS = []


@contextlib.contextmanager
def recorded_opens():
    """The paths this process opens (`open`, `io.open`, `os.open`) inside the block."""
    if not _RECORDERS:  # an audit hook cannot be removed: one, added on first use
        _RECORDERS.append(None)
        sys.addaudithook(_audit)
    opened = []
    _RECORDERS.append(opened)
    try:
        yield opened
    finally:
        _RECORDERS.remove(opened)


def _audit(event, args):
    if event == "open" and len(_RECORDERS) > 1 and isinstance(args[0], (str, bytes, os.PathLike)):
        for opened in _RECORDERS[1:]:
            opened.append(os.fsdecode(args[0]))


# --- paths inside a file ------------------------------------------------------------


def test_feature_extractor_config_naming_a_file_never_opens_it(tmp_path):
    """A config's backbone path is refused as such: the other file is never read."""
    other = tmp_path / "other.keras"  # a file with Python code in it
    lambda_model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Lambda(lambda x: x)])
    lambda_model.save(other)
    inputs = keras.Input((8, 8, 3))
    body = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs), name="body")
    extractor = kerastl.FeatureExtractor(body, pooling="avg", arch=None, name="extractor")
    model = keras.Sequential([keras.Input((8, 8, 3)), extractor, keras.layers.Dense(2)])
    clean = tmp_path / "clean.keras"
    kerastl.save_model(model, clean)
    hostile = tmp_path / "hostile.keras"
    _rewrite_config(clean, hostile, lambda c: _set_backbone(c, str(other)))

    with recorded_opens() as opened:
        for safe_mode in (True, False):
            with pytest.raises(ValueError) as info:
                kerastl.load_model(hostile, safe_mode=safe_mode)
            message = str(info.value)
            assert "file path" in message and f"Received: path={str(hostile)!r}" in message
            assert "Python code" not in message and "safe_mode" not in message
    assert str(other) not in opened
    assert str(hostile) in opened  # the recorder does see kerastl's opens


def _set_backbone(config, value):
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "FeatureExtractor":
            layer["config"]["backbone"] = value
            return config
    raise AssertionError("no FeatureExtractor in the config")


def _rewrite_config(src, dst, change):
    with zipfile.ZipFile(src) as zf:
        config = json.loads(zf.read(archive.CONFIG))
    archive.rewrite(src, dst, config=change(config))


# --- bounded members ------------------------------------------------------------------


def test_bounds_leave_room_for_the_largest_application_configs():
    # NASNetLarge's config.json, the largest keras.applications one, is ~1.0 MB.
    assert archive.MAX_CONFIG_BYTES >= 10 * 1_033_352
    assert archive.MAX_METADATA_BYTES >= 8 * 2**20


@pytest.fixture
def small_bounds(monkeypatch):
    monkeypatch.setattr(archive, "MAX_CONFIG_BYTES", 50_000)
    monkeypatch.setattr(archive, "MAX_METADATA_BYTES", 20_000)


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.keras"
    model, names = version(0)
    kerastl.save_model(model, path, class_names=names)
    return path


def _with_member(src, dst, name, data):
    archive.rewrite(src, dst, extra={name: data})


@pytest.mark.parametrize(
    "member, size",
    [
        (archive.KERASTL_METADATA, 20_001),
        (archive.KERAS_METADATA, 20_001),
        (archive.CONFIG, 50_001),
    ],
    ids=["kerastl-json", "keras-metadata-json", "config-json"],
)
def test_oversized_member_is_refused_before_it_is_read(member, size, small_bounds, tiny_file):
    hostile = tiny_file.parent / "hostile.keras"
    # Not JSON: had kerastl parsed it, the error would be a JSON one.
    _with_member(tiny_file, hostile, member, "x" * size)
    calls = [kerastl.load_model, kerastl.Predictor]
    if member != archive.CONFIG:  # read_metadata leaves config.json unread
        calls.append(kerastl.read_metadata)
    for call in calls:
        with pytest.raises(ValueError, match=rf"{member}.* at most .*Received: path=.*hostile"):
            call(hostile)


def test_real_bound_refuses_a_huge_metadata_member(tiny_file):
    hostile = tiny_file.parent / "hostile.keras"
    huge = " " * (archive.MAX_METADATA_BYTES + 1)  # deflated: 17 kB on disk
    _with_member(tiny_file, hostile, archive.KERASTL_METADATA, huge)
    with pytest.raises(ValueError, match=r"kerastl.json.* at most .*Received: path=.*hostile"):
        kerastl.read_metadata(hostile)


def test_member_whose_declared_size_lies_is_refused(tiny_file):
    """The central directory says 100 bytes; the stored stream holds 30,000."""
    text = json.dumps({"class_names": ["a", "b"], "pad": " " * 30_000}).encode()
    hostile = tiny_file.parent / "hostile.keras"
    with zipfile.ZipFile(tiny_file) as source, zipfile.ZipFile(hostile, "w") as target:
        for info in source.infolist():
            if info.filename != archive.KERASTL_METADATA:
                target.writestr(info, source.read(info))
        target.writestr(archive.KERASTL_METADATA, text)  # stored: the stream is the text
    data = bytearray(hostile.read_bytes())
    entry = _central_entry(data, archive.KERASTL_METADATA)
    data[entry + 24 : entry + 28] = struct.pack("<I", 100)  # its uncompressed size
    hostile.write_bytes(bytes(data))
    with zipfile.ZipFile(hostile) as zf:
        assert zf.getinfo(archive.KERASTL_METADATA).file_size == 100
    for call in (kerastl.load_model, kerastl.read_metadata):
        with pytest.raises(ValueError, match=r"corrupted.*Received: path=.*hostile"):
            call(hostile)


def _central_entry(data, name):
    start = 0
    while True:
        at = data.index(b"PK\x01\x02", start)
        length = struct.unpack("<H", data[at + 28 : at + 30])[0]
        if data[at + 46 : at + 46 + length] == name.encode():
            return at
        start = at + 4


class _LyingZip:
    """A zip reader whose member streams run past their declared size."""

    def __init__(self, name, declared, stream):
        self.info = zipfile.ZipInfo(name)
        self.info.file_size = declared
        self.stream = stream

    def namelist(self):
        return [self.info.filename]

    def getinfo(self, name):
        return self.info

    def open(self, info):
        return io.BytesIO(self.stream)


def test_reads_are_capped_even_when_the_declared_size_lies(small_bounds):
    text = json.dumps({"pad": " " * 30_000}).encode()
    lying = _LyingZip(archive.KERASTL_METADATA, 100, text)
    with pytest.raises(ValueError, match=r"kerastl.json.* at most .*Received: path='x.keras'"):
        archive.read_json_member(lying, archive.KERASTL_METADATA, "x.keras")
    honest = _LyingZip(archive.KERASTL_METADATA, 100, b'{"task": "binary"}')
    assert archive.read_json_member(honest, archive.KERASTL_METADATA, "x.keras") == {
        "task": "binary"
    }


@pytest.mark.parametrize(
    "member, text, match",
    [
        (archive.KERASTL_METADATA, "[1, 2]", "JSON object"),
        (archive.KERASTL_METADATA, "{not json", "not valid JSON"),
        (archive.KERASTL_METADATA, "[" * 100_000, "not valid JSON"),
        (archive.CONFIG, "[]", "JSON object"),
    ],
    ids=["list", "garbage", "deep", "config-list"],
)
def test_malformed_members_are_clear_errors(member, text, match, tiny_file):
    hostile = tiny_file.parent / "hostile.keras"
    _with_member(tiny_file, hostile, member, text)
    with pytest.raises(ValueError, match=rf"{match}.*Received: path=.*hostile"):
        kerastl.load_model(hostile)


def test_save_refuses_metadata_it_could_not_read_back(small_bounds, tmp_path):
    model, names = version(0)
    path = tmp_path / "model.keras"
    history = {"loss": [0.5] * 5_000}
    with pytest.raises(ValueError, match=r"at most .*Received: history="):
        kerastl.save_model(model, path, class_names=names, history=history)
    assert not path.exists()


def test_oversized_legacy_config_is_refused(small_bounds, tmp_path):
    path = tmp_path / "model.h5"
    version(0)[0].save(path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps({"pad": "x" * 60_000})
    with pytest.raises(ValueError, match=r"model_config.* at most .*Received: path=.*model.h5"):
        kerastl.load_model(path)
    with pytest.raises(ValueError, match=r"Received: source=.*model.h5"):
        model_files.load_model_file(path, arg="source")
