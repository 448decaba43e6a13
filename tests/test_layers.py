"""Every public kerastl layer through the shared checks of `layer_testing`."""

import bad_input as bad
import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, run_model_saving_test
from support import tf_mode

import kerastl
from kerastl.freeze import TrainTopBlocks
from kerastl.heads import TaskHead
from kerastl.layers import FeatureExtractor, GeMPooling2D, GlobalPooling2D
from kerastl.preprocessing import BackboneNormalization, GrayscaleToRGB, Resize, RGBToGrayscale

BATCH = 3
# Features compared for equality must vary across images, or the check is empty.
MIN_FEATURE_STD = 1e-3
# MobileNetV2 (alpha 0.35): 52 convolutions (kernel only) and 52 BatchNorms (4 variables).
MOBILENET_CONVS = 52
MOBILENET_BN_VARIABLES = 4 * 52


def _maps(shape=(BATCH, 5, 5, 8), seed=0):
    return np.random.default_rng(seed).uniform(0.0, 2.0, shape).astype("float32")


def _images(channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (BATCH, 8, 8, channels), dtype="uint8")


# --- FeatureExtractor ----------------------------------------------------------------

# (id, FeatureExtractor arguments beyond the test extractor's, output shape per image,
#  trainable, non-trainable variable counts)
EXTRACTOR_CASES = [
    ("avg", {}, (1280,), 0, MOBILENET_CONVS + MOBILENET_BN_VARIABLES),
    # The top block trains, its BatchNorm gamma and beta too: the fit step trains the
    # backbone itself. One block keeps the backward pass short (full fine-tuning is
    # `test_gradient_is_cut_at_a_frozen_extractor` in test_feature_extractor.py).
    (
        "gem-top-block-affine",
        {"pooling": "gem", "freeze": TrainTopBlocks(1), "bn": "affine"},
        (1280,),
        # block_16 expand, depthwise, project and Conv_1: 4 kernels, 4 gamma/beta; GeM's p
        4 + 4 * 2 + 1,
        MOBILENET_CONVS + MOBILENET_BN_VARIABLES - 4 - 4 * 2,
    ),
    # "S8" is the feature key of block_6_expand_relu; the layers after it are dropped.
    ("cut-max", {"cut": "S8", "pooling": "max"}, (96,), 0, None),
    (
        "outputs-dict",
        {"outputs": ["S8", "S32"], "pooling": None},
        {"S8": (12, 12, 96), "S32": (3, 3, 1280)},
        0,
        None,
    ),
]


def _extractor_kwargs(weights, overrides):
    base = dict(
        backbone="mobilenet_v2",
        weights=weights,
        input_shape=(96, 96, 3),
        pooling="avg",
        backbone_kwargs={"alpha": 0.35},
    )
    return {**base, **overrides}


def _batched(shape):
    if isinstance(shape, dict):
        return {key: (BATCH, *value) for key, value in shape.items()}
    return (BATCH, *shape)


@pytest.mark.parametrize(
    "overrides, shape, trainable, non_trainable",
    [case[1:] for case in EXTRACTOR_CASES],
    ids=[case[0] for case in EXTRACTOR_CASES],
)
def test_feature_extractor(
    overrides, shape, trainable, non_trainable, mobilenet_weights, photos, tmp_path
):
    kwargs = _extractor_kwargs(mobilenet_weights, overrides)
    images = tf_mode(photos[:BATCH])
    layer = run_layer_test(
        FeatureExtractor,
        kwargs,
        images,
        _batched(shape),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=non_trainable,
        # One step through a backbone: eager is faster than compiling it (XLA on JAX).
        run_eagerly=True,
        dtype_init_kwargs={**kwargs, "weights": None},
        # The dtype check builds the backbone again under each policy: once is enough.
        dtype_policies=("mixed_bfloat16",) if not overrides else (),
        min_output_std=MIN_FEATURE_STD,
    )
    run_model_saving_test(layer, images, tmp_path, min_output_std=MIN_FEATURE_STD)


@pytest.mark.keras_floor
def test_feature_extractor_from_keras_model(mobilenet_weights, photos, tmp_path):
    backbone = kerastl.backbones.get_backbone("mobilenet_v2").build(
        (96, 96, 3), weights=mobilenet_weights, alpha=0.35
    )
    images = tf_mode(photos[:BATCH])
    kwargs = {"backbone": backbone, "pooling": "avgmax"}
    layer = run_layer_test(
        FeatureExtractor,
        kwargs,
        images,
        (BATCH, 2 * 1280),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=MOBILENET_CONVS + MOBILENET_BN_VARIABLES,
        # A model brings its own dtype policy; only the pooling follows the layer's.
        check_sublayer_dtypes=False,
        run_eagerly=True,
        min_output_std=MIN_FEATURE_STD,
    )
    run_model_saving_test(layer, images, tmp_path, min_output_std=MIN_FEATURE_STD)


