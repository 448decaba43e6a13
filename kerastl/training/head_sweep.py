"""Many heads per pass: a grid of learning rates and weight decays, trained at once on features.

The backbone's features are computed once (`kerastl.cache_features`); every
head of the grid is a copy of the model's head (same layers, same starting
weights) reading the same batch of features. The copies are one layer whose
weights carry a leading head axis, so the traced step of 8 heads is about the
size of one head's. The loss is the sum of the heads' losses (no head's
gradient depends on another's); each head's learning rate scales its slice of
the optimizer's step (`PerLayerLR`), and its weight decay is an L2 penalty
`wd / 2 * |W|^2` on its kernels (the regularisation that the linear probes of
CLIP and DINOv2 sweep). The head with the best validation score (accuracy,
then loss; loss for regression) is copied into the model's head, as DINOv2's
linear evaluation keeps the best of its grid.
"""

import dataclasses
import itertools
import math

import keras
import numpy as np

from kerastl._checks import check_positive_int, is_finite_number
from kerastl.heads.task_head import TaskHead, finish_outputs
from kerastl.optimizers.per_layer_lr import PerLayerLR

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
        validation: `(features, labels)` arrays, or a `keras.utils.PyDataset` of them.
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
    count = len(grid)
    names = [f"sweep_{i}" for i in range(count)]
    features = train[0] if isinstance(train, tuple) else None
    shape = (features.shape[1:]) if features is not None else train.feature_shape
    top = max(lr for lr, _ in grid)
    rates = [lr / top for lr, _ in grid]
    inputs = keras.Input(shape, name="features")
    if _vectorizable(head, shape):
        # One variable per kind of weight with a leading head axis: the graph of 8
        # heads is the graph of one (on TensorFlow, tracing 8 heads' updates cost
        # more than training them).
        heads = _VectorHeads(head, [decay for _, decay in grid], name="sweep")
        optimizer = PerLayerLR(make_optimizer(top))
    else:  # a pooling with weights of its own (GeM) on a feature map: one copy per head
        heads = _Stacked(_copies(head, names, grid), name="sweep")
        optimizer = PerLayerLR(
            make_optimizer(top), multipliers=dict(zip(names, rates, strict=True))
        )
    loss = keras.losses.get(loss)
    model = _SweepModel(
        inputs,
        heads(inputs),
        sweep_metrics=_SweepMetrics(loss, head.default_metrics(), names),
        name=f"{head.name}_sweep",
    )
    if isinstance(heads, _VectorHeads):
        heads.start_from(head)
        optimizer.build(model.trainable_variables)
        for variable in heads.trainable_weights:
            optimizer._scale_slices(variable, rates)
    else:
        start = [keras.ops.convert_to_numpy(w) for w in head.weights]
        for copy in heads.heads:  # every head starts where the model's head is
            for variable, value in zip(copy.weights, start, strict=True):
                variable.assign(value)
    model.compile(optimizer=optimizer, loss=_SumOverHeads(loss, count))
    fit = {"validation_data": validation, "epochs": epochs}
    if isinstance(train, tuple):
        fit.update(x=train[0], y=train[1], batch_size=batch_size, shuffle=shuffle)
    else:  # batches in their own order (Keras would reshuffle them from the global RNG)
        fit.update(x=train, shuffle=False)
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
    heads.copy_to(head, best)
    history = {}
    for key, values in logs.items():
        prefix = f"val_{names[best]}_" if key.startswith("val_") else f"{names[best]}_"
        if key.startswith(prefix):
            stem = key[len(prefix) :]
            history[("val_" if key.startswith("val_") else "") + stem] = [float(v) for v in values]
    return HeadSweep(results=results, best=results[best], history=history)


def _copies(head, names, grid):
    """One `TaskHead` per grid entry, its weight decay as an L2 penalty on its kernels."""
    heads = []
    for name, (_, decay) in zip(names, grid, strict=True):
        copy = TaskHead.from_config({**head.get_config(), "name": name})
        if decay:
            for dense in copy.dense_layers:
                # An L2 penalty decay / 2 * |W|^2: its gradient is decay * W.
                dense.kernel_regularizer = keras.regularizers.L2(decay / 2)
        heads.append(copy)
    return heads


def _vectorizable(head, shape):
    """Whether `_VectorHeads` can stand for copies of `head` (all but GeM on a map)."""
    return len(shape) == 1 or head.pooler is None or head.pooler.mode != "gem"


