"""Cats vs dogs with a frozen MobileNetV2 (seed 001), evaluated before and after training.

The classic recipe: MobileNetV2 at 160x160 without its ImageNet classifier, frozen,
global average pooling, one Dense unit (1,281 trainable parameters), binary
cross-entropy; evaluated on the validation images before training (about 50%: the head
is random) and after.

Online (`--online`): Google's `cats_and_dogs_filtered` (2,000 training and 1,000
validation photos) and MobileNetV2's ImageNet weights, downloaded by Keras (or read
from its cache directory).

Offline (default): no download. Real photos that ship with scikit-image stand in:
its `lfw_subset`, 100 faces and 100 non-faces (25x25 grey crops, upscaled), a two-class
problem of the same shape. There are no ImageNet weights offline: the backbone has
random weights whose BatchNorm statistics are measured on these images, so the
features are random projections and the accuracies say nothing about transfer
learning; they show the workflow runs.

    python docs/examples/cats_vs_dogs.py [--online] [--short] [--out DIR]
"""

import os
import sys

import keras
import numpy as np
from offline import calibrate_batchnorm, example_parser

import kerastl

DATA_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"


def parse_args(argv):
    parser = example_parser(__doc__, "cats_vs_dogs_out")
    return parser.parse_args(argv)


def offline_images(size, count):
    """scikit-image's faces / non-faces as `(train, validation, class_names)`, 0..255 RGB."""
    from skimage.data import lfw_subset

    faces = lfw_subset().astype("float32")  # 200 images in 0..1: the first 100 are faces
    labels = (np.arange(len(faces)) < 100).astype("float32")
    images = keras.ops.image.resize(faces[..., None] * 255.0, (size, size))
    images = np.repeat(keras.ops.convert_to_numpy(images), 3, axis=-1)
    order = np.random.default_rng(0).permutation(len(faces))[:count]
    cut = len(order) // 2
    train, val = order[:cut], order[cut:]
    return (images[train], labels[train]), (images[val], labels[val]), ["non-face", "face"]


def online_images(size):
    """`cats_and_dogs_filtered` as kerastl class-folder batches (downloaded once)."""
    try:
        root = keras.utils.get_file("cats_and_dogs_filtered.zip", DATA_URL, extract=True)
    except Exception as e:  # noqa: BLE001 (any download failure means the same here)
        sys.exit(f"--online needs the data set from {DATA_URL}: {e}")
    if not os.path.isdir(os.path.join(root, "train")):
        root = os.path.join(root, "cats_and_dogs_filtered")
    train = kerastl.data.from_directory(
        os.path.join(root, "train"), size, label_mode="binary", seed=0
    )
    val = kerastl.data.from_directory(
        os.path.join(root, "validation"), size, label_mode="binary", shuffle=False
    )
    return train, val, list(train.class_names)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    os.makedirs(args.out, exist_ok=True)
    short = args.short and not args.online  # ImageNet's weights need 96x96 and up
    size = 32 if short else 160  # MobileNetV2 takes 32x32 and up
    weights = "imagenet" if args.online else None
    try:  # first: offline, this fails in seconds with what to do
        base = kerastl.FeatureExtractor(
            "mobilenet_v2",
            weights=weights,
            input_shape=(size, size, 3),
            pooling="avg",
            freeze="all",
            backbone_kwargs={"alpha": 0.35} if short else {},
        )
    except kerastl.WeightsDownloadError as e:
        sys.exit(f"--online needs MobileNetV2's ImageNet weights: {e}")
    if args.online:
        train, val, class_names = online_images(size)
        fit_args, eval_args = (train,), (val,)
        epochs = 1 if args.short else 10
    else:
        count = 24 if args.short else 200
        (x, y), (x_val, y_val), class_names = offline_images(size, count)
        calibrate_batchnorm(base, x)
        fit_args, eval_args = (x, y), (x_val, y_val)
        epochs = 1 if args.short else 30
        print("offline: random weights (BatchNorm calibrated on these images), not ImageNet's:")
        print("the accuracies below show the workflow runs, not what transfer learning gives")
    print(f"classes: {class_names}; {size}x{size} images")

    head = kerastl.heads.binary(class_names=class_names)
    model = kerastl.build_model(
        base, head, input_shape=(size, size, 3), optimizer=keras.optimizers.RMSprop(1e-4)
    )
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"parameters: {model.count_params()} in all, {trainable} trainable")

    def accuracy():
        return model.evaluate(*eval_args, return_dict=True, verbose=0)["binary_accuracy"]

    print(f"accuracy before training: {accuracy():.3f}")
    model.fit(*fit_args, epochs=epochs, batch_size=32, verbose=0)
    print(f"accuracy after training: {accuracy():.3f} ({epochs} epoch(s))")
    path = os.path.join(args.out, "cats_vs_dogs.keras")
    kerastl.save_model(model, path, class_names=class_names)
    print(f"saved: {path}")
    return model


if __name__ == "__main__":
    main()
