"""The head phase trained to convergence, not for a number of epochs.

`fine_tune(head_epochs="auto")` (the default) ends the head phase where the
head's training loss stops falling, so that phase 2 opens the backbone under a
head that already fits (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained
Features and Underperform Out-of-Distribution": linear probe, then fine-tune).

- A linear classification head (`heads.multiclass` / `binary` without hidden
  layers or BatchNorm) on cached features is a logistic regression: it is
  solved exactly, full batch, by L-BFGS on the standardised features (the
  solver of `transferability.linear_probe`), and the solution is written into
  the head's output `Dense` layer (its standardisation folded into the kernel
  and bias). The L2 penalty is chosen on `validation` when it is given (the
  lowest validation loss along `L2_PATH`), else `DEFAULT_L2`.
- Any other head (hidden layers, BatchNorm, multilabel, regression, features
  too many for a full-batch solve, or no cache) trains epochs at the constant
  rate `lr` until its training loss has not improved by `MIN_DELTA` (relative)
  for `PATIENCE` epochs and `PATIENCE_STEPS` steps, at most `MAX_EPOCHS_CACHED`
  epochs on cached features or `MAX_EPOCHS_FULL` on the full model (each of
  those runs the backbone); the best epoch's weights are kept.

Either way the phase counts as one epoch in `fine_tune`'s history: the losses
and metrics of the converged head.
"""

import math

import keras
import numpy as np

from kerastl.training.transferability import _lbfgs, softmax_objective

# The L2 penalties (on the standardised features' weights, added to the mean
# cross-entropy as `l2 / 2 |W|^2`) tried along the path when `validation` is given,
# strongest first, each solve starting from the previous one's weights.
L2_PATH = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
# Without validation: a mild penalty, not tuned. On the demo's task (2 seeds, then
# phase 2) 0.01, 0.1 and 1.0 ended within the seeds' spread, in no consistent order.
DEFAULT_L2 = 0.01
# Above this many feature values (images x features), the full-batch solve would hold
# too much in memory: the head trains epochs instead.
MAX_SOLVE_VALUES = 50_000_000
PATIENCE = 3
PATIENCE_STEPS = 50
MIN_DELTA = 1e-3
MAX_EPOCHS_CACHED = 200
MAX_EPOCHS_FULL = 20
_MAX_ITER = 1000
_TOL = 1e-6


def is_linear(head):
    """Whether `head` is a logistic regression on its (pooled) features."""
    return head.task in ("binary", "multiclass") and not head.hidden and not head.batchnorm


def solvable(head, features):
    """Whether the head can be solved exactly on `features` (an array, views flattened)."""
    if not is_linear(head) or not hasattr(features, "shape"):
        return False
    if len(features.shape) == 4 and head.pooler is not None and head.pooler.trainable_weights:
        return False  # GeM's exponent trains with the head: not a logistic regression
    width = _width(head, features.shape[1:])
    return width is not None and len(features) * width <= MAX_SOLVE_VALUES


def solve_linear_head(head, x, y, *, validation=None, label_smoothing=0.0, l2=None):
    """Fits the output layer of a linear `head` to `(x, y)` by L-BFGS and assigns it.

    Minimises the mean cross-entropy (softmax, or sigmoid for a binary head; with
    `label_smoothing` on the targets) of the head's output on the standardised
    features plus `l2 / 2 |W|^2` (the bias is free), then writes
    `W / std` and `b - mean / std @ W` into the output `Dense` layer: the head
    then computes the solution's logits from the raw features, and its
    activation (or `logits=True`) applies as before.

    Args:
        head: a built `TaskHead` with `is_linear(head)`.
        x: features, `(n, d)` or feature maps `(n, h, w, c)` (pooled by the head).
        y: the labels as the head's loss takes them.
        validation: `(x, y)` features and labels: `l2` is then the one of
            `L2_PATH` with the lowest validation cross-entropy.
        label_smoothing: applied to the training targets.
        l2: a fixed penalty (overrides `validation`).

    Returns:
        The penalty used.
    """
    binary = head.task == "binary"
    x = _vectors(head, x)
    targets = _targets(head, y, label_smoothing)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    if l2 is None and validation is not None:
        held_out = (_vectors(head, validation[0]) - mean) / std
        held_targets = _targets(head, validation[1], 0.0)
        best, theta = None, None
        for penalty in L2_PATH:
            theta = _solve(z, targets, penalty, theta, binary)
            loss = _cross_entropy(held_out, held_targets, theta, binary)
            if best is None or loss < best[0]:
                best = (loss, penalty, theta)
        _, l2, theta = best
    else:
        l2 = DEFAULT_L2 if l2 is None else float(l2)
        theta = _solve(z, targets, l2, None, binary)
    weights, bias = _unpack(theta, z.shape[1], binary)
    kernel = weights / std[:, None]
    bias = bias - (mean / std) @ weights
    dense = head.dense_layers[-1]
    dense.kernel.assign(kernel.astype(keras.backend.standardize_dtype(dense.kernel.dtype)))
    dense.bias.assign(bias.astype(keras.backend.standardize_dtype(dense.bias.dtype)))
    return l2


