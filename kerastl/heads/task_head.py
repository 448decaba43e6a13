import math
import numbers
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from kerastl._checks import check_bool, check_class_names, check_positive_int
from kerastl._keras_private import flatten_layers
from kerastl.layers.global_pooling_2d import GlobalPooling2D

TASKS = ("binary", "multiclass", "multilabel", "regression")
HEAD_POOLING = ("avg", "max", "gem", "avgmax", "flatten")
_OUTPUT_ACTIVATION = {
    "binary": "sigmoid",
    "multiclass": "softmax",
    "multilabel": "sigmoid",
    "regression": None,
}


@keras.saving.register_keras_serializable(package="kerastl")
class TaskHead(keras.layers.Layer):
    """The trainable top of a transfer-learning model; it knows its task.

    Features in, predictions out: optional pooling of a feature map, hidden
    `Dense` layers, then the output layer. The head also carries what a model
    needs to train and to be read back: its task, the loss, output activation
    and metrics that go with it, and whether it outputs logits. All of it is in
    the config, so a saved model still knows its task (`kerastl.heads.head_info`).
    The builders `kerastl.heads.binary`, `multiclass`, `multilabel` and
    `regression` are the usual way to make one.

    Layer order: `pooling`, then for each Dense layer (hidden and output)
    `BatchNormalization` (if `batchnorm`) and `Dropout` (if `dropout`) on its
    input; hidden layers use `activation`.

    Args:
        task: one of `"binary"`, `"multiclass"`, `"multilabel"`, `"regression"`.
        num_outputs: units of the output layer (1 for `"binary"`).
        hidden: units of the hidden Dense layers, in order (`()` for none).
        dropout: dropout rate before every Dense layer, in `[0, 1)`.
        batchnorm: a `BatchNormalization` before every Dense layer.
        activation: activation of the hidden layers.
        pooling: how a `(batch, h, w, c)` feature map becomes a vector: `"avg"`,
            `"max"`, `"gem"`, `"avgmax"` or `"flatten"`. Ignored for inputs
            that are already vectors (a pooled `FeatureExtractor`).
        logits: output raw logits instead of probabilities; the default loss
            then uses `from_logits=True`. Classification tasks only.
        priors: class frequencies in the training data; the output bias starts
            at their log-odds (log for `"multiclass"`), so the first steps do
            not spend themselves learning the class balance. A float for
            `"binary"`, one value per output otherwise.
        sparse_labels: `"multiclass"` only: labels are integer class ids
            (`True`) or one-hot vectors (`False`, needed for MixUp/CutMix).
        class_names: optional names of the outputs, kept with the saved model.

    Call arguments:
        inputs: features `(batch, channels)` or `(batch, height, width, channels)`.
        training: Python bool; drives dropout and batch normalisation.

    Example:

    ```python
    head = kerastl.heads.TaskHead("multiclass", 10, hidden=(64,), dropout=0.2)
    features = np.random.rand(2, 5, 5, 32).astype("float32")
    print(tuple(head(features).shape))  # (2, 10)
    print(head.default_loss().name)  # sparse_categorical_crossentropy
    ```
    """

    def __init__(
        self,
        task: str,
        num_outputs: int,
        hidden: int | Sequence[int] | None = (),
        dropout: float = 0.0,
        batchnorm: bool = False,
        activation: Any = "relu",
        pooling: str = "avg",
        logits: bool = False,
        priors: float | Sequence[float] | None = None,
        sparse_labels: bool = True,
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "head")
        super().__init__(**kwargs)
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}. Received: task={task!r}")
        check_positive_int(num_outputs, "num_outputs")
        if task == "binary" and num_outputs != 1:
            raise ValueError(
                "A binary head has one output (the probability of the positive class). "
                f"Received: num_outputs={num_outputs!r}"
            )
        hidden = _check_hidden(hidden)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, numbers.Real)
            or not 0 <= dropout < 1
        ):
            raise ValueError(f"`dropout` must be a rate in [0, 1). Received: dropout={dropout!r}")
        for arg, value in (
            ("batchnorm", batchnorm),
            ("logits", logits),
            ("sparse_labels", sparse_labels),
        ):
            check_bool(value, arg)
        if pooling not in HEAD_POOLING:
            raise ValueError(
                f"`pooling` must be one of {HEAD_POOLING}. Received: pooling={pooling!r}"
            )
        if logits and task == "regression":
            raise ValueError(
                "A regression head has no logits: its output is linear. Received: logits=True"
            )
        if class_names is not None:
            class_names = _check_class_names(class_names, 2 if task == "binary" else num_outputs)
        self.task: str = task
        self.num_outputs = int(num_outputs)
        self.hidden = hidden
        self.dropout = float(dropout)
        self.batchnorm = bool(batchnorm)
        self.activation = _check_activation(activation)
        self.pooling = pooling
        self.logits = bool(logits)
        self.priors = _check_priors(priors, task, self.num_outputs)
        self.sparse_labels = bool(sparse_labels)
        self.class_names = class_names

        # === Layers ===
        policy = self.dtype_policy
        self.pooler = None
        if pooling != "flatten":
            self.pooler = GlobalPooling2D(pooling, name="pool", dtype=policy)
        self.dense_layers = []
        self.norm_layers = []
        self.dropout_layers = []
        for i, units in enumerate((*hidden, self.num_outputs)):
            last = i == len(hidden)
            self.dense_layers.append(
                keras.layers.Dense(
                    units,
                    activation=None if last else activation,
                    name="predictions" if last else f"dense_{i}",
                    dtype=policy,
                )
            )
            if batchnorm:
                self.norm_layers.append(
                    keras.layers.BatchNormalization(name=f"batchnorm_{i}", dtype=policy)
                )
            if dropout:
                self.dropout_layers.append(
                    keras.layers.Dropout(dropout, name=f"dropout_{i}", dtype=policy)
                )

    # --- task metadata --------------------------------------------------------

    @property
    def output_activation(self):
        """`"sigmoid"`, `"softmax"` or `None` (linear); not applied when `logits`."""
        return None if self.logits else _OUTPUT_ACTIVATION[self.task]

    @property
    def from_logits(self):
        return self.logits

    def default_loss(self):
        """The loss that pairs with this head's output and label format."""
        if self.task in ("binary", "multilabel"):
            return keras.losses.BinaryCrossentropy(from_logits=self.logits)
        if self.task == "multiclass":
            if self.sparse_labels:
                return keras.losses.SparseCategoricalCrossentropy(from_logits=self.logits)
            return keras.losses.CategoricalCrossentropy(from_logits=self.logits)
        return keras.losses.MeanSquaredError()

    def default_metrics(self):
        """Accuracy-style metrics that read this head's output correctly."""
        if self.task in ("binary", "multilabel"):
            # A logit of 0 is a probability of 0.5.
            return [keras.metrics.BinaryAccuracy(threshold=0.0 if self.logits else 0.5)]
        if self.task == "multiclass":
            if self.sparse_labels:
                return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
            return [keras.metrics.CategoricalAccuracy(name="accuracy")]
        return [keras.metrics.MeanAbsoluteError()]

    def info(self):
        """Task metadata as a plain dict (what `kerastl.heads.head_info` returns)."""
        return {
            "task": self.task,
            "num_outputs": self.num_outputs,
            "from_logits": self.logits,
            "output_activation": self.output_activation,
            "sparse_labels": self.sparse_labels if self.task == "multiclass" else None,
            "class_names": self.class_names,
        }

    # --- layer API ------------------------------------------------------------

    def build(self, input_shape):
        if isinstance(input_shape, dict) or len(input_shape) not in (2, 4):
            raise ValueError(
                "A head takes features (batch, channels) or a feature map (batch, height, "
                "width, channels); pool multi-scale outputs first. "
                f"Received: input_shape={input_shape}"
            )
        shape = tuple(input_shape)
        if len(shape) == 2 and self.pooler is not None:
            # Pooled features skip the pooler. Left unbuilt, it would make Keras rebuild the
            # whole model on every `train_on_batch` (JAX, torch) and run an extra eager
            # forward pass on every JAX `predict_on_batch`. Marked built, it makes no weights.
            for layer in flatten_layers(self.pooler, include_self=True):
                layer.built = True
        if len(shape) == 4:
            if self.pooler is not None:
                self.pooler.build(shape)
            shape = (
                self.pooler.compute_output_shape(shape)
                if self.pooler is not None
                else (shape[0], None if None in shape[1:] else math.prod(shape[1:]))
            )
        if shape[-1] is None:
            raise ValueError(
                "The head needs a known number of input features (static height and "
                f"width for pooling='flatten'). Received: input_shape={tuple(input_shape)}"
            )
        for i, dense in enumerate(self.dense_layers):
            if self.batchnorm:
                self.norm_layers[i].build(shape)
            dense.build(shape)
            shape = dense.compute_output_shape(shape)
        if self.priors is not None:
            self.dense_layers[-1].bias.assign(_prior_bias(self.priors, self.task))

    def call(self, inputs, training=None):
        return finish_outputs(self._pre_activation(inputs, training), self.output_activation)

    def scores(self, inputs):
        """The output before its activation, in inference mode: float32 `(batch, num_outputs)`.

        A classifier's logits (what softmax or sigmoid would turn into
        probabilities; with `logits=True`, the output itself): the class
        scores Grad-CAM differentiates. A regression head's output.
        """
        return finish_outputs(self._pre_activation(inputs, training=False), None)

    def _pre_activation(self, inputs, training):
        x = inputs
        if len(x.shape) == 4:
            x = self._pool(x)
        for i, dense in enumerate(self.dense_layers):
            if self.batchnorm:
                x = self.norm_layers[i](x, training=training)
            if self.dropout:
                x = self.dropout_layers[i](x, training=training)
            x = dense(x)
        return x

    def _pool(self, x):
        if self.pooler is None:  # flatten
            return ops.reshape(x, (ops.shape(x)[0], -1))
        return self.pooler(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_outputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "task": self.task,
                "num_outputs": self.num_outputs,
                "hidden": list(self.hidden),
                "dropout": self.dropout,
                "batchnorm": self.batchnorm,
                "activation": self.activation,
                "pooling": self.pooling,
                "logits": self.logits,
                "priors": self.priors,
                "sparse_labels": self.sparse_labels,
                "class_names": self.class_names,
            }
        )
        return config


