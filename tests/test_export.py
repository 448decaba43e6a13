import importlib.util
import os

import keras
import numpy as np
import pytest

from kerastl.layers import TemperatureScaling
from kerastl.saving import ExportDependencyError, export

BACKEND = keras.config.backend()


def installed(*modules):
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except ImportError:
        return False


def tiny():
    """A small classifier ending as `kerastl.calibrate` leaves one: calibrated exports."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
            TemperatureScaling(1.7),
        ]
    )
    model(np.zeros((1, 16, 16, 3), "float32"))  # exports need a called model
    return model


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")


SAVED_MODEL_NEEDS = {
    "tensorflow": ("tensorflow",),
    "jax": ("tensorflow", "jax.experimental.jax2tf"),
    "torch": ("tensorflow", "torch_xla"),
}[BACKEND]


@pytest.mark.skipif(
    not installed(*SAVED_MODEL_NEEDS),
    reason=f"tf_saved_model on {BACKEND} needs {SAVED_MODEL_NEEDS}",
)
def test_tf_saved_model_export_serves_the_same_predictions(images, tmp_path):
    import tensorflow as tf

    model = tiny()
    path = str(tmp_path / "served")
    assert export(model, path) == path
    served = tf.saved_model.load(path)
    np.testing.assert_allclose(
        served.serve(images).numpy(), model.predict(images, verbose=0), atol=1e-5
    )
    assert [n for n in os.listdir(tmp_path)] == ["served"]  # no staging left behind
    export(tiny(), path)  # replaces the earlier export
    assert os.listdir(tmp_path) == ["served"]


@pytest.mark.skipif(installed(*SAVED_MODEL_NEEDS), reason="tf_saved_model can export here")
def test_tf_saved_model_without_its_dependencies_says_what_to_install(tmp_path):
    with pytest.raises(ExportDependencyError, match=r"pip install .*Received: format="):
        export(tiny(), tmp_path / "served")
    assert os.listdir(tmp_path) == []


ONNX_NEEDS = {
    "tensorflow": ("tf2onnx", "onnx"),
    "jax": ("jax2onnx", "onnx"),
    "torch": ("onnx", "onnxscript"),
}[BACKEND]


@pytest.mark.skipif(
    not installed(*ONNX_NEEDS, "onnxruntime"),
    reason=f"onnx on {BACKEND} needs {ONNX_NEEDS} (+ onnxruntime to check)",
)
def test_onnx_export_runs_in_onnxruntime(images, tmp_path):
    import onnxruntime

    model = tiny()
    path = str(tmp_path / "model.onnx")
    spec = keras.InputSpec(shape=(2, 16, 16, 3), dtype="float32")
    assert export(model, path, format="onnx", input_signature=[spec]) == path
    session = onnxruntime.InferenceSession(path)
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(got, model.predict(images, verbose=0), atol=1e-5)
    assert os.listdir(tmp_path) == ["model.onnx"]  # no staging left behind


@pytest.mark.skipif(installed(*ONNX_NEEDS), reason="onnx can export here")
def test_onnx_without_its_dependencies_says_what_to_install(tmp_path):
    missing = [m for m in ONNX_NEEDS if not installed(m)]
    with pytest.raises(ExportDependencyError) as info:
        export(tiny(), tmp_path / "model.onnx", format="onnx")
    message = str(info.value)
    assert f"on the {BACKEND} backend needs" in message
    assert all(m in message for m in missing)
    assert message.endswith("Received: format='onnx'")
    assert os.listdir(tmp_path) == []


def test_a_loaded_kerastl_model_of_any_input_size_exports(tmp_path):
    """A saved kerastl classifier (pipeline resizing any size, never called since loaded,
    MaxPool in its backbone: the CLI's case) exports in this backend's format; on JAX the
    ONNX file may be refused in one clear error instead (jax2onnx 0.17's MaxPool)."""
    import kerastl
    from kerastl.cli.demo import small_cnn

    keras.utils.set_random_seed(0)
    cnn = small_cnn((32, 32, 3), 10, "digits")
    backbone = keras.Model(cnn.input, cnn.get_layer("stage2_relu").output, name="digits_cnn")
    fx = kerastl.FeatureExtractor(backbone, pooling="avg", arch=None)
    prep = kerastl.preprocessing.pipeline(fx, mode="none")
    model = kerastl.build_model(fx, kerastl.heads.multiclass(2), prep)
    assert model.input_shape == (None, None, None, 3)
    kerastl.save_model(model, tmp_path / "model.keras")
    loaded = kerastl.load_model(tmp_path / "model.keras")
    fmt = "tf_saved_model" if BACKEND == "tensorflow" else "onnx"
    target = tmp_path / ("exported" if fmt == "tf_saved_model" else "model.onnx")
    try:
        assert export(loaded, target, format=fmt) == str(target)
    except RuntimeError as e:
        assert BACKEND == "jax" and "Export from another backend" in str(e), e
        assert not target.exists()
        return
    assert target.exists()


@pytest.mark.skipif(BACKEND != "torch", reason="format='torch' is a torch-backend export")
def test_torch_export_reloads_with_torch_export(images, tmp_path):
    import torch

    model = tiny()
    path = str(tmp_path / "model.pt2")
    export(model, path, format="torch")
    program = torch.export.load(path)
    got = program.module()(torch.from_numpy(images[:1]))
    np.testing.assert_allclose(
        got.detach().numpy(), model.predict(images[:1], verbose=0), atol=1e-5
    )
    with pytest.raises(ValueError, match=r"`\.pt2` file. Received: path="):
        export(model, tmp_path / "model.pt", format="torch")


@pytest.mark.skipif(BACKEND == "torch", reason="torch supports format='torch'")
def test_unsupported_backend_format_pairs_are_clear_errors(tmp_path):
    with pytest.raises(
        ValueError,
        match=rf"cannot export format='torch' on the {BACKEND} "
        r"backend; it can on \['torch'\].*Received: format=",
    ):
        export(tiny(), tmp_path / "model.pt2", format="torch")


def test_unknown_format_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="must be one of.*Received: format='coreml'"):
        export(tiny(), tmp_path / "m", format="coreml")
    with pytest.raises(TypeError, match="Received: model="):
        export("model", tmp_path / "m")
