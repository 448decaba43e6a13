"""The backend matrix: one venv per backend, holding only that backend.

nox                          lint, tests on the three backends, cross-backend loads
nox -s "tests(jax)"          one backend
nox -s keras_floor           the tests on the oldest Keras pyproject.toml claims
nox -s "gpu(torch)"          GPU-marked tests and benchmarks, current interpreter
"""

import pathlib

import nox

BACKENDS = ["tensorflow", "jax", "torch"]
GPU_BACKENDS = ["jax", "torch"]
ROOT = pathlib.Path(__file__).parent
# What kerastl.export needs for ONNX on each backend, plus onnxruntime to check the file.
ONNX = {
    "tensorflow": ["tf2onnx", "onnx", "onnxruntime"],
    "jax": ["jax2onnx", "onnx", "onnxruntime"],
    "torch": ["onnx", "onnxscript", "onnxruntime"],
}
# The oldest Keras that pyproject.toml claims ("keras>=..."): keras_floor tests it.
KERAS_FLOOR = "3.10.0"
KERAS_FLOOR_TESTS = [
    f"tests/test_{name}.py"
    for name in (
        "keras_private",
        "structure",
        "recompile",
        "feature_extractor",
        "freeze",
        "lora",
        "optimizers",
        "callbacks",
        "build_model",
        "heads",
        "preprocessing",
        "layers",
        "saving",
        "weights_by_name",
        "predictor",
    )
]
# Tests run in parallel processes (pytest-xdist): on 2 cores it halves the JAX run.
PARALLEL = ["-n", "auto", "--maxprocesses", "4"]

nox.options.sessions = ["lint", "tests", "cross_backend", "keras_floor"]
nox.options.reuse_existing_virtualenvs = False


def _install(session, backend, keras_hub=True):
    session.install("-e", f".[{backend},plot]")
    session.install(*nox.project.dependency_groups(nox.project.load_toml("pyproject.toml"), "test"))
    if not keras_hub:
        return
    # keras-hub backbones are a backbone source; its hard tensorflow-text requirement
    # (which pulls full TensorFlow) is only for text models, so install it without.
    session.install("--no-deps", "keras-hub==0.32.0")
    session.install("regex", "kagglehub", "sentencepiece", "tokenizers", *ONNX[backend])


def _venv_python(backend):
    return ROOT / ".nox" / f"tests-{backend}" / "bin" / "python"


@nox.session
def lint(session):
    session.install(*nox.project.dependency_groups(nox.project.load_toml("pyproject.toml"), "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
@nox.parametrize("backend", BACKENDS, ids=BACKENDS)
def tests(session, backend):
    _install(session, backend)
    session.run(
        "pytest",
        "-m",
        "not gpu and not cross_backend",
        *PARALLEL,
        *session.posargs,
        env={"KERAS_BACKEND": backend},
    )


@nox.session
def keras_floor(session):
    """The tests of what depends on Keras's behaviour, on the oldest Keras the package claims.

    torch, because TensorFlow 2.21 requires a newer Keras than the floor and JAX
    runs convolutions ~5x slower on CPU. Left out, to keep CI short: the modules
    that test kerastl's own argument checks, image decoding, docs and export.
    """
    # keras-hub 0.32 needs a newer Keras than the floor: its test skips here.
    _install(session, "torch", keras_hub=False)
    session.install(f"keras=={KERAS_FLOOR}")
    env = {"KERAS_BACKEND": "torch"}
    session.run(
        "python",
        "-c",
        f"import keras; assert keras.__version__ == {KERAS_FLOOR!r}, keras.__version__",
        env=env,
    )
    session.run(
        "pytest",
        "-m",
        "not gpu and not cross_backend",
        *PARALLEL,
        *(session.posargs or KERAS_FLOOR_TESTS),
        env=env,
    )


@nox.session(venv_backend="none")
def cross_backend(session):
    """Save under each backend, load under each of the three: 9 pairs.

    Reuses the single-backend venvs of the tests sessions, which run before it.
    """
    pythons = {b: _venv_python(b) for b in BACKENDS}
    missing = [b for b, p in pythons.items() if not p.exists()]
    if missing:
        session.error(f"no venv for {missing}: run `nox -s tests` first.")
    mapping = ",".join(f"{b}={p}" for b, p in pythons.items())
    for backend, python in pythons.items():
        session.run(
            str(python),
            "-m",
            "pytest",
            "-m",
            "cross_backend",
            *PARALLEL,
            *session.posargs,
            env={"KERAS_BACKEND": backend, "KERASTL_PYTHONS": mapping},
            external=True,
        )


@nox.session(venv_backend="none")
@nox.parametrize("backend", GPU_BACKENDS, ids=GPU_BACKENDS)
def gpu(session, backend):
    """GPU-marked tests and benchmarks, in the current interpreter (kerastl installed)."""
    env = {"KERAS_BACKEND": backend}
    check = {
        "jax": "import jax; assert jax.devices('gpu'), 'no GPU visible to jax'",
        "torch": "import torch; assert torch.cuda.is_available(), 'no GPU visible to torch'",
    }[backend]
    session.run("python", "-c", check, env=env, external=True)
    session.run("python", "-m", "pytest", "-m", "gpu", *session.posargs, env=env, external=True)
    bench_dir = ROOT / "benchmarks"
    for script in sorted(bench_dir.glob("bench_*.py")):
        session.run("python", str(script), "--gpu", env=env, external=True)
