"""The `kerastl` command: rank, train, predict, inspect and export without writing Python.

    kerastl train DATA_DIR --backbone mobilenet_v2 --epochs 5 --out model.keras
    kerastl predict model.keras photo.jpg more_photos/
    kerastl info model.keras
    kerastl backbones "efficientnet*"
    kerastl lr-find DATA_DIR --backbone mobilenet_v2
    kerastl rank DATA_DIR --candidates mobilenet_v2 efficientnet_b0 resnet50
    kerastl export model.keras --format onnx --out model.onnx
    kerastl report model.keras test_images/ --out report/
    kerastl demo

Every subcommand takes `--backend tensorflow|jax|torch` (set before Keras is
imported, by the `kerastl_cli` launcher), `--json` (one JSON document on
stdout, for scripts) and `--debug` (a traceback instead of one error line).
Exit codes: 0 done, 1 failed, 2 bad usage.
"""

import argparse
import json
import os
import sys

import keras

from kerastl.cli import commands, demo
from kerastl.cli.output import Output, UsageError
from kerastl.cli.parser import build_parser, check_paths

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
HANDLERS = {
    "train": commands.train,
    "predict": commands.predict,
    "info": commands.info,
    "backbones": commands.backbones,
    "lr-find": commands.lr_find,
    "rank": commands.rank,
    "export": commands.export,
    "report": commands.report,
    "demo": demo.run,
}


def run(args):
    """Runs parsed command-line arguments (`kerastl.cli.parser`); returns the exit code.

    `args` may also be a list of strings, parsed here (Keras is imported already).
    """
    if not isinstance(args, argparse.Namespace):
        try:
            args = build_parser().parse_args(list(args))
        except SystemExit as e:  # argparse: 0 for --help, 2 for bad usage
            return int(e.code or 0)
        error = check_paths(args)
        if error is not None:
            print(f"kerastl {args.command}: error: {error}", file=sys.stderr)
            return EXIT_USAGE
    handler = HANDLERS[args.command]
    if args.backend and args.backend != keras.config.backend():
        print(
            f"kerastl: error: --backend {args.backend} must be chosen before Keras is "
            f"imported (Keras runs on {keras.config.backend()}): run the `kerastl` command, "
            "or set KERAS_BACKEND.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    out = Output(args.json)
    try:
        result = handler(args, out)
    except UsageError as e:
        if args.debug:
            raise
        print(f"kerastl {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"kerastl {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - one clear line for the user; --debug shows all
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"kerastl {args.command}: error: {message}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        try:
            print(json.dumps(result, indent=1, default=str))
        except BrokenPipeError:  # `kerastl ... --json | head`
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout for the rest of the run
    return EXIT_OK
