"""`plot_history` and `LRFinderResult.plot`: valid PNGs, written atomically, phases marked."""

import importlib.util
import os
import re
import sys
import types

import keras
import numpy as np
import pytest

from kerastl.training.lr_find import LRFinderResult
from kerastl.training.plots import PlotDependencyError, plot_history

# matplotlib on recorded figures: one backend's session runs it (conftest).
pytestmark = pytest.mark.backend_free

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="drawing needs the kerastl[plot] extra"
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HISTORY = {
    "loss": [1.1, 0.8, 0.6, 0.5, 0.45],
    "accuracy": [0.4, 0.6, 0.7, 0.8, 0.85],
    "val_loss": [1.2, 0.9, 0.8, 0.7, 0.72],
    "val_accuracy": [0.3, 0.5, 0.6, 0.7, 0.7],
    "learning_rate": [1e-3, 1e-3, 1e-4, 1e-4, 1e-4],
}


def _fine_tune_history(boundaries=(2,), phases=("head", "fine-tune"), history=None):
    """What `kerastl.fine_tune` returns: a History-like object with training phases."""
    return types.SimpleNamespace(
        history=dict(HISTORY if history is None else history),
        phase_boundaries=list(boundaries),
        phases=list(phases),
    )


def _read_png(path):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def _leftovers(directory, keep):
    return sorted(set(os.listdir(directory)) - set(keep))


@needs_matplotlib
def test_history_with_phases_writes_a_png_with_a_boundary_line(tmp_path):
    path = tmp_path / "curves.png"
    figure = plot_history(_fine_tune_history(), path)
    image = _read_png(path)
    assert image.std() > 0.01  # something is drawn
    assert _leftovers(tmp_path, ["curves.png"]) == []
    assert [axes.get_title() for axes in figure.axes] == ["loss", "accuracy"]
    for axes in figure.axes:
        lines = [line for line in axes.lines if line.get_gid() == "phase_boundary"]
        # Between epoch 2 (the head's last) and epoch 3 (the first fine-tuning one).
        assert [list(line.get_xdata()) for line in lines] == [[2.5, 2.5]]
        labels = [text.get_text() for text in axes.texts if text.get_gid() == "phase_label"]
        assert labels == ["head", "fine-tune"]
        curves = {line.get_label(): list(line.get_ydata()) for line in axes.lines}
        title = axes.get_title()
        assert curves["training"] == HISTORY[title]
        assert curves["validation"] == HISTORY["val_" + title]


