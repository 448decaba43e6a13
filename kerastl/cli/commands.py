"""The subcommands: each takes the parsed arguments and an `Output`, returns a JSON-able dict."""

import contextlib
import fnmatch
import os
import sys

import keras
import numpy as np

import kerastl
from kerastl.backbones.registry import get_backbone, list_backbones
from kerastl.cli.output import UsageError
from kerastl.data import IMAGE_EXTENSIONS
from kerastl.evaluation.report import write_report
from kerastl.training.plots import PlotDependencyError
from kerastl.training.ranking import DEFAULT_CANDIDATES

# --- arguments checked against the file system and the registry -------------------------


def existing_directory(path, what):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is not a directory")
    return path


def existing_file(path, what):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a directory, not a file")
    return path


def class_folders(directory):
    """The class names of a `DATA_DIR/<class>/<image>` tree; at least two."""
    names = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if len(names) < 2:
        found = f" ({names[0]!r})" if names else ""
        raise ValueError(
            f"{directory!r} holds {len(names)} class folder{'s' if len(names) != 1 else ''}"
            f"{found}; a classifier needs at least 2 (DATA_DIR/<class>/<image>)"
        )
    return names


def backbone_argument(name):
    if name in list_backbones() or os.path.isfile(name):
        return name
    if os.path.sep in name or name.endswith((".keras", ".h5")):
        raise UsageError(f"backbone file {name!r} does not exist")
    close = [n for n in list_backbones() if name.replace("-", "_").lower() in n]
    hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
    raise UsageError(f"unknown backbone {name!r}{hint}; `kerastl backbones` lists them")


def weights_argument(weights, backbone):
    if weights is None:
        return "imagenet" if backbone in list_backbones() else None
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    return existing_file(weights, "weights file")


# --- the model of train and lr-find ---------------------------------------------------


def _data_and_model(args, out, augment="none"):
    directory = existing_directory(args.data_dir, "DATA_DIR")
    classes = class_folders(directory)
    backbone = backbone_argument(args.backbone)
    weights = weights_argument(args.weights, backbone)
    shape = None
    if args.image_size is not None:
        shape = (args.image_size, args.image_size, 3)
    elif backbone in list_backbones():
        size = get_backbone(backbone).default_size
        shape = (size, size, 3)
    extractor = kerastl.FeatureExtractor(
        backbone, weights=weights, input_shape=shape, pooling="avg", freeze="all"
    )
    size = tuple(extractor.image_shape[:2])
    train, validation = kerastl.data.from_directory(
        directory,
        image_size=size,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
    )
    out.say(
        f"{len(train.images)} training and {len(validation.images)} validation images, "
        f"{len(classes)} classes: {', '.join(classes)}"
    )
    keras.utils.set_random_seed(args.seed)
    head = kerastl.heads.multiclass(len(classes), class_names=classes)
    mode = None if args.input_recipe == "auto" else args.input_recipe
    try:
        preprocessing = kerastl.preprocessing.pipeline(
            extractor, augment=augment, mode=mode, seed=args.seed
        )
    except ValueError as e:
        if mode is None and "input recipe is unknown" in str(e):
            raise UsageError(
                f"the input recipe of {args.backbone!r} is unknown (not a registry "
                "architecture): pass --input-recipe caffe, tf, torch or none"
            ) from None
        raise
    model = kerastl.build_model(extractor, head, preprocessing)
    return model, train, validation, classes


def train(args, out):
    out_path = args.out
    if not out_path.endswith(".keras"):
        raise UsageError(f"--out must name a .keras file, got {out_path!r}")
    if args.epochs == 0 and args.head_epochs == 0:
        raise UsageError("--epochs and --head-epochs are both 0: nothing to train")
    model, train_data, validation, classes = _data_and_model(args, out, args.augment)
    out.say(f"backbone {args.backbone}, backend {keras.config.backend()}")
    history = kerastl.fine_tune(
        model,
        train_data,
        validation,
        epochs=args.epochs,
        head_epochs=args.head_epochs,
        lr=args.lr,
        verbose=1 if out.verbose else 0,
    )
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    kerastl.save_model(model, out_path, class_names=classes, history=history)
    curves = _plot(history, os.path.splitext(out_path)[0] + ".png", out)
    out.say(f"saved {out_path}" + (f" and its curves {curves}" if curves else ""))
    return {
        "model": os.path.abspath(out_path),
        "curves": curves,
        "classes": classes,
        "backend": keras.config.backend(),
        "before": history.initial,
        "after": history.final,
        "epochs": len(history.epoch),
        "phases": history.phases,
    }


