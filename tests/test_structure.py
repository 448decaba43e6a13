"""The package's shape: no import cycle, nothing reaching back up the stream, no hidden imports."""

import ast
import pathlib
import sys

import pytest

pytestmark = pytest.mark.backend_free  # reads the source: one session runs it

PACKAGE = pathlib.Path(__file__).parent.parent / "kerastl"

# Bottom to top. A module may import from its own part or from parts below it.
LEVELS = [
    {"_version", "_keras_private", "_checks", "_processes", "_memory"},
    {"files"},  # file formats and the one atomic writer
    {"losses"},
    {"backbones"},
    {"freeze"},  # pure policies: what trains (LoRA's policy included)
    {"data"},
    {"preprocessing"},
    {"layers"},  # FeatureExtractor, pooling, the LoRA layer and model surgery
    {"heads"},
    {"models"},
    {"optimizers"},  # PerLayerLR, schedules: fine_tune builds on them
    {"saving"},
    {"training"},
    {"callbacks"},  # GradualUnfreezing recompiles through training's helpers
    {"evaluation"},  # after training: interpret, Grad-CAM, calibrate, TTA, the report
    {"predictor"},
    {"__init__"},
    {"cli"},  # the command line: above everything, it imports the package itself
]
# Third-party packages a function may import lazily: optional dependencies.
OPTIONAL = {
    "PIL",
    "tensorflow",
    "torch",
    "jax",  # the gradient shim (kerastl/evaluation/_gradients.py)
    "h5py",
    "fcntl",
    "msvcrt",
    "tf2onnx",
    "onnx",
    "onnxruntime",  # to check an ONNX export runs
    "matplotlib",
    "sklearn",  # the demo's images
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(), str(path))


def _imported(node, module, path):
    """Absolute names of what an import node imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{alias.name}" if base else alias.name for alias in node.names]


def _part(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _level(part):
    for i, level in enumerate(LEVELS):
        if part in level:
            return i
    raise AssertionError(f"part {part!r} of kerastl has no level in tests/test_structure.py")


def _graph():
    graph = {}
    for module, path, tree in _modules():
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported(node, module, path):
                    if name == "kerastl" or name.startswith("kerastl."):
                        edges.add(name)
        graph[module] = edges
    return graph


def _resolve(name, modules):
    """The module an imported name lives in (`kerastl.layers.FeatureExtractor`: kerastl.layers)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def test_every_part_has_a_level():
    for module, _, _ in _modules():
        _level(_part(module))


def test_no_import_runs_back_up_the_stream():
    graph = _graph()
    upward = []
    for module, edges in graph.items():
        for name in edges:
            target = _resolve(name, graph)
            if _level(_part(target)) > _level(_part(module)):
                upward.append(f"{module} -> {target}")
    assert not upward, f"imports that run back up: {upward}"


def test_no_import_cycle():
    graph = _graph()
    modules = set(graph)
    edges = {m: {_resolve(n, modules) for n in names} - {m} for m, names in graph.items()}
    # A package's __init__ re-exports its own modules: that is not a cycle.
    edges = {
        m: {t for t in targets if not (t.startswith(m + ".") and m in _packages(modules))}
        for m, targets in edges.items()
    }
    state, cycle = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycle.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert not cycle, f"import cycles: {cycle}"


def _packages(modules):
    return {m for m in modules if any(o.startswith(m + ".") for o in modules)}


def test_no_import_hidden_inside_a_function():
    hidden = []
    for module, _, tree in _modules():
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for name in _imported(node, module, PACKAGE / "x.py"):
                        root = name.split(".")[0]
                        if root not in OPTIONAL and not (
                            root == "keras" and name.startswith("keras.src")
                        ):
                            hidden.append(f"{module}.{function.name} imports {name}")
    assert not hidden, f"imports inside functions: {hidden}"


def test_no_module_imports_by_string():
    offenders = []
    for module, _, tree in _modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
            ):
                offenders.append(module)
    assert not offenders, f"modules imported by string in {offenders}"


@pytest.mark.parametrize("part", ["freeze"])
def test_freeze_holds_pure_policies(part):
    graph = _graph()
    reach = {
        _part(_resolve(name, graph))
        for module, names in graph.items()
        if _part(module) == part
        for name in names
    }
    assert reach <= {"freeze", "backbones", "_keras_private", "_version", "_checks"}, reach


def _stdlib_only(tree):
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add("." if node.level else (node.module or "").split(".")[0])
    return sorted(root for root in roots if root not in sys.stdlib_module_names)


def test_cli_parser_imports_only_the_standard_library():
    # The launcher loads it by path to parse before Keras is imported.
    tree = ast.parse((PACKAGE / "cli" / "parser.py").read_text())
    assert not _stdlib_only(tree), _stdlib_only(tree)


def test_launcher_imports_no_kerastl_before_the_backend_is_chosen():
    tree = ast.parse((PACKAGE.parent / "kerastl_cli.py").read_text())
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not _stdlib_only(ast.Module(body=top, type_ignores=[])), "kerastl_cli.py imports"


def test_nothing_in_the_package_imports_the_launcher():
    offenders = [
        module
        for module, names in _graph_of_all_imports().items()
        if any(name == "kerastl_cli" or name.startswith("kerastl_cli.") for name in names)
    ]
    assert not offenders, f"modules importing kerastl_cli: {offenders}"


def _graph_of_all_imports():
    graph = {}
    for module, path, tree in _modules():
        graph[module] = {
            name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for name in _imported(node, module, path)
        }
    return graph