class StopOnPlateau(keras.callbacks.Callback):
    """Stops `fit` when the training loss has not improved for `patience` epochs.

    An improvement is a fall of more than `min_delta` times the best loss so
    far. The best epoch's weights and logs are kept (`restore()` puts them back).
    """

    def __init__(self, patience=PATIENCE, min_delta=MIN_DELTA):
        super().__init__()
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.best_logs = None
        self.best_weights = None
        self.wait = 0
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        self.epochs += 1
        loss = logs.get("loss", math.inf)
        if loss < self.best * (1 - self.min_delta) or self.best_logs is None:
            self.wait = 0
        else:
            self.wait += 1
        if loss < self.best:
            self.best, self.best_logs = loss, logs
            self.best_weights = [
                np.array(keras.ops.convert_to_numpy(w)) for w in self.model.weights
            ]
        if self.wait >= self.patience or not math.isfinite(loss):
            self.model.stop_training = True

    def restore(self):
        if self.best_weights is not None:
            for variable, value in zip(self.model.weights, self.best_weights, strict=True):
                variable.assign(value)
        return self.best_logs or {}


# --- the solver -------------------------------------------------------------------


def _solve(z, targets, l2, start, binary):
    k = 1 if binary else targets.shape[1]
    theta = np.zeros(z.shape[1] * k + k) if start is None else start
    return _lbfgs(_objective(z, targets, l2, binary), theta, _MAX_ITER, _TOL)


def _objective(z, targets, l2, binary):
    """`theta -> (loss, gradient)` of the head's penalised mean cross-entropy."""
    if not binary:
        return softmax_objective(z, targets, l2)
    n, d = z.shape
    t = targets[:, None]

    def loss_and_grad(theta):
        w, b = theta[:d].reshape(d, 1), theta[d:]
        logits = z @ w + b
        # softplus(l) - t l, written to stay finite for large |l|
        loss = np.sum(np.logaddexp(0.0, logits) - t * logits) / n + l2 / 2 * np.sum(w * w)
        error = (1.0 / (1.0 + np.exp(-logits)) - t) / n
        return loss, np.concatenate([(z.T @ error + l2 * w).ravel(), error.sum(axis=0)])

    return loss_and_grad


def _unpack(theta, d, binary):
    k = 1 if binary else (len(theta)) // (d + 1)
    return theta[: d * k].reshape(d, k), theta[d * k :]


def _cross_entropy(z, targets, theta, binary):
    """The unpenalised mean cross-entropy of the solution `theta` on `(z, targets)`."""
    return float(_objective(z, targets, 0.0, binary)(theta)[0])


def _targets(head, y, smoothing):
    """The training targets: `(n,)` probabilities (binary) or `(n, k)` rows."""
    y = np.asarray(y)
    if head.task == "binary":
        t = y.reshape(len(y), -1)[:, 0].astype(np.float64)
        return t * (1 - smoothing) + smoothing / 2
    k = head.num_outputs
    if head.sparse_labels:
        t = np.eye(k)[y.reshape(len(y), -1)[:, 0].astype(int)]
    else:
        t = y.reshape(len(y), k).astype(np.float64)
    return t * (1 - smoothing) + smoothing / k


def _width(head, shape):
    """The number of features the head's output layer sees for inputs of `shape`."""
    if len(shape) == 1:
        return shape[0]
    if len(shape) == 3:
        return None if None in shape else (math.prod(shape) if head.pooler is None else shape[-1])
    return None


def _vectors(head, x, chunk=1024):
    """Features as float64 `(n, d)`: feature maps pooled as the head pools them."""
    if len(x.shape) == 2:
        return np.asarray(x, dtype=np.float64)
    pooled = [
        keras.ops.convert_to_numpy(
            head._pool(keras.ops.convert_to_tensor(np.asarray(x[i : i + chunk], dtype=np.float32)))
        )
        for i in range(0, len(x), chunk)
    ]
    return np.concatenate(pooled).astype(np.float64)
