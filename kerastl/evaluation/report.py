"""`write_report`: a classifier's evaluation as one self-contained HTML page and a JSON file.

Everything `interpret` measures, the Grad-CAM heat maps of the worst mistakes,
calibration before and after temperature scaling, and the training curves the
model keeps, drawn with matplotlib and embedded in the page as PNG data: the
page loads nothing else (no script, no style sheet, no network), so it can be
mailed or archived as one file. Every figure is drawn in memory first, then
both files are written atomically: a failure leaves the previous report whole.
"""

import base64
import datetime
import html
import io
import json
import os
import time
import types
from typing import Any

import keras
import numpy as np

from kerastl._checks import check_bool, check_positive_int
from kerastl._version import __version__
from kerastl.data.adapted import describe
from kerastl.data.image_batches import ImageBatches
from kerastl.evaluation import plots
from kerastl.evaluation.calibration import MIN_IMAGES, cross_fitted, temperature_of
from kerastl.evaluation.gradcam import grad_cam
from kerastl.evaluation.interpretation import interpret
from kerastl.evaluation.tta import check_tta
from kerastl.files.atomic import write_atomically
from kerastl.files.directories import prepare_directory
from kerastl.saving.load import read_metadata
from kerastl.training.plots import import_matplotlib, plot_history

HTML_FILE, JSON_FILE = "report.html", "report.json"
# Calibration is advised when, on held-out folds, temperature scaling lowers the log loss
# by more than 2% and the expected calibration error by more than 0.01.
ADVICE_LOG_LOSS = 0.02
ADVICE_ECE = 0.01
SECTIONS = {
    "model": "Model and data",
    "headline": "Headline",
    "per-class": "Per class",
    "confusion": "Confusion matrix",
    "confused": "Most confused",
    "top-losses": "Top losses",
    "calibration": "Calibration",
    "training": "Training curves",
}


