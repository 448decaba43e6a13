"""The `kerastl` command as the installed console script, on real images (scikit-learn's digits).

Each subprocess imports Keras and a backend (seconds): the tests share a few
runs. Usage errors end in the launcher before Keras is imported (fast).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import kerastl
from kerastl import cli
from kerastl.cli.demo import small_cnn

# The command's plumbing, the same on any backend (export per backend: test_export).
pytestmark = pytest.mark.one_backend

SCRIPT = pathlib.Path(sys.executable).parent / "kerastl"
CLASSES = ["seven", "three"]  # sorted, as class folders are read


def kerastl_command(*args, cwd=None, env=None):
    env = {**os.environ, "KERAS_BACKEND": keras.config.backend(), **(env or {})}
    done = subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )
    return done.returncode, done.stdout, done.stderr


def kerastl_in_process(*args, capsys):
    """`kerastl.cli.run` in this process: what the command does once Keras is imported."""
    capsys.readouterr()
    code = cli.run([str(arg) for arg in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A class-folder tree of real digit images, and a small CNN file pretrained on digits."""
    root = tmp_path_factory.mktemp("cli")
    digits = load_digits()
    images = np.kron(digits.images, np.ones((4, 4))) * (255.0 / 16.0)  # 32 x 32
    for name, digit in zip(CLASSES, (7, 3), strict=True):
        folder = root / "data" / name
        folder.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(digits.target == digit)[:12]):
            Image.fromarray(images[index].astype("uint8")).convert("RGB").save(
                folder / f"{name}_{i}.png"
            )
    keras.utils.set_random_seed(0)
    rgb = np.repeat(images[..., None], 3, axis=-1).astype("float32")
    cnn = small_cnn((32, 32, 3), 10, "digits")
    cnn.compile("adam", "sparse_categorical_crossentropy")
    cnn.fit(rgb[:600], digits.target[:600], epochs=1, batch_size=64, verbose=0)
    backbone = keras.Model(cnn.input, cnn.get_layer("stage2_relu").output, name="digits_cnn")
    backbone.save(root / "backbone.keras")
    return root


@pytest.fixture(scope="module")
def trained(workspace):
    """`kerastl train` once, with --json: (exit code, result, stderr)."""
    code, stdout, stderr = kerastl_command(
        "train",
        workspace / "data",
        "--backbone",
        workspace / "backbone.keras",
        "--input-recipe",
        "none",
        "--epochs",
        1,
        "--head-epochs",
        2,
        "--batch-size",
        8,
        "--out",
        workspace / "model.keras",
        "--json",
    )
    return code, (json.loads(stdout) if code == 0 else stdout), stderr


