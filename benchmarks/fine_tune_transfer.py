"""Does `fine_tune` beat training the head alone, on a real transfer with few labels?

A small CNN backbone is pretrained on one task (handwritten digits 0-4 of
scikit-learn's `load_digits`, 8x8 scans upscaled to 32x32), then transferred
to another (digits 5-9) with 10 labelled images per class. Both recipes get
the same data and the same number of epochs:

- head only: `fine_tune(..., head_epochs=N, epochs=0)` (the frozen base);
- fine-tune: `fine_tune(..., head_epochs=k, epochs=N - k)` (then the whole base
  at block-wise lower rates).

Accuracy is measured with `predict` on every held-out image of the new task
(about 850), for several seeds of the 10-per-class sample.

    KERAS_BACKEND=torch python benchmarks/fine_tune_transfer.py --seeds 3
"""

import argparse
import json
import os
import time

import keras
import numpy as np
from sklearn.datasets import load_digits

import kerastl


def digits():
    data = load_digits()
    images = data.images.astype("float32") * (255.0 / 16.0)  # 0..16 -> 0..255
    images = np.repeat(images[..., None], 3, axis=-1)
    images = keras.ops.convert_to_numpy(
        keras.ops.image.resize(images, (32, 32), interpolation="bilinear")
    )
    return images, data.target


def backbone():
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool_{i}")(x)
    return keras.Model(inputs, x, name="digits_cnn")


def precise_batchnorm(net, inputs):
    layers = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    net(inputs, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def pretrain(images, labels, epochs, path):
    """The backbone trained as a classifier of the source task; its weights saved."""
    keras.utils.set_random_seed(0)
    net = backbone()
    extractor = kerastl.FeatureExtractor(net, pooling="avg", freeze="none", bn="train")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(5), preprocessing=prep)
    model.fit(images, labels, epochs=epochs, batch_size=32, verbose=0)
    # Moving BatchNorm statistics lag far behind weights trained for a few hundred
    # steps (predict accuracy 0.45 at 99.9% training accuracy, in plain Keras too):
    # recompute them for the final weights in one pass ("precise BN").
    precise_batchnorm(net, prep(images, training=False))
    accuracy = float(np.mean(model.predict(images, verbose=0).argmax(-1) == labels))
    net.save_weights(path)
    return accuracy


def transfer(weights, train, test, head_epochs, epochs, seed, lr):
    keras.utils.set_random_seed(seed)
    net = backbone()
    net.load_weights(weights)
    extractor = kerastl.FeatureExtractor(net, pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(5), preprocessing=prep)
    history = kerastl.fine_tune(
        model, train, head_epochs=head_epochs, epochs=epochs, lr=lr, batch_size=10, verbose=0
    )
    x, y = test
    accuracy = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    return accuracy, history


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30, help="total epochs of each recipe")
    parser.add_argument("--head-epochs", type=int, default=10, help="phase 1 of fine_tune")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2, help="fine_tune's lr (phase 1 peak)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()

    start = time.time()
    images, labels = digits()
    source = labels < 5
    weights = os.path.join(os.environ.get("TMPDIR", "/tmp"), "kerastl_digits_0_4.weights.h5")
    source_accuracy = pretrain(images[source], labels[source], args.pretrain_epochs, weights)
    print(f"source task (digits 0-4), predict accuracy after pretraining: {source_accuracy:.3f}")
    target_images, target_labels = images[~source], labels[~source] - 5

    rows = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        chosen = np.concatenate(
            [
                rng.choice(np.flatnonzero(target_labels == c), args.per_class, replace=False)
                for c in range(5)
            ]
        )
        held_out = np.setdiff1d(np.arange(len(target_labels)), chosen)
        train = (target_images[chosen], target_labels[chosen])
        test = (target_images[held_out], target_labels[held_out])
        head, _ = transfer(weights, train, test, args.epochs, 0, seed, args.lr)
        tuned, history = transfer(
            weights, train, test, args.head_epochs, args.epochs - args.head_epochs, seed, args.lr
        )
        rows.append({"seed": seed, "head_only": head, "fine_tune": tuned})
        print(f"seed {seed}: head only {head:.3f}   fine_tune {tuned:.3f}")

    head_mean = float(np.mean([r["head_only"] for r in rows]))
    tuned_mean = float(np.mean([r["fine_tune"] for r in rows]))
    result = {
        "backend": keras.config.backend(),
        "keras": keras.__version__,
        "source_task_train_accuracy": source_accuracy,
        "per_class": args.per_class,
        "test_images": int(len(target_labels) - 5 * args.per_class),
        "epochs": args.epochs,
        "head_epochs": args.head_epochs,
        "rows": rows,
        "head_only_mean": head_mean,
        "fine_tune_mean": tuned_mean,
        "seconds": round(time.time() - start, 1),
    }
    print(
        f"{result['backend']}: head only {head_mean:.3f}, fine_tune {tuned_mean:.3f} "
        f"(mean of {args.seeds} seeds, {result['test_images']} test images, "
        f"{result['seconds']} s)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