def write_report(
    model: keras.Model,
    data: Any,
    out: str | os.PathLike[str],
    *,
    tta: str | None = None,
    top_losses: int = 16,
    gradcam: bool = True,
    batch_size: int = 32,
    title: str | None = None,
) -> dict[str, Any]:
    """Writes how good a classifier is, where it fails and whether its probabilities hold.

    One pass of `model` over `data` (`kerastl.interpret`), then, into the
    folder `out` (created if missing):

    - `report.html`: one self-contained page (figures embedded as PNG data,
      no script, no link outside the page): the model (name, backbone, task,
      classes, when saved) and the data; the headline figures (images,
      accuracy, macro F1, log loss, expected calibration error, TTA); the
      per-class precision, recall, F1 and support; the confusion matrix; the
      most confused pairs; the top losses with Grad-CAM heat maps of the
      predicted class (why the model said what it said); calibration before
      and after temperature scaling, measured on held-out folds, with the
      advice to run `kerastl.calibrate` when it clearly helps; the training
      curves the model keeps (`kerastl.save_model(..., history=...)`).
    - `report.json`: the same figures (`Interpretation.summary()` under
      `evaluation`, with `model`, `data`, `calibration`, `gradcam`,
      `training`, the time the report took and the versions).

    Needs matplotlib (`pip install "kerastl[plot]"`). Both files are written
    atomically: a failure leaves the previous report as it was.

    Args:
        model: a binary or multiclass classifier (see `kerastl.interpret`).
            Grad-CAM needs a `kerastl.build_model` model; for another, the
            page says why the heat maps are left out.
        data: labelled images, in any form `fit` takes.
        out: the folder to write `report.html` and `report.json` into.
        tta: test-time augmentation: `None`, `"flip"`, `"crops"` or
            `"flip+crops"`.
        top_losses: how many of the worst-predicted images to show (0: none).
        gradcam: lay Grad-CAM heat maps over the top-loss images.
        batch_size: images per batch of array data.
        title: the page's title; default `"Evaluation of <model name>"`.

    Returns:
        The JSON document written to `report.json`, as a dict.

    Example:

    ```python
    import os

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              kerastl.heads.multiclass(3, class_names=["a", "b", "c"])])
    x = np.random.randint(0, 256, (12, 8, 8, 3)).astype("float32")
    found = kerastl.evaluation.write_report(model, (x, np.arange(12) % 3), "report")
    print(found["evaluation"]["images"], sorted(os.listdir("report")))
    # 12 ['report.html', 'report.json']
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    tta = check_tta(tta)
    gradcam = check_bool(gradcam, "gradcam")
    batch_size = check_positive_int(batch_size, "batch_size")
    if title is not None and (not isinstance(title, str) or not title.strip()):
        raise ValueError(
            f"`title` must be a non-empty string or None (the default). Received: title={title!r}"
        )
    import_matplotlib("write_report")  # before the pass over the data
    out = prepare_directory(out, "out")
    started = time.perf_counter()
    found = interpret(model, data, tta=tta, top_losses=top_losses, batch_size=batch_size)
    meta = read_metadata(model)
    heatmaps, heatmap_note = _heatmaps(model, found, gradcam)
    calibration = _calibration(found, model)
    history = _history(meta)
    figures = {
        "confusion": _png(found.plot_confusion_matrix()),
        "top_losses": _png(found.plot_top_losses(heatmaps=heatmaps)) if found.top_losses else None,
        "reliability": _png(_plot_calibration(calibration)),
        "history": _png(plot_history(history)) if history is not None else None,
    }
    files = _files(data)
    paths = {"html": os.path.abspath(os.path.join(out, HTML_FILE))}
    paths["json"] = os.path.abspath(os.path.join(out, JSON_FILE))
    report = {
        "title": title or f"Evaluation of {model.name}",
        "kerastl_version": __version__,
        "keras_version": keras.version(),
        "backend": keras.config.backend(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": None,
        "model": _model_info(model, meta, found),
        "data": {
            "description": _describe_data(data),
            "images": int(len(found.labels)),
            "folder": None if files is None else _folder(files),
        },
        "evaluation": found.summary(),
        "top_loss_files": None if files is None else [files[t["index"]] for t in found.top_losses],
        "gradcam": {"heatmaps": heatmaps is not None, "note": heatmap_note},
        "calibration": calibration,
        "training": _training_info(meta),
        "files": paths,
    }
    report["seconds"] = round(time.perf_counter() - started, 2)
    page = _page(report, figures)
    document = json.dumps(report, indent=1)
    write_atomically(paths["html"], lambda file: file.write(page), arg="out", text=True)
    write_atomically(paths["json"], lambda file: file.write(document), arg="out", text=True)
    return report


# --- figures and facts ---------------------------------------------------------------


def _heatmaps(model, found, gradcam):
    """`(heat maps of the top-loss images or None, why there are none or None)`."""
    if not found.top_losses:
        return None, None
    if not gradcam:
        return None, "Heat maps left out (gradcam=False)."
    predicted = [found.class_names.index(item["predicted"]) for item in found.top_losses]
    try:
        images = np.stack([item["image"] for item in found.top_losses])
        return grad_cam(model, images, predicted), None
    except (TypeError, ValueError) as e:
        return None, f"Heat maps left out: {' '.join(str(e).split())}"


def _calibration(found, model):
    """`cross_fitted`'s figures, the model's own temperature, and whether to calibrate."""
    result = cross_fitted(found.probabilities, found.labels)
    result["model_temperature"] = temperature_of(model)
    result["min_images"] = result["folds"] * MIN_IMAGES
    after, before = result["log_loss_after"], result["log_loss_before"]
    result["advice"] = bool(
        after is not None
        and after < (1.0 - ADVICE_LOG_LOSS) * before
        and result["ece_after"] < result["ece_before"] - ADVICE_ECE
    )
    return result


def _plot_calibration(calibration):
    after = None
    if calibration["reliability_after"] is not None:
        after = (calibration["reliability_after"], calibration["ece_after"])
    return plots.plot_reliability(
        calibration["reliability_before"], calibration["ece_before"], after=after
    )


def _history(meta):
    """The model's training record as `plot_history` takes it, or None."""
    series = meta.get("history") or {}
    if not any(series.values()):
        return None
    phases = meta.get("history_phases") or []
    names = [phase.get("name") or f"phase {i + 1}" for i, phase in enumerate(phases)]
    boundaries = [phase["first_epoch"] for phase in phases[1:]]
    return types.SimpleNamespace(
        history=series,
        phases=names or None,
        phase_boundaries=boundaries if names else None,
    )


