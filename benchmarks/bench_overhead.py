"""kerastl's overhead: the same network built with kerastl and by hand with `keras.applications`.

    KERAS_BACKEND=tensorflow python benchmarks/bench_overhead.py [--size 96] [--repeats 30]
        [--steps 4] [--images 256] [--batch 32] [--warmup 1] [--gpu]

Goal: kerastl / hand-written time <= 1.02 for each of three measurements, all in
one process on the current backend (`KERAS_BACKEND`):

- frozen train step: `kerastl.FeatureExtractor("mobilenet_v2", freeze="all")`
  against `base.trainable = False` and `base(x, training=False)`, the Keras
  transfer-learning guide's recipe;
- full train step: `FeatureExtractor(freeze="none", bn="frozen")` against
  `base.trainable = True` with every `BatchNormalization` layer of the base set
  `trainable = False`, still called with `training=False`. This is exactly what
  `bn="frozen"` does (`kerastl.freeze.policies.set_trainable`: every backbone
  layer trains except BatchNorm; the extractor calls the backbone with
  `training=False`), and Keras 3 runs a non-trainable BatchNorm in inference
  mode. A hand-written `base.trainable = True` alone would not be like for
  like: Keras 3 passes `fit`'s `training=True` down through the nested base,
  overriding the `training=False` it was built with (keras-team/keras#20285),
  so its BatchNorm would compute batch statistics (docs/benchmarks.md);
- predict: the forward pass of the frozen pair, batch by batch.

The network: MobileNetV2 (alpha 1.0, `weights=None`: speed does not depend on
the weights) at `--size`, global average pooling, `Dense(10)` with softmax,
preprocessing inside the model. kerastl: `kerastl.preprocessing.pipeline(extractor)`
(its default: to RGB, resize to the backbone's size, `x / 127.5 - 1`) and
`kerastl.build_model(extractor, kerastl.heads.multiclass(10), prep)` with its
default compile (Adam 1e-3, sparse categorical cross-entropy, accuracy). By hand,
as the guide does it: `keras.Input((size, size, 3))`, `Rescaling(1 / 127.5,
offset=-1)` (`mobilenet_v2.preprocess_input`), the base, `GlobalAveragePooling2D`,
`Dense(10, activation="softmax")`, compiled with the same optimizer, loss and
metric. Inputs are raw 0..255 float32 images, the size the base takes.

Checked before timing (the run fails loudly otherwise):

- all four models hold the same weights, copied from one MobileNetV2 whose
  BatchNorm statistics are calibrated on a separate batch of images (with its
  initial statistics a random MobileNetV2 outputs a uniform softmax, which would
  make any comparison vacuous), and their outputs are not uniform;
- they give the same outputs, eager and compiled (`predict_on_batch`), to
  `--tolerance` (1e-4 on the softmax outputs: float rounding alone, e.g.
  `x / 127.5 - 1` against `x * (1 / 127.5) - 1`, reaches ~2e-5 through the 52
  calibrated layers, while other weights or another BatchNorm mode move them by
  more than 1e-1);
- each pair has the same number of trainable and of non-trainable weights, and
  of parameters;
- the first train step's loss agrees within each pair (training runs the same
  forward pass, BatchNorm in inference mode in both), and the full pair's
  BatchNorm moving statistics have not moved after the warm-up.

Timing: each model first runs one call that traces / compiles (excluded) and
`--warmup` more. Then `--repeats` rounds; in each, every measurement runs
`--steps` calls on kerastl then on the hand-written model (the order alternates
from round to round, ABBA...), on the same fixed batches. A train step is one
`model.train_on_batch`, a predict step one `model.predict_on_batch`, on inputs
already converted to backend tensors: each is the compiled step behind a thin,
identical wrapper that returns host values (so the device is synchronised, GPU
included). `fit` / `predict` would add a per-call data adapter (a `tf.data`
pipeline on TensorFlow), callbacks and an epoch iterator, whose cost varies from
call to call; per-step calls keep that noise out. Python's garbage collector is
collected between rounds and off within them.

Reported per measurement: median milliseconds per step of each model over the
rounds, the ratio of the medians, the spread of the per-round ratios (median and
interquartile range: a ratio whose IQR straddles 1.02 is within the noise) and
the ratio of the fastest rounds.
The last line printed is one JSON object. It also lists the layers of each
model left unbuilt (`unbuilt_layers`): Keras rebuilds a model with one on every
`train_on_batch` (JAX, torch) and, on JAX, runs an eager forward pass on every
`predict_on_batch`, a per-call cost that `fit` and `predict` pay once per call.

Defaults per backend, sized for about 3-4 minutes on a 2-core CPU (JAX runs
convolutions on CPU about 5x slower than TensorFlow): tensorflow 30 rounds x 4
steps, jax 16 x 1, torch 30 x 3.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

MEASUREMENTS = ("frozen_train", "full_train", "predict")
GOAL = 1.02
# (repeats, steps) per backend: about 2 minutes of timed rounds on 2 CPU cores.
DEFAULTS = {"tensorflow": (30, 4), "jax": (16, 1), "torch": (30, 3)}
LOSS_RTOL = 1e-4


# --- models --------------------------------------------------------------------


def _kerastl_model(size, frozen):
    import kerastl

    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2",
        weights=None,
        input_shape=(size, size, 3),
        pooling="avg",
        freeze="all" if frozen else "none",
        bn="frozen",
    )
    prep = kerastl.preprocessing.pipeline(extractor)
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(10), prep)
    head = model.get_layer("head")
    return model, extractor.backbone, head.dense_layers[-1]


def _hand_model(size, frozen):
    import keras

    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size, size, 3), alpha=1.0
    )
    if frozen:
        base.trainable = False
    else:
        base.trainable = True
        # What kerastl's bn="frozen" does: every layer trains but BatchNorm.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(10, activation="softmax")
    model = keras.Model(inputs, dense(x))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model, base, dense


def _copy_layer(src, dst):
    """Assigns `src`'s variables to `dst`'s, matched by name and shape."""
    import keras

    if type(src) is not type(dst) or len(src.weights) != len(dst.weights):
        raise SystemExit(f"layer mismatch: {src.name} ({type(src).__name__}) vs {dst.name}")
    targets = {w.name: w for w in dst.weights}
    for w in src.weights:
        target = targets.get(w.name)
        if target is None or tuple(target.shape) != tuple(w.shape):
            raise SystemExit(f"weight mismatch in layer {src.name}: {w.name} {tuple(w.shape)}")
        target.assign(keras.ops.convert_to_numpy(w))


def _source_network(size, images):
    """The weights all four models get: MobileNetV2 with BatchNorm calibrated, and a Dense(10).

    A randomly initialised MobileNetV2 whose BatchNorm statistics are the
    initial ones (mean 0, variance 1) shrinks its activations to ~1e-12 by the
    last block: every output would be softmax's uniform 0.1, and comparing
    outputs would prove nothing. Each BatchNorm's moving statistics are set to
    the batch statistics of `images` (`x / 127.5 - 1`; one pass with
    `training=True` and momentum 0), so activations and outputs are of order 1.
    """
    import keras

    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size, size, 3), alpha=1.0
    )
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    base(images / 127.5 - 1.0, training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    dense = keras.layers.Dense(10)
    dense.build((None, base.output_shape[-1]))
    return None, base, dense


def _copy_network(src, dst):
    """Copies backbone and output layer of `src` (model, base, dense) into `dst`."""
    src_layers = [layer for layer in src[1].layers if layer.weights]
    dst_layers = [layer for layer in dst[1].layers if layer.weights]
    if [layer.name for layer in src_layers] != [layer.name for layer in dst_layers]:
        raise SystemExit("the two backbones do not have the same layers")
    for a, b in zip(src_layers, dst_layers, strict=True):
        _copy_layer(a, b)
    _copy_layer(src[2], dst[2])


def _counts(model):
    import numpy as np

    def params(weights):
        return int(sum(np.prod(w.shape) for w in weights))

    return {
        "trainable_weights": len(model.trainable_weights),
        "non_trainable_weights": len(model.non_trainable_weights),
        "trainable_params": params(model.trainable_weights),
        "non_trainable_params": params(model.non_trainable_weights),
    }


def _unbuilt(model):
    """Names of the model's layers left unbuilt: Keras then builds the model again per call."""
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else model.layers
    return sorted({layer.name for layer in layers if not layer.built})


