"""Loads beside a saver: does every load read one version of the file?

    KERAS_BACKEND=jax python benchmarks/load_consistency.py [--tries 2000] [--overhead]

A writer process saves two versions of a tiny classifier to one path in a
loop with `kerastl.save_model` (an atomic rename each time). Version k's
class names start with `vk` and its weights make class k win, so a load
that took its class names from one save and its weights from the other is
caught. The reader alternates `kerastl.load_model` (names from
`kerastl_metadata`, outputs from calling the model) and `kerastl.Predictor`
(names and probabilities from `predict`). Prints one JSON line; exits 1 if
any load mixed versions.

`--overhead` also times loading a MobileNetV2 (alpha 1.0, 224 px, ~14 MB)
`.keras` file: `kerastl.load_model` against `keras.saving.load_model`, and
the private snapshot copy on its own.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

import kerastl
from kerastl.files import model_files

IMAGE = np.zeros((4, 4, 3), "uint8")


def version(k):
    model = keras.Sequential(
        [
            keras.Input((4, 4, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    bias = np.array([0.0, 4.0 * k - 2.0], "float32")
    model.get_layer("out").set_weights([np.zeros((3, 2), "float32"), bias])
    return model, [f"v{k}-first", f"v{k}-second"]


def writer(path):
    """Saves version 0, then 1, then 0 ... until SIGTERM; prints the number of saves."""
    versions = [version(0), version(1)]
    saves = 0

    def stop(signum, frame):
        print(saves, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        model, names = versions[saves % 2]
        kerastl.save_model(model, path, class_names=names)
        saves += 1
        if saves == 2:
            print("ready", flush=True)


def read_once(path, use_predictor):
    """(version the class names say, version the outputs say)."""
    if use_predictor:
        predictor = kerastl.Predictor(path)
        names = predictor.class_names
        probabilities = predictor.predict(IMAGE)[0].probabilities
        outputs = [probabilities[name] for name in names]
    else:
        model = kerastl.load_model(path)
        names = model.kerastl_metadata["class_names"]
        outputs = keras.ops.convert_to_numpy(model(IMAGE[None].astype("float32")))[0]
    return int(names[0].startswith("v1")), int(outputs[1] > outputs[0])


def consistency(tries):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        proc = subprocess.Popen(
            [sys.executable, __file__, "--writer", path], stdout=subprocess.PIPE, text=True
        )
        try:
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("the writer did not start")
            counts = {
                kind: {"tries": 0, "mixed": 0, "errors": 0, "seen": [0, 0]}
                for kind in ("load_model", "Predictor")
            }
            errors = {}
            durations = []
            for i in range(tries):
                kind = "Predictor" if i % 2 else "load_model"
                count = counts[kind]
                count["tries"] += 1
                start = time.perf_counter()
                try:
                    names, outputs = read_once(path, kind == "Predictor")
                except Exception as e:  # reported, not hidden
                    count["errors"] += 1
                    key = f"{type(e).__name__}: {str(e)[:160]}"
                    errors[key] = errors.get(key, 0) + 1
                    continue
                durations.append(time.perf_counter() - start)
                count["seen"][names] += 1
                count["mixed"] += names != outputs
        finally:
            proc.terminate()
            saves = proc.communicate(timeout=60)[0].strip()
    return {
        "tries": tries,
        "mixed": sum(c["mixed"] for c in counts.values()),
        "by_kind": counts,
        "errors": errors,
        "writer_saves": int(saves) if saves.isdigit() else saves,
        "median_read_s": round(statistics.median(durations), 4) if durations else None,
    }


def overhead(repeats=7):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "mobilenet_v2.keras")
        model = keras.applications.MobileNetV2(weights=None)
        kerastl.save_model(model, path)
        keras.backend.clear_session()

        def best(load):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                load()
                times.append(time.perf_counter() - start)
                keras.backend.clear_session()
            return min(times), statistics.median(times)

        def snapshot():
            with model_files.snapshot(path):
                pass

        keras_best, keras_median = best(lambda: keras.saving.load_model(path, compile=False))
        kerastl_best, kerastl_median = best(lambda: kerastl.load_model(path, compile=False))
        copy_best, copy_median = best(snapshot)
        size = os.path.getsize(path)
    return {
        "file_mb": round(size / 1e6, 1),
        "keras_load_s": {"best": round(keras_best, 3), "median": round(keras_median, 3)},
        "kerastl_load_s": {"best": round(kerastl_best, 3), "median": round(kerastl_median, 3)},
        "snapshot_copy_s": {"best": round(copy_best, 4), "median": round(copy_median, 4)},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=2000)
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(args.writer)
        return
    result = {"backend": keras.config.backend(), "keras": keras.version()}
    result.update(consistency(args.tries))
    if args.overhead:
        result["overhead"] = overhead()
    print(json.dumps(result))
    sys.exit(1 if result["mixed"] else 0)


if __name__ == "__main__":
    main()
