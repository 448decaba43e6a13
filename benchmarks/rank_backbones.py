"""Does `rank_backbones` order backbones as fine-tuning them would, on a small real task?

The task: handwritten digits 5-9 (scikit-learn's `load_digits`, 8x8 scans upscaled
to 32x32) from `--per-class` labelled images per class; 348 other images of
5-9 are held out to test on. The candidates are one small CNN architecture (3 conv /
BatchNorm / ReLU / max-pool blocks) at several widths and pretrainings, from
useless to good:

- `random`: random weights, BatchNorm statistics calibrated on the labelled images;
- `0-4 x1ep`, `0-4 x3ep`, `0-4 x10ep`: pretrained on digits 0-4 for 1, 3, 10 epochs
  (a different task: new classes);
- `narrow 0-4`, `wide 0-4`: half and twice the width, 10 epochs on digits 0-4;
- `0-9`: pretrained on all ten digits, on images of 5-9 that are neither labelled
  nor tested (a similar task).

`rank_backbones` scores each on the labelled images (LogME, and the accuracy of a
linear probe over 5 folds). Then each is actually fine-tuned on the same images
(`kerastl.fine_tune`: a new head on the frozen network, then the whole network at
block-wise lower rates) and tested on the held-out images. The figure of merit is
Spearman's rank correlation between each score and the fine-tuned accuracy, per
sample of labelled images (`--seeds`), and between their means over the samples.

    KERAS_BACKEND=tensorflow python benchmarks/rank_backbones.py --seeds 2
"""

import argparse
import json
import time

import keras
import numpy as np
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

import kerastl
from kerastl.training.ranking import rank_backbones

SIZE = 32