def _bn_moving_stats(base):
    import keras
    import numpy as np

    return [
        np.array(keras.ops.convert_to_numpy(w))
        for layer in base.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for w in (layer.moving_mean, layer.moving_variance)
    ]


# --- checks --------------------------------------------------------------------


def _max_diff(a, b):
    import numpy as np

    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


def _check_pairing(models, x, tolerance):
    """Same forward outputs for all four models; same weight counts within each pair."""
    import keras
    import numpy as np

    reference = keras.ops.convert_to_numpy(models["kerastl_frozen"][0](x, training=False))
    spread = float(np.mean(np.ptp(reference, axis=-1)))
    if not spread > 1e-3:
        raise SystemExit(
            f"FAIL: the network's outputs are (nearly) uniform (mean max-min {spread:.3g}): "
            "comparing them would prove nothing"
        )
    diffs = {}
    for name, (model, _, _) in models.items():
        diffs[f"eager_{name}"] = _max_diff(
            keras.ops.convert_to_numpy(model(x, training=False)), reference
        )
    # The compiled forward pass, as the predict measurement runs it.
    compiled = models["kerastl_frozen"][0].predict_on_batch(x)
    diffs["predict_kerastl_frozen"] = _max_diff(compiled, reference)
    hand = models["keras_frozen"][0].predict_on_batch(x)
    diffs["predict_keras_frozen"] = _max_diff(hand, compiled)
    worst = max(diffs.values())
    if worst > tolerance:
        raise SystemExit(
            f"FAIL: the kerastl and hand-written networks differ (max |diff| {worst:.3g} > "
            f"{tolerance:g}): {diffs}"
        )
    counts = {name: _counts(model) for name, (model, _, _) in models.items()}
    for mode in ("frozen", "full"):
        if counts[f"kerastl_{mode}"] != counts[f"keras_{mode}"]:
            raise SystemExit(
                f"FAIL: {mode} pair trains different weights: kerastl "
                f"{counts[f'kerastl_{mode}']} vs hand-written {counts[f'keras_{mode}']}"
            )
    return worst, counts


