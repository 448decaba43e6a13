import os

import keras
import pytest
from support import calibrated_weights_file, real_images


def pytest_configure(config):
    expected = os.environ.get("KERAS_BACKEND")
    if expected is None:
        raise pytest.UsageError(
            "Set KERAS_BACKEND (tensorflow, jax or torch): the tests must know which "
            "backend they test. `nox` sets it per session."
        )
    actual = keras.config.backend()
    assert actual == expected, f"KERAS_BACKEND={expected} but keras runs on {actual}"


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    # Generated layer names (e.g. `activation_28`) restart per test.
    keras.backend.clear_session()
    yield


@pytest.fixture(scope="session")
def photos():
    """Real photographs (skimage + sklearn samples), uint8, 96x96x3."""
    return real_images(size=96, count=24, seed=0)


@pytest.fixture(scope="session")
def mobilenet_weights(tmp_path_factory):
    """MobileNetV2 (alpha 0.35, 96x96) with BatchNorm calibrated on real photos.

    A frozen random-init MobileNetV2 outputs ~1e-11 everywhere; calibrated
    statistics make its features depend on the image, so checks can fail.
    """
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_035_96.weights.h5"
    return calibrated_weights_file(
        "mobilenet_v2", path, input_shape=(96, 96, 3), backbone_kwargs={"alpha": 0.35}
    )
