"""The example scripts in docs/examples/, each in its --short mode, in this process."""

import os
import re
import runpy
import sys

import keras
import pytest

# The scripts' code is the same on any backend: one session runs it (conftest).
pytestmark = pytest.mark.one_backend

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "examples")
sys.path.insert(0, EXAMPLES)  # the scripts import their shared offline.py, as `python x.py` does


def run_example(name, tmp_path, capsys, *extra):
    script = runpy.run_path(os.path.join(EXAMPLES, name), run_name="example")
    keras.backend.clear_session()
    script["main"](["--short", "--out", str(tmp_path), *extra])
    return capsys.readouterr().out


def figure(output, label):
    match = re.search(rf"^{label}: (\d+\.\d+)", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    value = float(match.group(1))
    assert 0.0 <= value <= 1.0, output
    return value


def test_cats_vs_dogs(tmp_path, capsys):
    output = run_example("cats_vs_dogs.py", tmp_path, capsys)
    figure(output, "accuracy before training")
    figure(output, "accuracy after training")
    assert "1281 trainable" in output
    assert "not what transfer learning gives" in output  # honest about random weights
    assert (tmp_path / "cats_vs_dogs.keras").is_file()


def test_save_share_predict(tmp_path, capsys):
    output = run_example("save_share_predict.py", tmp_path, capsys)
    figure(output, "test accuracy")
    assert (tmp_path / "model_final.keras").is_file()
    assert (tmp_path / "model_final.h5").is_file()
    classes = ("cat", "coffee", "astronaut")
    predicted = re.search(r"^predicted class of .*new_image\.png: (\w+) \(", output, re.M)
    assert predicted and predicted.group(1) in classes, output
    legacy = re.search(r"^legacy \.h5: .* \(legacy_h5\), predicts (\w+)$", output, re.M)
    assert legacy and legacy.group(1) == predicted.group(1), output


def test_model_surgery(tmp_path, capsys):
    output = run_example("model_surgery.py", tmp_path, capsys)
    assert "cut at block_13_expand_relu: features (None, 2, 2, 192)" in output
    restored = re.search(r"^restored by name: (\d+) layers", output, re.M)
    assert restored and int(restored.group(1)) > 50, output
    assert re.search(r"^FreezePattern: \d+ backbone layers train, first block_7_", output, re.M)
    assert re.search(r"^TrainPattern: \d+ backbone layers train, first block_10_", output, re.M)
    figure(output, "accuracy before training")
    figure(output, "accuracy after training")
    assert (tmp_path / "checkpoint.keras").is_file()
    assert (tmp_path / "surgery.keras").is_file()


def test_cifar100_xception(tmp_path, capsys):
    output = run_example("cifar100_xception.py", tmp_path, capsys)
    assert re.search(r"^classes: 8; 16 training, 8 test images$", output, re.M), output
    assert "resized to 71x71 inside the model" in output  # CIFAR's 32x32 is below 71x71
    assert "2106376 trainable" in output  # Dense(1024) + Dense(8): the backbone is frozen
    assert "not what transfer learning gives" in output  # honest about random weights
    evaluated = figure(output, "test accuracy")
    assert figure(output, "test accuracy from predict") == evaluated  # evaluate == predict
    right = re.search(r"^test accuracy from predict: .* \((\d+) of 8 right\)$", output, re.M)
    assert right and int(right.group(1)) / 8 == evaluated, output


def test_cifar10_densenet(tmp_path, capsys):
    output = run_example("cifar10_densenet.py", tmp_path, capsys)
    assert re.search(r"^classes: 10; 16 training, 16 validation images$", output, re.M)
    assert "not what transfer learning gives" in output
    figure(output, "validation accuracy before training")
    figure(output, "validation accuracy after the head phase")
    final = figure(output, "validation accuracy after fine-tuning")
    assert figure(output, "validation accuracy from predict") == final  # history.final
    right = re.search(r"^validation accuracy from predict: .* \((\d+) of 16 right\)$", output, re.M)
    assert right and int(right.group(1)) / 16 == final, output
    path = tmp_path / "cifar10_densenet_curves.png"
    assert f"curves: {path} (phases ['head', 'fine-tune'], boundary after epoch 1)" in output
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, len(data)


@pytest.mark.parametrize(
    "name, backbone", [("cats_vs_dogs.py", "MobileNetV2"), ("cifar100_xception.py", "Xception")]
)
def test_online_fails_fast_offline(name, backbone, tmp_path, capsys, monkeypatch):
    """Without network or cached weights, --online stops at once and names what it needed.

    (cifar10_densenet.py takes the same path: building DenseNet201 first costs ~12 s on JAX.)
    """
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # an empty cache
    with pytest.raises(SystemExit, match=f"--online needs {backbone}'s ImageNet weights"):
        run_example(name, tmp_path, capsys, "--online")


def test_several_hosts_alone(tmp_path, capsys):
    # One process (no KERASTL_PROCESSES): the multi-host script trains alone, on any backend;
    # tests/test_multiprocess.py launches it as two JAX processes.
    output = run_example("several_hosts.py", tmp_path, capsys)
    assert re.search(r"^process 0 of 1: loss \d+\.\d+, held-out accuracy 0\.\d+", output, re.M)
    assert (tmp_path / "digits.keras").is_file()
    assert (tmp_path / "checkpoints" / "latest.json").is_file()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"KERASTL_PROCESSES": "2", "KERASTL_PROCESS_ID": "2"}, "KERASTL_PROCESS_ID='2'"),
        ({"KERASTL_PROCESSES": "two"}, "KERASTL_PROCESSES='two'"),
        ({"KERASTL_PROCESSES": "2", "KERASTL_COORDINATOR": "nowhere"}, "='nowhere'"),
    ],
    ids=["id-out-of-range", "count-not-a-number", "address-without-port"],
)
def test_several_hosts_refuses_a_job_that_cannot_form(env, message, tmp_path, capsys, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        run_example("several_hosts.py", tmp_path, capsys)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Received: KERASTL_" in error and message in error
