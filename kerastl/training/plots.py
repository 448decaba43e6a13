"""Training curves and learning-rate sweeps as figures: matplotlib, an optional extra.

matplotlib is imported when a figure is drawn, never on `import kerastl`;
figures are drawn on a matplotlib Agg canvas of their own, so the global
backend and `pyplot`'s figure list stay untouched (nothing to close).
"""

import math
import numbers
import os
import reprlib

import numpy as np

from kerastl.files.atomic import write_atomically

_VALIDATION = "val_"
# Logged each epoch but not a measure of fit: no curve by default.
_NOT_CURVES = {"learning_rate", "lr"}


class PlotDependencyError(ImportError):
    """Drawing a figure needs matplotlib: `pip install "kerastl[plot]"`."""


def plot_history(history, path=None, *, metrics=None):
    """Training and validation curves per epoch, one subplot per metric; optionally a PNG.

    Each metric that has a `val_` twin in the history (`loss` and `val_loss`,
    `accuracy` and `val_accuracy` ...) gets a subplot with both curves; a
    history without validation gets one subplot per training metric. When
    the history records training phases (`.phase_boundaries`: the epochs,
    counted from 0, at which a new phase begins, and `.phases`: their names,
    as the history `kerastl.fine_tune` returns) each boundary is a dotted
    vertical line and each phase is labelled at the top.

    Needs matplotlib (`pip install "kerastl[plot]"`). The figure is drawn on
    its own Agg canvas: it neither changes matplotlib's backend nor joins
    `pyplot`'s list of open figures.

    Args:
        history: a `keras.callbacks.History` (what `fit` returns), its
            `.history` dict (`{"loss": [...], "val_loss": [...], ...}`), or
            any object with such a `.history` and optionally
            `.phase_boundaries` and `.phases`.
        path: where to write the figure as a PNG file (`.png`), or None. The
            file is written to a temporary file beside it and renamed over
            it, so a crash never leaves a half-written image.
        metrics: the names of the metrics to draw (each with its `val_`
            twin), in order; None: every metric with a `val_` twin, the loss
            first.

    Returns:
        The matplotlib `Figure`.

    Example:

    ```python
    history = {"loss": [0.9, 0.6, 0.4], "val_loss": [1.0, 0.7, 0.6],
               "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}
    figure = kerastl.training.plot_history(history, "curves.png")
    print([axes.get_title() for axes in figure.axes])  # ['loss', 'accuracy']
    ```
    """
    series, boundaries, phases = _read_history(history)
    names = _choose_metrics(series, metrics)
    path = check_plot_path(path)
    epochs = max(len(values) for values in series.values())
    boundaries, phases = _check_phases(boundaries, phases, epochs)

    figure_class, canvas_class, integer_ticks = import_matplotlib("plot_history")
    figure = figure_class(figsize=(4.8 * len(names), 3.8), layout="constrained")
    canvas_class(figure)
    for axes, name in zip(figure.subplots(1, len(names), squeeze=False)[0], names, strict=True):
        for key, label, style in (
            (name, "training", "o-"),
            (_VALIDATION + name, "validation", "s--"),
        ):
            if key in series:
                values = series[key]
                axes.plot(np.arange(1, len(values) + 1), values, style, label=label, markersize=4)
        _mark_phases(axes, boundaries, phases, epochs)
        axes.set_title(name)
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.set_xlim(0.5, epochs + 0.5)
        axes.xaxis.set_major_locator(integer_ticks(integer=True))
        axes.ticklabel_format(axis="y", useOffset=False)
        axes.grid(alpha=0.3)
        axes.legend()
    if path is not None:
        save_figure(figure, path)
    return figure