class _VectorHeads(keras.layers.Layer):
    """`len(decays)` copies of a `TaskHead` as one layer: `(batch, heads, outputs)`.

    Every weight of the head (Dense kernels and biases, BatchNormalization's
    four) is one variable with a leading head axis; the heads share the input
    and the pooling, and draw their own dropout masks. Head `i`'s kernels carry
    the L2 penalty `decays[i] / 2 * |W|^2`.
    """

    def __init__(self, head, decays, **kwargs):
        super().__init__(dtype=head.dtype_policy, **kwargs)
        self.count = len(decays)
        self.decays = [float(d) for d in decays]
        self.units = [dense.units for dense in head.dense_layers]
        self.activation = keras.activations.get(head.activation)
        self.output_activation = head.output_activation
        self.dropout = head.dropout
        self.norms = [(n.momentum, n.epsilon) for n in head.norm_layers]
        self.pooler = None
        if head.pooler is not None:
            self.pooler = type(head.pooler).from_config(head.pooler.get_config())
        self.seed_generator = keras.random.SeedGenerator() if head.dropout else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) == 4 and self.pooler is not None:
            self.pooler.build(shape)
            shape = self.pooler.compute_output_shape(shape)
        width = shape[-1] if len(shape) == 2 else math.prod(shape[1:])
        coefficients = keras.ops.reshape(
            keras.ops.convert_to_tensor([d / 2 for d in self.decays]), (-1, 1, 1)
        )

        def penalty(kernel):
            return keras.ops.sum(coefficients * keras.ops.square(kernel))

        self.layer_weights = []
        for i, units in enumerate(self.units):
            weights = {}
            if self.norms:
                for kind, init, trainable in (
                    ("gamma", "ones", True),
                    ("beta", "zeros", True),
                    ("moving_mean", "zeros", False),
                    ("moving_variance", "ones", False),
                ):
                    weights[kind] = self.add_weight(
                        shape=(self.count, width),
                        initializer=init,
                        trainable=trainable,
                        name=f"batchnorm_{i}_{kind}",
                    )
            weights["kernel"] = self.add_weight(
                shape=(self.count, width, units),
                regularizer=penalty if any(self.decays) else None,
                name=f"dense_{i}_kernel",
            )
            weights["bias"] = self.add_weight(
                shape=(self.count, units), initializer="zeros", name=f"dense_{i}_bias"
            )
            self.layer_weights.append(weights)
            width = units

    def _pairs(self, head):
        """`(variable here, the head's variable)` for every weight of the head."""
        for i, weights in enumerate(self.layer_weights):
            dense = head.dense_layers[i]
            yield weights["kernel"], dense.kernel
            yield weights["bias"], dense.bias
            if self.norms:
                norm = head.norm_layers[i]
                for kind in ("gamma", "beta", "moving_mean", "moving_variance"):
                    yield weights[kind], getattr(norm, kind)

    def start_from(self, head):
        """Every copy starts with `head`'s weights: only the grid differs."""
        for mine, theirs in self._pairs(head):
            value = keras.ops.convert_to_numpy(theirs)
            mine.assign(np.broadcast_to(value, mine.shape))

    def copy_to(self, head, index):
        """Gives `head` the weights of copy `index`."""
        for mine, theirs in self._pairs(head):
            theirs.assign(keras.ops.convert_to_numpy(mine)[index])

    def call(self, inputs, training=None):
        x = inputs
        if len(x.shape) == 4:
            if self.pooler is not None:
                x = self.pooler(x)
            else:
                x = keras.ops.reshape(x, (keras.ops.shape(x)[0], -1))
        ops = keras.ops
        for i, weights in enumerate(self.layer_weights):
            if len(x.shape) == 2 and (self.norms or (training and self.dropout)):
                # Per-head statistics and masks: the heads' own copies of the input.
                x = ops.repeat(ops.expand_dims(x, 1), self.count, axis=1)
            if self.norms:
                x = self._normalize(x, weights, training, *self.norms[i])
            if training and self.dropout:
                x = keras.random.dropout(x, self.dropout, seed=self.seed_generator)
            equation = "bi,hio->bho" if len(x.shape) == 2 else "bhi,hio->bho"
            x = ops.einsum(equation, x, weights["kernel"]) + weights["bias"]
            if i < len(self.units) - 1:
                x = self.activation(x)
        return finish_outputs(x, self.output_activation)

    def _normalize(self, x, weights, training, momentum, epsilon):
        ops = keras.ops
        if training:
            mean, variance = ops.moments(x, axes=[0])
            for kind, value in (("moving_mean", mean), ("moving_variance", variance)):
                moving = weights[kind]
                moving.assign(moving * momentum + ops.cast(value, moving.dtype) * (1 - momentum))
        else:
            mean, variance = weights["moving_mean"], weights["moving_variance"]
        scale = weights["gamma"] * ops.rsqrt(variance + epsilon)
        return (x - mean) * scale + weights["beta"]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.count, self.units[-1])


