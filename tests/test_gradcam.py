"""Grad-CAM: the heat lies where the class's evidence is, on every backend.

A small CNN learns to tell images holding a bright square (class 1) from
noise alone (class 0); Grad-CAM of class 1 must then light up the square.
Around it: the gradient shim against an analytic gradient, the pre-activation
score (the logit, never the probability), the pooled and unpooled extractor,
and bad input.
"""

import keras
import numpy as np
import pytest
from keras import ops

import kerastl
from kerastl.evaluation._gradients import value_and_gradient
from kerastl.evaluation.gradcam import grad_cam

SIZE, SIDE = 32, 8


def _squares(count, seed):
    """`(images, labels, masks)`: noise in 0..100; odd images hold a 255 square (label 1)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 100, (count, SIZE, SIZE, 3)).astype("float32")
    labels = np.arange(count) % 2
    corners = rng.integers(0, SIZE - SIDE + 1, (count, 2))
    masks = np.zeros((count, SIZE, SIZE), bool)
    for i in np.flatnonzero(labels):
        row, col = corners[i]
        masks[i, row : row + SIDE, col : col + SIDE] = True
    images[masks] = 255.0
    return images, labels, masks


def _cnn(name="tiny_cnn"):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name=name)


def _classifier(head, pooling="avg", freeze="all", backbone=None):
    extractor = kerastl.FeatureExtractor(
        backbone or _cnn(), pooling=pooling, arch=None, freeze=freeze
    )
    preprocessing = kerastl.preprocessing.pipeline(extractor, mode="tf")
    return kerastl.build_model(
        extractor, head, preprocessing, optimizer=keras.optimizers.Adam(1e-2)
    )


@pytest.fixture(scope="module")
def trained():
    """A binary classifier trained (whole backbone included) on the squares."""
    keras.utils.set_random_seed(0)
    model = _classifier(kerastl.heads.binary(), freeze="none")
    images, labels, _ = _squares(128, seed=0)
    model.fit(images, labels, epochs=5, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def small():
    """An untrained multiclass classifier (3 classes, frozen backbone) for the argument checks."""
    keras.utils.set_random_seed(0)
    return _classifier(kerastl.heads.multiclass(3))


# --- the heat lies where the evidence is --------------------------------------------------


def test_heat_lies_on_the_class_evidence(trained):
    images, labels, masks = _squares(32, seed=1)
    probabilities = np.asarray(trained.predict(images, verbose=0))[:, 0]
    assert ((probabilities > 0.5) == labels).mean() >= 0.9  # it learned the task
    squares = labels == 1
    heat = grad_cam(trained, images[squares], class_index=1)
    inside, outside = heat[masks[squares]].mean(), heat[~masks[squares]].mean()
    print(f"{keras.config.backend()}: heat inside {inside:.3f}, outside {outside:.3f}")
    assert inside > 0.4 and inside > 5 * outside, (inside, outside)
    # The hottest pixel of each image is on its square.
    flat = heat.reshape(len(heat), -1).argmax(axis=1)
    assert masks[squares].reshape(len(heat), -1)[np.arange(len(heat)), flat].mean() >= 0.9


def test_the_negative_class_of_a_binary_head_is_the_logit_negated(trained):
    images, labels, masks = _squares(32, seed=1)
    squares = labels == 1
    against = grad_cam(trained, images[squares], class_index=0)
    # The square is evidence for class 1, so against class 0: no heat on it.
    assert against[masks[squares]].mean() < 0.05
    assert against.max() == 1.0  # the noise is class 0's evidence


def test_default_class_is_the_predicted_one_and_batches_keep_order(trained):
    images, labels, _ = _squares(6, seed=2)
    predicted = (np.asarray(trained.predict(images, verbose=0))[:, 0] > 0.5).astype(int)
    default = grad_cam(trained, images, batch_size=4)
    np.testing.assert_allclose(default, grad_cam(trained, images, predicted), atol=1e-6)
    one_by_one = grad_cam(trained, images, list(predicted), batch_size=1)
    np.testing.assert_allclose(default, one_by_one, atol=1e-5)


def test_output_shape_dtype_and_range(trained):
    images, _, _ = _squares(3, seed=3)
    # Raw uint8 images of another size: the model's preprocessing resizes them.
    raw = np.clip(keras.ops.convert_to_numpy(keras.ops.image.resize(images, (40, 24))), 0, 255)
    heat = grad_cam(trained, raw.astype("uint8"))
    assert heat.shape == (3, 40, 24) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and np.allclose(heat.max(axis=(1, 2)), 1.0)
    single = grad_cam(trained, raw[0].astype("uint8"))
    assert single.shape == (1, 40, 24)
    np.testing.assert_allclose(single[0], heat[0], atol=1e-5)


# --- the score before the activation, any extractor ---------------------------------------


def test_the_score_is_the_logit_not_the_probability():
    keras.utils.set_random_seed(1)
    backbone = _cnn()
    model = _classifier(kerastl.heads.multiclass(3), backbone=backbone)
    raw = _classifier(kerastl.heads.multiclass(3, logits=True), backbone=backbone)
    raw.get_layer("head").set_weights(model.get_layer("head").get_weights())
    images, _, _ = _squares(4, seed=4)
    heat = grad_cam(model, images, class_index=[0, 1, 2, 1])
    # A frozen extractor stops the gradient in its call; Grad-CAM must not see that.
    assert heat.max() > 0
    np.testing.assert_allclose(heat, grad_cam(raw, images, [0, 1, 2, 1]), atol=1e-5)
    head = model.get_layer("head")
    features = np.random.default_rng(0).normal(size=(2, 16)).astype("float32")
    scores = ops.convert_to_numpy(head.scores(features))
    np.testing.assert_allclose(
        ops.convert_to_numpy(ops.softmax(scores)), ops.convert_to_numpy(head(features)), atol=1e-6
    )


def test_an_unpooled_extractor_gives_the_same_heat():
    keras.utils.set_random_seed(2)
    backbone = _cnn()
    pooled = _classifier(kerastl.heads.binary(), backbone=backbone)
    unpooled = _classifier(kerastl.heads.binary(pooling="avg"), pooling=None, backbone=backbone)
    unpooled.get_layer("head").set_weights(pooled.get_layer("head").get_weights())
    images, _, _ = _squares(4, seed=5)
    np.testing.assert_allclose(
        grad_cam(pooled, images, 1), grad_cam(unpooled, images, 1), atol=1e-5
    )


def test_the_shim_gives_the_analytic_gradient():
    x = np.random.default_rng(0).normal(size=(3, 4, 5, 2)).astype("float32")

    def fn(t):
        return ops.sum(t**2, axis=(1, 2, 3)) + ops.sum(ops.sin(t[:, 0]), axis=(1, 2))

    scores, gradient = value_and_gradient(fn, ops.convert_to_tensor(x))
    expected = (x**2).sum(axis=(1, 2, 3)) + np.sin(x[:, 0]).sum(axis=(1, 2))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    analytic = 2 * x
    analytic[:, 0] += np.cos(x[:, 0])
    assert scores.shape == (3,) and gradient.shape == x.shape
    np.testing.assert_allclose(gradient, analytic, rtol=1e-5, atol=1e-6)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "class_index",
    [
        3,
        -1,
        True,
        1.0,
        "1",
        [0, 1],
        [0, 1, 3, 0],
        [[0], [1], [2], [0]],
        [0, [1], 2, 0],
        [0, 1, 2, True],
        np.array(1),
        np.array([0.0, 1, 2, 0]),
    ],
)
def test_class_index_is_checked(small, class_index):
    images, _, _ = _squares(4, seed=0)
    with pytest.raises(ValueError, match="`class_index`") as info:
        grad_cam(small, images, class_index)
    assert str(info.value).endswith(f"Received: class_index={class_index!r}")


@pytest.mark.one_backend
def test_class_index_accepts_numpy_ints(small):
    images, _, _ = _squares(2, seed=0)
    heat = grad_cam(small, images, np.array([2, 0]))
    np.testing.assert_allclose(heat[0], grad_cam(small, images[:1], np.int64(2))[0], atol=1e-5)


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((SIZE, SIZE)), r"rank 4.*Received: images of shape \(32, 32\)"),
        (np.zeros((2, SIZE, SIZE, 4)), r"channels.*Received: images of shape \(2, 32, 32, 4\)"),
        (
            np.zeros((2, SIZE, SIZE, 1)),
            r"model's input.*Received: images of shape \(2, 32, 32, 1\)",
        ),
        (np.zeros((0, SIZE, SIZE, 3)), r"empty.*Received: images of shape \(0, 32, 32, 3\)"),
        (np.full((1, SIZE, SIZE, 3), np.nan), "NaN"),
        (np.array(["a"]), "numbers"),
    ],
)
def test_images_are_checked(small, images, match):
    with pytest.raises(ValueError, match=match):
        grad_cam(small, images)


@pytest.mark.one_backend
def test_batch_size_is_checked(small):
    with pytest.raises(ValueError, match=r"Received: batch_size=0"):
        grad_cam(small, np.zeros((1, SIZE, SIZE, 3)), batch_size=0)


@pytest.mark.one_backend
def test_a_regression_model_is_refused():
    model = _classifier(kerastl.heads.regression())
    with pytest.raises(ValueError, match=r"regression.*Received: model="):
        grad_cam(model, np.zeros((1, SIZE, SIZE, 3)))


@pytest.mark.one_backend
def test_a_model_without_kerastl_parts_is_refused():
    plain = keras.Sequential([keras.Input((SIZE, SIZE, 3)), _cnn(), keras.layers.Flatten()])
    with pytest.raises(ValueError, match=r"FeatureExtractor and TaskHead.*Received: model="):
        grad_cam(plain, np.zeros((1, SIZE, SIZE, 3)))


@pytest.mark.backend_free
@pytest.mark.parametrize("model", ["model.keras", None, kerastl.heads.binary])
def test_a_model_that_is_no_keras_model_is_refused(model):
    with pytest.raises(TypeError, match=r"`model` must be a kerastl classifier.*Received: model="):
        grad_cam(model, np.zeros((1, SIZE, SIZE, 3)))
