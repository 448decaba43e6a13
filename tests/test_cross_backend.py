"""Saved on each backend, loaded on each of the three: the 3 x 3 matrix (nox -s cross_backend).

One model per source backend holds every serialisable kerastl part and is saved once,
three ways (`cross_backend_matrix.py`); one process per target backend then loads all nine
files. Six backend processes in all, whichever backend runs this module; the interpreters
come from KERASTL_PYTHONS (`backend=python,...`, set by nox), else this one.
"""

import json
import os
import subprocess
import tempfile

import numpy as np
import pytest
from support import BACKENDS, backend_python

pytestmark = pytest.mark.cross_backend
HERE = os.path.dirname(os.path.abspath(__file__))
MATRIX = os.path.join(HERE, "cross_backend_matrix.py")
CLASSES = ["astronaut", "coffee", "cat"]
PAIRS = [(source, target) for source in BACKENDS for target in BACKENDS]
IDS = [f"{source}->{target}" for source, target in PAIRS]


def _start(backend, *args, cache):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join([HERE, os.path.dirname(HERE)])
    # Three processes side by side on CI's two cores: one thread each (see conftest).
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        env.setdefault(name, "1")
    if backend == "jax":  # as conftest sets for this suite's own JAX processes
        flags = "--xla_backend_optimization_level=0 --xla_cpu_multi_thread_eigen=false"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}"
        env.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return subprocess.Popen(
        [backend_python(backend), MATRIX, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_all(commands, cache):
    """Runs (backend, args) commands side by side; their JSON reports by backend."""
    procs = {backend: _start(backend, *args, cache=cache) for backend, args in commands}
    reports, failures = {}, []
    for backend, proc in procs.items():
        out, err = proc.communicate(timeout=1200)
        if proc.returncode != 0:
            failures.append(f"{backend} ({' '.join(proc.args[2:3])}) failed:\n{err[-4000:]}")
        else:
            reports[backend] = json.loads(out.strip().splitlines()[-1])
    return reports, failures


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, mobilenet_weights, photos):
    """(saved, loaded): each source's own figures, and each target's report per file."""
    root = tmp_path_factory.mktemp("matrix")
    np.save(root / "images.npy", photos[:12, ::3, ::3])  # uint8 32x32: the model resizes
    with tempfile.TemporaryDirectory(prefix="kerastl-jax-cache-") as cache:
        saved, failures = _run_all(
            [(b, ("save", root, mobilenet_weights)) for b in BACKENDS], cache
        )
        loaded, more = _run_all([(b, ("load", root)) for b in BACKENDS], cache)
    (root / "reports.json").write_text(json.dumps({"saved": saved, "loaded": loaded}))
    return saved, loaded, failures + more


def _report(matrix, source, target, name):
    """The target's report on the source's file, after the checks every file passes."""
    saved, loaded, failures = matrix
    if source not in saved or target not in loaded:
        pytest.fail("\n".join(failures))
    got = loaded[target][f"{source}/{name}"]
    assert "error" not in got, f"{source} -> {target}, {name}:\n{got['error']}"
    assert got["load_s"] + got["predict_s"] < 60, "loading must take seconds, not minutes"
    assert got["extractor"] is True
    assert got["lora"].startswith("LoRA(rank=2, alpha=4.0")
    assert got["adapted"] == saved[source][name]["adapted"] and got["adapted"]
    assert got["head"] == "multiclass"
    if target == "torch":
        assert got["jit_compile"] is False  # never torch.compile by inheritance
    print(
        f"\n{source} -> {target} ({name}): load {got['load_s']:.1f} s, predict "
        f"{got['predict_s']:.1f} s, fit step {got.get('fit_s', 0):.1f} s"
    )
    return got, saved[source]


def _check_classifier(got, saved):
    """The MobileNetV2 classifier: same predictions, its freeze policy and LoRA blocks."""
    expected = np.array(saved["predictions"])
    np.testing.assert_allclose(np.array(got["predictions"]), expected, atol=1e-4)
    assert expected.std() > 0.01  # the images give different predictions
    assert got["freeze"] == "TrainTopBlocks(n=1)"
    assert got["lora"] == "LoRA(rank=2, alpha=4.0, blocks=['block_16'])"


@pytest.mark.parametrize("source, target", PAIRS, ids=IDS)
def test_kerastl_file_loads_predicts_and_trains_on(source, target, matrix):
    got, saved = _report(matrix, source, target, "kerastl.keras")
    _check_classifier(got, saved)
    assert got["iterations"] == [1, 2]  # optimizer state crossed the backends
    assert got["head_moved"] > 0
    assert got["optimizer"] == "PerLayerLR" and got["inner"] == "Adam"
    assert got["schedule"] == "OneCycle" and got["multipliers"] == {"head": 0.5}
    assert got["loss"] == "SparseCategoricalCrossentropy"
    meta = got["meta"]
    assert meta["class_names"] == CLASSES and meta["backend"] == source
    assert meta["history"]["loss"] == pytest.approx(saved["history"])


@pytest.mark.parametrize("source, target", PAIRS, ids=IDS)
def test_keras_file_loads_with_keras_own_loader(source, target, matrix):
    """`model.save` / `keras.saving.load_model`: kerastl's classes as Keras itself finds them."""
    got, saved = _report(matrix, source, target, "keras.keras")
    _check_classifier(got, saved)
    assert got["optimizer"] == "PerLayerLR" and got["inner"] == "Adam"
    assert got["schedule"] == "OneCycle" and got["multipliers"] == {"head": 0.5}
    assert got["iterations"] == [1]


@pytest.mark.parametrize("source, target", PAIRS, ids=IDS)
def test_plain_keras_file_loads_and_trains_on(source, target, matrix):
    """What Keras alone writes (torch: private optimizer module; JAX: jit_compile=True)."""
    got, saved = _report(matrix, source, target, "plain.keras")
    _check_classifier(got, saved)
    recorded = saved["plain_compile"]
    print(
        f"plain Keras on {source} records optimizer module "
        f"{recorded['module']!r}, jit_compile={recorded['jit']}"
    )
    assert got["optimizer"] == "Adam"
    assert got["iterations"] == [0, 1] and got["head_moved"] > 0
    assert got["meta"]["class_names"] is None  # plain Keras keeps no names


@pytest.mark.parametrize("source, target", PAIRS, ids=IDS)
def test_lora_on_every_kind_of_layer_loads(source, target, matrix):
    got, saved = _report(matrix, source, target, "lora.keras")
    expected = saved["lora.keras"]["predictions"]
    np.testing.assert_allclose(np.array(got["predictions"]), expected, atol=1e-5)
    assert got["lora"] == "LoRA(rank=2, alpha=4.0)"
    assert got["adapted"] == ["stem_conv", "dw_conv", "sep_conv", "group_conv", "dense"]
