"""The head's epochs on cached features without `fit` (TensorFlow, torch).

On cached features a step is a few small matrix products, and what `fit` does
around each step was most of the head phase. TensorFlow's `fit` costs about
0.6 s a call whatever the epochs (its step traced twice inside a `tf.while_loop`
over a `tf.data` iterator built every epoch) and about 1 ms a step; torch's about
0.4 ms a step beyond the 1.9 ms of the step itself (a one-unit head on 2,000
features of 1,280, 10 epochs: TensorFlow 1.14-1.48 s with `fit`, 0.57-0.60 s
here; torch 1.52-1.60 s, 1.15-1.26 s). Here the features sit in memory as one
tensor, and each batch is gathered from it and goes through the model's own
`train_step` (its loss, optimizer, loss scaling and metrics, as `fit` runs them):
on TensorFlow an epoch is one call of a traced loop, on torch a Python loop.

What callbacks see is what `fit` shows them at the level of epochs
(`on_train_begin`, `on_epoch_begin`, `on_epoch_end` with the same logs, `val_`
ones included, `on_train_end`, `model.stop_training`, `model.history`); no
batch-level calls. The batches are those `fit` draws from the same
`FeatureBatches` (the same rows, the same draws from `(seed, epoch)`), so a
resumed run sees what an uninterrupted one would, and a run on one device what
`fit` gives on several. JAX keeps `fit`: its compiled epoch already costs under
1% of a backbone pass.
"""

import keras
import numpy as np

from kerastl import _processes as processes
from kerastl._keras_private import batch_shards


def applies(model, features):
    """Whether `fit_epochs` trains `model` on `features` (else Keras' `fit` does).

    TensorFlow and torch, features in memory (a memory map is read a batch at a
    time by `fit`), the model on one device of one process (a distribution splits
    each batch itself).
    """
    return (
        keras.config.backend() in ("tensorflow", "torch")
        and not isinstance(features, np.memmap)
        and batch_shards(model) == 1
        and processes.count() == 1
    )


def fit_epochs(
    model, batches, *, epochs, initial_epoch=0, validation=None, callbacks=(), verbose=0
):
    """Trains `model` for epochs `initial_epoch`..`epochs` on `batches`, as `fit` would.

    Args:
        model: a compiled model (the head on cached features).
        batches: a `FeatureBatches` over features in memory; its draws advance
            one epoch each epoch, as when `fit` takes it.
        epochs: the index of the epoch to stop at, as `fit`'s `epochs`.
        initial_epoch: the epoch to start at.
        validation: `(features, labels, batch_size)` evaluated after each epoch
            (logged with a `val_` prefix), or `None`.
        callbacks: Keras callbacks, called at the epoch level.
        verbose: as `fit`'s.

    Returns:
        The `keras.callbacks.History` of the run (also `model.history`).
    """
    features, labels = batches.end_to_end()
    if not model.optimizer.built:  # the metrics build as the step is traced, as in `fit`
        model.optimizer.build(model.trainable_variables)
    train = _epoch(model.train_step, features, labels, batches.batch_size, training=True)
    evaluate = None
    if validation is not None:
        val_features, val_labels, val_size = validation
        evaluate = _epoch(
            model.test_step, val_features, np.asarray(val_labels), val_size, training=False
        )
        every_row = np.arange(len(val_features))
    callback_list = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=len(batches),
    )
    # Keras' fit looks at a PyDataset's first batches, then ends an epoch, before it
    # trains (3.15, every backend): the epochs here see the draws fit's would.
    batches.on_epoch_end()
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        _mode(model, training=True)
        train(batches.epoch_rows())
        logs = _results(model)
        if evaluate is not None:
            model.reset_metrics()
            _mode(model, training=False)
            evaluate(every_row)
            logs.update({f"val_{key}": value for key, value in _results(model).items()})
        callback_list.on_epoch_end(epoch, logs)
        batches.on_epoch_end()
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)  # as `fit` (EMA)
    callback_list.on_train_end(logs)
    return model.history


def _epoch(step, features, labels, batch_size, training):
    """A function running `step` on every batch of the given rows, in their order."""
    if keras.config.backend() == "torch":
        return _eager_epoch(step, features, labels, batch_size, training)
    import tensorflow as tf

    x = tf.constant(np.asarray(features, dtype="float32"))
    y = tf.constant(labels)

    def body(rows, i):
        batch = rows[i * batch_size : (i + 1) * batch_size]
        step((tf.gather(x, batch), tf.gather(y, batch)))
        return (i + 1,)

    @tf.function(autograph=False)  # Keras' own steps are not autograph-converted either
    def run(rows):
        count = (tf.shape(rows)[0] + batch_size - 1) // batch_size
        return tf.while_loop(lambda i: i < count, lambda i: body(rows, i), (tf.constant(0),))

    return lambda rows: run(tf.constant(rows))


def _eager_epoch(step, features, labels, batch_size, training):
    import torch

    x = keras.ops.convert_to_tensor(np.asarray(features, dtype="float32"))
    y = keras.ops.convert_to_tensor(labels)
    # Keras' torch trainer runs its test step without autograd; its train step needs it.
    context = torch.enable_grad if training else torch.no_grad

    def run(rows):
        rows = keras.ops.convert_to_tensor(rows)
        with context():
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                step((x[batch], y[batch]))

    return run


def _mode(model, training):
    """torch: the module's own mode, as `fit` and `evaluate` set it (for wrapped torch layers)."""
    if keras.config.backend() == "torch":
        model.train(training)


def _results(model):
    return {key: float(value) for key, value in model.get_metrics_result().items()}
