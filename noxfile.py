"""The backend matrix: one venv per backend, holding only that backend.

nox                          lint, tests on the three backends, cross-backend loads
nox -s "tests(jax)"          one backend (tests marked backend_free / one_backend: torch only)
nox -s cross_backend         the 3 x 3 matrix of saves and loads (after the tests sessions)
nox -s keras_floor           private-API checks and smoke tests on the oldest Keras claimed
nox -s "gpu(torch)"          GPU-marked tests and benchmarks/gpu_*.py, the machine's Python
nox -s docs                  the documentation site (strict), checked in a headless browser
nox -s report                the demo's evaluation report, checked in a headless browser
"""

import json
import os
import pathlib

import nox
import packaging.version

BACKENDS = ["tensorflow", "jax", "torch"]
# The session that runs the tests whose check is the same on every backend (conftest).
ONE_BACKEND = "torch"
GPU_BACKENDS = ["jax", "torch"]
ROOT = pathlib.Path(__file__).parent
# What kerastl.export needs for ONNX on each backend, plus onnxruntime to check the file.
ONNX = {
    "tensorflow": ["tf2onnx", "onnx", "onnxruntime"],
    "jax": ["jax2onnx", "onnx", "onnxruntime"],
    "torch": ["onnx", "onnxscript", "onnxruntime"],
}
# The oldest Keras that pyproject.toml claims ("keras>=..."): keras_floor tests it with the
# checks of every private Keras API kerastl uses (tests/test_keras_private.py) and a smoke
# test per part that leans on Keras' serialisation or training loop, both marked
# `keras_floor`; the rest is kerastl's own code on public Keras APIs.
KERAS_FLOOR = "3.10.0"


def _keras_floor_tests():
    """The test modules that hold a `keras_floor` test (pytest then picks those by marker)."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if "keras_floor" in path.read_text()
    )


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
    """The suite on one backend. Tests marked `backend_free` or `one_backend` check the
    same thing on every backend: they run in the torch session only (the fastest), and
    in any plain `pytest` (tests/conftest.py deselects them where KERASTL_ONE_BACKEND=skip).
    """
    _install(session, backend)
    env = {"KERAS_BACKEND": backend}
    if backend != ONE_BACKEND:
        env["KERASTL_ONE_BACKEND"] = "skip"
    session.run(
        "pytest",
        "-m",
        "not gpu and not cross_backend",
        *PARALLEL,
        "--durations=25",  # the slowest tests, in CI's log: the 25-minute budget's ledger
        *session.posargs,
        env=env,
    )


@nox.session
def docs(session):
    """Builds the site in strict mode (a warning fails) and checks it in a headless browser.

    The API reference is read from the source (mkdocstrings' static analysis): no
    backend is installed. The browser check needs Chromium (Debian: `apt install
    chromium`); `--no-browser` (`nox -s docs -- --no-browser`) checks the links only.
    """
    session.install(*nox.project.dependency_groups(nox.project.load_toml("pyproject.toml"), "docs"))
    session.run("mkdocs", "build", "--strict", "--clean")
    session.run("python", "docs/site_tools/check_site.py", "site", *session.posargs)
    if "--no-browser" not in session.posargs:
        session.notify("report", [])  # the other page kerastl writes, checked the same way


@nox.session
def report(session):
    """Writes the evaluation report of `kerastl demo --quick` and checks it in a headless
    browser (docs/site_tools/check_report.py): it renders, its figures load, it links
    nowhere else. Needs Chromium, like the docs session (which runs this one after it);
    neither is among CI's default sessions. `nox -s report -- --screenshot report.png`
    saves the whole page.
    """
    session.install("-e", ".[torch,demo]")
    out = pathlib.Path(session.create_tmp()) / "demo"
    session.run("kerastl", "demo", "--quick", "--out", str(out), env={"KERAS_BACKEND": "torch"})
    session.run("python", "docs/site_tools/check_report.py", str(out / "report"), *session.posargs)


@nox.session
def keras_floor(session):
    """The private-API checks and a smoke test per part (tests marked `keras_floor`), on
    the oldest Keras the package claims.

    torch, because TensorFlow 2.21 requires a newer Keras than the floor and JAX
    runs convolutions ~5x slower on CPU. Posargs narrow the files; the marker still applies.
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
        "keras_floor and not gpu and not cross_backend",
        *PARALLEL,
        *(session.posargs or _keras_floor_tests()),
        env=env,
    )


@nox.session(venv_backend="none")
def cross_backend(session):
    """Save under each backend, load under each of the three: the 3 x 3 matrix.

    Reuses the single-backend venvs of the tests sessions, which run before it. One
    pytest process (torch) drives it: tests/test_cross_backend.py starts a saving and
    then a loading process per backend, each with its own venv's Python.
    """
    pythons = {b: _venv_python(b) for b in BACKENDS}
    missing = [b for b, p in pythons.items() if not p.exists()]
    if missing:
        session.error(f"no venv for {missing}: run `nox -s tests` first.")
    mapping = ",".join(f"{b}={p}" for b, p in pythons.items())
    session.run(
        str(pythons[ONE_BACKEND]),
        "-m",
        "pytest",
        "-m",
        "cross_backend",
        "--durations=10",
        *(session.posargs or ["tests/test_cross_backend.py"]),
        env={"KERAS_BACKEND": ONE_BACKEND, "KERASTL_PYTHONS": mapping},
        external=True,
    )