# --- pooling -------------------------------------------------------------------------


@pytest.mark.keras_floor
@pytest.mark.parametrize(
    "kwargs, trainable, non_trainable",
    [({}, 1, 0), ({"p": 2.0, "eps": 1e-4}, 1, 0), ({"trainable_p": False}, 0, 1)],
    ids=["default", "p2", "fixed-p"],
)
def test_gem_pooling_2d(kwargs, trainable, non_trainable, tmp_path):
    layer = run_layer_test(
        GeMPooling2D,
        kwargs,
        _maps(),
        (BATCH, 8),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=non_trainable,
        min_output_std=MIN_FEATURE_STD,
    )
    run_model_saving_test(layer, _maps(), tmp_path)


@pytest.mark.keras_floor
@pytest.mark.parametrize(
    "mode, channels, trainable",
    [("avg", 8, 0), ("max", 8, 0), ("avgmax", 16, 0), ("gem", 8, 1)],
)
def test_global_pooling_2d(mode, channels, trainable, tmp_path):
    layer = run_layer_test(
        GlobalPooling2D,
        {"mode": mode},
        _maps(),
        (BATCH, channels),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0,
        min_output_std=MIN_FEATURE_STD,
    )
    run_model_saving_test(layer, _maps(), tmp_path)


# --- preprocessing -------------------------------------------------------------------


@pytest.mark.keras_floor
@pytest.mark.parametrize("channels", [1, 3], ids=["grayscale", "rgb"])
def test_grayscale_to_rgb(channels, tmp_path):
    images = _images(channels)
    layer = run_layer_test(
        GrayscaleToRGB,
        {},
        images,
        (BATCH, 8, 8, 3),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        dtype_policies=("mixed_bfloat16", "float16"),
    )
    output = keras.ops.convert_to_numpy(layer(images))
    np.testing.assert_array_equal(output, np.repeat(images, 3 // channels, axis=-1))
    run_model_saving_test(layer, images, tmp_path)


@pytest.mark.parametrize("channels", [1, 3], ids=["grayscale", "rgb"])
def test_rgb_to_grayscale(channels, tmp_path):
    images = _images(channels)
    layer = run_layer_test(
        RGBToGrayscale,
        {},
        images,
        (BATCH, 8, 8, 1),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        dtype_policies=("mixed_bfloat16", "float16"),
    )
    output = keras.ops.convert_to_numpy(layer(images))
    # ITU-R BT.601 luma, as OpenCV's COLOR_RGB2GRAY and PIL's "L" mode.
    expected = images @ np.array([[0.299], [0.587], [0.114]]) if channels == 3 else images
    np.testing.assert_allclose(output, expected.astype("float32"), rtol=1e-5, atol=1e-4)
    run_model_saving_test(layer, images, tmp_path)


@pytest.mark.keras_floor
@pytest.mark.parametrize("size", [(8, 8), (6, 10)], ids=["same", "other"])
def test_resize(size, tmp_path):
    images = _images().astype("float32")  # Keras' Resizing keeps integer dtypes
    layer = run_layer_test(
        Resize,
        {"height": size[0], "width": size[1], "interpolation": "bilinear"},
        images,
        (BATCH, *size, 3),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        dtype_policies=("mixed_bfloat16", "float16"),
    )
    output = keras.ops.convert_to_numpy(layer(images))
    # What keras.layers.Resizing gives, which at the same size is the images themselves.
    reference = keras.ops.convert_to_numpy(keras.layers.Resizing(*size)(images))
    np.testing.assert_allclose(output, reference, atol=1e-4)
    if size == (8, 8):
        np.testing.assert_array_equal(output, images)
    run_model_saving_test(layer, images, tmp_path)


@pytest.mark.keras_floor
@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "none"])
def test_backbone_normalization(mode, tmp_path):
    images = _images()
    layer = run_layer_test(
        BackboneNormalization,
        {"mode": mode},
        images,
        (BATCH, 8, 8, 3),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        dtype_policies=("mixed_bfloat16", "float16"),
    )
    output = keras.ops.convert_to_numpy(layer(images))
    expected = images.astype("float32")
    if mode != "none":  # the arithmetic of keras.applications' preprocess_input
        expected = keras.applications.imagenet_utils.preprocess_input(expected, mode=mode)
    np.testing.assert_allclose(output, expected, rtol=1e-6, atol=1e-5)
    run_model_saving_test(layer, images, tmp_path)