def test_train_saves_a_model_its_curves_and_reports_before_and_after(trained, workspace):
    code, result, stderr = trained
    assert code == 0, stderr
    assert result["classes"] == CLASSES and result["backend"] == keras.config.backend()
    assert set(result["before"]) == {"loss", "accuracy"} and 0 <= result["after"]["accuracy"] <= 1
    assert result["epochs"] == 3 and result["phases"] == ["head", "fine-tune"]
    assert (workspace / "model.keras").stat().st_size > 0
    assert (workspace / "model.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_and_info_read_the_trained_model(trained, workspace):
    assert trained[0] == 0, trained[2]
    image = workspace / "data" / "seven" / "seven_0.png"
    code, stdout, stderr = kerastl_command(
        "predict",
        workspace / "model.keras",
        image,
        workspace / "data" / "three",
        "--top-k",
        2,
        "--json",
    )
    assert code == 0, stderr
    predictions = json.loads(stdout)["predictions"]
    assert len(predictions) == 13 and predictions[0]["image"] == str(image)
    assert all(p["label"] in CLASSES and len(p["top"]) == 2 for p in predictions)
    assert all(abs(sum(prob for _, prob in p["top"]) - 1) < 1e-4 for p in predictions)
    code, stdout, stderr = kerastl_command("info", workspace / "model.keras")
    assert code == 0, stderr
    assert "seven, three" in stdout and f"saved on      {keras.config.backend()}" in stdout
    assert "feature_extractor" in stdout  # the explain table
    # A calibrated model saved with its evaluation: `info` shows both.
    model = kerastl.load_model(workspace / "model.keras")
    scaled = kerastl.layers.TemperatureScaling(2.0)(model.outputs[0])
    calibrated = keras.Model(model.inputs[0], scaled, name=model.name)
    calibrated.__dict__["kerastl_metadata"] = model.kerastl_metadata
    evaluation = {"images": 26, "accuracy": 0.9, "ece": 0.05, "tta": "flip"}
    kerastl.save_model(calibrated, workspace / "calibrated.keras", evaluation=evaluation)
    code, stdout, stderr = kerastl_command("info", workspace / "calibrated.keras")
    assert code == 0, stderr
    assert "evaluation    accuracy 0.900, ECE 0.050 on 26 images, TTA flip" in stdout
    assert "calibrated    temperature 2.000" in stdout


def test_backbones_lr_find_and_export(workspace, trained):
    code, stdout, stderr = kerastl_command("backbones", "efficientnet_b", "--json")
    assert code == 0, stderr
    names = [b["name"] for b in json.loads(stdout)["backbones"]]
    assert names == [f"efficientnet_b{i}" for i in range(8)]
    code, stdout, stderr = kerastl_command(
        "lr-find",
        workspace / "data",
        "--backbone",
        workspace / "backbone.keras",
        "--input-recipe",
        "none",
        "--steps",
        8,
        "--batch-size",
        8,
        "--plot",
        workspace / "lr.png",
        "--json",
    )
    assert code == 0, stderr
    found = json.loads(stdout)
    assert found["suggestion"] > 0 and (workspace / "lr.png").exists()
    assert trained[0] == 0, trained[2]
    code, stdout, stderr = kerastl_command(
        "export", workspace / "model.keras", "--format", "bad-format", "--out", workspace / "x"
    )
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert code == 1 and len(errors) == 1 and "Received: format='bad-format'" in errors[0], stderr
    # A real export, in a format this backend exports to.
    fmt = "tf_saved_model" if keras.config.backend() == "tensorflow" else "onnx"
    target = workspace / ("exported" if fmt == "tf_saved_model" else "model.onnx")
    code, stdout, stderr = kerastl_command(
        "export", workspace / "model.keras", "--format", fmt, "--out", target, "--json"
    )
    if code == 1 and keras.config.backend() == "jax":
        # jax2onnx 0.17 writes a MaxPool that onnxruntime refuses: export checks the
        # file runs, refuses it in one line and leaves nothing behind.
        errors = [line for line in stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and "Export from another backend" in errors[0], stderr
        assert not target.exists()
        return
    assert code == 0, stderr
    assert json.loads(stdout)["format"] == fmt and target.exists()


def test_rank_compares_model_files_and_reuses_cached_features(workspace):
    narrow = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        ],
        name="narrow",
    )
    narrow.save(workspace / "narrow.keras")
    args = ["rank", workspace / "data", "--candidates", workspace / "backbone.keras"]
    args += [workspace / "narrow.keras", "--input-recipe", "none", "--folds", 2]
    args += ["--cache-dir", workspace / "rank_cache"]
    code, stdout, stderr = kerastl_command(*args)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("24 images in 2 classes (seven, three); 2 candidates"), stdout
    header = next(i for i, line in enumerate(lines) if "LogME" in line)
    assert "probe acc" in lines[header] and "images/s" in lines[header]
    assert lines[header + 1].startswith("*    1  ") and "32x32 none" in lines[header + 1]
    assert lines[header + 2].startswith("     2  ")
    assert "2-fold stratified cross-validation" in stdout and "Recommended: " in lines[-1]
    # Again with --json: the features come back from --cache-dir (an unshuffled dataset).
    code, stdout, stderr = kerastl_command(*args, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    rows = result["rows"]
    assert sorted(row["backbone"] for row in rows) == ["backbone.keras", "narrow.keras"]
    assert [row["rank"] for row in rows] == [1, 2] and result["best"] == rows[0]
    assert result["criterion"] == "logme" and rows[0]["logme"] >= rows[1]["logme"]
    assert result["n_images"] == 24 and result["classes"] == CLASSES and result["folds"] == 2
    assert all(row["cached"] and 0 <= row["probe_accuracy"] <= 1 for row in rows)
    assert result["recommendation"] in lines[-1]  # the text run's own recommendation


def test_report_reads_the_folders_as_the_model_classes(workspace, tmp_path, capsys):
    # The folders in another order than the model's classes, one class without a folder.
    data = tmp_path / "data"
    for name, count in (("seven", 3), ("three", 5)):
        (data / name).mkdir(parents=True)
        for i in range(count):
            shutil.copy(workspace / "data" / name / f"{name}_{i}.png", data / name)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            kerastl.heads.multiclass(3, class_names=["three", "one", "seven"]),
        ]
    )
    kerastl.save_model(model, tmp_path / "flat.keras")
    args = ["report", tmp_path / "flat.keras", data, "--top-losses", 8]
    code, stdout, stderr = kerastl_in_process(
        *args, "--out", tmp_path / "report", "--json", capsys=capsys
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    support = {row["class"]: row["support"] for row in result["evaluation"]["per_class"]}
    assert support == {"three": 5, "one": 0, "seven": 3}
    top, files = result["evaluation"]["top_losses"], result["top_loss_files"]
    for item, path in zip(top, files, strict=True):
        assert pathlib.Path(path).parent.name == item["true"]  # each file, its folder's class
    assert not result["gradcam"]["heatmaps"]  # no FeatureExtractor: the page says why
    assert (tmp_path / "report" / "report.html").exists()
    # For people: the headline figures, and where the page is.
    code, stdout, stderr = kerastl_in_process(
        *args, "--out", tmp_path / "again", "--tta", "flip", "--no-gradcam", capsys=capsys
    )
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("8 images in 2 folders, model flat.keras (3 classes)"), stdout
    assert lines[1].startswith("accuracy ") and "ECE" in lines[1] and "(TTA flip)" in lines[1]
    assert lines[-1] == f"report: {tmp_path / 'again' / 'report.html'}"
    # A folder naming a class the model lacks: one line naming DATA_DIR and the class.
    (data / "eight").mkdir()
    shutil.copy(data / "seven" / "seven_0.png", data / "eight")
    code, _, stderr = kerastl_in_process(*args, "--out", tmp_path / "x", capsys=capsys)
    assert code == 1 and "'eight'" in stderr and repr(str(data)) in stderr, stderr
    assert not (tmp_path / "x" / "report.html").exists()


def test_errors_are_one_line_with_the_exit_code(workspace, capsys):
    data = workspace / "data"
    one_class = workspace / "one_class"
    (one_class / "three").mkdir(parents=True, exist_ok=True)
    not_an_image = workspace / "not_an_image.png"
    not_an_image.write_text("this is text")
    corrupt = workspace / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (("train", workspace / "missing"), 2, "does not exist"),
        (("train", data, "--epochs", "-1"), 2, "--epochs"),
        (("train", data, "--head-epochs", "soon"), 2, "expected 'auto' or an int >= 0"),
        (("predict", workspace / "missing.keras", not_an_image), 2, "does not exist"),
        (("train", one_class), 1, "1 class folder"),
        (("train", data, "--backbone", "mobilenet_v9"), 2, "unknown backbone"),
        (("rank", data, "--folds", "1"), 2, "--folds"),
        (("rank", data, "--candidates", workspace / "gone.keras"), 2, "gone.keras"),
        (("info", corrupt), 1, "corrupt.keras"),
        (("report", corrupt, data, "--out", not_an_image), 2, "is a file, not a folder"),
        (("report", corrupt, data, "--tta", "rotate"), 2, "--tta"),
        (("report", corrupt, data, "--top-losses", "-1"), 2, "--top-losses"),
        (("report", corrupt, workspace / "missing"), 2, "does not exist"),
        (("report", corrupt, one_class), 1, "1 class folder"),
    ]
    for args, expected, text in cases:
        # Errors found after Keras is imported run in this process (a subprocess start
        # imports a backend: seconds); the launcher's own exit path is checked below.
        if one_class in args or "mobilenet_v9" in args:
            code, _, stderr = kerastl_in_process(*args, capsys=capsys)
        else:
            code, _, stderr = kerastl_command(*args)
        assert code == expected, (args, code, stderr)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) >= 1 and text in lines[-1], (args, stderr)
        assert "Traceback" not in stderr, (args, stderr)
    # Offline, with no ImageNet weights in the Keras cache directory.
    code, _, stderr = kerastl_command(
        "demo",
        "--weights",
        "imagenet",
        "--out",
        workspace / "demo",
        env={"KERAS_HOME": str(workspace / "empty_keras_home")},
    )
    assert code == 2 and "Keras cache directory" in stderr.splitlines()[-1], stderr
    # An image file that is not an image: one line naming it.
    (data / "three" / "broken.png").write_text("not a png")
    try:
        code, _, stderr = kerastl_in_process(
            "train",
            data,
            "--backbone",
            workspace / "backbone.keras",
            "--input-recipe",
            "none",
            "--epochs",
            0,
            "--head-epochs",
            1,
            capsys=capsys,
        )
    finally:
        (data / "three" / "broken.png").unlink()
    assert code == 1 and "broken.png" in stderr and "Traceback" not in stderr, stderr
    # --help everywhere, with an example; --debug shows the traceback.
    code, stdout, _ = kerastl_command("train", "--help")
    assert code == 0 and "example:" in stdout
    code, _, stderr = kerastl_command("info", corrupt, "--debug")
    assert code == 1 and "Traceback" in stderr