# --- GPU sessions ----------------------------------------------------------------------
#
# The GPU machine's own Python has CUDA builds of torch and jax, no Keras and no
# TensorFlow, and may be offline. The gpu sessions install kerastl (editable) with its
# requirements (Keras, ...) and the test group into that Python, from a wheelhouse when
# KERASTL_WHEELHOUSE names one (`--no-index --find-links`): they only add distributions,
# never replace one (every distribution already there is pinned to its version) and
# never bring in TensorFlow, torch, jax or CUDA libraries (a dry run is checked first).
# The wheelhouse is made on an online machine, for the GPU machine's Python and platform:
#
#   nox -s gpu_wheelhouse -- --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_28_x86_64
#
# which runs `pip download --only-binary=:all:` over the same list into .whl/ (git
# ignores it; KERASTL_WHEELHOUSE overrides); copy it over, then, on the GPU machine:
# KERASTL_WHEELHOUSE=.whl nox -s "gpu(jax)". KERASTL_GPU_PYTHON names the Python to use
# (default: `python` on PATH).
GPU_WHEELHOUSE = "KERASTL_WHEELHOUSE"
# Never installed by a gpu session: they would shadow the machine's CUDA builds.
GPU_FORBIDDEN = ("tensorflow", "tf-", "torch", "jax", "nvidia-", "triton")
GPU_CHECK = {
    "jax": "import jax; assert any(d.platform == 'gpu' for d in jax.devices()), jax.devices()",
    "torch": "import torch; assert torch.cuda.is_available(), 'no GPU visible to torch'",
}
_DISTRIBUTIONS = (
    "import importlib.metadata as m, json; print(json.dumps(sorted({"
    "(d.metadata['Name'] or '').lower().replace('_', '-'): d.version"
    " for d in m.distributions()}.items())))"
)


def _pyproject():
    return nox.project.load_toml(ROOT / "pyproject.toml")


def _gpu_requirements():
    """kerastl's requirements, the test group, and setuptools to build kerastl offline."""
    pyproject = _pyproject()
    test = nox.project.dependency_groups(pyproject, "test")
    return [*pyproject["project"]["dependencies"], *test, *pyproject["build-system"]["requires"]]


def _pinnable(version):
    try:
        packaging.version.Version(version)
    except packaging.version.InvalidVersion:  # a distro's legacy version: left unpinned
        return False
    return True


def _gpu_install(session, python):
    """Adds kerastl's requirements to `python`, refusing what would change the machine's."""
    wheelhouse = os.environ.get(GPU_WHEELHOUSE)
    index = ["--no-index", "--find-links", wheelhouse] if wheelhouse else []
    if wheelhouse and not pathlib.Path(wheelhouse).is_dir():
        session.error(f"{GPU_WHEELHOUSE}={wheelhouse}: no such directory.")
    installed = dict(json.loads(session.run(python, "-c", _DISTRIBUTIONS, silent=True)))
    tmp = pathlib.Path(session.create_tmp())
    constraints = tmp / "machine-constraints.txt"
    constraints.write_text(
        "".join(
            f"{name}=={version}\n"
            for name, version in installed.items()
            if name and name not in ("kerastl", "pip", "setuptools", "wheel") and _pinnable(version)
        )
    )
    pip = [python, "-m", "pip", "install", "--constraint", str(constraints), *index]
    report = tmp / "pip-dry-run.json"
    requirements = ["-e", ".", *nox.project.dependency_groups(_pyproject(), "test")]
    session.run(*pip, "--dry-run", "--quiet", "--report", str(report), *requirements)
    adds = {
        item["metadata"]["name"].lower().replace("_", "-")
        for item in json.loads(report.read_text())["install"]
    }
    forbidden = sorted(n for n in adds if n != "kerastl" and n.startswith(GPU_FORBIDDEN))
    if forbidden:
        session.error(f"installing kerastl would bring {forbidden} over the machine's own.")
    session.log(f"adding to {python}: {sorted(adds) or 'nothing'}")
    session.run(*pip, *requirements)


@nox.session(venv_backend="none")
@nox.parametrize("backend", GPU_BACKENDS, ids=GPU_BACKENDS)
def gpu(session, backend):
    """GPU-marked tests and the GPU benchmarks, in the machine's own Python.

    Installs kerastl's requirements and the test group into it first (offline from
    $KERASTL_WHEELHOUSE; see above). Runs every `benchmarks/gpu_*.py` with `--gpu`;
    each writes its JSON report into the session's tmp directory. Posargs go to pytest.
    """
    env = {"KERAS_BACKEND": backend}
    python = os.environ.get("KERASTL_GPU_PYTHON", "python")
    session.run(python, "-c", GPU_CHECK[backend], env=env, external=True)
    _gpu_install(session, python)
    session.run(python, "-c", GPU_CHECK[backend], env=env, external=True)  # still the CUDA build
    session.run(python, "-m", "pytest", "-m", "gpu", *session.posargs, env=env, external=True)
    out = pathlib.Path(session.create_tmp())
    for script in sorted((ROOT / "benchmarks").glob("gpu_*.py")):
        report = out / f"{script.stem}-{backend}.json"
        session.run(python, str(script), "--gpu", "--out", str(report), env=env, external=True)
        session.log(f"report: {report}")


@nox.session(venv_backend="none")
def gpu_wheelhouse(session):
    """Downloads what the gpu sessions install into .whl/ (online; posargs go to pip).

    For another machine, pass its Python and platform: `-- --python-version 3.12
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64`.
    """
    session.run(
        "python",
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--dest",
        os.environ.get(GPU_WHEELHOUSE, str(ROOT / ".whl")),
        *session.posargs,
        *_gpu_requirements(),
        external=True,
    )