# --- heads ---------------------------------------------------------------------------

# (id, TaskHead arguments, input shape, output units, trainable, non-trainable)
HEAD_CASES = [
    ("binary", {"task": "binary", "num_outputs": 1}, (BATCH, 16), 1, 2, 0),
    (
        "multiclass-hidden-dropout-batchnorm",
        {
            "task": "multiclass",
            "num_outputs": 4,
            "hidden": (8,),
            "dropout": 0.2,
            "batchnorm": True,
        },
        (BATCH, 16),
        4,
        # dense_0, predictions, and gamma/beta of two BatchNorms; their statistics
        2 + 2 + 2 * 2,
        2 * 2,
    ),
    (
        "multilabel-priors-logits",
        {"task": "multilabel", "num_outputs": 3, "priors": [0.1, 0.2, 0.3], "logits": True},
        (BATCH, 16),
        3,
        2,
        0,
    ),
    ("regression", {"task": "regression", "num_outputs": 2, "hidden": (8,)}, (BATCH, 16), 2, 4, 0),
    (
        "gem-pooled-map",
        {"task": "multiclass", "num_outputs": 5, "pooling": "gem"},
        (BATCH, 4, 4, 8),
        5,
        3,
        0,
    ),
    (
        "flattened-map",
        {"task": "binary", "num_outputs": 1, "pooling": "flatten", "hidden": 4},
        (BATCH, 4, 4, 8),
        1,
        4,
        0,
    ),
]


@pytest.mark.keras_floor
@pytest.mark.parametrize(
    "kwargs, input_shape, units, trainable, non_trainable",
    [case[1:] for case in HEAD_CASES],
    ids=[case[0] for case in HEAD_CASES],
)
def test_task_head(kwargs, input_shape, units, trainable, non_trainable, tmp_path):
    features = _maps(input_shape)
    layer = run_layer_test(
        TaskHead,
        kwargs,
        features,
        (BATCH, units),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=non_trainable,
        # Losses and probabilities stay float32 under every policy.
        expected_output_dtype="float32",
        min_output_std=MIN_FEATURE_STD if units > 1 or kwargs["task"] != "binary" else None,
    )
    run_model_saving_test(layer, features, tmp_path)


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.layers ===
    bad.case(
        "ly-gem-p-zero", lambda: kerastl.layers.GeMPooling2D(p=0), ValueError, r"Received: p=0"
    ),
    bad.case(
        "ly-gem-p-negative",
        lambda: kerastl.layers.GeMPooling2D(p=-1),
        ValueError,
        r"Received: p=-1",
    ),
    bad.case(
        "ly-gem-p-string",
        lambda: kerastl.layers.GeMPooling2D(p="3"),
        ValueError,
        r"Received: p='3'",
    ),
    bad.case(
        "ly-gem-p-nan",
        lambda: kerastl.layers.GeMPooling2D(p=bad.NAN),
        ValueError,
        r"Received: p=nan",
    ),
    bad.case(
        "ly-gem-p-inf",
        lambda: kerastl.layers.GeMPooling2D(p=bad.INF),
        ValueError,
        r"Received: p=inf",
    ),
    bad.case(
        "ly-gem-p-bool",
        lambda: kerastl.layers.GeMPooling2D(p=True),
        ValueError,
        r"Received: p=True",
    ),
    bad.case(
        "ly-gem-eps-zero",
        lambda: kerastl.layers.GeMPooling2D(eps=0),
        ValueError,
        r"Received: eps=0",
    ),
    bad.case(
        "ly-gem-eps-nan",
        lambda: kerastl.layers.GeMPooling2D(eps=bad.NAN),
        ValueError,
        r"Received: eps=nan",
    ),
    bad.case(
        "ly-gem-trainable-string",
        lambda: kerastl.layers.GeMPooling2D(trainable_p="no"),
        TypeError,
        r"Received: trainable_p='no'",
    ),
    bad.case(
        "ly-gem-rank3",
        lambda: kerastl.layers.GeMPooling2D()(bad.images((2, 5, 8))),
        ValueError,
        r"Received: input_shape=\(2, 5, 8\)",
    ),
    bad.case(
        "ly-pool-mean",
        lambda: kerastl.layers.GlobalPooling2D("mean"),
        ValueError,
        r"Received: mode='mean'",
    ),
    bad.case(
        "ly-pool-none",
        lambda: kerastl.layers.GlobalPooling2D(None),
        ValueError,
        r"Received: mode=None",
    ),
    bad.case(
        "ly-pool-rank2",
        lambda: kerastl.layers.GlobalPooling2D()(bad.images((2, 5))),
        ValueError,
        r"Received: input_shape=\(2, 5\)",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
