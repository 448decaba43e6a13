"""Many heads per pass: a grid of learning rates and weight decays, trained at once on features.

The backbone's features are computed once (`kerastl.cache_features`); every
head of the grid is a copy of the model's head (same layers, same starting
weights) reading the same batch of features, so a sweep of 8 heads costs about
what one head costs: the step is dominated by moving the batch, not by a few
thousand weights. Each head has its own loss (the total is their sum, so no
head's gradient depends on another's), its own learning rate (a `PerLayerLR`
multiplier) and its own weight decay, an L2 penalty `wd / 2 * |W|^2` on its
kernels (the regularisation that the linear probes of CLIP and DINOv2 sweep).
The head with the best validation score (accuracy, then loss; loss for
regression) is copied into the model's head, as DINOv2's linear evaluation
keeps the best of its grid.
"""

import dataclasses
import itertools
import math

import keras

from kerastl._checks import check_positive_int, is_finite_number
from kerastl.heads.task_head import TaskHead
from kerastl.training.per_layer_lr import PerLayerLR

# The grid `head_sweep=True` trains: the given rate times these, with and without decay.
LR_FACTORS = (0.1, 0.3, 1.0, 3.0)
WEIGHT_DECAYS = (0.0, 1e-4)
MAX_HEADS = 64


