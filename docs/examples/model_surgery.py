"""Model surgery: cut a backbone at a named layer, graft a head, restore weights by name,
freeze by name pattern (seed 004).

The seed cuts a Keras application at a layer, puts its own classifier on the cut,
copies trained parameters from an earlier model into the layers with the same names,
and freezes layers by looping over names. With kerastl each step is one call:
`FeatureExtractor(cut=...)`, `build_model`, `load_weights_by_name` (layers whose shapes
differ, such as an old classifier, are skipped and reported), and a freeze policy
(`FreezePattern`, `TrainPattern`) applied with `set_freeze`.

Online (`--online`): the checkpoint is MobileNetV2 with its ImageNet weights (saved as a
model file) and the new task CIFAR-100 (`keras.datasets.cifar100`), as in the seed.

Offline (default): the checkpoint is a MobileNetV2 classifier trained briefly on crops
of three scikit-image photos (random weights, BatchNorm statistics measured on the
crops), and the new task is those crops with a new head: the accuracy shows the
workflow runs, nothing more.

    python docs/examples/model_surgery.py [--online] [--short] [--out DIR]
"""

import os
import sys

import keras
from offline import calibrate_batchnorm, example_parser, photo_crops, photos

import kerastl
from kerastl.freeze import FreezePattern, TrainPattern

CLASSES = ["cat", "coffee", "astronaut"]  # scikit-image's chelsea, coffee, astronaut

CUT = "block_13_expand_relu"  # stride 16: the last two stages of MobileNetV2 are dropped


def parse_args(argv):
    parser = example_parser(__doc__, "model_surgery_out")
    return parser.parse_args(argv)


def checkpoint(args, size, kwargs, x, y):
    """The earlier model whose parameters are restored: its file path."""
    path = os.path.join(args.out, "checkpoint.keras")
    if args.online:  # ImageNet's MobileNetV2 (without its classifier), as a model file
        try:
            imagenet = kerastl.FeatureExtractor(
                "mobilenet_v2", weights="imagenet", input_shape=(size, size, 3)
            )
        except kerastl.WeightsDownloadError as e:
            sys.exit(f"--online needs MobileNetV2's ImageNet weights: {e}")
        imagenet.backbone.save(path)
        return path
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(size, size, 3), pooling="avg",
        freeze="none", backbone_kwargs=kwargs,
    )  # fmt: skip
    calibrate_batchnorm(extractor, x)
    old = kerastl.build_model(extractor, kerastl.heads.multiclass(3), input_shape=(size, size, 3))
    old.fit(x, y, epochs=1 if args.short else 5, batch_size=32, verbose=0)
    kerastl.save_model(old, path, class_names=["cat", "coffee", "astronaut"])
    return path


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    os.makedirs(args.out, exist_ok=True)
    if args.online:
        size, kwargs, classes = 224, {}, 100
        path = checkpoint(args, size, kwargs, None, None)  # first: offline, fails in seconds
        try:
            (x, y), (x_test, y_test) = keras.datasets.cifar100.load_data()
        except Exception as e:  # noqa: BLE001 (any download failure means the same here)
            sys.exit(f"--online needs CIFAR-100 (keras.datasets.cifar100): {e}")
        y, y_test = y[:, 0], y_test[:, 0]
        if args.short:
            x, y, x_test, y_test = x[:64], y[:64], x_test[:64], y_test[:64]
        x, x_test = x.astype("float32"), x_test.astype("float32")
    else:
        size, classes = (32, 3) if args.short else (96, 3)
        kwargs = {"alpha": 0.35} if args.short else {}
        x, y = photo_crops(photos(CLASSES), size, 4 if args.short else 40, seed=0)
        x_test, y_test = photo_crops(photos(CLASSES), size, 2 if args.short else 20, seed=1)
        print("offline: random weights (BatchNorm calibrated on the crops), not ImageNet's;")
        print("the accuracy shows the workflow runs, nothing more")
        path = checkpoint(args, size, kwargs, x, y)
    print(f"checkpoint: {path}")

    # 1. Cut at a named layer: everything after it is dropped.
    base = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(size, size, 3), cut=CUT,
        backbone_kwargs=kwargs, name="cut_mobilenet_v2",
    )  # fmt: skip
    print(f"cut at {CUT}: features {base.compute_output_shape((None, size, size, 3))}")

    # 2. Graft a new head: pooling, a hidden layer, the new classes.
    head = kerastl.heads.multiclass(classes, hidden=(128,), dropout=0.2, pooling="avg")
    model = kerastl.build_model(base, head, input_shape=(None, None, 3))

    # 3. Restore the checkpoint's parameters into the layers with the same names.
    report = kerastl.load_weights_by_name(model, path)
    print(f"restored by name: {len(report.loaded)} layers; skipped: {sorted(report.skipped)}")

    # 4. Freeze by name pattern: the stem and the first blocks stay fixed; the rest trains.
    kerastl.set_freeze(model, FreezePattern(r"^(Conv1|bn_Conv1|expanded_conv|block_[1-6]_)"))
    backbone = model.get_layer("cut_mobilenet_v2").backbone
    trained = [la.name for la in backbone.layers if la.trainable_weights]
    print(f"FreezePattern: {len(trained)} backbone layers train, first {trained[0]}")
    kerastl.set_freeze(model, TrainPattern(r"^block_1[0-3]_"))  # or: only these train
    trained = [la.name for la in backbone.layers if la.trainable_weights]
    print(f"TrainPattern: {len(trained)} backbone layers train, first {trained[0]}")

    def accuracy():
        return model.evaluate(x_test, y_test, return_dict=True, verbose=0)["accuracy"]

    print(f"accuracy before training: {accuracy():.3f}")
    model.fit(x, y, epochs=1 if args.short else 10, batch_size=32, verbose=0)
    print(f"accuracy after training: {accuracy():.3f}")
    out = os.path.join(args.out, "surgery.keras")
    kerastl.save_model(model, out)
    print(f"saved: {out}")
    return model


if __name__ == "__main__":
    main()
