"""CIFAR-100 on a frozen Xception (seed 002), checked against `predict`.

The seed's recipe: Xception without its ImageNet classifier, frozen, global average
pooling, Dense(1024, relu), Dense(100, softmax); one-hot labels and categorical
cross-entropy, SGD, 5 epochs at batch 32, then `evaluate` on the test split at batch
128. In kerastl the head is `kerastl.heads.multiclass(100, hidden=(1024,),
sparse_labels=False)` and the model takes raw 0..255 images.

CIFAR's images are 32x32 but Xception needs at least 71x71 (the seed's
`Xception(include_top=False)` fails on 32x32 inputs): the preprocessing inside the
model (`kerastl.build_model`'s default `kerastl.preprocessing.pipeline`) resizes them
to the extractor's input size before Xception's own normalisation, so the model is fed
32x32 images as they come, and so is a saved copy of it. The test accuracy from
`evaluate` is checked against one computed from `predict` (argmax against the labels):
the figure a training loop reports should be the one the model gives.

Online (`--online`): CIFAR-100 (`keras.datasets.cifar100`: 50,000 training and 10,000
test images) and Xception's ImageNet weights, downloaded by Keras (or read from its
cache directory); the images go up to 160x160 in the model (ImageNet's Xception was
trained at 299x299: closer to it is better and slower).

Offline (default): no download. Random crops of eight colour photos that ship with
scikit-image and scikit-learn (a cat, coffee, an astronaut, a rocket, galaxies, stained
tissue, a temple, a flower) stand in, one class per photo, resized to 32x32 like
CIFAR; 50 training and 20 test crops per class, drawn apart. There are no ImageNet
weights offline: the backbone has random weights whose BatchNorm statistics are
measured on these images, so the features are random projections and the accuracies
say nothing about transfer learning; they show the workflow runs. Xception runs at
71x71, its smallest.

`--short`: 2 training and 1 test crop per class, 1 epoch (a smoke test).

    python docs/examples/cifar100_xception.py [--online] [--short] [--out DIR]
"""

import os
import sys

import keras
import numpy as np
from offline import calibrate_batchnorm, example_parser, photo_crops, photos

import kerastl

ONLINE_SIZE = 160  # what Xception sees online: CIFAR's 32x32 resized in the model
OFFLINE_SIZE = 71  # Xception's smallest input


def parse_args(argv):
    parser = example_parser(__doc__, "cifar100_xception_out")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    os.makedirs(args.out, exist_ok=True)
    size = ONLINE_SIZE if args.online else OFFLINE_SIZE
    try:  # first: offline, this fails in seconds with what to do
        base = kerastl.FeatureExtractor(
            "xception",
            weights="imagenet" if args.online else None,
            input_shape=(size, size, 3),
            pooling="avg",
            freeze="all",
        )
    except kerastl.WeightsDownloadError as e:
        sys.exit(f"--online needs Xception's ImageNet weights: {e}")
    if args.online:
        try:
            (x, y), (x_test, y_test) = keras.datasets.cifar100.load_data()
        except Exception as e:  # noqa: BLE001 (any download failure means the same here)
            sys.exit(f"--online needs CIFAR-100 (keras.datasets.cifar100): {e}")
        if args.short:
            x, y, x_test, y_test = x[:64], y[:64], x_test[:128], y_test[:128]
        x, x_test = x.astype("float32"), x_test.astype("float32")  # raw 0..255
        class_names = None  # CIFAR-100's fine labels: 100 classes, ids 0..99
        num_classes = 100
    else:
        images = photos()
        x, y = photo_crops(images, 32, 2 if args.short else 50, seed=0, sides=(4, 2))
        x_test, y_test = photo_crops(images, 32, 1 if args.short else 20, seed=1, sides=(4, 2))
        class_names, num_classes = list(images), len(images)
        calibrate_batchnorm(base, x)
        print("offline: random weights (BatchNorm calibrated on these images), not ImageNet's:")
        print("the accuracies below show the workflow runs, not what transfer learning gives")
    y, y_test = y.reshape(-1), y_test.reshape(-1)
    print(f"classes: {num_classes}; {len(x)} training, {len(x_test)} test images")
    print(f"images: {x.shape[1]}x{x.shape[2]}, resized to {size}x{size} inside the model")

    # One-hot labels and categorical cross-entropy, as in the seed.
    y_onehot = keras.utils.to_categorical(y, num_classes)
    y_test_onehot = keras.utils.to_categorical(y_test, num_classes)
    head = kerastl.heads.multiclass(
        num_classes, sparse_labels=False, hidden=(1024,), class_names=class_names
    )
    model = kerastl.build_model(
        base, head, input_shape=x.shape[1:], optimizer=keras.optimizers.SGD()
    )  # the default preprocessing resizes to `size` and normalises for Xception
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"parameters: {model.count_params()} in all, {trainable} trainable")

    epochs = 1 if args.short else 5
    model.fit(x, y_onehot, epochs=epochs, batch_size=32, verbose=0)
    results = model.evaluate(x_test, y_test_onehot, batch_size=128, return_dict=True, verbose=0)
    print(f"test loss: {results['loss']:.4f} ({epochs} epoch(s))")
    print(f"test accuracy: {results['accuracy']:.4f}")
    # Check the reported figure against predict's (float32, as Keras' metrics compute it).
    right = model.predict(x_test, batch_size=128, verbose=0).argmax(axis=-1) == y_test
    accuracy = np.mean(right, dtype="float32")
    print(f"test accuracy from predict: {accuracy:.4f} ({right.sum()} of {len(right)} right)")
    return model


if __name__ == "__main__":
    main()
