"""Every ```python example in a kerastl docstring runs, and prints what it says it prints.

A `print(...)` whose line ends in a comment (`print(x.shape)  # (2, 8)`), or
is followed by lines holding only a comment, must print that comment's text
(`support.run_example_code`).
"""

import importlib
import inspect
import pkgutil
import re

import keras
import numpy as np
import pytest
from support import run_example_code

import kerastl

# The same code on any backend: one session runs it (conftest).
pytestmark = pytest.mark.one_backend

BLOCK = re.compile(r"^\s*```python\n(.*?)^\s*```", re.S | re.M)


def _objects():
    """(qualified name, object) for every module, class, function and method of kerastl."""
    seen = set()
    for info in pkgutil.walk_packages(kerastl.__path__, "kerastl."):
        module = importlib.import_module(info.name)
        yield info.name, module
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != info.name or id(obj) in seen:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                seen.add(id(obj))
                yield f"{info.name}.{name}", obj
                for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                    member = getattr(member, "__func__", member)
                    if inspect.isfunction(member) or isinstance(member, property):
                        yield f"{info.name}.{name}.{attr}", member


def _examples():
    found = []
    for name, obj in _objects():
        doc = inspect.getdoc(obj) or ""
        for i, block in enumerate(BLOCK.findall(doc)):
            found.append(pytest.param(block, id=f"{name}[{i}]"))
    return found


EXAMPLES = _examples()


def test_examples_were_found():
    assert len(EXAMPLES) >= 20, [p.id for p in EXAMPLES]


@pytest.mark.parametrize("code", EXAMPLES)
def test_docstring_example(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    keras.utils.set_random_seed(0)
    namespace = {"keras": keras, "np": np, "kerastl": kerastl, "__name__": "docstring_example"}
    run_example_code(code, namespace, "<example>")