def plot_lr_sweep(learning_rates, losses, smoothed_losses, suggestion, path=None, method=None):
    """The loss against the learning rate (log scale) with the suggestion marked.

    What `LRFinderResult.plot` draws: the raw batch losses faint, the smoothed
    curve over them, the suggested rate as a dashed line and a dot.
    """
    path = check_plot_path(path)
    rates = np.asarray(learning_rates, dtype="float64")
    raw = np.asarray(losses, dtype="float64")
    smooth = np.asarray(smoothed_losses, dtype="float64")
    figure_class, canvas_class, _ = import_matplotlib("LRFinderResult.plot")
    figure = figure_class(figsize=(6.4, 4.2), layout="constrained")
    canvas_class(figure)
    axes = figure.subplots()
    finite = np.isfinite(raw)
    axes.plot(rates[finite], raw[finite], color="0.7", linewidth=0.8, label="batch loss")
    finite = np.isfinite(smooth)
    axes.plot(rates[finite], smooth[finite], color="C0", label="smoothed loss")
    if suggestion is not None and finite.any():
        at = float(np.interp(np.log(suggestion), np.log(rates[finite]), smooth[finite]))
        label = f"suggestion {suggestion:.2g}" + (f" ({method})" if method else "")
        axes.axvline(suggestion, color="C3", linestyle="--", linewidth=1, gid="suggestion")
        axes.plot([suggestion], [at], "o", color="C3", label=label)
    if finite.any():
        _clip_divergence(axes, smooth[finite], raw[np.isfinite(raw)])
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    if path is not None:
        save_figure(figure, path)
    return figure


# --- matplotlib and files -----------------------------------------------------------


def import_matplotlib(caller):
    """(Figure, FigureCanvasAgg, MaxNLocator), or a `PlotDependencyError` saying what to install."""
    try:
        import matplotlib  # noqa: F401  (first: a blocked parent must fail here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as e:
        raise PlotDependencyError(
            f"`{caller}` draws with matplotlib, which is not installed: "
            f'pip install "kerastl[plot]" (or pip install matplotlib). ({e})'
        ) from e
    return Figure, FigureCanvasAgg, MaxNLocator


