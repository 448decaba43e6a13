"""LoRA against the frozen base and full fine-tuning, on the demo's transfer task.

    KERAS_BACKEND=tensorflow python benchmarks/lora_transfer.py [--seeds 3]

`kerastl demo`'s task: a small CNN pretrained on digits 0-4 (two distorted copies,
every label), transferred to digits 5-9 from 10 labels per class, scored by
`predict` on the 846 other images. The same pretrained network, three recipes,
each `kerastl.fine_tune` with the demo's settings (60 head epochs, lr 1e-2):

- "frozen": the head alone, 90 epochs;
- "full": 60 head epochs, then 30 with the whole backbone training (lr_mult 10,
  the demo's);
- "lora4" / "lora8": 60 head epochs, then 30 with rank-4 / rank-8 adapters on
  every convolution (`unfreeze=kerastl.freeze.LoRA(rank=4)`; `fine_tune`'s
  LoRA default `lr_mult=1`): the backbone's own weights frozen.

"trainable" is the fraction of the model's parameters that train in phase 2.
"""

import argparse
import json
import os
import tempfile

import keras
import numpy as np

import kerastl
from kerastl.cli.demo import digits, distort, few_labels, small_cnn

RECIPES = ("frozen", "full", "lora4", "lora8")


def pretrained_backbone(directory, seed):
    images, labels = digits(32, 1)
    old = labels < 5
    source = np.concatenate([distort(images[old], seed + 10 * i) for i in range(2)])
    keras.utils.set_random_seed(seed)
    model = small_cnn((32, 32, 1), 5, "digits_0_4")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(source, np.concatenate([labels[old]] * 2), epochs=5, batch_size=32, verbose=0)
    path = os.path.join(directory, "digits_0_4.keras")
    model.save(path)
    new = labels >= 5
    return path, distort(images[new], seed + 100), labels[new] - 5


def run(recipe, backbone, x, y, seed):
    train, test = few_labels(y, 10, seed)
    keras.utils.set_random_seed(seed)
    extractor = kerastl.FeatureExtractor(backbone, cut="features", freeze="all")
    model = kerastl.build_model(
        extractor, kerastl.heads.multiclass(5), False, input_shape=(32, 32, 1)
    )
    unfreeze = "none"
    options = {"lr_mult": 10}
    if recipe.startswith("lora"):
        unfreeze, options = kerastl.freeze.LoRA(rank=int(recipe[4:])), {}
    kerastl.fine_tune(
        model,
        (x[train], y[train]),
        head_epochs=90 if recipe == "frozen" else 60,
        epochs=0 if recipe == "frozen" else 30,
        lr=1e-2,
        unfreeze=unfreeze,
        **options,
        batch_size=10,
        verbose=0,
    )
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    predicted = np.argmax(model.predict(x[test], batch_size=128, verbose=0), -1)
    return float(np.mean(predicted == y[test])), trainable / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {"backend": keras.config.backend(), "runs": []}
    with tempfile.TemporaryDirectory() as directory:
        backbone, x, y = pretrained_backbone(directory, 0)
        for seed in range(args.seeds):
            for recipe in RECIPES:
                accuracy, fraction = run(recipe, backbone, x, y, seed)
                results["runs"].append(
                    {"seed": seed, "recipe": recipe, "accuracy": accuracy, "trainable": fraction}
                )
                print(json.dumps(results["runs"][-1]))
    for recipe in RECIPES:
        runs = [r for r in results["runs"] if r["recipe"] == recipe]
        results[recipe] = {
            "accuracy": round(float(np.mean([r["accuracy"] for r in runs])), 3),
            "trainable": round(runs[0]["trainable"], 4),
        }
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
