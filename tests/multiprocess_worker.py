"""One process of a multi-process `fine_tune` (JAX), as `tests/test_multiprocess.py` starts it.

    python multiprocess_worker.py PROCESS_ID PROCESSES PORT OUT EPOCHS [MODE]

Each process joins the job through Keras' own `keras.distribution.initialize`
(JAX's CPU collectives over gloo, 127.0.0.1), trains under `DataParallel` with
`auto_shard_dataset=False`, feeding its own shard of the digits: process `p` gets
rows `p::PROCESSES` of every global batch, so one process fed the interleaved
whole sees the same global batches. It runs `fine_tune` (the head solved on the
cached features of every shard, then 2 epochs of the whole model) with
checkpoints in OUT/checkpoints and its features in OUT/cache, sets a freeze
policy, saves the model to OUT/model.keras, and writes OUT/result-<id>.json and
OUT/weights-<id>.npz.
With `disagree`, the last process has 8 images fewer and another learning rate; with
`unshared`, each process has a checkpoint directory of its own. With `gradual`, the
model trains with Keras' `fit` and `kerastl.callbacks.GradualUnfreezing(every=1)`
instead (EPOCHS epochs, the head first, one more block each epoch), recording its
trainable set at every epoch's end. With `sweep`, `fine_tune` trains a `head_sweep`
grid of 4 heads for 3 epochs on the cached features, choosing on 32 held-out digits
(each process its shard), and records the grid's results.
"""

import json
import os
import sys

process_id, processes, port, out, epochs = sys.argv[1:6]
mode = sys.argv[6] if len(sys.argv) > 6 else None
disagree = mode == "disagree"
process_id, processes, epochs = int(process_id), int(processes), int(epochs)
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import kerastl  # noqa: E402

if processes > 1:
    keras.distribution.initialize(f"127.0.0.1:{port}", processes, process_id)
keras.distribution.set_distribution(keras.distribution.DataParallel(auto_shard_dataset=False))

GLOBAL_BATCH = 16
IMAGES = 96
digits = load_digits()
images = (digits.images[:IMAGES, ..., None] * (255 / 16)).astype("float32")
labels = digits.target[:IMAGES]
if processes > 1:  # this process's rows of every global batch
    images, labels = images[process_id::processes], labels[process_id::processes]
else:  # the same global batches, in one process: the shards interleaved
    pass

keras.utils.set_random_seed(0)
inputs = keras.Input((8, 8, 1))
x = keras.layers.Rescaling(1 / 255)(inputs)
x = keras.layers.Conv2D(8, 3, padding="same", name="conv_0")(x)
x = keras.layers.ReLU(name="relu_0")(x)
x = keras.layers.Conv2D(16, 3, padding="same", name="conv_1")(x)
x = keras.layers.ReLU(name="relu_1")(x)
extractor = kerastl.FeatureExtractor(keras.Model(inputs, x, name="tiny"), pooling="avg")
model = kerastl.build_model(extractor, kerastl.heads.multiclass(10), preprocessing=False)

LR = 1e-2
if disagree and process_id == processes - 1:
    images, labels, LR = images[:-8], labels[:-8], 3e-2


def write_results(history, **more):
    """OUT/weights-<id>.npz (every weight, this process's copy) and OUT/result-<id>.json."""
    weights = [kerastl._processes.local_value(w.value) for w in model.weights]
    np.savez(os.path.join(out, f"weights-{process_id}.npz"), *weights)
    result = {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        **more,
    }
    with open(os.path.join(out, f"result-{process_id}.json"), "w") as f:
        json.dump(result, f)


batch = GLOBAL_BATCH // processes
train = kerastl.data.from_arrays(images, labels, batch_size=batch, shuffle=False)
if mode == "gradual":
    trainable_by_epoch = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: trainable_by_epoch.append(
            sorted(w.path for w in model.trainable_weights)
        )
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LR),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    fit = model.fit(
        train,
        epochs=epochs,
        callbacks=[kerastl.callbacks.GradualUnfreezing(every=1, verbose=0), record],
        verbose=0,
    )
    write_results(fit.history, trainable_by_epoch=trainable_by_epoch)
    sys.exit(0)
if mode == "sweep":
    held_x = (digits.images[IMAGES : IMAGES + 32, ..., None] * (255 / 16)).astype("float32")
    held_y = digits.target[IMAGES : IMAGES + 32]
    if processes > 1:
        held_x, held_y = held_x[process_id::processes], held_y[process_id::processes]
    held_out = kerastl.data.from_arrays(held_x, held_y, batch_size=batch, shuffle=False)
    history = kerastl.fine_tune(
        model,
        train,
        held_out,
        epochs=0,
        head_epochs=3,
        lr=LR,
        head_sweep={"lr": [1e-2, 1e-1], "weight_decay": [0.0, 1e-4]},
        cache_dir=os.path.join(out, "cache"),
        verbose=0,
    )
    sweep = [{k: float(v) for k, v in row.items()} for row in history.sweep.results]
    write_results(history.history, sweep=sweep)
    sys.exit(0)
checkpoints = os.path.join(out, "checkpoints")
if mode == "unshared":  # as if each process wrote to a disk of its own
    checkpoints = os.path.join(out, f"checkpoints-{process_id}")
history = kerastl.fine_tune(
    model,
    train,
    epochs=epochs,
    lr=LR,
    checkpoint_dir=checkpoints,
    cache_dir=os.path.join(out, "cache"),
    verbose=0,
)
kerastl.set_freeze(model, kerastl.freeze.TrainTopBlocks(1))
meta = kerastl.save_model(model, os.path.join(out, "model.keras"), history=history)
write_results(
    history.history,
    phases=history.phases,
    trainable=sorted(w.path for w in model.trainable_weights),
    saved_classes=meta["num_outputs"],
)
