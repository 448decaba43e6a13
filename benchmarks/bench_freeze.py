"""Frozen backbone vs full fine-tuning: epoch time and peak memory, kerastl vs hand-written.

    KERAS_BACKEND=jax python benchmarks/bench_freeze.py [--images 256] [--size 96] [--gpu]

Five measurements on the current backend, each in a fresh process so that peak
memory does not mix: kerastl frozen (`FeatureExtractor(freeze="all")`),
kerastl full fine-tuning (`freeze="none", bn="affine"`), the same two written
by hand with `keras.applications` (`base.trainable = False/True`, called with
`training=False`, as the Keras transfer-learning guide does), and a plain
forward pass (`predict`) over the same images, the floor for a frozen epoch.
MobileNetV2 (alpha 1.0, random weights: the speed does not depend on them),
global average pooling, `Dense(10)`, Adam, batch 32. The timed epoch follows a
one-batch warm-up `fit` that traces/compiles the train step.

Peak memory: the highest resident set sampled (every 2 ms) during the warm-up
and timed runs minus the resident set just before them (framework, model and
images loaded), i.e. what training adds; the process's lifetime peak
(`ru_maxrss`) is shown too. With `--gpu` the device's peak allocation is
reported and used for the ratio.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

KINDS = ("kerastl_frozen", "kerastl_full", "keras_frozen", "keras_full", "predict")


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakSampler:
    """Highest resident set seen while running (ru_maxrss also counts model building)."""

    def __init__(self, interval=0.002):
        self.peak = _rss_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    def _loop(self, interval):
        while not self._done.wait(interval):
            self.peak = max(self.peak, _rss_bytes())

    def stop(self):
        self._done.set()
        self._thread.join()
        return max(self.peak, _rss_bytes())


def _device_peak():
    import keras

    backend = keras.config.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.max_memory_allocated()
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use")
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    except Exception:  # a CPU-only build: no device figure
        return None
    return None


def _build(kind, size):
    import keras

    import kerastl

    inputs = keras.Input((size, size, 3))
    if kind.startswith("kerastl"):
        frozen = kind == "kerastl_frozen"
        extractor = kerastl.FeatureExtractor(
            "mobilenet_v2",
            weights=None,
            input_shape=(size, size, 3),
            pooling="avg",
            freeze="all" if frozen else "none",
            bn="frozen" if frozen else "affine",
        )
        features = extractor(inputs)
    else:
        base = keras.applications.MobileNetV2(
            include_top=False, weights=None, input_shape=(size, size, 3)
        )
        base.trainable = kind != "keras_frozen"
        x = base(inputs, training=False)
        features = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(features))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def measure(kind, images, size, batch):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (images, size, size, 3)).astype("float32")
    y = (np.arange(images) % 10).astype("int32")
    model = _build("keras_frozen" if kind == "predict" else kind, size)
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    baseline = _rss_bytes()
    sampler = _PeakSampler()
    if kind == "predict":
        model.predict(x[:batch], batch_size=batch, verbose=0)
        start = time.perf_counter()
        model.predict(x, batch_size=batch, verbose=0)
    else:
        model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    added = sampler.stop() - baseline
    return {
        "kind": kind,
        "seconds": seconds,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "added_rss": max(added, 0),
        "device_peak": _device_peak(),
        "trainable_params": trainable,
    }


def _run(kind, args):
    command = [
        sys.executable,
        __file__,
        "--measure",
        kind,
        "--images",
        str(args.images),
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _mb(value):
    return "-" if value is None else f"{value / 2**20:,.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--gpu", action="store_true", help="run on the visible GPU (nox gpu)")
    parser.add_argument("--measure", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.images, args.size, args.batch)))
        return

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(
        f"backend={backend}  MobileNetV2@{args.size}  {args.images} images  "
        f"batch {args.batch}  gpu={args.gpu}"
    )
    rows = {kind: _run(kind, args) for kind in KINDS}
    print(
        f"{'run':16} {'seconds':>8} {'trainable':>11} {'peak RSS MB':>12} "
        f"{'added MB':>9} {'device MB':>10}"
    )
    for kind, row in rows.items():
        print(
            f"{kind:16} {row['seconds']:8.2f} {row['trainable_params']:11,} "
            f"{_mb(row['peak_rss']):>12} {_mb(row['added_rss']):>9} "
            f"{_mb(row['device_peak']):>10}"
        )

    def ratio(a, b, key="seconds"):
        return rows[a][key] / max(rows[b][key], 1e-9)

    memory = "device_peak" if args.gpu and rows["kerastl_full"]["device_peak"] else "added_rss"
    print(f"\nratios ({backend}):")
    print(
        f"  time  frozen/full      kerastl {ratio('kerastl_frozen', 'kerastl_full'):.2f}"
        f"   keras {ratio('keras_frozen', 'keras_full'):.2f}"
    )
    print(
        f"  time  frozen/predict   kerastl {ratio('kerastl_frozen', 'predict'):.2f}"
        f"   keras {ratio('keras_frozen', 'predict'):.2f}   (goal: kerastl <= 1.05)"
    )
    print(
        f"  time  kerastl/keras    frozen {ratio('kerastl_frozen', 'keras_frozen'):.2f}"
        f"   full {ratio('kerastl_full', 'keras_full'):.2f}   (goal: frozen <= 1.00)"
    )
    print(
        f"  memory ({memory}) frozen/full   kerastl "
        f"{ratio('kerastl_frozen', 'kerastl_full', memory):.2f}"
        f"   keras {ratio('keras_frozen', 'keras_full', memory):.2f}   (goal: <= 0.5)"
    )


if __name__ == "__main__":
    main()