def _plot(history, path, out):
    try:
        kerastl.plot_history(history, path)
    except PlotDependencyError:
        out.say("curves not drawn: matplotlib is not installed (pip install 'kerastl[plot]')")
        return None
    return os.path.abspath(path)


# --- predict, info --------------------------------------------------------------------


def image_files(paths):
    """Image files of `paths`: files as given, folders walked (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise ValueError(f"folder {path!r} holds no image files")
            files.extend(found)
        else:
            files.append(existing_file(path, "image"))
    return files


def predict(args, out):
    existing_file(args.model, "model file")
    files = image_files(args.images)
    predictor = kerastl.Predictor(args.model)
    top_k = min(args.top_k, len(predictor.class_names))
    predictions = predictor.predict(files, top_k=top_k)
    results = []
    for path, prediction in zip(files, predictions, strict=True):
        shown = ", ".join(f"{name} {p:.3f}" for name, p in prediction.top)
        out.say(f"{path}: {shown}")
        results.append({"image": path, "label": prediction.label, "top": prediction.top})
    return {"model": args.model, "predictions": results}


def info(args, out):
    existing_file(args.model, "model file")
    meta = kerastl.read_metadata(args.model)
    model = kerastl.load_model(args.model, compile=False)
    backbone = meta.get("backbone") or {}
    out.say(f"model         {args.model}")
    out.say(f"task          {meta.get('task')} ({meta.get('num_outputs')} outputs)")
    names = meta.get("class_names")
    out.say(f"classes       {', '.join(map(str, names)) if names else '-'}")
    out.say(f"backbone      {backbone.get('name') or backbone.get('arch') or '-'}")
    out.say(f"input         {meta.get('input_shape')}, recipe {meta.get('input_preprocessing')}")
    out.say(
        f"saved on      {meta.get('backend')} (Keras {meta.get('keras_version')}, "
        f"kerastl {meta.get('kerastl_version')})"
    )
    history = meta.get("history") or {}
    epochs = len(next(iter(history.values()), []))
    out.say(f"history       {epochs} epochs")
    evaluation = meta.get("evaluation")
    if isinstance(evaluation, dict):
        out.say(f"evaluation    {_evaluation_line(evaluation)}")
    temperature = kerastl.evaluation.calibration.temperature_of(model)
    if temperature is not None:
        out.say(f"calibrated    temperature {temperature:.3f}")
    out.say()
    rows = kerastl.explain(model, print_fn=out.say)
    return {"model": args.model, "metadata": meta, "layers": rows}


def _evaluation_line(evaluation):
    """The saved evaluation's headline: accuracy, macro F1, log loss, ECE, on how many images."""
    parts = [
        f"{label} {evaluation[key]:.3f}"
        for key, label in (
            ("accuracy", "accuracy"),
            ("macro_f1", "macro F1"),
            ("log_loss", "log loss"),
            ("ece", "ECE"),
        )
        if isinstance(evaluation.get(key), (int, float))
    ]
    images = evaluation.get("images")
    data = evaluation.get("data")
    where = f" on {images} images" if images is not None else ""
    where += f" ({data})" if isinstance(data, str) else ""
    tta = f", TTA {evaluation['tta']}" if evaluation.get("tta") else ""
    return (", ".join(parts) or "figures kept") + where + tta


# --- report ---------------------------------------------------------------------------


