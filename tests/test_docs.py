"""Every ```python block in README.md and docs/*.md runs, file by file, in order, and each
`print(...)` prints what its comment says (`support.run_example_code`).

`docs/distributed.md` needs several devices: `tests/test_distributed.py` runs its blocks
on two virtual devices.
"""

import pathlib
import re

import pytest
from support import run_example_code

# The same code on any backend: one session runs it (conftest).
pytestmark = pytest.mark.one_backend

ROOT = pathlib.Path(__file__).parent.parent
MULTI_DEVICE = {"distributed.md"}
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path):
    return BLOCK.findall(path.read_text())


@pytest.mark.parametrize(
    "path",
    [p for p in DOCS if python_blocks(p) and p.name not in MULTI_DEVICE],
    ids=lambda p: p.name,
)
def test_doc_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace = {"__name__": f"doc_{path.stem}"}
    for i, code in enumerate(python_blocks(path)):
        run_example_code(code, namespace, f"{path.name}[block {i}]")
