"""The evaluation's figures: confusion matrix, reliability diagram, top-loss gallery.

Drawn like the training curves (`kerastl.training.plots`): matplotlib on an Agg
canvas of its own, imported when a figure is drawn, PNGs written atomically.
"""

import numpy as np

from kerastl._checks import check_bool, check_positive_int
from kerastl.training.plots import check_plot_path, import_matplotlib, save_figure

MAX_LABELLED_CLASSES = 30  # more classes: the cells keep their colour, lose their numbers


def plot_confusion_matrix(matrix, class_names, path=None, *, normalize=False):
    """Rows: true class; columns: predicted. `normalize=True` shows each row's fractions."""
    path = check_plot_path(path)
    check_bool(normalize, "normalize")
    Figure, FigureCanvasAgg, _ = import_matplotlib("plot_confusion_matrix")
    matrix = np.asarray(matrix)
    shown = matrix.astype("float64")
    if normalize:
        rows = shown.sum(axis=1, keepdims=True)
        shown = np.divide(shown, rows, out=np.zeros_like(shown), where=rows > 0)
    k = len(class_names)
    side = min(14.0, 3.0 + 0.45 * k)
    figure = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(shown, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(k), labels=class_names, rotation=90 if k > 6 else 0)
    axes.set_yticks(range(k), labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix" + (" (fraction of each true class)" if normalize else ""))
    if k <= MAX_LABELLED_CLASSES:
        threshold = shown.max() / 2 if shown.max() > 0 else 1
        for t in range(k):
            for p in range(k):
                text = f"{shown[t, p]:.2f}" if normalize else str(int(matrix[t, p]))
                colour = "white" if shown[t, p] > threshold else "black"
                axes.text(p, t, text, ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure


def plot_reliability(rows, ece, path=None, *, after=None):
    """Accuracy against confidence per bin, the diagonal of perfect calibration, the ECE.

    `after`: `(rows, ece)` of the same data once calibrated, drawn beside.
    """
    path = check_plot_path(path)
    Figure, FigureCanvasAgg, _ = import_matplotlib("plot_reliability")
    panels = [("before" if after is not None else "", rows, ece)]
    if after is not None:
        panels.append(("after calibration", *after))
    figure = Figure(figsize=(4.5 * len(panels), 4.5))
    FigureCanvasAgg(figure)
    for i, (title, bins, error) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        width = bins[0]["upper"] - bins[0]["lower"]
        filled = [row for row in bins if row["count"]]
        axes.bar(
            [row["lower"] for row in filled],
            [row["accuracy"] for row in filled],
            width=width,
            align="edge",
            edgecolor="black",
            color="#4c72b0",
            label="accuracy",
        )
        axes.bar(  # from accuracy to confidence, whichever is higher
            [row["lower"] for row in filled],
            [abs(row["confidence"] - row["accuracy"]) for row in filled],
            bottom=[min(row["confidence"], row["accuracy"]) for row in filled],
            width=width,
            align="edge",
            facecolor="none",
            edgecolor="#dd8452",
            hatch="//",
            label="gap to confidence",
        )
        axes.plot([0, 1], [0, 1], "k--", linewidth=1)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("confidence")
        axes.set_ylabel("accuracy")
        axes.set_title(f"{title} ECE {error:.3f}".strip())
        axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure


def plot_top_losses(items, path=None, *, heatmaps=None, columns=4):
    """The images the model got most wrong, each titled true / predicted / probability / loss.

    `heatmaps`: one `(height, width)` map in [0, 1] per item (`kerastl.grad_cam`),
    drawn over its image.
    """
    path = check_plot_path(path)
    columns = check_positive_int(columns, "columns")
    if heatmaps is not None and len(heatmaps) != len(items):
        raise ValueError(
            f"`heatmaps` must hold one map per image ({len(items)}). "
            f"Received: {len(heatmaps)} heatmaps"
        )
    Figure, FigureCanvasAgg, _ = import_matplotlib("plot_top_losses")
    count = max(1, len(items))
    columns = min(columns, count)
    rows = -(-count // columns)
    figure = Figure(figsize=(3.0 * columns, 3.3 * rows))
    FigureCanvasAgg(figure)
    for i, item in enumerate(items):
        axes = figure.add_subplot(rows, columns, i + 1)
        image = display_image(item["image"])
        axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        if heatmaps is not None:
            axes.imshow(
                np.asarray(heatmaps[i]),
                cmap="jet",
                alpha=0.45,
                vmin=0,
                vmax=1,
                extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
            )
        axes.set_title(
            f"{item['true']} / {item['predicted']}\n"
            f"p={item['probability']:.2f} loss={item['loss']:.2f}",
            fontsize=9,
        )
        axes.axis("off")
    if not items:
        axes = figure.add_subplot(1, 1, 1)
        axes.text(0.5, 0.5, "no mistakes to show", ha="center", va="center")
        axes.axis("off")
    figure.suptitle("true / predicted, probability of the prediction, loss", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    if path is not None:
        save_figure(figure, path)
    return figure


def display_image(image):
    """An image as uint8 `(h, w)` or `(h, w, 3)` for display: raw 0..255 pixels clipped;
    values in [0, 1] (already scaled) stretched to 0..255."""
    image = np.asarray(image, dtype="float64")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.size and image.min() >= 0 and image.max() <= 1.0:
        image = image * 255.0
    return np.clip(image, 0, 255).astype("uint8")
