"""The `kerastl` command's launcher: picks the Keras backend before Keras is imported.

Keras reads `KERAS_BACKEND` once, when it is first imported, and importing
anything from the `kerastl` package imports Keras. So the console script
starts here, outside the package: it loads the pure-argparse parser
(`kerastl/cli/parser.py`) by its file path, without importing the package,
parses the command line, sets the variable, and only then imports
`kerastl.cli` and runs the command. Nothing in the package imports this module.
"""

import importlib.util
import json
import os
import sys


def _load_parser():
    """`kerastl/cli/parser.py`, loaded by path: the `kerastl` package is not imported."""
    name = "kerastl.cli.parser"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("kerastl")
    if package is None or not package.submodule_search_locations:
        raise ImportError("the kerastl package is not installed")
    for location in package.submodule_search_locations:
        path = os.path.join(location, "cli", "parser.py")
        if os.path.isfile(path):
            break
    else:
        raise ImportError("kerastl/cli/parser.py is missing from the kerastl package")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Registered under its own name: `kerastl.cli` then uses this same module.
    sys.modules[name] = module
    return module


_parser = _load_parser()
BACKENDS = _parser.BACKENDS
build_parser = _parser.build_parser
check_paths = _parser.check_paths


def _backend_argument(argv):
    """The value of `--backend` / `--backend=` in `argv`, or `None`."""
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--backend="):
            return arg.split("=", 1)[1]
    return None


def _installed(backend):
    return importlib.util.find_spec(backend) is not None


def _configured_backend():
    """The backend of Keras' own config file (`$KERAS_HOME/keras.json`), or `None`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def choose_backend(argv):
    """Sets `KERAS_BACKEND`; returns an error line, or `None`.

    `--backend` wins; then `KERAS_BACKEND`; then Keras' config file when it names
    an installed backend; else the first installed of TensorFlow, JAX and
    PyTorch (Keras itself would pick TensorFlow, installed or not).
    """
    backend = _backend_argument(argv)
    chosen = os.environ.get("KERAS_BACKEND")
    if backend is not None:
        if backend not in BACKENDS:
            return None  # the parser reports it, with the choices
        if not _installed(backend):
            return (
                f"--backend {backend}: {backend} is not installed here "
                f"(pip install 'kerastl[{backend}]')"
            )
        if chosen and chosen != backend:
            print(
                f"kerastl: KERAS_BACKEND={chosen} in the environment; --backend {backend} "
                "is used instead.",
                file=sys.stderr,
            )
        os.environ["KERAS_BACKEND"] = backend
        return None
    if chosen:
        if chosen in BACKENDS and not _installed(chosen):
            return (
                f"KERAS_BACKEND={chosen}, which is not installed here "
                f"(pip install 'kerastl[{chosen}]', or --backend another)"
            )
        return None
    configured = _configured_backend()
    if configured in BACKENDS and _installed(configured):
        return None
    installed = [b for b in BACKENDS if _installed(b)]
    if not installed:
        return (
            "no Keras backend is installed: pip install 'kerastl[tensorflow]', "
            "'kerastl[jax]' or 'kerastl[torch]'"
        )
    os.environ["KERAS_BACKEND"] = installed[0]
    return None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # --help and bad usage end here, before Keras loads
    except SystemExit as e:
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    error = choose_backend(argv) or check_paths(args)
    if error is not None:
        print(f"kerastl {args.command}: error: {error}", file=sys.stderr)
        return 2
    # Quieter start-up logs of TensorFlow (its C++ banner), unless asked for.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kerastl.cli import run  # noqa: PLC0415 - after the backend is chosen, by design

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