def digits():
    data = load_digits()
    images = np.kron(data.images, np.ones((SIZE // 8, SIZE // 8))) * (255.0 / 16.0)
    return np.repeat(images[..., None], 3, axis=-1).astype("float32"), data.target


def cnn(filters, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for i, channels in enumerate(filters):
        x = keras.layers.Conv2D(channels, 3, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool_{i}")(x)
    return keras.Model(inputs, x, name="digits_cnn")


def tf_mode(images):
    return images / 127.5 - 1.0


def calibrate_batchnorm(net, images):
    """Moving statistics of `images` in one pass ("precise BN")."""
    layers = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = 0.0
    net(tf_mode(images), training=True)
    for layer in layers:
        layer.momentum = 0.99


def pretrain(filters, images, labels, epochs):
    """The weights of a CNN trained as a classifier of `labels`, BatchNorm recalibrated."""
    net = cnn(filters, seed=1)
    classes = int(labels.max()) + 1
    classifier = keras.Sequential(
        [net, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(classes, "softmax")]
    )
    classifier.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    classifier.fit(tf_mode(images), labels, epochs=epochs, batch_size=32, verbose=0)
    calibrate_batchnorm(net, images)
    return net.get_weights()


def fine_tuned_accuracy(filters, weights, train, test, args, seed):
    net = cnn(filters, seed=seed)
    net.set_weights(weights)
    extractor = kerastl.FeatureExtractor(net, pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    keras.utils.set_random_seed(seed)
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(5), preprocessing=prep)
    kerastl.fine_tune(
        model,
        train,
        head_epochs=args.head_epochs,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=10,
        evaluate_first=False,
        verbose=0,
    )
    x, y = test
    return float(np.mean(model.predict(x, batch_size=128, verbose=0).argmax(-1) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2, help="samples of labelled images")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--head-epochs", type=int, default=20, help="fine_tune phase 1")
    parser.add_argument("--epochs", type=int, default=10, help="fine_tune phase 2")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    start = time.time()

    images, labels = digits()
    old = np.flatnonzero(labels < 5)
    new = np.random.default_rng(100).permutation(np.flatnonzero(labels >= 5))
    similar, target = new[: len(new) // 2], new[len(new) // 2 :]  # disjoint images of 5-9
    both = np.concatenate([old, similar])
    base = (16, 32, 64)
    recipes = {  # name: (filters, pretraining images, their labels, epochs); None: random
        "random": (base, None),
        "0-4 x1ep": (base, (images[old], labels[old], 1)),
        "0-4 x3ep": (base, (images[old], labels[old], 3)),
        "0-4 x10ep": (base, (images[old], labels[old], 10)),
        "narrow 0-4": ((8, 16, 32), (images[old], labels[old], 10)),
        "wide 0-4": ((32, 64, 128), (images[old], labels[old], 10)),
        "0-9": (base, (images[both], labels[both], 10)),
    }
    pretrained = {
        name: (filters, None if source is None else pretrain(filters, *source))
        for name, (filters, source) in recipes.items()
    }
    print(f"pretrained {len(recipes)} candidates in {time.time() - start:.0f} s")

    x_new, y_new = images[target], labels[target] - 5
    runs = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        chosen = np.concatenate(
            [
                rng.choice(np.flatnonzero(y_new == c), args.per_class, replace=False)
                for c in range(5)
            ]
        )
        held_out = np.setdiff1d(np.arange(len(y_new)), chosen)
        train = (x_new[chosen], y_new[chosen])
        test = (x_new[held_out], y_new[held_out])
        candidates, weights = {}, {}
        for name, (filters, trained) in pretrained.items():
            net = cnn(filters, seed=2)
            if trained is None:
                calibrate_batchnorm(net, train[0])
            else:
                net.set_weights(trained)
            candidates[name], weights[name] = net, net.get_weights()
        started = time.time()
        ranking = rank_backbones(train, candidates, mode="tf", seed=seed, verbose=2)
        rank_seconds = time.time() - started
        rows = {row["backbone"]: row for row in ranking.rows}
        started = time.time()
        for name, (filters, _) in pretrained.items():
            accuracy = fine_tuned_accuracy(filters, weights[name], train, test, args, seed)
            rows[name]["fine_tuned_accuracy"] = accuracy
        tune_seconds = time.time() - started
        run = {"seed": seed, "rank_seconds": rank_seconds, "fine_tune_seconds": tune_seconds}
        run["rows"] = [rows[name] for name in pretrained]
        run.update(correlations(run["rows"]))
        runs.append(run)
        print(
            f"seed {seed}: ranked in {rank_seconds:.1f} s, fine-tuned in {tune_seconds:.0f} s; "
            f"Spearman with fine-tuned accuracy: LogME {run['spearman_logme']:.2f}, "
            f"probe {run['spearman_probe']:.2f}"
        )
        for row in run["rows"]:
            print(
                f"  {row['backbone']:<12} LogME {row['logme']:8.4f}  probe "
                f"{row['probe_accuracy']:.3f}  fine-tuned {row['fine_tuned_accuracy']:.3f}"
            )

    means = [
        {
            key: float(np.mean([run["rows"][i][key] for run in runs]))
            for key in ("logme", "probe_accuracy", "fine_tuned_accuracy")
        }
        for i in range(len(pretrained))
    ]
    result = {
        "backend": keras.config.backend(),
        "keras": keras.__version__,
        "per_class": args.per_class,
        "test_images": int(len(y_new) - 5 * args.per_class),
        "head_epochs": args.head_epochs,
        "epochs": args.epochs,
        "candidates": list(pretrained),
        "runs": runs,
        "means": dict(zip(pretrained, means, strict=True)),
        **{f"mean_{k}": v for k, v in correlations(means).items()},
        "seconds": round(time.time() - start, 1),
    }
    print(
        f"{result['backend']}, means over {args.seeds} samples: Spearman with fine-tuned "
        f"accuracy: LogME {result['mean_spearman_logme']:.2f}, "
        f"linear probe {result['mean_spearman_probe']:.2f} ({result['seconds']} s in all)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def correlations(rows):
    tuned = [row["fine_tuned_accuracy"] for row in rows]
    return {
        "spearman_logme": float(spearmanr([row["logme"] for row in rows], tuned).statistic),
        "spearman_probe": float(
            spearmanr([row["probe_accuracy"] for row in rows], tuned).statistic
        ),
    }


if __name__ == "__main__":
    main()