@dataclasses.dataclass
class HeadSweep:
    """What a head sweep found.

    Attributes:
        results: one dict per head of the grid, in grid order: `lr`,
            `weight_decay`, the final training `loss`, and `val_loss` and the
            validation metrics (`val_accuracy`, ...).
        best: the entry of `results` that was kept (also marked `best=True`).
        history: the kept head's per-epoch logs, in Keras' `History` names
            (`loss`, `accuracy`, `val_loss`, `val_accuracy`, ...).
    """

    results: list
    best: dict
    history: dict

    def table(self):
        """The grid's results as a text table, the kept head marked with `*`."""
        metrics = [k for k in self.results[0] if k.startswith("val_")]
        header = ["lr", "weight_decay", "loss", *metrics]
        rows = [[f"{r[k]:.4g}" for k in header] for r in self.results]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        lines = ["  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
        for result, row in zip(self.results, rows, strict=True):
            mark = "* " if result.get("best") else "  "
            lines.append(mark + "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
        return "\n".join(lines)


def sweep_grid(head_sweep, lr):
    """The list of `(lr, weight_decay)` pairs a `head_sweep` argument asks for."""
    if head_sweep is True:
        return [(lr * f, wd) for f in LR_FACTORS for wd in WEIGHT_DECAYS]
    if isinstance(head_sweep, dict):
        unknown = set(head_sweep) - {"lr", "weight_decay"}
        if unknown:
            raise ValueError(
                "`head_sweep` takes the keys 'lr' and 'weight_decay'. "
                f"Received: head_sweep with keys {sorted(unknown)}"
            )
        lrs = _values(head_sweep.get("lr", [lr]), "lr")
        decays = _values(head_sweep.get("weight_decay", [0.0]), "weight_decay")
        grid = list(itertools.product(lrs, decays))
    elif isinstance(head_sweep, (list, tuple)) and head_sweep:
        grid = []
        for entry in head_sweep:
            if not isinstance(entry, dict) or not set(entry) <= {"lr", "weight_decay"}:
                raise ValueError(
                    "`head_sweep` as a list holds dicts with 'lr' and/or 'weight_decay'. "
                    f"Received: head_sweep entry {entry!r}"
                )
            grid.append(
                (
                    _values([entry.get("lr", lr)], "lr")[0],
                    _values([entry.get("weight_decay", 0.0)], "weight_decay")[0],
                )
            )
    else:
        raise ValueError(
            "`head_sweep` must be True (the default grid), a dict {'lr': [...], "
            "'weight_decay': [...]} or a list of such dicts. "
            f"Received: head_sweep={head_sweep!r}"
        )
    if not 1 <= len(grid) <= MAX_HEADS:
        raise ValueError(
            f"`head_sweep` must ask for 1 to {MAX_HEADS} heads; it asks for {len(grid)}. "
            f"Received: head_sweep={head_sweep!r}"
        )
    return [(float(a), float(b)) for a, b in grid]


def _values(values, key):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = [values]
    values = list(values)
    low = 0.0 if key == "weight_decay" else -math.inf
    for value in values:
        if not is_finite_number(value, low) or (key == "lr" and value <= 0):
            kind = "numbers >= 0" if key == "weight_decay" else "positive numbers"
            raise ValueError(f"`head_sweep['{key}']` must hold {kind}. Received: {key}={value!r}")
    if not values:
        raise ValueError(f"`head_sweep['{key}']` is empty. Received: {key}=[]")
    return values


def train_heads(
    head,
    train,
    validation,
    grid,
    *,
    epochs,
    batch_size,
    make_optimizer,
    loss,
    shuffle=True,
    verbose=0,
):
    """Trains one copy of `head` per `(lr, weight_decay)` of `grid` at once; keeps the best.

    Args:
        head: the `TaskHead` whose copies train; the best copy's weights are
            assigned to it.
        train: `(features, labels)` arrays, or a `keras.utils.PyDataset` of
            `(features, labels)` batches (augmented views).
        validation: `(features, labels)` arrays.
        grid: `(lr, weight_decay)` pairs.
        epochs: epochs of training.
        batch_size: for arrays.
        make_optimizer: `learning_rate -> optimizer`; called with the grid's
            largest rate (each head's is a multiplier of it).
        loss: the loss of one head (a Keras loss object or name).
        shuffle: reshuffle array batches every epoch.
        verbose: Keras `fit` verbosity.

    Returns:
        A `HeadSweep`.
    """
    check_positive_int(epochs, "epochs")
    names = [f"sweep_{i}" for i in range(len(grid))]
    features = train[0] if isinstance(train, tuple) else None
    shape = (features.shape[1:]) if features is not None else train.feature_shape
    heads = []
    for name, (_, decay) in zip(names, grid, strict=True):
        copy = TaskHead.from_config({**head.get_config(), "name": name})
        if decay:
            for dense in copy.dense_layers:
                # An L2 penalty decay / 2 * |W|^2: its gradient is decay * W.
                dense.kernel_regularizer = keras.regularizers.L2(decay / 2)
        heads.append(copy)
    inputs = keras.Input(shape, name="features")
    # One output, (batch, heads, ...): Keras' per-output bookkeeping for 8 outputs costs
    # more than the 8 heads themselves.
    model = keras.Model(inputs, _Stacked(heads)(inputs), name=f"{head.name}_sweep")
    start = [keras.ops.convert_to_numpy(w) for w in head.weights]
    for copy in heads:  # every head starts where the model's head is: only the grid differs
        for variable, value in zip(copy.weights, start, strict=True):
            variable.assign(value)
    top = max(lr for lr, _ in grid)
    optimizer = PerLayerLR(
        make_optimizer(top),
        multipliers={name: lr / top for name, (lr, _) in zip(names, grid, strict=True)},
    )
    loss = keras.losses.get(loss)
    metrics = []
    for i, name in enumerate(names):
        metrics.append(_HeadLoss(loss, i, name=f"{name}_loss"))
        metrics.extend(
            keras.metrics.MeanMetricWrapper(
                _of_head(_per_sample(metric), i), name=f"{name}_{metric.name}"
            )
            for metric in head.default_metrics()
        )
    model.compile(optimizer=optimizer, loss=_SumOverHeads(loss, len(grid)), metrics=metrics)
    fit = {"validation_data": validation, "epochs": epochs}
    if isinstance(train, tuple):
        fit.update(x=train[0], y=train[1], batch_size=batch_size, shuffle=shuffle)
    else:
        fit.update(x=train)
    logs = model.fit(**fit, verbose=verbose).history
    metric_names = [m.name for m in head.default_metrics()]
    results = []
    for name, (lr, decay) in zip(names, grid, strict=True):
        # The heads' own losses, without the decay penalty (which is in Keras' "loss").
        result = {"lr": lr, "weight_decay": decay, "loss": _last(logs, f"{name}_loss")}
        result["val_loss"] = _last(logs, f"val_{name}_loss")
        for metric in metric_names:
            result[f"val_{metric}"] = _last(logs, f"val_{name}_{metric}")
        results.append(result)
    best = min(range(len(grid)), key=lambda i: _rank(results[i], head, metric_names))
    results[best]["best"] = True
    for target, source in zip(head.weights, heads[best].weights, strict=True):
        target.assign(source)
    history = {}
    for key, values in logs.items():
        prefix = f"val_{names[best]}_" if key.startswith("val_") else f"{names[best]}_"
        if key.startswith(prefix):
            stem = key[len(prefix) :]
            history[("val_" if key.startswith("val_") else "") + stem] = [float(v) for v in values]
    return HeadSweep(results=results, best=results[best], history=history)


class _Stacked(keras.layers.Layer):
    """The heads side by side on one input: `(batch, heads, outputs)`."""

    def __init__(self, heads, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads

    def build(self, input_shape):
        for head in self.heads:
            head.build(input_shape)

    def call(self, inputs, training=None):
        return keras.ops.stack([head(inputs, training=training) for head in self.heads], axis=1)

    def compute_output_shape(self, input_shape):
        shape = self.heads[0].compute_output_shape(input_shape)
        return (shape[0], len(self.heads), *shape[1:])


class _SumOverHeads(keras.losses.Loss):
    """The sum of every head's loss: each head's gradient is its own loss's."""

    def __init__(self, loss, count):
        super().__init__(name="sum_over_heads")
        self.loss, self.count = loss, count

    def call(self, y_true, y_pred):
        return sum(self.loss(y_true, y_pred[:, i]) for i in range(self.count))


class _HeadLoss(keras.metrics.Metric):
    """One head's loss, averaged over samples as Keras averages its own loss."""

    def __init__(self, loss, index, name):
        super().__init__(name=name)
        self.loss, self.index = loss, index
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        n = keras.ops.cast(keras.ops.shape(y_pred)[0], "float32")
        value = keras.ops.cast(self.loss(y_true, y_pred[:, self.index]), "float32")
        self.total.assign(self.total + value * n)
        self.count.assign(self.count + n)

    def result(self):
        return self.total / keras.ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


def _of_head(fn, index):
    def of_head(y_true, y_pred):
        return fn(y_true, y_pred[:, index])

    return of_head


def _per_sample(metric):
    """The per-sample function of a head's default metric."""
    if isinstance(metric, keras.metrics.BinaryAccuracy):
        threshold = metric.get_config().get("threshold", 0.5)
        return lambda y_true, y_pred: keras.metrics.binary_accuracy(y_true, y_pred, threshold)
    if isinstance(metric, keras.metrics.SparseCategoricalAccuracy):
        return keras.metrics.sparse_categorical_accuracy
    if isinstance(metric, keras.metrics.CategoricalAccuracy):
        return keras.metrics.categorical_accuracy
    if isinstance(metric, keras.metrics.MeanAbsoluteError):
        return keras.metrics.mean_absolute_error
    raise TypeError(f"No per-head form of the metric {metric.name!r}. Received: {metric!r}")


def _last(logs, key):
    values = logs.get(key)
    return float(values[-1]) if values else math.nan


def _rank(result, head, metric_names):
    """Smaller is better: accuracy first (classification), then the validation loss."""
    loss = result["val_loss"]
    loss = math.inf if math.isnan(loss) else loss
    if head.task == "regression" or not metric_names:
        return (loss,)
    score = result[f"val_{metric_names[0]}"]
    return (-score if not math.isnan(score) else math.inf, loss)