def test_demo_quick(tmp_path):
    code, stdout, stderr = kerastl_command("demo", "--quick", "--out", tmp_path, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    for key in (
        "accuracy_before_training",
        "accuracy_after_frozen_phase",
        "accuracy_after_fine_tuning",
        "accuracy_from_scratch",
    ):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["predicted"] in ["5", "6", "7", "8", "9"]
    assert os.path.exists(result["model"]) and os.path.exists(result["curves"])
    assert result["reloaded_on"] == keras.config.backend()
    # The fine-tuned model's report on the test images, heat maps and curves included.
    assert result["report"] == str(tmp_path / "report" / "report.html")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["evaluation"]["images"] == result["test_images"]
    assert report["gradcam"]["heatmaps"] and report["training"]["epochs"] == 1


@pytest.mark.backend_free
def test_report_arguments():
    from kerastl.cli.parser import TTA_MODES, build_parser
    from kerastl.evaluation import TTA_MODES as EVALUATION_TTA_MODES

    assert TTA_MODES == EVALUATION_TTA_MODES  # the parser imports no kerastl: a copy
    args = build_parser().parse_args(["report", "m.keras", "photos"])
    assert (args.out, args.tta, args.top_losses, args.no_gradcam) == ("report", None, 16, False)


@pytest.mark.backend_free
def test_head_epochs_default_to_convergence():
    from kerastl.cli.parser import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "photos"]).head_epochs == "auto"
    assert parser.parse_args(["train", "photos", "--head-epochs", "3"]).head_epochs == 3
    assert parser.parse_args(["train", "photos", "--head-epochs", "auto"]).head_epochs == "auto"
