"""The `kerastl` command's parser: pure argparse, imported before Keras.

It imports nothing from kerastl or Keras (only the standard library), so the
`kerastl_cli` launcher loads it by path to parse the command line (and answer
`--help` or bad usage at once) before choosing the backend and importing Keras.
`tests/test_structure.py` checks it stays that way.
"""

import argparse
import os

BACKENDS = ("tensorflow", "jax", "torch")

# `--input-recipe`: the registry's recipes, `auto` (the backbone's own) and `none` (raw 0..255).
INPUT_RECIPES = ("auto", "caffe", "tf", "torch", "none")
# `--tta`: kerastl.evaluation.TTA_MODES, written out (this module imports no kerastl).
TTA_MODES = ("flip", "crops", "flip+crops")


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {value}")
    return value


def _epochs_or_auto(text):
    """`auto` (train until the loss stops improving) or an int >= 0."""
    if text == "auto":
        return text
    try:
        return _non_negative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an int >= 0, got {text!r}") from None


def _positive_int(text):
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected an int >= 1, got 0")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _folds(text):
    value = _non_negative_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"expected an int >= 2 (train on some, test on one), got {value}"
        )
    return value


def _common(parser):
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="the Keras backend (set before Keras is imported); default: KERAS_BACKEND",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _subparser(subparsers, name, summary, example):
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser)
    return parser


def _training_arguments(parser):
    parser.add_argument("data_dir", help="a folder of class folders: DATA_DIR/<class>/<image>")
    parser.add_argument(
        "--backbone",
        default="mobilenet_v2",
        help="a registry name (`kerastl backbones`) or a .keras / .h5 model file",
    )
    parser.add_argument(
        "--weights",
        help="imagenet (downloaded or from the Keras cache), none, or a weights file; "
        "default: imagenet for a registry name, the file's own for a model file",
    )
    parser.add_argument(
        "--input-recipe",
        choices=INPUT_RECIPES,
        default="auto",
        help="how the backbone wants its pixels: auto (a registry or recognised "
        "architecture's own) or given, for a model file (none: raw 0..255)",
    )
    parser.add_argument("--image-size", type=_positive_int, help="default: the backbone's")
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument("--validation-split", type=_fraction, default=0.2)
    parser.add_argument("--seed", type=_non_negative_int, default=0)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kerastl",
        description="Transfer learning on images with Keras 3 (TensorFlow, JAX or PyTorch).",
        epilog="example:\n  kerastl demo\n  kerastl rank photos/\n"
        "  kerastl train photos/ --epochs 5 --out pets.keras",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = _subparser(
        subparsers,
        "train",
        "fine-tune a pretrained backbone on a folder of class folders and save the model",
        "kerastl train photos/ --backbone mobilenet_v2 --epochs 5 --out pets.keras",
    )
    _training_arguments(train)
    train.add_argument("--epochs", type=_non_negative_int, default=5, help="fine-tuning epochs")
    train.add_argument(
        "--head-epochs",
        type=_epochs_or_auto,
        default="auto",
        help="epochs of the new head alone (default: auto, until its loss stops improving)",
    )
    train.add_argument("--lr", type=_positive_float, default=1e-3)
    train.add_argument("--augment", choices=("none", "light", "medium", "strong"), default="none")
    train.add_argument("--out", default="model.keras", help="the .keras file to write")

    predict = _subparser(
        subparsers,
        "predict",
        "classify image files (or folders of them) with a saved model",
        "kerastl predict pets.keras photo.jpg more_photos/ --top-k 3",
    )
    predict.add_argument("model", help="a .keras / .h5 model file")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--top-k", type=_positive_int, default=1)

    info = _subparser(
        subparsers,
        "info",
        "what a saved model is: classes, backbone, metadata, what trains",
        "kerastl info pets.keras",
    )
    info.add_argument("model", help="a .keras / .h5 model file")

    report = _subparser(
        subparsers,
        "report",
        "evaluate a saved classifier on a folder of class folders: one HTML page and a JSON file",
        "kerastl report pets.keras test_photos/ --out report/ --tta flip",
    )
    report.add_argument("model", help="a .keras / .h5 model file")
    report.add_argument(
        "data_dir",
        help="a folder of class folders (DATA_DIR/<class>/<image>), named as the model's classes",
    )
    report.add_argument(
        "--out", default="report", help="the folder to write report.html and report.json into"
    )
    report.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation: average the predictions over flipped and/or cropped views",
    )
    report.add_argument(
        "--top-losses",
        type=_non_negative_int,
        default=16,
        help="how many of the worst-predicted images to show (0: none)",
    )
    report.add_argument("--batch-size", type=_positive_int, default=32)
    report.add_argument(
        "--no-gradcam",
        action="store_true",
        help="leave the Grad-CAM heat maps off the top-loss images",
    )
    report.add_argument("--title", help="the page's title; default: Evaluation of <model name>")

    backbones = _subparser(
        subparsers,
        "backbones",
        "the registered backbones: size, input recipe, parameters, backends",
        'kerastl backbones "efficientnet*"',
    )
    backbones.add_argument("pattern", nargs="?", help="a glob on the names")
    backbones.add_argument(
        "--params", action="store_true", help="count parameters (builds each backbone: slower)"
    )

    lr_find = _subparser(
        subparsers,
        "lr-find",
        "sweep the learning rate of a new head on a frozen backbone; suggest one",
        "kerastl lr-find photos/ --backbone mobilenet_v2 --plot lr.png",
    )
    _training_arguments(lr_find)
    lr_find.add_argument("--steps", type=_positive_int, default=100)
    lr_find.add_argument("--plot", help="write the loss-vs-rate curve to this PNG")

    rank = _subparser(
        subparsers,
        "rank",
        "rank candidate backbones on a folder of class folders (LogME, linear probe), "
        "without fine-tuning any",
        "kerastl rank photos/ --candidates mobilenet_v2 efficientnet_b0 resnet50 --folds 5",
    )
    rank.add_argument("data_dir", help="a folder of class folders: DATA_DIR/<class>/<image>")
    rank.add_argument(
        "--candidates",
        nargs="+",
        action="extend",
        metavar="NAME_OR_FILE",
        help="registry names (`kerastl backbones`) and .keras / .h5 model files; default: "
        "mobilenet_v2 efficientnet_b0 resnet50 densenet121 convnext_tiny",
    )
    rank.add_argument(
        "--weights",
        help="weights of the registry-name candidates: imagenet (downloaded or from the Keras "
        "cache; the default), none, or a weights file (one registry candidate); model files "
        "bring their own",
    )
    rank.add_argument(
        "--input-recipe",
        choices=INPUT_RECIPES,
        default="auto",
        help="the input recipe of model files whose architecture kerastl does not know "
        "(none: the model rescales raw 0..255 pixels itself); registry names use their own",
    )
    rank.add_argument(
        "--image-size",
        type=_positive_int,
        help="build registry candidates at this size and feed it to models of any size; "
        "default: each candidate's own",
    )
    rank.add_argument(
        "--folds", type=_folds, default=5, help="cross-validation folds of the linear probe"
    )
    rank.add_argument(
        "--criterion",
        choices=("logme", "probe_accuracy"),
        default="logme",
        help="what the ranking and the recommendation follow",
    )
    rank.add_argument(
        "--cache-dir", help="keep the features here: a second run on the same data reads them"
    )
    rank.add_argument("--batch-size", type=_positive_int, default=32)
    rank.add_argument("--seed", type=_non_negative_int, default=0, help="the folds' split")

    export = _subparser(
        subparsers,
        "export",
        "export a saved model for serving",
        "kerastl export pets.keras --format onnx --out pets.onnx",
    )
    export.add_argument("model", help="a .keras / .h5 model file")
    export.add_argument(
        "--format", default="tf_saved_model", help="tf_saved_model, onnx or litert (backend-bound)"
    )
    export.add_argument("--out", required=True, help="the file or folder to write")

    run_demo = _subparser(
        subparsers,
        "demo",
        "transfer learning paying off, offline, on real images (scikit-learn's digits)",
        "kerastl demo --out demo/",
    )
    run_demo.add_argument("--out", default="kerastl-demo", help="folder for the model and curves")
    run_demo.add_argument(
        "--weights",
        choices=("digits", "imagenet"),
        default="digits",
        help="digits: a CNN pretrained here on digits 0-4; imagenet: MobileNetV2's "
        "published weights, when already in the Keras cache directory",
    )
    run_demo.add_argument("--quick", action="store_true", help="a short run (for tests)")
    run_demo.add_argument("--seed", type=_non_negative_int, default=0)
    return parser


