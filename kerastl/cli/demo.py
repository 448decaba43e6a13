"""`kerastl demo`: transfer learning paying off, offline, on real images, in about a minute.

Real images that ship with scikit-learn: its 1,797 scanned handwritten digits
(8x8, upscaled), each shifted, rotated and zoomed a little (fixed per image), as
a camera would see them. A small CNN learns digits 0-4 from every label it has
(two distorted copies of each); then kerastl transfers it to a new task,
digits 5-9, from 10 labels per class: `fine_tune` converges a new head on the
frozen network's cached features (the network runs once), then fine-tunes the
whole network for 30 epochs at block-wise lower rates. The network was
pretrained for only 5 epochs, so its features have far to move: phase 2 runs
at `lr=3e-3` (peak 1.5e-3 at the head, 100x lower at the first block) instead
of `fine_tune`'s default `1e-3`, which gains about half as much over the
converged head; `lr=1e-2, lr_mult=10` un-learned on one torch seed of three
(docs/benchmarks.md). The baseline is the same network trained from scratch
on the same 50 labels (90 epochs; its BatchNorm statistics recomputed on them
afterwards, without which it scores at chance).
`benchmarks/transfer_suite.py --tasks demo` runs these steps over seeds.
With `--weights imagenet`, MobileNetV2's published ImageNet
weights replace the digits-0-4 network (they must already be in the Keras
cache directory).

The model is saved, reloaded, and classifies one image file by name; its
evaluation report on the test images is written to `<out>/report/`.
"""

import os
import time

import keras
import numpy as np

import kerastl
from kerastl._keras_private import flatten_layers
from kerastl.cli.output import UsageError
from kerastl.evaluation.report import write_report
from kerastl.training.plots import PlotDependencyError

NEW_CLASSES = ["5", "6", "7", "8", "9"]
LR = 3e-3  # phase 2 peaks at LR / 2 at the head, 100x lower at the first block
SCRATCH_LR = 5e-3  # the network from scratch: Adam for 90 epochs


def digits(size, channels):
    """scikit-learn's digits as `(images in 0..255, labels)`, `size` x `size` x `channels`."""
    try:
        from sklearn.datasets import load_digits  # an optional dependency: the demo's data
    except ImportError:
        raise ImportError(
            "The demo's images ship with scikit-learn: pip install 'kerastl[demo]'"
        ) from None
    data = load_digits()
    scale = size // 8
    images = np.kron(data.images, np.ones((scale, scale))) * (255.0 / 16.0)
    images = np.repeat(images[..., None], channels, axis=-1).astype("float32")
    return images, data.target


def distort(images, seed):
    """Each image shifted, rotated and zoomed a little, at random (fixed by `seed`)."""
    layers = keras.Sequential(
        [
            keras.layers.RandomRotation(0.08, seed=seed),
            keras.layers.RandomTranslation(0.15, 0.15, seed=seed + 1),
            keras.layers.RandomZoom(0.15, seed=seed + 2),
        ]
    )
    return np.asarray(keras.ops.convert_to_numpy(layers(images, training=True)))