class _Stacked(keras.layers.Layer):
    """Copies of a head side by side on one input: `(batch, heads, outputs)`."""

    def __init__(self, heads, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads

    def build(self, input_shape):
        for head in self.heads:
            head.build(input_shape)

    def call(self, inputs, training=None):
        return keras.ops.stack([head(inputs, training=training) for head in self.heads], axis=1)

    def copy_to(self, head, index):
        for target, source in zip(head.weights, self.heads[index].weights, strict=True):
            target.assign(source)

    def compute_output_shape(self, input_shape):
        shape = self.heads[0].compute_output_shape(input_shape)
        return (shape[0], len(self.heads), *shape[1:])


class _SweepModel(keras.Model):
    """A functional model that also updates the sweep's per-head metrics.

    One metric object for every head (a vector per figure) instead of two Keras
    metrics per head: the traced step stays about the size of one head's.
    """

    def __init__(self, *args, sweep_metrics, **kwargs):
        super().__init__(*args, **kwargs)
        self.sweep_metrics = sweep_metrics

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras' metrics, after updating every head's loss and metrics."""
        self.sweep_metrics.update_state(y, y_pred)
        return super().compute_metrics(x, y, y_pred, sample_weight)


def _heads_first(y_true, y_pred):
    """`(labels repeated per head, predictions (heads * batch, outputs))`."""
    ops = keras.ops
    count = y_pred.shape[1]
    flat = ops.reshape(ops.swapaxes(y_pred, 0, 1), (-1, *y_pred.shape[2:]))
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) < len(y_pred.shape) - 1:  # sparse labels (batch,)
        y_true = ops.expand_dims(y_true, -1)
    repeated = ops.tile(y_true, (count,) + (1,) * (len(y_true.shape) - 1))
    return repeated, flat


def _per_sample_loss(loss):
    """The unreduced form of a loss: `(y_true, y_pred) -> (batch,)`."""
    if isinstance(loss, keras.losses.Loss):
        return loss.call
    return loss


class _SumOverHeads(keras.losses.Loss):
    """The sum of every head's loss: each head's gradient is its own loss's."""

    def __init__(self, loss, count):
        super().__init__(name="sum_over_heads")
        self.loss, self.count = _per_sample_loss(loss), count

    def call(self, y_true, y_pred):
        repeated, flat = _heads_first(y_true, y_pred)
        per_sample = keras.ops.reshape(self.loss(repeated, flat), (self.count, -1))
        return keras.ops.sum(per_sample, axis=0)


class _SweepMetrics(keras.metrics.Metric):
    """Every head's loss and metrics, averaged over samples as Keras averages its own.

    Its result is a dict `{sweep_i_loss, sweep_i_<metric>}`, which Keras logs
    as if each were a metric of its own.
    """

    def __init__(self, loss, metrics, names):
        super().__init__(name="sweep_metrics")
        self.names = list(names)
        self.functions = [("loss", _per_sample_loss(loss))]
        self.functions += [(metric.name, _per_sample(metric)) for metric in metrics]
        self.totals = self.add_variable(
            shape=(len(self.functions), len(names)), initializer="zeros", name="totals"
        )
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        repeated, flat = _heads_first(y_true, y_pred)
        sums = []
        for _, function in self.functions:
            values = ops.cast(function(repeated, flat), "float32")
            values = ops.reshape(values, (len(self.names), -1))
            sums.append(ops.sum(values, axis=1))
        self.totals.assign(self.totals + ops.stack(sums))
        self.count.assign(self.count + ops.cast(ops.shape(y_pred)[0], "float32"))

    def result(self):
        means = self.totals / keras.ops.maximum(self.count, 1.0)
        return {
            f"{name}_{kind}": means[k, i]
            for k, (kind, _) in enumerate(self.functions)
            for i, name in enumerate(self.names)
        }

    def reset_state(self):
        self.totals.assign(keras.ops.zeros(self.totals.shape))
        self.count.assign(0.0)


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
