"""benchmarks/gpu_resnet50.py: its tiny CPU run on every backend, its GPU run where one is.

The tiny run is the GPU benchmark's own code (kerastl's fine-tuning step under
`mixed_bfloat16`, the native PyTorch loop through `torch.compile`, the FLOPs
count, the JSON) at 32x32 on a ResNet stand-in, so that the GPU script cannot
rot on machines without a GPU. TensorFlow is not part of the GPU benchmark: there
the script must refuse with a message that says so.
"""

import importlib.util
import math
import pathlib

import keras
import pytest

SCRIPT = pathlib.Path(__file__).parent.parent / "benchmarks" / "gpu_resnet50.py"
RUN_FIELDS = {"batch", "images_per_s", "step_ms", "loss", "flops_per_image", "mfu", "model"}


def _benchmark():
    spec = importlib.util.spec_from_file_location("gpu_resnet50", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_run(run, batch):
    assert set(run) >= RUN_FIELDS, run
    assert run["batch"] == batch
    assert math.isfinite(run["loss"]), run
    assert run["images_per_s"] > 0 and run["step_ms"] > 0
    assert run["flops_per_image"] > 0


@pytest.mark.skipif(keras.config.backend() != "tensorflow", reason="the refusal is TF's")
def test_refuses_tensorflow():
    with pytest.raises(SystemExit, match="TensorFlow is not part of the GPU benchmark"):
        _benchmark().main(["--tiny"])


@pytest.mark.skipif(keras.config.backend() == "tensorflow", reason="JAX and PyTorch only")
def test_tiny_run_on_cpu(tmp_path, capsys):
    backend = keras.config.backend()
    policy = keras.config.dtype_policy().name
    out = tmp_path / "report.json"
    report = _benchmark().main(["--tiny", "--out", str(out)])

    assert keras.config.dtype_policy().name == policy  # the global policy is restored
    assert out.read_text().strip() == capsys.readouterr().out.strip()
    assert report["benchmark"] == "gpu_resnet50" and report["mode"] == "tiny"
    assert report["device"] == "cpu" and report["peak_tflops"] is None
    config = report["config"]
    assert (config["size"], config["batch"], config["steps"]) == (32, 2, 2)
    assert config["dtype_policy"] == "mixed_bfloat16"
    assert set(report["kerastl"]) == set(report["native"]) == {backend}

    kerastl_run = report["kerastl"][backend]
    _check_run(kerastl_run, 2)
    assert report["fastest"]["backend"] == backend and report["fastest"]["goal_met"] is None
    assert kerastl_run["backend"] == backend and kerastl_run["mfu"] is None
    native = report["native"][backend]
    if importlib.util.find_spec("torch") is None:  # the jax venv: no torch
        assert "torch is not installed" in native["skipped"]
        assert report["ratio_to_native"][backend] is None
        return
    _check_run(native, 2)
    # The stand-ins are the same network in Keras and in torch.nn.
    assert native["flops_per_image"] == kerastl_run["flops_per_image"]
    ratio = report["ratio_to_native"][backend]
    assert ratio == pytest.approx(kerastl_run["images_per_s"] / native["images_per_s"])


def test_peak_table_and_refusals():
    bench = _benchmark()
    assert bench._peak_tflops("NVIDIA H100 80GB HBM3", None) == pytest.approx(989.4)
    assert bench._peak_tflops("NVIDIA H100 PCIe", None) == pytest.approx(756.0)
    assert bench._peak_tflops("NVIDIA GH200 480GB", None) == pytest.approx(989.4)
    assert bench._peak_tflops("NVIDIA L40S", None) == pytest.approx(362.0)
    assert bench._peak_tflops("NVIDIA L4", None) == pytest.approx(121.0)
    assert bench._peak_tflops("Tesla T4", None) is None  # no bf16 tensor cores
    assert bench._peak_tflops("Tesla T4", 65.0) == 65.0
    assert bench._is_oom(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying"))
    assert not bench._is_oom(ValueError("shapes do not match"))
    with pytest.raises(SystemExit, match="Received: backend='tensorflow'"):
        bench.main(["--tiny", "--backends", "jax,tensorflow"])


@pytest.mark.gpu
def test_full_configuration_on_gpu():
    """ResNet50 at 224x224, bf16, a fixed batch, a few steps: each side in its own process."""
    bench = _benchmark()
    backend = keras.config.backend()
    if backend not in bench.GPU_BACKENDS or not bench._gpu_visible(backend):
        pytest.skip(f"no GPU visible to {backend}")
    report = bench.main(["--gpu", "--batch", "32", "--warmup", "2", "--steps", "3"])

    assert report["mode"] == "gpu" and report["config"]["size"] == 224
    kerastl_run = report["kerastl"][backend]
    _check_run(kerastl_run, 32)
    # ResNet50 v1 (Keras): ~3 x 2 x 3.9 GMACs per training image at 224x224.
    assert 20e9 < kerastl_run["flops_per_image"] < 27e9
    if report["peak_tflops"] is not None:
        assert 0 < kerastl_run["mfu"] < 1
    if importlib.util.find_spec("torch") is not None:
        _check_run(report["native"][backend], 32)
        assert report["ratio_to_native"][backend] > 0
        if report["peak_tflops"] is not None:
            assert report["fastest"]["goal_met"] in (True, False)