def check_paths(args):
    """Paths that must exist, checked before Keras is imported: an error line, or `None`."""
    for attr, what, kind in (
        ("data_dir", "DATA_DIR", "dir"),
        ("model", "model file", "file"),
    ):
        path = getattr(args, attr, None)
        if path is None:
            continue
        if not os.path.exists(path):
            return f"{what} {path!r} does not exist"
        if kind == "dir" and not os.path.isdir(path):
            return f"{what} {path!r} is not a directory"
        if kind == "file" and os.path.isdir(path):
            return f"{what} {path!r} is a directory, not a file"
    for path in getattr(args, "images", None) or []:
        if not os.path.exists(path):
            return f"image {path!r} does not exist"
    for name in getattr(args, "candidates", None) or []:
        looks_like_a_file = os.path.sep in name or name.endswith((".keras", ".h5"))
        if looks_like_a_file and not os.path.isfile(name):
            problem = "is a directory, not a file" if os.path.isdir(name) else "does not exist"
            return f"--candidates: model file {name!r} {problem}"
    if args.command == "report" and os.path.exists(args.out) and not os.path.isdir(args.out):
        return f"--out {args.out!r} is a file, not a folder"
    cache_dir = getattr(args, "cache_dir", None)
    if cache_dir is not None and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        return f"--cache-dir {cache_dir!r} is a file, not a directory"
    return None