# --- timing --------------------------------------------------------------------


def _step(model, kind, batch):
    if kind == "predict":
        model.predict_on_batch(batch[0])
    else:
        model.train_on_batch(batch[0], batch[1])


def _timed(model, kind, batches):
    start = time.perf_counter()
    for batch in batches:
        _step(model, kind, batch)
    return time.perf_counter() - start


def _percentile(values, q):
    import numpy as np

    return float(np.percentile(values, q))


def _summary(kerastl_times, keras_times, steps):
    ratios = [a / b for a, b in zip(kerastl_times, keras_times, strict=True)]
    kerastl_median = statistics.median(kerastl_times) / steps
    keras_median = statistics.median(keras_times) / steps
    return {
        "kerastl_ms": 1000 * kerastl_median,
        "keras_ms": 1000 * keras_median,
        "ratio": kerastl_median / keras_median,
        "round_ratio_median": statistics.median(ratios),
        "round_ratio_iqr": [_percentile(ratios, 25), _percentile(ratios, 75)],
        "min_ratio": min(kerastl_times) / min(keras_times),
    }


# --- environment ---------------------------------------------------------------


def _versions(backend):
    import keras
    import numpy as np

    import kerastl

    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "kerastl": kerastl.__version__,
        "numpy": np.__version__,
    }
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    elif backend == "jax":
        import jax
        import jaxlib

        versions["jax"] = jax.__version__
        versions["jaxlib"] = jaxlib.__version__
    elif backend == "torch":
        import torch

        versions["torch"] = torch.__version__
    return versions


def _device(backend):
    """`"cpu"` or `"gpu: <name>"`: where the backend runs the models."""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"gpu: {details.get('device_name', gpus[0].name)}"
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "gpu":
                return f"gpu: {device.device_kind}"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"gpu: {torch.cuda.get_device_name(0)}"
    except Exception:  # a build without device queries: report the CPU
        return "cpu"
    return "cpu"


def _machine(backend):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    machine = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
    }
    if backend == "torch":
        import torch

        machine["torch_threads"] = torch.get_num_threads()
    return machine


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# --- main ----------------------------------------------------------------------