def check_plot_path(path, arg="path"):
    """None, or the path of a `.png` file to write in an existing directory (as a str)."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{arg}` must be a file path (str or os.PathLike) or None. Received: {arg}={path!r}"
        )
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"`{arg}` is a directory; give the path of the PNG file to write in it. "
            f"Received: {arg}={path!r}"
        )
    if os.path.splitext(path)[1].lower() != ".png":
        raise ValueError(f"`{arg}` must name a .png file. Received: {arg}={path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"`{arg}` is in a directory that does not exist ({directory}). Received: {arg}={path!r}"
        )
    return path


def save_figure(figure, path, arg="path"):
    """Writes `figure` as a PNG at `path`, atomically (`kerastl.files.atomic`)."""
    write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=100), arg=arg)


# --- history ----------------------------------------------------------------------


def _read_history(history):
    """(series: {name: float64 array}, phase_boundaries or None, phases or None)."""
    if isinstance(history, dict):
        logs, boundaries, phases = history, None, None
    elif isinstance(getattr(history, "history", None), dict):
        logs = history.history
        boundaries = getattr(history, "phase_boundaries", None)
        phases = getattr(history, "phases", None)
    else:
        raise TypeError(
            "`history` must be a keras.callbacks.History (what `fit` returns), its "
            "`.history` dict or an object with such a `.history`. "
            f"Received: history={reprlib.repr(history)}"
        )
    series = {}
    for key, values in logs.items():
        if not isinstance(key, str):
            raise ValueError(f"`history` keys must be metric names. Received: history key={key!r}")
        if isinstance(values, (str, bytes, dict)) or not _is_sequence(values):
            raise ValueError(
                f"`history[{key!r}]` must be a list of per-epoch numbers. "
                f"Received: history[{key!r}]={reprlib.repr(values)}"
            )
        try:
            array = np.array(
                [math.nan if v is None else _number(v) for v in values], dtype="float64"
            )
        except (TypeError, ValueError):
            raise ValueError(
                f"`history[{key!r}]` must hold one number per epoch. "
                f"Received: history[{key!r}]={reprlib.repr(values)}"
            ) from None
        if array.ndim != 1:
            raise ValueError(
                f"`history[{key!r}]` must hold one number per epoch. "
                f"Received: history[{key!r}]={reprlib.repr(values)}"
            )
        if len(array):
            series[key] = array
    if not series:
        raise ValueError(
            "`history` has no epochs: nothing to plot (did `fit` run?). "
            f"Received: history={reprlib.repr(logs)}"
        )
    return series, boundaries, phases


def _is_sequence(values):
    return isinstance(values, (list, tuple)) or getattr(values, "ndim", None) == 1


def _number(value):
    if isinstance(value, bool):
        raise TypeError("a bool is not a metric value")
    if not isinstance(value, numbers.Real):
        value = np.asarray(value)  # 0-d numpy or backend tensors
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            raise TypeError("not a number")
    return float(value)


def _choose_metrics(series, metrics):
    if metrics is None:
        names = [k for k in series if not k.startswith(_VALIDATION) and _VALIDATION + k in series]
        if not names:  # no validation: every training curve
            names = [
                k for k in series if not k.startswith(_VALIDATION) and k not in _NOT_CURVES
            ] or list(series)
        return sorted(names, key=lambda k: k != "loss")  # the loss first (a stable sort)
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise ValueError(
            "`metrics` must be a non-empty list of metric names or None. "
            f"Received: metrics={metrics!r}"
        )
    for name in metrics:
        if not isinstance(name, str) or (name not in series and _VALIDATION + name not in series):
            raise ValueError(
                f"`metrics` names {name!r}, which the history does not hold (it holds "
                f"{sorted(series)}). Received: metrics={metrics!r}"
            )
    return list(dict.fromkeys(metrics))


def _check_phases(boundaries, phases, epochs):
    if boundaries is None:
        if phases is not None and len(phases) > 1:
            raise ValueError(
                "`history.phases` names several phases but `history.phase_boundaries` is "
                f"missing. Received: history.phases={phases!r}"
            )
        return [], []
    if not isinstance(boundaries, (list, tuple)) or not all(
        isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in boundaries
    ):
        raise ValueError(
            "`history.phase_boundaries` must be a list of epoch indices (ints). "
            f"Received: history.phase_boundaries={boundaries!r}"
        )
    boundaries = [int(b) for b in boundaries]
    if any(b < 0 or b > epochs for b in boundaries) or boundaries != sorted(boundaries):
        raise ValueError(
            "`history.phase_boundaries` must be increasing epoch indices in "
            f"[0, {epochs}] (the history has {epochs} epochs). "
            f"Received: history.phase_boundaries={boundaries!r}"
        )
    if phases is None:
        phases = [f"phase {i + 1}" for i in range(len(boundaries) + 1)]
    if (
        not isinstance(phases, (list, tuple))
        or len(phases) != len(boundaries) + 1
        or not all(isinstance(p, str) for p in phases)
    ):
        raise ValueError(
            "`history.phases` must name every phase: one name more than there are "
            f"phase boundaries ({len(boundaries)}). Received: history.phases={phases!r}"
        )
    return boundaries, list(phases)


def _mark_phases(axes, boundaries, phases, epochs):
    """A dotted line between the last epoch of a phase and the first of the next; names on top."""
    if not boundaries:
        return
    axes.margins(y=0.15)  # room for the phase names above the curves
    edges = [0] + boundaries + [epochs]
    top = axes.get_xaxis_transform()  # x in epochs, y in axes fraction
    for boundary in boundaries:
        axes.axvline(
            boundary + 0.5, color="0.35", linestyle=":", linewidth=1.3, gid="phase_boundary"
        )
    for name, start, end in zip(phases, edges[:-1], edges[1:], strict=True):
        if end > start:
            axes.text(
                (start + end) / 2 + 0.5,
                0.98,
                name,
                transform=top,
                ha="center",
                va="top",
                fontsize=9,
                color="0.3",
                gid="phase_label",
            )


def _clip_divergence(axes, smooth, raw):
    """Keeps the y range on the useful part when the diverging tail shoots up."""
    low, first = float(min(np.min(smooth), np.min(raw, initial=np.inf))), float(smooth[0])
    if first > low:
        top = first + 0.5 * (first - low)
        if float(np.max(smooth)) > top:
            axes.set_ylim(low - 0.05 * (top - low), top)