def finish_outputs(x, output_activation):
    """A head's last step: float32 (losses and probabilities stay float32 under mixed
    precision), then its output activation (`"sigmoid"`, `"softmax"` or `None`)."""
    x = ops.cast(x, "float32")
    if output_activation == "sigmoid":
        return ops.sigmoid(x)
    if output_activation == "softmax":
        return ops.softmax(x, axis=-1)
    return x


def _check_hidden(hidden):
    if hidden is None:
        return ()
    units = (hidden,) if isinstance(hidden, numbers.Integral) else hidden
    if not isinstance(units, (list, tuple)) or not all(
        not isinstance(u, bool) and isinstance(u, numbers.Integral) and u >= 1 for u in units
    ):
        raise ValueError(
            "`hidden` must be a positive int or a list of them (units of the hidden Dense "
            f"layers). Received: hidden={hidden!r}"
        )
    return tuple(int(u) for u in units)


def _check_class_names(class_names, expected):
    names = check_class_names(class_names)
    if len(names) != expected:
        raise ValueError(
            f"`class_names` must have {expected} names for this head. "
            f"Received: class_names={class_names!r}"
        )
    return names


def _check_activation(activation):
    try:
        return keras.activations.serialize(keras.activations.get(activation))
    except (TypeError, ValueError):
        raise ValueError(
            "`activation` must be a Keras activation (a name such as 'relu' or a function). "
            f"Received: activation={activation!r}"
        ) from None