def run(args, backend):
    import keras
    import numpy as np

    t0 = time.perf_counter()
    load_start = _loadavg()
    device = _device(backend)
    if args.gpu and not device.startswith("gpu"):
        raise SystemExit(f"--gpu: no GPU visible to {backend}")

    rng = np.random.default_rng(args.seed)
    n_batches = max(1, args.images // args.batch)
    images = rng.uniform(0, 255, (n_batches * args.batch, args.size, args.size, 3))
    labels = rng.integers(0, 10, n_batches * args.batch)
    # Calibrates BatchNorm: other images than the timed ones, so that the first train
    # step's loss tells BatchNorm's inference mode from its training mode.
    calibration = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    batches = [
        (
            keras.ops.convert_to_tensor(images[i : i + args.batch].astype("float32")),
            keras.ops.convert_to_tensor(labels[i : i + args.batch].astype("int32")),
        )
        for i in range(0, len(images), args.batch)
    ]

    keras.utils.set_random_seed(args.seed)
    source = _source_network(args.size, calibration)
    models = {}
    for mode in ("frozen", "full"):
        models[f"kerastl_{mode}"] = _kerastl_model(args.size, mode == "frozen")
        models[f"keras_{mode}"] = _hand_model(args.size, mode == "frozen")
    for network in models.values():
        _copy_network(source, network)
    del source
    max_diff, counts = _check_pairing(models, batches[0][0], args.tolerance)
    bn_before = {mode: _bn_moving_stats(models[f"{mode}_full"][1]) for mode in ("kerastl", "keras")}
    t_built = time.perf_counter()

    # Pairs: (measurement, kerastl model, hand-written model).
    pairs = [
        ("frozen_train", models["kerastl_frozen"][0], models["keras_frozen"][0]),
        ("full_train", models["kerastl_full"][0], models["keras_full"][0]),
        ("predict", models["kerastl_frozen"][0], models["keras_frozen"][0]),
    ]
    # First call of each: traces / compiles. The first train step's loss must agree.
    first_losses = {}
    compile_seconds = {}
    for kind, kerastl_model, keras_model in pairs:
        for who, model in (("kerastl", kerastl_model), ("keras", keras_model)):
            start = time.perf_counter()
            if kind == "predict":
                model.predict_on_batch(batches[0][0])
            else:
                logs = model.train_on_batch(*batches[0], return_dict=True)
                first_losses[f"{who}_{kind}"] = float(logs["loss"])
            compile_seconds[f"{who}_{kind}"] = time.perf_counter() - start
    for kind in ("frozen_train", "full_train"):
        a, b = first_losses[f"kerastl_{kind}"], first_losses[f"keras_{kind}"]
        if abs(a - b) > LOSS_RTOL * max(abs(a), abs(b)):
            raise SystemExit(f"FAIL: first {kind} step losses differ: kerastl {a} vs keras {b}")
    for _ in range(args.warmup):
        for kind, kerastl_model, keras_model in pairs:
            for model in (kerastl_model, keras_model):
                _timed(model, kind, batches[: args.steps])
    for who in ("kerastl", "keras"):
        after = _bn_moving_stats(models[f"{who}_full"][1])
        moved = max(_max_diff(a, b) for a, b in zip(bn_before[who], after, strict=True))
        if moved != 0.0:
            raise SystemExit(f"FAIL: {who} full fine-tuning moved BatchNorm statistics ({moved})")
    t_warm = time.perf_counter()

    times = {(kind, who): [] for kind in MEASUREMENTS for who in ("kerastl", "keras")}
    for r in range(args.repeats):
        steps = [batches[(r * args.steps + i) % n_batches] for i in range(args.steps)]
        order = ("kerastl", "keras") if r % 2 == 0 else ("keras", "kerastl")
        gc.collect()
        gc.disable()
        try:
            for kind, kerastl_model, keras_model in pairs:
                chosen = {"kerastl": kerastl_model, "keras": keras_model}
                for who in order:
                    times[kind, who].append(_timed(chosen[who], kind, steps))
        finally:
            gc.enable()
    t_end = time.perf_counter()
    unbuilt = {who: _unbuilt(models[f"{who}_frozen"][0]) for who in ("kerastl", "keras")}

    results = {
        kind: _summary(times[kind, "kerastl"], times[kind, "keras"], args.steps)
        for kind in MEASUREMENTS
    }
    return {
        "results": results,
        "device": device,
        "max_abs_diff": max_diff,
        "first_losses": first_losses,
        "counts": counts,
        "jit_compile": {
            "kerastl": bool(models["kerastl_frozen"][0].jit_compile),
            "keras": bool(models["keras_frozen"][0].jit_compile),
        },
        "unbuilt_layers": unbuilt,
        "compile_seconds": compile_seconds,
        "phase_seconds": {
            "build_and_check": t_built - t0,
            "compile_and_warmup": t_warm - t_built,
            "timed_rounds": t_end - t_warm,
        },
        "loadavg": [load_start, _loadavg()],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="image height and width")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=256, help="images cycled through, in batches")
    parser.add_argument(
        "--repeats", type=int, help="timed rounds (default per backend: tf 30, jax 16, torch 30)"
    )
    parser.add_argument(
        "--steps", type=int, help="calls per model per round (default: tf 4, jax 1, torch 3)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds after compiling")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="max |difference| of the softmax outputs"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu", action="store_true", help="require a GPU (fail without one)")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in DEFAULTS:
        raise SystemExit(f"KERAS_BACKEND must be one of {sorted(DEFAULTS)}. Received: {backend}")
    repeats, steps = DEFAULTS[backend]
    args.repeats = repeats if args.repeats is None else args.repeats
    args.steps = steps if args.steps is None else args.steps
    if min(args.repeats, args.steps, args.size, args.batch, args.images) < 1 or args.warmup < 0:
        raise SystemExit("--repeats, --steps, --size, --batch and --images must be >= 1")

    import keras

    if keras.config.backend() != backend:
        raise SystemExit(f"keras runs {keras.config.backend()}, KERAS_BACKEND says {backend}")
    print(
        f"backend={backend}  MobileNetV2@{args.size}  batch {args.batch}  "
        f"{args.repeats} rounds x {args.steps} steps  (kerastl vs hand-written, ABBA)",
        flush=True,
    )
    out = run(args, backend)
    results = out["results"]

    print(f"device: {out['device']}   max |output diff| {out['max_abs_diff']:.2g}")
    c = out["counts"]
    for mode in ("frozen", "full"):
        n = c[f"kerastl_{mode}"]
        print(
            f"{mode:6} pair: {n['trainable_weights']} trainable weights "
            f"({n['trainable_params']:,} params), {n['non_trainable_weights']} non-trainable "
            f"({n['non_trainable_params']:,}) in both"
        )
    for who, names in out["unbuilt_layers"].items():
        if names:
            print(
                f"warning: the {who} model has layers that are never built: {names}. Keras "
                "then builds the whole model again on every train_on_batch (JAX, torch) and, "
                "on JAX, runs an eager forward pass on every predict_on_batch."
            )
    print(
        f"\n{'measurement':14} {'kerastl ms':>10} {'keras ms':>9} {'ratio':>7} "
        f"{'round median':>12} {'round IQR':>13} {'min ratio':>9}  goal <= {GOAL}"
    )
    for kind in MEASUREMENTS:
        r = results[kind]
        low, high = r["round_ratio_iqr"]
        verdict = "ok" if r["ratio"] <= GOAL else "over"
        if low <= GOAL < high:
            verdict += " (within noise)"
        print(
            f"{kind:14} {r['kerastl_ms']:10.1f} {r['keras_ms']:9.1f} {r['ratio']:7.3f} "
            f"{r['round_ratio_median']:12.3f} {f'{low:.3f}-{high:.3f}':>13} "
            f"{r['min_ratio']:9.3f}  {verdict}"
        )
    phases = out["phase_seconds"]
    print(
        "\nseconds: build+check {build_and_check:.1f}, compile+warm-up "
        "{compile_and_warmup:.1f}, timed {timed_rounds:.1f}".format(**phases)
        + f"; load average {out['loadavg'][0]} -> {out['loadavg'][1]}"
    )

    summary = {
        "backend": backend,
        **{f"{kind}_ratio": round(results[kind]["ratio"], 4) for kind in MEASUREMENTS},
        **{
            f"{kind}_iqr": [round(v, 4) for v in results[kind]["round_ratio_iqr"]]
            for kind in MEASUREMENTS
        },
        "goal": GOAL,
        "ms_per_step": {
            kind: {
                "kerastl": round(results[kind]["kerastl_ms"], 2),
                "keras": round(results[kind]["keras_ms"], 2),
            }
            for kind in MEASUREMENTS
        },
        "min_ratio": {kind: round(results[kind]["min_ratio"], 4) for kind in MEASUREMENTS},
        "config": {
            "model": "mobilenet_v2",
            "alpha": 1.0,
            "size": args.size,
            "batch": args.batch,
            "images": args.images,
            "repeats": args.repeats,
            "steps": args.steps,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        "device": out["device"],
        "jit_compile": out["jit_compile"],
        "unbuilt_layers": out["unbuilt_layers"],
        "max_abs_diff": out["max_abs_diff"],
        "trainable_weights": {
            mode: out["counts"][f"kerastl_{mode}"]["trainable_weights"]
            for mode in ("frozen", "full")
        },
        "non_trainable_weights": {
            mode: out["counts"][f"kerastl_{mode}"]["non_trainable_weights"]
            for mode in ("frozen", "full")
        },
        "versions": _versions(backend),
        "machine": _machine(backend),
        "loadavg": out["loadavg"],
        "seconds": {k: round(v, 1) for k, v in phases.items()},
        "argv": sys.argv[1:],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