def report(args, out):
    existing_file(args.model, "model file")
    directory = existing_directory(args.data_dir, "DATA_DIR")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out!r} is a file, not a folder")
    class_folders(directory)
    model = kerastl.load_model(args.model, compile=False)
    # The Predictor's reading of a model: its classes, the size and channels it takes.
    reader = kerastl.Predictor(model)
    if reader.recipe not in (None, "none"):
        raise UsageError(
            f"{args.model!r} leaves its input recipe ({reader.recipe}) to its caller: the "
            "report feeds raw 0..255 pixels; build the model with its preprocessing inside "
            "(kerastl.build_model)"
        )
    if reader.image_size is None:
        raise UsageError(
            f"{args.model!r} takes images of any size and its metadata names no backbone "
            "size to read them at"
        )
    data = kerastl.data.from_directory(
        directory,
        image_size=reader.image_size,
        batch_size=args.batch_size,
        color_mode="grayscale" if reader.channels == 1 else "rgb",
        shuffle=False,
    )
    folders = len(data.class_names)
    _in_model_order(data, reader.class_names, directory)
    out.say(
        f"{len(data.images)} images in {folders} folders, model "
        f"{os.path.basename(args.model)} ({len(reader.class_names)} classes), "
        f"backend {keras.config.backend()}"
    )
    result = write_report(
        model,
        data,
        args.out,
        tta=args.tta,
        top_losses=args.top_losses,
        gradcam=not args.no_gradcam,
        batch_size=args.batch_size,
        title=args.title,
    )
    found, calibration = result["evaluation"], result["calibration"]
    out.say(
        f"accuracy {found['accuracy']:.3f}, macro F1 {found['macro_f1']:.3f}, "
        f"log loss {found['log_loss']:.3f}, ECE {found['ece']:.3f}"
        + (f" (TTA {found['tta']})" if found["tta"] else "")
    )
    if found["most_confused"]:
        true, predicted, count = found["most_confused"][0]
        out.say(f"most confused: {true} read as {predicted} ({count} images)")
    if calibration["advice"]:
        out.say(
            f"calibration: temperature {calibration['temperature']:.2f} lowers the ECE to "
            f"{calibration['ece_after']:.3f} on held-out folds: run kerastl.calibrate"
        )
    if result["gradcam"]["note"] and not args.no_gradcam:
        out.say(result["gradcam"]["note"])
    out.say(f"report: {result['files']['html']}")
    return result


def _in_model_order(data, class_names, directory):
    """Relabels class-folder batches with the model's class ids (its output order)."""
    unknown = [name for name in data.class_names if name not in class_names]
    if unknown:
        raise ValueError(
            f"DATA_DIR {directory!r} holds a class folder {unknown[0]!r} that the model does "
            f"not have (its classes: {', '.join(class_names)})"
        )
    ids = np.array([class_names.index(name) for name in data.class_names])
    data.labels = ids[np.asarray(data.labels)]
    data.class_names = list(class_names)


# --- backbones, lr-find, export -----------------------------------------------------


def backbones(args, out):
    names = list_backbones()
    if args.pattern:
        pattern = args.pattern if any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        if not names:
            raise ValueError(f"no backbone matches {args.pattern!r}")
    rows, results = [], []
    for name in names:
        spec = get_backbone(name)
        entry = {
            "name": name,
            "default_size": spec.default_size,
            "min_size": spec.min_size,
            "preprocessing": spec.preprocessing,
            "backends": list(spec.backends),
            "runs_here": spec.supports(),
        }
        if args.params:
            entry["params"] = None
            if spec.supports():
                with keras.StatelessScope():  # shapes only: no initialisers run
                    entry["params"] = spec.build().count_params()
        results.append(entry)
        row = [name, spec.default_size, spec.min_size, spec.preprocessing, ",".join(spec.backends)]
        if args.params:
            row.append(f"{entry['params'] / 1e6:.1f}M" if entry["params"] else "-")
        rows.append(row)
    header = ["name", "size", "min", "input recipe", "backends"]
    out.table(rows, header + (["params"] if args.params else []))
    return {"backbones": results}


def lr_find(args, out):
    model, train_data, _, _ = _data_and_model(args, out)
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=model.get_layer("head").default_loss(),
    )
    found = kerastl.lr_find(model, train_data, num_steps=args.steps, verbose=out.verbose)
    plot = None
    if args.plot:
        try:
            found.plot(args.plot)
            plot = os.path.abspath(args.plot)
        except PlotDependencyError:
            out.say("plot not drawn: matplotlib is not installed (pip install 'kerastl[plot]')")
    out.say(f"suggested learning rate: {found.suggestion:.3g} ({found.method})")
    return {"suggestion": found.suggestion, "method": found.method, "plot": plot}


def export(args, out):
    existing_file(args.model, "model file")
    model = kerastl.load_model(args.model, compile=False)
    path = kerastl.export(model, args.out, format=args.format)
    out.say(f"exported {args.model} as {args.format}: {path or args.out}")
    return {"model": args.model, "format": args.format, "path": str(path or args.out)}


