"""Save a trained classifier, load it, and classify an image file by name (seed 000).

The seed saves `model_final.h5`, loads it, and turns `predict`'s argmax into a class
name by hand. With kerastl, one `.keras` file keeps the class names and the training
history and loads on TensorFlow, JAX or PyTorch; `kerastl.Predictor` reads, resizes and
classifies an image file; a legacy `.h5` file (Keras 2 / tf.keras) still loads.

Online (`--online`): CIFAR-10 (`keras.datasets.cifar10`) on MobileNetV2 with ImageNet
weights; the image file is one CIFAR-10 test image (or `--image PATH`).

Offline (default): crops of three photos that ship with scikit-image (`chelsea`, a
cat; `coffee`; `astronaut`) are the three classes, and a held-out crop of the cat is
the image file. The backbone has random weights (BatchNorm statistics measured on the
crops): the accuracy and the predicted class show the workflow runs, nothing more.

    python docs/examples/save_share_predict.py [--online] [--short] [--out DIR]
"""

import logging
import os
import sys

import keras
from offline import calibrate_batchnorm, example_parser, photo_crops, photos

import kerastl

CLASSES = ["cat", "coffee", "astronaut"]  # scikit-image's chelsea, coffee, astronaut

CIFAR10 = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def parse_args(argv):
    parser = example_parser(__doc__, "save_share_predict_out")
    parser.add_argument("--image", help="an image file to classify (default: one is written)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    os.makedirs(args.out, exist_ok=True)
    size = 32 if args.short else 96
    kwargs = {"alpha": 0.35} if args.short else {}
    try:  # first: offline, this fails in seconds with what to do
        base = kerastl.FeatureExtractor(
            "mobilenet_v2",
            weights="imagenet" if args.online else None,
            input_shape=(size, size, 3),
            pooling="avg",
            backbone_kwargs=kwargs,
        )
    except kerastl.WeightsDownloadError as e:
        sys.exit(f"--online needs MobileNetV2's ImageNet weights: {e}")
    if args.online:
        try:
            (x, y), (x_test, y_test) = keras.datasets.cifar10.load_data()
        except Exception as e:  # noqa: BLE001 (any download failure means the same here)
            sys.exit(f"--online needs CIFAR-10 (keras.datasets.cifar10): {e}")
        class_names, y, y_test = CIFAR10, y[:, 0], y_test[:, 0]
        if args.short:
            x, y, x_test, y_test = x[:64], y[:64], x_test[:64], y_test[:64]
        x, x_test = x.astype("float32"), x_test.astype("float32")
        image = x_test[0]
    else:
        class_names = CLASSES
        x, y = photo_crops(photos(CLASSES), size, 4 if args.short else 40, seed=0)
        x_test, y_test = photo_crops(photos(CLASSES), size, 2 if args.short else 20, seed=1)
        image = x_test[0]  # a cat
        calibrate_batchnorm(base, x)
        print("offline: random weights (BatchNorm calibrated on the crops), not ImageNet's;")
        print("the accuracy and the prediction show the workflow runs, nothing more")

    head = kerastl.heads.multiclass(len(class_names), class_names=class_names)
    model = kerastl.build_model(base, head, input_shape=(None, None, 3))
    epochs = 1 if args.short else 10
    history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    accuracy = model.evaluate(x_test, y_test, return_dict=True, verbose=0)["accuracy"]
    print(f"test accuracy: {accuracy:.3f}")

    # Share: one .keras file with the class names and the history.
    path = os.path.join(args.out, "model_final.keras")
    kerastl.save_model(model, path, class_names=class_names, history=history)
    meta = kerastl.read_metadata(path)
    print(f"saved: {path} ({meta['task']}, classes {meta['class_names']})")

    # Someone else, on any backend: load it and classify an image file by name.
    image_path = args.image
    if image_path is None:
        from PIL import Image

        image_path = os.path.join(args.out, "new_image.png")
        Image.fromarray(image.astype("uint8")).save(image_path)
    loaded = kerastl.load_model(path)
    result = kerastl.Predictor(loaded).predict(image_path, top_k=3)[0]
    top = ", ".join(f"{name} {p:.2f}" for name, p in result.top)
    print(f"predicted class of {image_path}: {result.label} ({top})")

    # The seed's legacy HDF5 file: it keeps no class names, so pass them.
    legacy = os.path.join(args.out, "model_final.h5")
    logging.getLogger("absl").setLevel(logging.ERROR)  # Keras' "legacy format" warning
    model.save(legacy)
    old = kerastl.load_model(legacy)
    label = kerastl.Predictor(old, class_names=class_names).predict(image_path)[0].label
    print(f"legacy .h5: {legacy} ({old.kerastl_metadata['format']}), predicts {label}")
    return result


if __name__ == "__main__":
    main()
