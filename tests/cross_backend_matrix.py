"""The cross-backend matrix: models saved once per source backend, loaded on all three.

`tests/test_cross_backend.py` runs this script in one process per backend and phase:

    python cross_backend_matrix.py save ROOT WEIGHTS   (on each source backend)
    python cross_backend_matrix.py load ROOT           (on each target backend)

The classifier holds every serialisable kerastl part: the preprocessing `Pipeline`
(`GrayscaleToRGB`, `Resize` from 32 to 96 px, the "medium" augmentation,
`BackboneNormalization`), a `FeatureExtractor` (registry MobileNetV2 with calibrated
weights, a freeze policy, LoRA adapters on its top block, GeM pooling in
`GlobalPooling2D`), a `TaskHead` with a hidden layer, the `TemperatureScaling` that
`kerastl.calibrate` puts after it, compiled with `PerLayerLR` around
Adam on a `OneCycle` schedule and kerastl's `SparseCategoricalCrossentropy`, trained one
step. It is written three ways:

- `kerastl.keras`: `kerastl.save_model` with class names and history;
- `keras.keras`: Keras' own `model.save`, read back by `keras.saving.load_model`;
- `plain.keras`: `model.save` after a recompile with plain Adam: what Keras alone
  writes (torch: a private optimizer module; JAX: `jit_compile=True`).

A fourth file, `lora.keras`, holds LoRA on every kind of layer it adapts (convolution,
depthwise, separable, grouped, dense) in a small user backbone, fitted a few steps.

`load` reads every source's files, predicts the shared images, trains a step where the
file is meant to be trained on, and prints one JSON report; a failed file reports its
traceback, so one broken pair fails one test.
"""

import json
import os
import sys
import time
import traceback
import zipfile

import keras
import numpy as np
from support import calibrate_batchnorm, tf_mode

import kerastl
from kerastl import heads, preprocessing
from kerastl.freeze import LoRA, TrainTopBlocks
from kerastl.layers import TemperatureScaling
from kerastl.layers.lora import adapters
from kerastl.losses import SparseCategoricalCrossentropy
from kerastl.optimizers import OneCycle, PerLayerLR

CLASSES = ["astronaut", "coffee", "cat"]
FILES = ("kerastl.keras", "keras.keras", "plain.keras", "lora.keras")
MULTIPLIERS = {"head": 0.5}


def images(root):
    """uint8 32x32 photographs: 6 to train, 6 to predict, 12 in all (and 6 labels)."""
    data = np.load(os.path.join(root, "images.npy"))
    return data[:6], data[6:12], data, np.arange(6) % 3


def classifier(weights):
    fx = kerastl.FeatureExtractor(
        "mobilenet_v2",
        weights=weights,
        input_shape=(96, 96, 3),
        pooling="gem",
        freeze=TrainTopBlocks(1),
        lora=LoRA(rank=2, alpha=4, blocks=["block_16"]),  # the top block: a small train step
        backbone_kwargs={"alpha": 0.35},
        name="feature_extractor",
    )
    built = kerastl.build_model(
        fx,
        heads.multiclass(3, hidden=(8,)),
        preprocessing.pipeline(fx, augment="medium", seed=0),
        compile=False,
    )
    # Calibrated, as `kerastl.calibrate` leaves a model: a temperature after the head.
    outputs = TemperatureScaling(1.5, name="temperature_scaling")(built.outputs[0])
    model = keras.Model(built.inputs[0], outputs, name=built.name)
    model.compile(
        optimizer=PerLayerLR(keras.optimizers.Adam(OneCycle(1e-2, 10)), multipliers=MULTIPLIERS),
        loss=SparseCategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
    )
    return model


def every_lora_kind(photos):
    """Every kind of layer LoRA adapts, BatchNorm calibrated on the 32 px photos."""
    keras.utils.set_random_seed(3)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw_conv")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(name="dw_relu")(x)
    x = layers.SeparableConv2D(16, 3, strides=2, padding="same", name="sep_conv")(x)
    x = layers.BatchNormalization(name="sep_bn")(x)
    x = layers.Conv2D(16, 1, groups=2, activation="relu", name="group_conv")(x)
    x = layers.Dense(12, activation="relu", name="dense")(x)
    backbone = calibrate_batchnorm(keras.Model(inputs, x, name="tiny"), tf_mode(photos))
    fx = kerastl.FeatureExtractor(
        backbone, pooling="avg", arch=None, lora=LoRA(rank=2, alpha=4), name="feature_extractor"
    )
    prep = preprocessing.pipeline(fx, mode="tf")
    model = kerastl.build_model(fx, heads.multiclass(3), preprocessing=prep)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(photos, np.arange(len(photos)) % 3, epochs=3, batch_size=6, verbose=0)
    return model