# --- rank ---------------------------------------------------------------------------


def _rank_candidates(args):
    """`{name: registry name or FeatureExtractor}`, and the registry names among them.

    Model files are opened here, once: their input size decides the size the images
    are read at. They are named by their file name, as `rank_backbones` names them.
    """
    candidates, registry = {}, []
    for name in args.candidates or DEFAULT_CANDIDATES:
        name = backbone_argument(name)
        if name in list_backbones():
            spec = get_backbone(name)
            if not spec.supports():
                raise UsageError(
                    f"backbone {name!r} does not run on the {keras.config.backend()} backend "
                    f"(it runs on {', '.join(spec.backends)}); leave it out of --candidates"
                )
            key, value = name, name
            registry.append(name)
        else:
            key, value = os.path.basename(name), kerastl.FeatureExtractor(name)
        unique, i = key, 1
        while unique in candidates:
            i += 1
            unique = f"{key}_{i}"
        candidates[unique] = value
    return candidates, registry


def _rank_image_size(args, candidates):
    """`(height, width)` the images are read at: the largest any candidate is fed."""
    sizes = []
    for name, value in candidates.items():
        if isinstance(value, str):
            spec = get_backbone(value)
            if args.image_size is not None and args.image_size < spec.min_size:
                raise UsageError(
                    f"--image-size {args.image_size} is below the smallest input of {name!r} "
                    f"({spec.min_size})"
                )
            size = args.image_size or spec.default_size
            sizes.append((size, size))
        elif None not in value.image_shape[:2]:
            sizes.append(tuple(value.image_shape[:2]))  # a fixed input size: its own
        elif args.image_size is not None:
            sizes.append((args.image_size, args.image_size))
    if not sizes:
        raise UsageError("the candidates take images of any size: give one with --image-size")
    return max(h for h, _ in sizes), max(w for _, w in sizes)


def rank(args, out):
    directory = existing_directory(args.data_dir, "DATA_DIR")
    class_folders(directory)
    candidates, registry = _rank_candidates(args)
    weights = "imagenet"
    if args.weights == "none":
        weights = None
    elif args.weights not in (None, "imagenet"):
        weights = existing_file(args.weights, "weights file")
        if len(registry) != 1:
            raise UsageError(
                f"--weights {args.weights!r} is the weights file of one backbone, but "
                f"{len(registry)} candidates are registry names"
            )
    mode = None if args.input_recipe == "auto" else args.input_recipe
    unknown = [
        name
        for name, value in candidates.items()
        if not isinstance(value, str) and (value.spec is None or not value.spec.preprocessing)
    ]
    if unknown and mode is None:
        raise UsageError(
            f"the input recipe of {', '.join(unknown)} is unknown (not a registry "
            "architecture): pass --input-recipe caffe, tf, torch or none"
        )
    size = _rank_image_size(args, candidates)
    # Unshuffled: the same files in the same order fingerprint the same, so --cache-dir
    # finds the features again on the next run.
    data = kerastl.data.from_directory(
        directory, image_size=size, batch_size=args.batch_size, shuffle=False
    )
    out.say(
        f"{len(data.images)} images in {len(data.class_names)} classes "
        f"({', '.join(data.class_names)}); {len(candidates)} candidates, "
        f"backend {keras.config.backend()}"
    )
    # Under --json, stdout is the document's: a weights download's progress goes to stderr.
    redirect = contextlib.redirect_stdout(sys.stderr) if out.as_json else contextlib.nullcontext()
    with redirect:
        ranking = kerastl.rank_backbones(
            data,
            candidates,
            weights=weights,
            image_size=args.image_size,
            mode=mode,
            folds=args.folds,
            criterion=args.criterion,
            batch_size=args.batch_size,
            cache_dir=args.cache_dir,
            seed=args.seed,
            verbose=out.verbose,  # 0 under --json; progress bars on a terminal only
        )
    return {
        "rows": ranking.rows,
        "best": ranking.best,
        "criterion": ranking.criterion,
        "recommendation": ranking.recommendation(),
        "n_images": ranking.n_images,
        "classes": list(data.class_names),
        "folds": ranking.folds,
        "backend": keras.config.backend(),
    }
