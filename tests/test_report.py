"""`write_report`: one self-contained HTML page and a JSON file of a classifier's evaluation.

The page's figures come from `interpret` (tests/test_evaluation.py checks those);
here: both files written, the JSON equal to what `interpret` measures, every section
on a page that loads nothing from outside, user text escaped, heat maps and curves
where the model allows them, a sentence where it does not, bad arguments named, and
a failure that leaves the previous report whole. The same on every backend: one
session runs it (conftest); the browser check is docs/site_tools/check_report.py.
"""

import base64
import html.parser
import json
import os
import sys

import keras
import numpy as np
import pytest

import kerastl
from kerastl.evaluation import plots
from kerastl.evaluation.calibration import calibrate
from kerastl.evaluation.report import SECTIONS, write_report
from kerastl.files.atomic import TEMP_PREFIX
from kerastl.training.plots import PlotDependencyError

pytestmark = pytest.mark.one_backend

CLASSES = ["cat", "<b>x</b>", "dog & co"]


def _images(count, size=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def flat():
    """A classifier of 3 classes without a FeatureExtractor (no Grad-CAM), and 45 images."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            kerastl.heads.multiclass(3, class_names=CLASSES),
        ],
        name="flat->model",  # TensorFlow takes no "<" in a name
    )
    return model, (_images(45), np.arange(45) % 3)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A `build_model` classifier (a small CNN backbone) fitted 2 epochs and saved with its
    history: Grad-CAM and training curves."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    backbone = keras.Model(inputs, keras.layers.Conv2D(8, 3, strides=2, padding="same")(x))
    extractor = kerastl.FeatureExtractor(backbone, arch=None, pooling="avg", freeze="none")
    head = kerastl.heads.multiclass(2, class_names=["left", "right"])
    preprocessing = kerastl.preprocessing.pipeline(extractor, mode="tf")
    model = kerastl.build_model(extractor, head, preprocessing)
    x, y = _images(24, size=16, seed=1), np.arange(24) % 2
    history = model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=8, verbose=0)
    kerastl.save_model(model, tmp_path_factory.mktemp("cnn") / "cnn.keras", history=history)
    return model, (x, y)


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self.links += [attrs[key] for key in ("href", "src") if attrs.get(key)]


def _page(out):
    text = (out / "report.html").read_text(encoding="utf-8")
    links = _Links()
    links.feed(text)
    return text, links


def test_the_page_and_the_json_hold_what_interpret_measures(flat, tmp_path):
    model, data = flat
    report = write_report(model, data, tmp_path / "report", top_losses=4)
    out = tmp_path / "report"
    assert sorted(os.listdir(out)) == ["report.html", "report.json"]
    assert json.loads((out / "report.json").read_text()) == report
    assert report["evaluation"] == kerastl.interpret(model, data, top_losses=4).summary()
    assert report["evaluation"]["images"] == 45 and report["data"]["images"] == 45
    assert report["model"]["name"] == "flat->model" and report["model"]["class_names"] == CLASSES
    assert report["kerastl_version"] == kerastl.__version__ and report["seconds"] > 0
    assert report["files"]["html"] == str(out / "report.html")
    calibration = report["calibration"]
    assert calibration["ece_after"] is not None and calibration["model_temperature"] is None
    text, links = _page(out)
    # Every section, reachable from the navigation; nothing loaded from outside the page.
    for key, heading in SECTIONS.items():
        assert f'<section id="{key}"><h2>{heading}</h2>' in text
    assert all(link[1:] in links.ids for link in links.links if link.startswith("#"))
    outside = [link for link in links.links if not link.startswith(("#", "data:image/png;base64,"))]
    assert not outside and "http" not in text and "<script" not in text
    images = [link for link in links.links if link.startswith("data:")]
    assert len(images) == 3  # confusion, top losses, reliability (no history)
    for image in images:
        assert base64.b64decode(image.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # User text is escaped wherever it appears.
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    assert "dog &amp; co" in text and "flat-&gt;model" in text
    # Without a FeatureExtractor or a history: a sentence each says so.
    assert report["gradcam"] == {"heatmaps": False, "note": report["gradcam"]["note"]}
    assert "Heat maps left out" in text and "FeatureExtractor" in report["gradcam"]["note"]
    assert "carries no training history" in text and report["training"] is None


def test_heat_maps_curves_and_files_of_a_kerastl_model(cnn, tmp_path):
    model, (x, y) = cnn
    folder = tmp_path / "data"
    for name, label in (("left", 0), ("right", 1)):
        (folder / name).mkdir(parents=True)
        for i in np.flatnonzero(y == label)[:3]:
            keras.utils.save_img(folder / name / f"{i}.png", x[i])
    data = kerastl.data.from_directory(folder, image_size=16, batch_size=4, shuffle=False)
    report = write_report(model, data, tmp_path / "out", tta="flip", top_losses=3, title="Mine")
    assert report["gradcam"] == {"heatmaps": True, "note": None}
    assert report["training"]["epochs"] == 2 and "val_loss" in report["training"]["last"]
    assert report["evaluation"]["tta"] == "flip" and report["title"] == "Mine"
    assert report["model"]["saved_at"] is not None
    assert all(path.startswith(str(folder)) for path in report["top_loss_files"])
    assert report["data"]["description"].startswith(f"6 image files under {folder}")
    assert report["data"]["folder"] == str(folder)
    text, links = _page(tmp_path / "out")
    assert "<title>Mine</title>" in text and "Grad-CAM heat map of the predicted class" in text
    assert len([link for link in links.links if link.startswith("data:")]) == 4  # + curves
    assert os.path.relpath(report["top_loss_files"][0], folder) in text  # under the folder
    # Too few images to measure temperature scaling on held-out folds: the page says so.
    assert report["calibration"]["ece_after"] is None and "needs at least 40 images" in text


def test_a_calibrated_model_shows_its_temperature(flat, tmp_path):
    model, data = flat
    calibrated = calibrate(model, data)
    report = write_report(calibrated.model, data, tmp_path, top_losses=0)
    assert report["calibration"]["model_temperature"] == pytest.approx(calibrated.temperature)
    assert report["model"]["temperature"] == pytest.approx(calibrated.temperature)
    text, _ = _page(tmp_path)
    assert "already carries a temperature" in text and "top_losses=0" in text


def test_a_binary_classifier_into_a_folder_made_for_it(tmp_path):
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), kerastl.heads.binary()]
    )
    out = tmp_path / "made" / "for" / "it"  # missing folders are made
    report = write_report(model, (_images(10), np.arange(10) % 2), out, top_losses=2)
    assert report["model"]["class_names"] == ["0", "1"] and report["evaluation"]["images"] == 10
    assert sorted(os.listdir(out)) == ["report.html", "report.json"]


def test_a_failure_leaves_the_previous_report_whole(flat, tmp_path, monkeypatch):
    model, data = flat
    write_report(model, data, tmp_path, top_losses=2)
    before = {name: (tmp_path / name).read_bytes() for name in ("report.html", "report.json")}

    def crash(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(plots, "plot_reliability", crash)  # after the pass, before writing
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_report(model, data, tmp_path, top_losses=2)
    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", crash)  # in the middle of writing report.html
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_report(model, data, tmp_path, top_losses=2)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert not [name for name in os.listdir(tmp_path) if name.startswith(TEMP_PREFIX)]


def test_bad_arguments_are_named(flat, tmp_path):
    model, data = flat
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [
        ({"out": a_file}, NotADirectoryError, f"Received: out={str(a_file)!r}"),
        ({"out": 3}, TypeError, "Received: out=3"),
        ({"tta": "rotate"}, ValueError, "Received: tta='rotate'"),
        ({"gradcam": "yes"}, TypeError, "Received: gradcam='yes'"),
        ({"batch_size": 0}, ValueError, "Received: batch_size=0"),
        ({"top_losses": -1}, ValueError, "Received: top_losses=-1"),
        ({"title": ""}, ValueError, "Received: title=''"),
        ({"model": "model.keras"}, TypeError, "Received: model='model.keras'"),
    ]
    for change, error, text in cases:
        arguments = {"model": model, "data": data, "out": tmp_path / "out", **change}
        with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
            write_report(**arguments)
    # Data without images: the data door's error, naming the argument.
    empty = (np.zeros((0, 8, 8, 3), "float32"), np.zeros(0, "int64"))
    with pytest.raises(ValueError, match="`data`"):
        write_report(model, empty, tmp_path / "out")
    assert not (tmp_path / "out" / "report.html").exists()


def test_without_matplotlib_a_clear_error_before_any_work(flat, tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    model, data = flat
    with pytest.raises(PlotDependencyError, match=r'pip install "kerastl\[plot\]"'):
        write_report(model, data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
