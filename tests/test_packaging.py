"""What the wheel and sdist declare and carry, read off pyproject.toml and MANIFEST.in.

Building the distributions takes too long for the suite; these checks are what a
build would get wrong (a license the old way, an sdist whose tests cannot run).
"""

import pathlib
import re

import pytest

import kerastl

pytestmark = pytest.mark.backend_free

ROOT = pathlib.Path(__file__).parent.parent
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def test_license_is_an_spdx_expression_with_its_file():
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    # setuptools reads `license = "..."` and `license-files` from version 77.
    (requirement,) = [r for r in PYPROJECT["build-system"]["requires"] if "setuptools" in r]
    assert int(re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", requirement).group(1)) >= 77


def test_metadata_agrees_with_the_code():
    assert PROJECT["version"] == kerastl.__version__
    assert PROJECT["readme"] == "README.md"
    assert (ROOT / "kerastl" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["kerastl"]
    assert "Typing :: Typed" in PROJECT["classifiers"]
    oldest = re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"]).group(1)
    pythons = [
        int(c.rsplit(".", 1)[1])
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert min(pythons) == int(oldest) and pythons == list(range(min(pythons), max(pythons) + 1))
    assert PROJECT["urls"] and all(url.startswith("https://") for url in PROJECT["urls"].values())


def test_sdist_carries_what_the_tests_read(monkeypatch):
    """Every file under tests/ (helpers, conftest), the Markdown the doc tests run, and
    the examples, benchmarks and noxfile they point to, as setuptools reads MANIFEST.in."""
    from setuptools.command.egg_info import FileList

    monkeypatch.chdir(ROOT)
    files = FileList()
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            files.process_template_line(line)
    shipped = {pathlib.PurePath(f).as_posix() for f in files.files}
    needed = {"noxfile.py"} | {
        path.relative_to(ROOT).as_posix()
        for folder in ("tests", "docs", "examples", "benchmarks")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert {"tests/conftest.py", "tests/support.py", "docs/saving.md"} <= needed
    assert needed - shipped == set()


def test_readme_install_section_names_the_extras_and_the_torch_cpu_index():
    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    for extra in ("tensorflow", "jax", "torch", "images", "plot"):
        assert extra in PROJECT["optional-dependencies"]
        assert re.search(rf"kerastl\[[a-z,]*\b{extra}\b", install), extra
    (torch,) = [r for r in PROJECT["optional-dependencies"]["torch"] if r.startswith("torch")]
    assert f"pip install {torch} --index-url https://download.pytorch.org/whl/cpu" in install
    assert "KERAS_BACKEND" in install
