"""Peak memory of the frozen phase against full fine-tuning, and what the optimizer holds.

    KERAS_BACKEND=torch python benchmarks/bench_memory.py [--size 160] [--count 512]

Each mode runs in a fresh process; its peak RSS (Linux's VmHWM) is reset once the
model is built and the data prepared, so the peak is the run's:

- "built": the model built and one batch predicted, nothing trained (the floor);
- "frozen": `fine_tune(model, data, epochs=0, head_epochs=3, cache=False)`: the
  head trains on the frozen backbone in the model, every step through it;
- "cached": the same with the feature cache (the default): the backbone runs once;
- "full": `fine_tune(model, data, epochs=3, head_epochs=0)`: the whole backbone trains;
- "full_remat", "full_remat_larger": the same with `remat="full"` / `remat="larger_than"`
  (Keras' `RematScope` on the extractor's layers): memory against time.

Beside the peak, the optimizer's variables after the run: how many and their bytes
(frozen weights must carry none: no slots, no gradients), against the model's
weights. MobileNetV2 (alpha 1.0, random weights, BatchNorm calibrated on the
images), digits upscaled to RGB, batch 32.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

MODES = ("built", "frozen", "cached", "full", "full_remat", "full_remat_larger")


def measure(mode, size, count):
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    import kerastl

    digits = load_digits()
    x = np.repeat(digits.images[:count, ..., None] * (255 / 16), 3, axis=-1).astype("float32")
    x = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (size, size)))
    y = digits.target[:count]
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    base(x[:64] / 127.5 - 1.0, training=True)
    for layer in bns:
        layer.momentum = 0.99
    extractor = kerastl.FeatureExtractor(base, pooling="avg", arch=None)
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf", resize=False)
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(10), preprocessing=prep)
    model.predict(x[:32], verbose=0)
    gc.collect()
    before = _status("VmRSS")
    _reset_peak()  # the high-water mark from here: the run, not the data preparation
    seconds = 0.0
    if mode != "built":
        args = {
            "frozen": dict(epochs=0, head_epochs=3, cache=False),
            "cached": dict(epochs=0, head_epochs=3),
            "full": dict(epochs=3, head_epochs=0),
            "full_remat": dict(epochs=3, head_epochs=0, remat="full"),
            "full_remat_larger": dict(epochs=3, head_epochs=0, remat="larger_than"),
        }[mode]
        start = time.perf_counter()
        kerastl.fine_tune(model, (x, y), batch_size=32, verbose=0, **args)
        seconds = time.perf_counter() - start
    optimizer = model.optimizer
    slots = [] if optimizer is None else [v for v in optimizer.variables if len(v.shape) > 0]
    return {
        "backend": keras.config.backend(),
        "mode": mode,
        "size": size,
        "images": count,
        "rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(_status("VmHWM") / 1024, 1),
        "peak_over_before_mb": round((_status("VmHWM") - before) / 1024, 1),
        "seconds": round(seconds, 1),
        "model_weights_mb": round(sum(np.prod(w.shape) * 4 for w in model.weights) / 2**20, 2),
        "trainable_weights_mb": round(
            sum(np.prod(w.shape) * 4 for w in model.trainable_weights) / 2**20, 3
        ),
        "optimizer_slot_variables": len(slots),
        "optimizer_slots_mb": round(sum(np.prod(v.shape) * 4 for v in slots) / 2**20, 3),
    }


def _status(key):
    """A kB figure of /proc/self/status (Linux): VmRSS now, VmHWM the peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak():
    """Resets VmHWM to the current RSS (Linux: `5` to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--json", help="append one JSON line per mode to this file")
    parser.add_argument("--mode", choices=MODES, help="(internal) run one mode here")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=MODES, help="modes to run")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.size, args.count)))
        return
    for mode in args.modes:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--size",
                str(args.size),
                "--count",
                str(args.count),
            ],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ),
        )
        line = done.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