def recalibrate_batchnorm(model, images):
    """BatchNorm statistics of `images` (one pass): a model trained on a few dozen
    images has moving statistics far from its batches' and predicts at chance."""
    layers = [
        layer
        for layer in flatten_layers(model, include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer in layers:
        layer.momentum = 0.99


def few_labels(labels, per_class, seed):
    """`(train, test)` indices: `per_class` images of each class to train on, the rest to test."""
    rng = np.random.default_rng(seed)
    train = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    )
    test = np.setdiff1d(np.arange(len(labels)), train)
    return rng.permutation(train), test


def small_cnn(input_shape, classes, name):
    """The demo's network: three conv stages, global pooling (`features`), a classifier."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"stage{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{i}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"stage{i}_pool")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="classifier")(features)
    return keras.Model(inputs, outputs, name=name)


def _accuracy(model, x, y):
    # One batch: one traced shape per model (TensorFlow warns about retracing otherwise).
    return float(np.mean(np.argmax(model.predict(x, batch_size=len(x), verbose=0), -1) == y))


def run(args, out):
    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    quick = args.quick
    os.makedirs(args.out, exist_ok=True)
    imagenet = args.weights == "imagenet"
    size, channels = (96, 3) if imagenet else (32, 1)
    if imagenet:  # before any work: offline without them, the answer comes at once
        out.say("MobileNetV2 with ImageNet weights (from the Keras cache directory)")
        try:
            extractor = kerastl.FeatureExtractor(
                "mobilenet_v2", weights="imagenet", input_shape=(size, size, 3), pooling="avg"
            )
        except kerastl.WeightsDownloadError as e:
            raise UsageError(
                f"--weights imagenet needs MobileNetV2's weights in the Keras cache directory ({e})"
            ) from None
    images, labels = digits(size, channels)
    old, new = labels < 5, labels >= 5
    per_class = 10
    copies = 1 if quick else 2
    source = np.concatenate([distort(images[old], args.seed + 10 * i) for i in range(copies)])
    source_labels = np.concatenate([labels[old]] * copies)
    x_new, y_new = distort(images[new], args.seed + 100), labels[new] - 5
    train, test = few_labels(y_new, per_class, args.seed)
    x_train, y_train, x_test, y_test = x_new[train], y_new[train], x_new[test], y_new[test]
    if quick:  # a smoke run of every step, not a result
        x_test, y_test = x_test[:100], y_test[:100]
        source, source_labels = source[:300], source_labels[:300]
    epochs, scratch_epochs = (1, 2) if quick else (30, 90)
    pretrain_epochs = 1 if quick else 5
    results = {"backend": keras.config.backend(), "quick": quick, "train_images": len(x_train)}
    results["test_images"] = len(x_test)

    # 1. The pretrained network: digits 0-4 with every label, or ImageNet's.
    if imagenet:
        preprocessing = kerastl.preprocessing.pipeline(extractor, resize=False)
        source = "ImageNet"
    else:
        pretrained = small_cnn((size, size, channels), 5, "digits_0_4")
        pretrained.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        out.say(f"1. pretraining a small CNN on digits 0-4: {len(source)} labelled images")
        pretrained.fit(
            source,
            source_labels,
            epochs=pretrain_epochs,
            batch_size=32,
            verbose=out.verbose,
        )
        backbone_path = os.path.join(args.out, "digits_0_4.keras")
        pretrained.save(backbone_path)
        # Cut at the last feature map, pooled by the extractor (the same features as the
        # network's own `features` layer): the report's Grad-CAM needs the map.
        extractor = kerastl.FeatureExtractor(
            backbone_path, cut="stage2_pool", pooling="avg", freeze="all"
        )
        preprocessing = False
        source = "digits 0-4"
    results["pretrained_on"] = source

    # 2. Transfer with few labels: a new head on the frozen network, then fine-tuning.
    head = kerastl.heads.multiclass(5, class_names=NEW_CLASSES)
    model = kerastl.build_model(extractor, head, preprocessing, input_shape=(size, size, channels))
    out.say(
        f"2. transfer to digits 5-9 from {per_class} labels per class ({len(x_train)} images); "
        f"testing on {len(x_test)}"
    )
    # The head converges on the training images alone (its L2 chosen without looking at the
    # test images), then the whole network fine-tunes; the test images give the curves.
    results["accuracy_before_training"] = _accuracy(model, x_test, y_test)
    kerastl.fine_tune(model, (x_train, y_train), epochs=0, verbose=0)
    results["accuracy_after_frozen_phase"] = _accuracy(model, x_test, y_test)
    history = kerastl.fine_tune(
        model,
        (x_train, y_train),
        (x_test, y_test),
        head_epochs=0,
        epochs=epochs,
        lr=LR,
        batch_size=10,
        verbose=0,
    )
    results["accuracy_after_fine_tuning"] = history.final["accuracy"]

    # 3. The same network from scratch on the same few labels.
    keras.utils.set_random_seed(args.seed)
    if imagenet:
        scratch_base = kerastl.FeatureExtractor(
            "mobilenet_v2",
            weights=None,
            input_shape=(size, size, 3),
            pooling="avg",
            freeze="none",
            bn="train",
        )
        scratch = kerastl.build_model(
            scratch_base, kerastl.heads.multiclass(5), preprocessing, compile=False
        )
    else:
        scratch = small_cnn((size, size, channels), 5, "digits_5_9_scratch")
    scratch.compile(keras.optimizers.Adam(SCRATCH_LR), "sparse_categorical_crossentropy")
    scratch.fit(x_train, y_train, epochs=scratch_epochs, batch_size=10, verbose=0)
    recalibrate_batchnorm(scratch, x_train)
    results["accuracy_from_scratch"] = _accuracy(scratch, x_test, y_test)

    # 4. What the feature cache saved in the frozen phase.
    results.update(_cache_pass(model, x_train, x_test, quick))

    # 5. Saved, reloaded, and one image file classified by name.
    path = os.path.join(args.out, "digits_5_9.keras")
    kerastl.save_model(model, path, class_names=NEW_CLASSES, history=history)
    results["model"] = os.path.abspath(path)
    results["curves"] = _curves(history, os.path.join(args.out, "curves.png"), out)
    results["report"] = _evaluation_report(model, x_test, y_test, args.out, out)
    results.update(_classify_a_file(path, x_test[0], y_test[0], args.out, out))
    results["seconds"] = round(time.perf_counter() - started, 1)
    _report(results, epochs, scratch_epochs, out)
    return results


def _cache_pass(model, x_train, x_test, quick):
    """The time of one pass of the frozen network over the images (after a warm-up
    pass): what the cache paid once, and what every head epoch would cost without it."""
    if quick:
        return {"pass_seconds": None}
    # The layers before the head, as the cache ran them (inference mode).
    front = keras.Model(model.inputs, model.get_layer("head").input)
    seconds = []
    for _ in range(2):  # the first pass traces or compiles
        start = time.perf_counter()
        front.predict(x_train, batch_size=10, verbose=0)
        front.predict(x_test, batch_size=10, verbose=0)
        seconds.append(time.perf_counter() - start)
    return {"pass_seconds": round(seconds[-1], 3)}


def _curves(history, path, out):
    try:
        kerastl.plot_history(history, path)
    except PlotDependencyError:
        out.say("   (curves not drawn: pip install 'kerastl[plot]')")
        return None
    return os.path.abspath(path)


def _evaluation_report(model, x_test, y_test, directory, out):
    """The fine-tuned model's report on the test images (`kerastl report`'s page)."""
    try:
        found = write_report(
            model, (x_test, y_test), os.path.join(directory, "report"), title="kerastl demo"
        )
    except PlotDependencyError:
        out.say("   (no report written: pip install 'kerastl[plot]')")
        return None
    return found["files"]["html"]


def _classify_a_file(path, image, label, directory, out):
    reloaded = kerastl.load_model(path, compile=False)
    image_path = os.path.join(directory, f"a_handwritten_{NEW_CLASSES[int(label)]}.png")
    try:
        from PIL import Image  # an optional dependency: kerastl[images]
    except ImportError:
        out.say("   (no image file classified: pip install 'kerastl[images]')")
        return {"image": None, "predicted": None}
    pixels = np.clip(image, 0, 255).astype("uint8")
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(image_path)
    prediction = kerastl.Predictor(reloaded).predict(image_path, top_k=1)[0]
    return {
        "image": os.path.abspath(image_path),
        "true": NEW_CLASSES[int(label)],
        "predicted": prediction.label,
        "probability": round(prediction.top[0][1], 3),
        "reloaded_on": keras.config.backend(),
    }


def _report(results, epochs, scratch_epochs, out):
    n = results["test_images"]
    out.say()
    out.say(
        f"digits 5-9 from {results['train_images']} labels, accuracy on {n} test images "
        f"({results['backend']}):"
    )
    rows = [
        ("before training (new head)", results["accuracy_before_training"]),
        ("after the frozen phase (converged head)", results["accuracy_after_frozen_phase"]),
        (f"after fine-tuning (+{epochs} epochs)", results["accuracy_after_fine_tuning"]),
        (f"from scratch ({scratch_epochs} epochs)", results["accuracy_from_scratch"]),
    ]
    for name, value in rows:
        out.say(f"  {name:<40} {value:.3f}")
    if results.get("pass_seconds") is not None:
        out.say(
            "feature cache: the head converged on features the frozen network computed once "
            f"({results['pass_seconds']:.2f} s a pass over the images, measured), not once "
            "per head epoch"
        )
    out.say(f"model: {results['model']}")
    if results.get("curves"):
        out.say(f"curves: {results['curves']}")
    if results.get("report"):
        out.say(f"report: {results['report']}")
    if results.get("image"):
        out.say(
            f"reloaded, it reads {os.path.basename(results['image'])} as "
            f"{results['predicted']!r} (p={results['probability']:.2f})"
        )
    out.say(f"{results['seconds']:.0f} s in all")