def save(root, weights):
    """Builds, trains and writes the four files into ROOT/<this backend>/."""
    directory = os.path.join(root, keras.config.backend())
    os.makedirs(directory, exist_ok=True)
    path = {name: os.path.join(directory, name) for name in FILES}
    train, test, every, labels = images(root)
    keras.utils.set_random_seed(0)
    model = classifier(weights)
    history = model.fit(train, labels, batch_size=6, epochs=1, verbose=0)
    kerastl.save_model(model, path["kerastl.keras"], class_names=CLASSES, history=history)
    model.save(path["keras.keras"])
    expected = model.predict(test, verbose=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.save(path["plain.keras"])
    with zipfile.ZipFile(path["plain.keras"]) as zf:
        recorded = json.loads(zf.read("config.json"))["compile_config"]
    lora_model = every_lora_kind(every)
    kerastl.save_model(lora_model, path["lora.keras"])
    return {
        "predictions": expected.tolist(),
        "history": history.history["loss"],
        "plain_compile": {
            "module": recorded["optimizer"]["module"],
            "jit": recorded["jit_compile"],
        },
        "lora.keras": {
            "predictions": lora_model.predict(every, verbose=0).tolist(),
            "adapted": [w.name for w in adapters(lora_model.get_layer("feature_extractor"))],
        },
        **{
            name: {"adapted": [w.name for w in adapters(model.get_layer("feature_extractor"))]}
            for name in FILES[:3]
        },
    }


def load(root, source, name):
    """What a target sees of `source`'s file `name`."""
    path = os.path.join(root, source, name)
    train, test, every, labels = images(root)
    start = time.perf_counter()
    model = keras.saving.load_model(path) if name == "keras.keras" else kerastl.load_model(path)
    loaded = time.perf_counter()
    predictions = model.predict(every if name == "lora.keras" else test, verbose=0)
    predicted = time.perf_counter()
    fx = model.get_layer("feature_extractor")
    optimizer = model.optimizer
    report = {
        "predictions": predictions.tolist(),
        "load_s": loaded - start,
        "predict_s": predicted - loaded,
        "extractor": isinstance(fx, kerastl.FeatureExtractor),
        "freeze": repr(fx.freeze),
        "lora": repr(fx.lora),
        "adapted": [w.name for w in adapters(fx)],
        "head": kerastl.heads.head_info(model)["task"],
        "jit_compile": model.jit_compile,
        "optimizer": type(optimizer).__name__,
        "loss": type(model.loss).__name__,
        "iterations": [int(optimizer.iterations)],
        "meta": getattr(model, "kerastl_metadata", None),
    }
    if isinstance(optimizer, PerLayerLR):
        report["inner"] = type(optimizer.inner_optimizer).__name__
        report["schedule"] = type(optimizer.inner_optimizer._learning_rate).__name__
        report["multipliers"] = optimizer.multipliers
    if name in ("kerastl.keras", "plain.keras"):  # trained on: the optimizer state crossed too
        head = model.get_layer("head")
        before = [keras.ops.convert_to_numpy(w) for w in head.trainable_weights]
        model.fit(train, labels, epochs=1, batch_size=6, verbose=0)
        after = [keras.ops.convert_to_numpy(w) for w in head.trainable_weights]
        report["fit_s"] = time.perf_counter() - predicted
        report["iterations"].append(int(optimizer.iterations))
        moved = [float(np.abs(a - b).max()) for a, b in zip(after, before, strict=True)]
        report["head_moved"] = max(moved)
    return report


def load_all(root):
    out = {}
    for source in sorted(os.listdir(root)):
        if not os.path.isdir(os.path.join(root, source)):
            continue
        for name in FILES:
            keras.backend.clear_session()
            try:
                out[f"{source}/{name}"] = load(root, source, name)
            except Exception:  # reported, so that one file fails one test
                out[f"{source}/{name}"] = {"error": traceback.format_exc()[-4000:]}
    return out


if __name__ == "__main__":
    command, root, *rest = sys.argv[1:]
    report = save(root, *rest) if command == "save" else load_all(root)
    print(json.dumps(report))
