"""The head phase on cached features against the Keras-guide way (frozen base in the model).

    KERAS_BACKEND=jax python benchmarks/bench_feature_cache.py [--epochs 10] [--size 96]

Real images (scikit-learn's digits: the first 256, 8x8 grayscale upscaled;
the task is digit < 5), a frozen MobileNetV2 (alpha 1.0; its BatchNorm
calibrated on the images, since random weights would give ~1e-11 features)
with average pooling and a one-unit head, Adam, batch 32:

- "keras": the Keras transfer-learning guide written by hand —
  `keras.applications.MobileNetV2`, `base.trainable = False`, called with
  `training=False` inside the model, `fit` for `--epochs`: every epoch runs
  the backbone over every image again;
- "cache": `kerastl.fine_tune(..., head_epochs=epochs, epochs=0, cache=True)`:
  the backbone runs once, the head trains on the features (the time includes
  computing them).

Both use the same data order and initial head, so their accuracies (from
`predict` on all images, in-sample: the head is what is compared) should agree.

Then the head sweep: with the features on disk already (`cache_dir`), one head
against `head_sweep=True` (8 heads), both for `--epochs` with validation.

Each side's time includes its own tracing / compiling (a new model each), as a
user's run would; "epoch_seconds" is the hand-written model's cost per epoch
after its first, the backbone pass that the cache makes once.

"features_seconds" is `kerastl.cache_features` alone on a new model: one pass
of the backbone over the images with its trace / compilation, which any cache
must pay. "ceiling" = keras_seconds / features_seconds is the speedup a cache
would reach if training the head cost nothing.

At scale (`--count N`: the 1,797 digits and distorted copies of them, each
shifted, rotated and zoomed a little, as `kerastl demo` makes them;
`--alpha 0.35` for a smaller MobileNetV2; `--no-sweep`): the same comparison
at N images, where the fixed trace / compile cost weighs less. "head_epoch_seconds"
is the cached run's time beyond the features pass, per head epoch (its compile
included), against "epoch_seconds", one backbone pass of the Keras model.
"""

import argparse
import json
import tempfile
import time

import keras
import numpy as np
from sklearn.datasets import load_digits

import kerastl
from kerastl.cli.demo import distort


def images(size, count=256):
    digits = load_digits()
    x = digits.images.astype("float32") / 16.0 * 255.0  # 8 x 8 in 0..255
    y = (digits.target < 5).astype("float32")
    copies, seed = [x], 0
    while sum(len(c) for c in copies) < count:  # distorted copies: a camera's variations
        copies.append(distort(x[..., None], seed)[..., 0])
        seed += 3
    x = np.concatenate(copies)[:count]
    y = np.tile(y, len(copies))[:count]
    x = np.repeat(x[..., None], 3, axis=-1)
    x = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (size, size)))
    return x, y


def backbone(size, x, alpha=1.0):
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size, size, 3), alpha=alpha
    )
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    base(x[:512] / 127.5 - 1.0, training=True)  # statistics of these images
    for layer in bns:
        layer.momentum = 0.99
    return base


def keras_guide(base, x, y, epochs):
    base.trainable = False
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    h = keras.layers.GlobalAveragePooling2D()(base(h, training=False))
    keras.utils.set_random_seed(1)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    times = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: times.append(time.perf_counter())
    )
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=32, shuffle=False, verbose=0, callbacks=[timer])
    seconds = time.perf_counter() - start
    per_epoch = (times[-1] - times[0]) / max(len(times) - 1, 1)
    accuracy = float(np.mean((model.predict(x, verbose=0)[:, 0] > 0.5) == y))
    return seconds, accuracy, per_epoch


def _model(base):
    extractor = kerastl.FeatureExtractor(base, pooling="avg", arch=None)
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf", resize=False)
    keras.utils.set_random_seed(1)
    return kerastl.build_model(extractor, kerastl.heads.binary(), preprocessing=prep)


def cached(base, x, y, epochs, validation=None, **options):
    model = _model(base)
    data = kerastl.data.from_arrays(x, y, batch_size=32, shuffle=False)
    start = time.perf_counter()
    history = kerastl.fine_tune(
        model,
        data,
        validation,
        head_epochs=epochs,
        epochs=0,
        lr=1e-3,
        schedule="constant",
        cache=True,
        evaluate_first=False,
        verbose=0,
        **options,
    )
    seconds = time.perf_counter() - start
    accuracy = float(np.mean((model.predict(x, verbose=0)[:, 0] > 0.5) == y))
    return seconds, accuracy, history


def features_only(base, x, y):
    model = _model(base)
    data = kerastl.data.from_arrays(x, y, batch_size=32, shuffle=False)
    start = time.perf_counter()
    kerastl.cache_features(model, data, verbose=0)
    return time.perf_counter() - start


def sweep(base, x, y, epochs):
    """One head, then 8 heads, on features already on disk: `(one, eight, best lr)`."""
    half = len(x) // 2
    train, validation = (x[:half], y[:half]), (x[half:], y[half:])
    with tempfile.TemporaryDirectory() as directory:
        cached(base, *train, 1, validation, cache_dir=directory)  # features to disk
        one, _, _ = cached(base, *train, epochs, validation, cache_dir=directory)
        eight, _, history = cached(
            base, *train, epochs, validation, cache_dir=directory, head_sweep=True
        )
    return one, eight, history.sweep.best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--json", help="append the result (one JSON line) to this file")
    parser.add_argument("--count", type=int, default=256, help="images")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width")
    parser.add_argument("--no-sweep", action="store_true", help="skip the head sweep")
    args = parser.parse_args()
    x, y = images(args.size, args.count)
    base = backbone(args.size, x, args.alpha)
    # One warm-up of each, so that tracing and compiling are not timed.
    keras_guide(base, x[:32], y[:32], 1)
    cached(base, x[:32], y[:32], 1)
    if not args.no_sweep:
        cached(base, x[:32], y[:32], 1, (x[:32], y[:32]), head_sweep=True)
    keras_seconds, keras_accuracy, epoch_seconds = keras_guide(base, x, y, args.epochs)
    cache_seconds, cache_accuracy, _ = cached(base, x, y, args.epochs)
    features_seconds = features_only(base, x, y)
    result = {
        "backend": keras.config.backend(),
        "alpha": args.alpha,
        "size": args.size,
        "images": len(x),
        "epochs": args.epochs,
        "keras_seconds": round(keras_seconds, 2),
        "epoch_seconds": round(epoch_seconds, 2),
        "cache_seconds": round(cache_seconds, 2),
        "speedup": round(keras_seconds / cache_seconds, 2),
        "features_seconds": round(features_seconds, 2),
        "ceiling": round(keras_seconds / features_seconds, 2),
        "head_epoch_seconds": round((cache_seconds - features_seconds) / args.epochs, 4),
        "head_epoch_over_backbone_pass": round(
            (cache_seconds - features_seconds) / args.epochs / epoch_seconds, 4
        ),
        "keras_accuracy": keras_accuracy,
        "cache_accuracy": cache_accuracy,
    }
    if not args.no_sweep:
        one, eight, best = sweep(base, x, y, args.epochs)
        result.update(
            one_head_on_disk_cache_seconds=round(one, 2),
            sweep_8_heads_seconds=round(eight, 2),
            sweep_cost_ratio=round(eight / one, 2),
            sweep_best={k: v for k, v in best.items() if k != "best"},
        )
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