def _training_info(meta):
    series = meta.get("history") or {}
    if not any(series.values()):
        return None
    last = {}
    for key, values in series.items():
        kept = [value for value in values if value is not None]
        if kept:
            last[key] = kept[-1]
    return {
        "epochs": max(len(values) for values in series.values()),
        "phases": [
            {"name": phase.get("name"), "epochs": phase.get("epochs")}
            for phase in meta.get("history_phases") or []
        ],
        "last": last,
    }


def _model_info(model, meta, found):
    backbone = meta.get("backbone") or {}
    name = backbone.get("name") or backbone.get("arch")
    return {
        "name": model.name,
        "backbone": None if name is None else str(name),
        "task": meta.get("task"),
        "class_names": list(found.class_names),
        "input_shape": meta.get("input_shape"),
        "parameters": int(model.count_params()),
        "saved_at": meta.get("saved_at"),
        "saved_on": meta.get("backend"),
        "temperature": temperature_of(model),
    }


def _describe_data(data):
    if isinstance(data, ImageBatches) and not isinstance(data.images, np.ndarray):
        size = data.image_size
        read_at = f", read at {size[0]}x{size[1]}" if size is not None else ""
        return f"{len(data.images)} image files under {_folder(data.images)}{read_at}"
    if isinstance(data, tuple) and len(data) in (2, 3) and hasattr(data[0], "shape"):
        shapes = [tuple(getattr(part, "shape", ())) for part in data]
        return f"arrays: images {shapes[0]}, labels {shapes[1]}"
    return describe(data)


