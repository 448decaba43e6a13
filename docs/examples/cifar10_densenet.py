"""CIFAR-10 on DenseNet201 at 32x32 (seed 003): head first, then the whole backbone.

The seed's recipe: DenseNet201 without its ImageNet classifier at CIFAR's 32x32, then
Flatten, BatchNorm, Dense(256, relu), BatchNorm, Dense(10, softmax), Adam; 10 epochs
with the backbone frozen, then 10 with every layer trainable, validated after each
epoch, with the training and validation curves plotted. In kerastl the head is
`kerastl.heads.multiclass(10, hidden=(256,), batchnorm=True, pooling="flatten")`
(BatchNorm on the input of each Dense layer: the seed's layers exactly), and both
phases are one `kerastl.fine_tune(model, train, validation, head_epochs=10,
epochs=10)` call. The seed opens the backbone by setting `layer.trainable = True` and
calls `fit` again without compiling, a Keras trap: a change of `trainable` takes effect
at the next `compile`, so phase 2 may train the head alone (Keras warns on some
backends only; see docs/troubleshooting.md). `fine_tune` recompiles at the phase
boundary, with a fresh optimizer and lower rates for the backbone (warm-up and cosine
decay per phase instead of the seed's constant Adam rate); the backbone's BatchNorm
layers stay in inference mode.
It evaluates the validation data before training (`history.initial`) and after
(`history.final`); the final accuracy is checked against one computed from `predict`.
`kerastl.plot_history` draws the curves of both phases to a PNG, the boundary marked.

Online (`--online`): CIFAR-10 (`keras.datasets.cifar10`: 50,000 training images, the
10,000 test images as validation, as in the seed) and DenseNet201's ImageNet weights,
downloaded by Keras (or read from its cache directory).

Offline (default): no download. scikit-learn's handwritten digits (`load_digits`,
1,797 8x8 images of 10 classes) stand in, upscaled to 32x32 RGB in 0..255, 80% for
training and 20% for validation. There are no ImageNet weights offline: the backbone
has random weights whose BatchNorm statistics are measured on the digits, so the
features are random projections and the accuracies say nothing about transfer
learning; they show the workflow runs.

`--short` (a smoke test): 16 training and 16 validation images, 1 + 1 epochs at batch
16, and phase 2 opens only DenseNet201's top block
(`unfreeze=kerastl.freeze.TrainTopBlocks(1)`): compiling the training step of the
whole of DenseNet201 takes about a minute on a CPU.

    python docs/examples/cifar10_densenet.py [--online] [--short] [--out DIR]
"""

import os
import sys

import keras
import numpy as np
from offline import calibrate_batchnorm, example_parser

import kerastl

CIFAR10 = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
SIZE = 32  # CIFAR's size, as in the seed: DenseNet201's smallest input


def parse_args(argv):
    parser = example_parser(__doc__, "cifar10_densenet_out")
    return parser.parse_args(argv)


def offline_digits(count=None):
    """scikit-learn's digits as 32x32 RGB in 0..255: `(train, validation, class_names)`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))[:count]
    images = digits.images[order, :, :, None].astype("float32") * (255.0 / 16.0)
    images = keras.ops.convert_to_numpy(keras.ops.image.resize(images, (SIZE, SIZE)))
    images = np.repeat(np.clip(images, 0.0, 255.0), 3, axis=-1)
    labels = digits.target[order]
    cut = len(order) * 4 // 5 if count is None else len(order) // 2
    train = images[:cut], labels[:cut]
    validation = images[cut:], labels[cut:]
    return train, validation, [str(digit) for digit in range(10)]


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    os.makedirs(args.out, exist_ok=True)
    try:  # first: offline, this fails in seconds with what to do
        base = kerastl.FeatureExtractor(
            "densenet201",
            weights="imagenet" if args.online else None,
            input_shape=(SIZE, SIZE, 3),
            freeze="all",
        )  # no pooling: the head flattens DenseNet201's 1x1x1920 feature map
    except kerastl.WeightsDownloadError as e:
        sys.exit(f"--online needs DenseNet201's ImageNet weights: {e}")
    if args.online:
        try:
            (x, y), (x_val, y_val) = keras.datasets.cifar10.load_data()
        except Exception as e:  # noqa: BLE001 (any download failure means the same here)
            sys.exit(f"--online needs CIFAR-10 (keras.datasets.cifar10): {e}")
        y, y_val = y[:, 0], y_val[:, 0]
        if args.short:
            x, y, x_val, y_val = x[:16], y[:16], x_val[:16], y_val[:16]
        x, x_val = x.astype("float32"), x_val.astype("float32")  # raw 0..255
        class_names = CIFAR10
    else:
        (x, y), (x_val, y_val), class_names = offline_digits(32 if args.short else None)
        calibrate_batchnorm(base, x[:256])
        print("offline: random weights (BatchNorm calibrated on the digits), not ImageNet's:")
        print("the accuracies below show the workflow runs, not what transfer learning gives")
    print(f"classes: {len(class_names)}; {len(x)} training, {len(x_val)} validation images")

    head = kerastl.heads.multiclass(
        len(class_names), hidden=(256,), batchnorm=True, pooling="flatten",
        class_names=class_names,
    )  # fmt: skip
    model = kerastl.build_model(base, head, input_shape=(SIZE, SIZE, 3))
    if args.short:  # the top block only: the whole network's training step is slow to build
        head_epochs, epochs, batch_size = 1, 1, 16
        unfreeze = kerastl.freeze.TrainTopBlocks(1)
    else:
        head_epochs, epochs, batch_size = 10, 10, 32
        unfreeze = "none"  # nothing stays frozen: the whole backbone trains, as in the seed
    history = kerastl.fine_tune(
        model,
        (x, y),
        (x_val, y_val),
        head_epochs=head_epochs,
        epochs=epochs,
        unfreeze=unfreeze,
        optimizer="adam",
        batch_size=batch_size,
        verbose=0,
    )
    boundary = history.phase_boundaries[0]
    print(f"validation accuracy before training: {history.initial['accuracy']:.4f}")
    after_head = history.history["val_accuracy"][boundary - 1]
    print(f"validation accuracy after the head phase: {after_head:.4f} ({boundary} epoch(s))")
    print(f"validation accuracy after fine-tuning: {history.final['accuracy']:.4f}")
    # Check the reported figure against predict's (float32, as Keras' metrics compute it).
    right = model.predict(x_val, batch_size=batch_size, verbose=0).argmax(axis=-1) == y_val
    accuracy = np.mean(right, dtype="float32")
    print(f"validation accuracy from predict: {accuracy:.4f} ({right.sum()} of {len(right)} right)")

    path = os.path.join(args.out, "cifar10_densenet_curves.png")
    kerastl.plot_history(history, path)
    print(f"curves: {path} (phases {history.phases}, boundary after epoch {boundary})")
    return history


if __name__ == "__main__":
    main()
