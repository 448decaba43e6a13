"""Figures of a classifier's predictions, in numpy: per class, confusion, calibration.

Everything here takes class ids and probability rows that the caller already
checked; `kerastl.evaluation.interpret` is the public door.
"""

import numpy as np

ECE_BINS = 15  # Guo et al. 2017's equal-width confidence bins
EPSILON = 1e-7  # the smallest probability a log is taken of


def confusion_matrix(labels, predictions, n_classes):
    """`(n_classes, n_classes)` counts: row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype="int64")
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def per_class(matrix):
    """Precision, recall, F1 and support per class, from a confusion matrix.

    A class never predicted has precision 0; one absent from the labels has
    recall 0 (scikit-learn's `zero_division=0`).
    """
    true_positives = np.diag(matrix).astype("float64")
    predicted = matrix.sum(axis=0).astype("float64")
    support = matrix.sum(axis=1)
    precision = np.divide(
        true_positives, predicted, out=np.zeros_like(predicted), where=predicted > 0
    )
    recall = np.divide(
        true_positives, support, out=np.zeros_like(true_positives), where=support > 0
    )
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return precision, recall, f1, support


def most_confused(matrix, class_names, min_count=1):
    """`[(true, predicted, count), ...]` off the diagonal, most frequent first."""
    pairs = [
        (class_names[t], class_names[p], int(matrix[t, p]))
        for t in range(len(matrix))
        for p in range(len(matrix))
        if t != p and matrix[t, p] >= min_count
    ]
    return sorted(pairs, key=lambda pair: -pair[2])


def log_loss(probabilities, labels):
    """Per-image negative log-likelihood of the true class (probabilities clipped at 1e-7)."""
    chosen = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(chosen, EPSILON, 1.0))


def reliability(probabilities, labels, bins=ECE_BINS):
    """Confidence bins and the expected calibration error (Guo et al. 2017).

    Returns `(ece, rows)`: each row a dict with the bin's `lower` and `upper`
    confidence, its images (`count`), their mean `confidence` and `accuracy`
    (None for an empty bin). ECE is the count-weighted mean gap between the two.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i + 1]]; 0 goes to the first.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for i in range(bins):
        inside = which == i
        count = int(inside.sum())
        row = {"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": count}
        if count:
            row["confidence"] = float(confidence[inside].mean())
            row["accuracy"] = float(correct[inside].mean())
            ece += count / len(labels) * abs(row["accuracy"] - row["confidence"])
        else:
            row["confidence"] = row["accuracy"] = None
        rows.append(row)
    return float(ece), rows


def probabilities_of(outputs, task, logits):
    """A model's outputs as `(n, classes)` probability rows (binary: `[1 - p, p]`)."""
    outputs = np.asarray(outputs, dtype="float64")
    if task == "binary":
        p = outputs.reshape(len(outputs), -1)[:, 0]
        p = 1.0 / (1.0 + np.exp(-p)) if logits else p
        return np.stack([1.0 - p, p], axis=1)
    if task == "multiclass":
        if not logits:
            return outputs
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-outputs)) if logits else outputs
