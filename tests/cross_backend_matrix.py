"""The cross-backend matrix: one model per source backend, saved once, loaded on all three.

`tests/test_cross_backend.py` runs this script in one process per backend and phase:

    python cross_backend_matrix.py save ROOT WEIGHTS   (on each source backend)
    python cross_backend_matrix.py load ROOT           (on each target backend)

The saved model holds every serialisable kerastl part: the preprocessing `Pipeline`
(`GrayscaleToRGB`, `Resize`, augmentation, `BackboneNormalization`), a `FeatureExtractor`
(registry MobileNetV2, calibrated weights, a freeze policy, LoRA adapters in
`LoRAWrapper`s, GeM pooling in `GlobalPooling2D`), a `TaskHead` with a hidden layer,
compiled with `PerLayerLR` around Adam on a `OneCycle` schedule and kerastl's
`SparseCategoricalCrossentropy`, trained one step. It is written three ways:

- `kerastl.keras`: `kerastl.save_model` with class names and history;
- `keras.keras`: Keras' own `model.save`, read back by `keras.saving.load_model`;
- `plain.keras`: `model.save` after a recompile with plain Adam: what Keras alone
  writes (torch: a private optimizer module; JAX: `jit_compile=True`).

`load` reads every source's three files, predicts the shared images, trains a step where
the file is meant to be trained on, and prints one JSON report; a failed file reports its
traceback, so one broken pair fails one test.
"""

import json
import os
import sys
import time
import traceback

import keras
import numpy as np

import kerastl
from kerastl import heads, preprocessing
from kerastl.freeze import LoRA, TrainTopBlocks
from kerastl.layers.lora import adapters
from kerastl.losses import SparseCategoricalCrossentropy
from kerastl.optimizers import OneCycle, PerLayerLR

CLASSES = ["astronaut", "coffee", "cat"]
FILES = ("kerastl.keras", "keras.keras", "plain.keras")
LORA = LoRA(rank=2, alpha=4)
MULTIPLIERS = {"head": 0.5}


def images(root):
    """uint8 32x32 photographs (the pipeline resizes them to 96x96): 6 to train, 6 to predict."""
    data = np.load(os.path.join(root, "images.npy"))
    return data[:6], data[6:12], np.arange(6) % 3


def build(weights):
    fx = kerastl.FeatureExtractor(
        "mobilenet_v2",
        weights=weights,
        input_shape=(96, 96, 3),
        pooling="gem",
        freeze=TrainTopBlocks(1),
        lora=LORA,
        backbone_kwargs={"alpha": 0.35},
        name="feature_extractor",
    )
    schedule = OneCycle(1e-2, total_steps=10)
    return kerastl.build_model(
        fx,
        heads.multiclass(3, hidden=(8,)),
        preprocessing.pipeline(fx, augment="medium", seed=0),
        optimizer=PerLayerLR(keras.optimizers.Adam(schedule), multipliers=MULTIPLIERS),
        loss=SparseCategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
    )


def save(root, weights):
    """Builds, trains one step and writes the three files into ROOT/<this backend>/."""
    source = keras.config.backend()
    directory = os.path.join(root, source)
    os.makedirs(directory, exist_ok=True)
    train, test, labels = images(root)
    keras.utils.set_random_seed(0)
    model = build(weights)
    history = model.fit(train, labels, batch_size=6, epochs=1, verbose=0)
    kerastl.save_model(
        model, os.path.join(directory, FILES[0]), class_names=CLASSES, history=history
    )
    model.save(os.path.join(directory, FILES[1]))
    expected = model.predict(test, verbose=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.save(os.path.join(directory, FILES[2]))
    return {
        "predictions": expected.tolist(),
        "history": history.history["loss"],
        "adapted": [w.name for w in adapters(model.get_layer("feature_extractor"))],
        "plain_compile": plain_compile_config(os.path.join(directory, FILES[2])),
    }


def plain_compile_config(path):
    import zipfile

    with zipfile.ZipFile(path) as zf:
        recorded = json.loads(zf.read("config.json"))["compile_config"]
    return {"optimizer_module": recorded["optimizer"]["module"], "jit": recorded["jit_compile"]}


def load(root, source, name):
    """What a target sees of `source`'s file `name`."""
    path = os.path.join(root, source, name)
    train, test, labels = images(root)
    start = time.perf_counter()
    model = keras.saving.load_model(path) if name == "keras.keras" else kerastl.load_model(path)
    loaded = time.perf_counter()
    predictions = model.predict(test, verbose=0)
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
    if name != "keras.keras":  # trained on: the optimizer state crossed too
        head = model.get_layer("head")
        before = [keras.ops.convert_to_numpy(w) for w in head.trainable_weights]
        model.fit(train, labels, epochs=1, batch_size=6, verbose=0)
        after = [keras.ops.convert_to_numpy(w) for w in head.trainable_weights]
        report["fit_s"] = time.perf_counter() - predicted
        report["iterations"].append(int(optimizer.iterations))
        report["head_moved"] = max(float(np.abs(a - b).max()) for a, b in zip(after, before))
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