@needs_matplotlib
def test_keras_history_from_fit(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 2
    history = model.fit(x, y, epochs=3, validation_data=(x, y), verbose=0)
    figure = plot_history(history, str(tmp_path / "fit.png"))
    _read_png(tmp_path / "fit.png")
    # Keras logs metrics in alphabetical order; the loss comes first.
    assert [axes.get_title() for axes in figure.axes] == ["loss", "accuracy"]
    assert all(not any(line.get_gid() == "phase_boundary" for line in a.lines) for a in figure.axes)


@needs_matplotlib
def test_history_without_validation_draws_every_training_metric():
    history = {"loss": [0.9, 0.5], "accuracy": [0.5, 0.7], "learning_rate": [0.1, 0.1]}
    figure = plot_history(history)
    assert [axes.get_title() for axes in figure.axes] == ["loss", "accuracy"]
    assert [[line.get_label() for line in axes.lines] for axes in figure.axes] == [
        ["training"],
        ["training"],
    ]


@needs_matplotlib
def test_metrics_chooses_the_subplots():
    figure = plot_history(HISTORY, metrics=["accuracy"])
    assert [axes.get_title() for axes in figure.axes] == ["accuracy"]
    figure = plot_history(HISTORY, metrics="learning_rate")
    assert [axes.get_title() for axes in figure.axes] == ["learning_rate"]


@needs_matplotlib
def test_default_phase_names_and_a_phase_without_epochs():
    history = types.SimpleNamespace(history=HISTORY, phase_boundaries=[0, 3], phases=None)
    figure = plot_history(history)
    axes = figure.axes[0]
    boundaries = [line.get_xdata()[0] for line in axes.lines if line.get_gid() == "phase_boundary"]
    assert boundaries == [0.5, 3.5]
    labels = [text.get_text() for text in axes.texts if text.get_gid() == "phase_label"]
    assert labels == ["phase 2", "phase 3"]  # phase 1 has no epochs: no label


@needs_matplotlib
def test_a_crash_while_writing_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    plot_history(HISTORY, path)
    old = path.read_bytes()

    def crash(self, file, **kwargs):
        file.write(PNG_SIGNATURE + b"half an image")
        raise RuntimeError("disk full")

    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_history(_fine_tune_history(), path)
    assert path.read_bytes() == old
    assert _leftovers(tmp_path, ["curves.png"]) == []


@needs_matplotlib
def test_lr_finder_result_plot(tmp_path):
    rates = np.geomspace(1e-5, 1.0, 12)
    losses = np.array([2.0, 2.1, 1.9, 1.8, 1.5, 1.2, 1.0, 0.9, 1.1, 1.8, 4.0, np.nan])
    smoothed = np.array([2.0, 2.05, 2.0, 1.95, 1.8, 1.6, 1.4, 1.2, 1.2, 1.4, 2.2, np.nan])
    result = LRFinderResult(rates, losses, smoothed, float(rates[5]), "valley", True)
    figure = result.plot(tmp_path / "lr.png")
    _read_png(tmp_path / "lr.png")
    (axes,) = figure.axes
    assert axes.get_xscale() == "log"
    marks = [line.get_xdata()[0] for line in axes.lines if line.get_gid() == "suggestion"]
    assert marks == [pytest.approx(rates[5])]
    assert any("suggestion" in line.get_label() for line in axes.lines)


@pytest.mark.parametrize("draw", ["plot_history", "lr_finder_result"])
def test_without_matplotlib_a_clear_error(draw, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    result = LRFinderResult(np.array([1e-3, 1e-2]), np.ones(2), np.ones(2), 1e-3, "valley", False)
    with pytest.raises(PlotDependencyError, match=r'pip install "kerastl\[plot\]"') as info:
        if draw == "plot_history":
            plot_history(HISTORY)
        else:
            result.plot()
    assert isinstance(info.value, ImportError)


BAD = {
    "history-none": ({"history": None}, TypeError, "history=None"),
    "history-list": ({"history": [0.5, 0.4]}, TypeError, "history=[0.5, 0.4]"),
    "history-empty-dict": ({"history": {}}, ValueError, "history={}"),
    "history-no-epochs": ({"history": {"loss": [], "val_loss": []}}, ValueError, "history={"),
    "history-not-numbers": ({"history": {"loss": ["high", "low"]}}, ValueError, "history['loss']="),
    "history-not-a-list": ({"history": {"loss": 0.5}}, ValueError, "history['loss']=0.5"),
    "path-directory": ({"path": "."}, IsADirectoryError, "path='.'"),
    "path-not-png": ({"path": "curves.jpg"}, ValueError, "path='curves.jpg'"),
    "path-missing-directory": ({"path": "nowhere/curves.png"}, FileNotFoundError, "path='nowhere"),
    "path-int": ({"path": 3}, TypeError, "path=3"),
    "metrics-unknown": ({"metrics": ["f1"]}, ValueError, "metrics=['f1']"),
    "metrics-empty": ({"metrics": []}, ValueError, "metrics=[]"),
    "phase_boundaries-out-of-range": (
        {"history": _fine_tune_history(boundaries=[9])},
        ValueError,
        "history.phase_boundaries=[9]",
    ),
    "phase_boundaries-decreasing": (
        {"history": _fine_tune_history(boundaries=[3, 1], phases=["a", "b", "c"])},
        ValueError,
        "history.phase_boundaries=[3, 1]",
    ),
    "phases-too-few": (
        {"history": _fine_tune_history(phases=["head"])},
        ValueError,
        "history.phases=['head']",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_arguments_raise_clear_errors(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kwargs, error, received = BAD[case]
    kwargs = {"history": HISTORY, **kwargs}
    with pytest.raises(error, match="Received: .*" + re.escape(received)):
        plot_history(kwargs.pop("history"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_a_fresh_keras_history_has_no_epochs():
    history = keras.callbacks.History()  # before any fit
    with pytest.raises(ValueError, match="no epochs.*Received: history={}"):
        plot_history(history)