def _check_priors(priors, task, num_outputs):
    if priors is None:
        return None
    if task == "regression":
        raise ValueError(
            f"`priors` are class frequencies; a regression head has none. "
            f"Received: priors={priors!r}"
        )
    values = [priors] if isinstance(priors, numbers.Real) else priors
    if isinstance(values, (str, bytes)) or not all(
        isinstance(p, numbers.Real) and not isinstance(p, bool) for p in _iterable(values)
    ):
        values = None
    else:
        values = [float(p) for p in values]
    if values is None or len(values) != num_outputs or not all(0 < p < 1 for p in values):
        raise ValueError(
            f"`priors` must be {num_outputs} class frequencies, each in (0, 1). "
            f"Received: priors={priors!r}"
        )
    if task == "multiclass" and not math.isclose(sum(values), 1.0, abs_tol=1e-3):
        raise ValueError(
            f"Multiclass `priors` are class frequencies and must sum to 1. "
            f"Received: priors={priors!r}"
        )
    return values


def _iterable(values):
    try:
        return list(values)
    except TypeError:
        return [None]


def _prior_bias(priors, task):
    if task == "multiclass":
        return [math.log(p) for p in priors]  # softmax(log p) = p
    return [math.log(p / (1 - p)) for p in priors]  # sigmoid(log-odds) = p