def _folder(paths):
    """The folder all `paths` are in (the class folders' parent)."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in paths])


def _files(data):
    """The image file at each position of `data` when it reads files in a fixed order."""
    if isinstance(data, ImageBatches) and not isinstance(data.images, np.ndarray):
        return None if data.shuffle else [str(path) for path in data.images]
    return None


def _png(figure):
    """A matplotlib figure as base64 PNG data."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --- the page -------------------------------------------------------------------------

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2328; background: #f6f8fa; margin: 0; }
header { background: #24292f; color: #fff; padding: 1.2em 2em; }
header h1 { margin: 0 0 .2em; font-size: 1.6em; }
header p { margin: 0; color: #d0d7de; }
nav { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #d0d7de;
      padding: .5em 2em; z-index: 1; }
nav a { margin-right: 1.2em; color: #0969da; text-decoration: none; white-space: nowrap; }
main { max-width: 1100px; margin: 0 auto; padding: 1em 2em 2em; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
          padding: .8em 1.5em 1.2em; margin: 1.2em 0; }
h2 { font-size: 1.25em; margin: .4em 0 .6em; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr));
         gap: .8em; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .6em .9em; }
.card .value { font-size: 1.6em; font-weight: 600; }
.card .label { color: #57606a; font-size: .9em; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { padding: .3em .8em; border-bottom: 1px solid #d8dee4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; }
table.facts th { background: none; color: #57606a; font-weight: normal; }
.bar { display: inline-block; height: .7em; background: #4c72b0; margin-left: .4em; }
img { max-width: 100%; height: auto; display: block; margin: .6em 0; }
.note { color: #57606a; }
.advice { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;
          padding: .5em .9em; }
code { background: #eff1f3; padding: .1em .3em; border-radius: 4px; }
footer { color: #57606a; text-align: center; padding: 0 2em 2em; font-size: .9em; }
"""


def _e(value):
    """Any value as HTML text, escaped."""
    return html.escape(str(value), quote=True)


def _number(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def _image(data, alt):
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _table(header, rows, numeric=()):
    """An HTML table; `rows` hold HTML already (escape user text before)."""
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(key, body):
    return f'<section id="{key}"><h2>{SECTIONS[key]}</h2>{body}</section>'


def _page(report, figures):
    model, summary = report["model"], report["evaluation"]
    sections = [
        _section("model", _model_section(report)),
        _section("headline", _headline_section(summary)),
        _section("per-class", _per_class_section(summary)),
        _section(
            "confusion",
            "<p>Rows: the true class; columns: the predicted class.</p>"
            + _image(figures["confusion"], "confusion matrix"),
        ),
        _section("confused", _confused_section(summary)),
        _section("top-losses", _top_losses_section(report, figures["top_losses"])),
        _section("calibration", _calibration_section(report, figures["reliability"])),
        _section("training", _training_section(report, figures["history"])),
    ]
    nav = "".join(f'<a href="#{key}">{name}</a>' for key, name in SECTIONS.items())
    backbone = f", backbone {model['backbone']}" if model["backbone"] else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(report['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(report['title'])}</h1>"
        f"<p>{_e(model['name'])}{_e(backbone)}: {_e(model['task'])} classifier of "
        f"{len(model['class_names'])} classes, on {summary['images']} images</p></header>\n"
        f"<nav>{nav}</nav>\n<main>\n" + "\n".join(sections) + "\n</main>\n"
        f"<footer>Written by kerastl {_e(report['kerastl_version'])} (Keras "
        f"{_e(report['keras_version'])}, {_e(report['backend'])} backend) at "
        f"{_e(report['created_at'])}; the report took {report['seconds']:.1f} s.</footer>\n"
        "</body>\n</html>\n"
    )


def _model_section(report):
    model, data = report["model"], report["data"]
    saved = model["saved_at"]
    saved = f"{saved} ({model['saved_on']} backend)" if saved else "not saved (a model in memory)"
    temperature = model["temperature"]
    rows = [
        ("model", model["name"]),
        ("backbone", model["backbone"] or "-"),
        ("task", model["task"]),
        ("classes", ", ".join(model["class_names"])),
        ("input", model["input_shape"]),
        ("parameters", f"{model['parameters']:,}"),
        ("saved", saved),
        ("temperature", "none (not calibrated)" if temperature is None else f"{temperature:.3f}"),
        ("data", data["description"]),
    ]
    body = "".join(f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in rows)
    return f'<table class="facts">{body}</table>'


def _headline_section(summary):
    cards = [
        ("images", str(summary["images"])),
        ("accuracy", _percent(summary["accuracy"])),
        ("macro F1", _number(summary["macro_f1"])),
        ("log loss", _number(summary["log_loss"])),
        ("ECE", _number(summary["ece"])),
        ("test-time augmentation", summary["tta"] or "none"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="value">{_e(value)}</div>'
            f'<div class="label">{_e(label)}</div></div>'
            for label, value in cards
        )
        + "</div>"
    )


def _per_class_section(summary):
    rows = [
        [
            _e(row["class"]),
            _number(row["precision"]),
            _number(row["recall"]),
            f'{_number(row["f1"])}<span class="bar" style="width:{round(60 * row["f1"])}px">'
            "</span>",
            str(row["support"]),
        ]
        for row in summary["per_class"]
    ]
    table = _table(["class", "precision", "recall", "F1", "support"], rows, numeric=(1, 2, 4))
    return table + '<p class="note">Support: images of the class in the data.</p>'


def _confused_section(summary):
    pairs = summary["most_confused"][:20]
    if not pairs:
        return "<p>No image was mistaken for another class.</p>"
    rows = [[_e(true), _e(predicted), str(count)] for true, predicted, count in pairs]
    return _table(["true class", "predicted as", "images"], rows, numeric=(2,))


def _top_losses_section(report, figure):
    items = report["evaluation"]["top_losses"]
    if not items:
        return "<p>No top losses asked for (top_losses=0).</p>"
    note = report["gradcam"]["note"]
    text = (
        f"<p>The {len(items)} images with the highest loss (the lowest probability of "
        "their true class), worst first. "
        + (
            _e(note)
            if note
            else "Over each, the Grad-CAM heat map of the predicted class: where the model "
            "found the evidence for what it said (red: strongest)."
        )
        + "</p>"
    )
    files = report["top_loss_files"]
    if files:
        files = [os.path.relpath(path, report["data"]["folder"]) for path in files]
    rows = [
        [
            str(i + 1),
            _e(files[i] if files else item["index"]),
            _e(item["true"]),
            _e(item["predicted"]),
            _number(item["probability"]),
            _number(item["true_probability"]),
            _number(item["loss"]),
        ]
        for i, item in enumerate(items)
    ]
    header = ["#", "file" if files else "position in the data", "true", "predicted"]
    header += ["p(predicted)", "p(true)", "loss"]
    return text + _image(figure, "top losses") + _table(header, rows, numeric=(0, 4, 5, 6))


def _calibration_section(report, figure):
    found = report["calibration"]
    parts = [
        "<p>A calibrated model's confidence matches its accuracy: of the images it gives "
        "80%, it gets 80% right. The expected calibration error (ECE) is the mean gap.</p>"
    ]
    if found["model_temperature"] is not None:
        parts.append(
            f"<p>The model already carries a temperature of "
            f"{found['model_temperature']:.3f} (<code>kerastl.calibrate</code>): these are "
            "its calibrated probabilities.</p>"
        )
    if found["log_loss_after"] is None:
        parts.append(
            f'<p class="note">Temperature scaling is not measured: it needs at least '
            f"{found['min_images']} images ({found['folds']} held-out folds of "
            f"{found['min_images'] // found['folds']}), the data has "
            f"{report['evaluation']['images']}.</p>"
        )
        return "".join(parts) + _image(figure, "reliability diagram")
    direction = "over-confident" if found["temperature"] > 1 else "under-confident"
    rows = [
        ["ECE", _number(found["ece_before"]), _number(found["ece_after"])],
        ["log loss", _number(found["log_loss_before"]), _number(found["log_loss_after"])],
    ]
    parts.append(_image(figure, "reliability diagram before and after temperature scaling"))
    parts.append(_table(["", "as it is", "temperature-scaled"], rows, numeric=(1, 2)))
    parts.append(
        f'<p class="note">Temperature scaling measured on {found["folds"]} held-out folds '
        "(each fold scaled by the temperature fitted on the others). Fitted on all the "
        f"images, the temperature is {found['temperature']:.3f} (the model is "
        f"{direction}).</p>"
    )
    if found["advice"]:
        parts.append(
            '<p class="advice">Temperature scaling makes these probabilities clearly more '
            "honest, and changes no prediction: fit it on held-out images and put it into "
            "the model with <code>kerastl.calibrate(model, validation)</code>.</p>"
        )
    else:
        parts.append("<p>Temperature scaling would not clearly help: no need to calibrate.</p>")
    return "".join(parts)


def _training_section(report, figure):
    training = report["training"]
    if training is None or figure is None:
        return (
            "<p>The model carries no training history: "
            "<code>kerastl.save_model(model, path, history=history)</code> keeps it.</p>"
        )
    phases = [p for p in training["phases"] if p["name"]]
    described = ", ".join(f"{_e(p['name'])} ({p['epochs']})" for p in phases)
    last = ", ".join(f"{_e(k)} {_number(v)}" for k, v in training["last"].items())
    return (
        f"<p>{training['epochs']} epoch{'s' if training['epochs'] != 1 else ''}"
        + (f" in phases: {described}" if described else "")
        + f". Last epoch: {last}.</p>"
        + _image(figure, "training curves")
    )
