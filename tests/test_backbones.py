import math
import os
import urllib.error

import bad_input as bad
import keras
import pytest
from support import shapes_only

import kerastl
from kerastl.backbones import get_backbone, list_backbones, register_backbone, split_blocks
from kerastl.backbones.weights import build_with_weights, keras_cache_dir

EXPECTED = (
    ["vgg16", "vgg19", "xception", "inception_v3", "inception_resnet_v2"]
    + [f"resnet{d}{v}" for d in (50, 101, 152) for v in ("", "_v2")]
    + ["mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]
    + [f"densenet{d}" for d in (121, 169, 201)]
    + [f"efficientnet_b{i}" for i in range(8)]
    + [f"efficientnet_v2_{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")]
    + [f"convnext_{v}" for v in ("tiny", "small", "base", "large", "xlarge")]
    + ["nasnet_mobile", "nasnet_large"]
)


def test_registry_holds_every_keras_application():
    assert sorted(EXPECTED) == list_backbones()
    assert list_backbones("efficientnet_v2") == sorted(
        n for n in EXPECTED if "efficientnet_v2" in n
    )


def test_backends_each_entry_runs_on():
    unsupported = {
        n: get_backbone(n).backends for n in EXPECTED if not get_backbone(n).supports("torch")
    }
    assert unsupported == {"nasnet_mobile": ("tensorflow", "jax")}
    assert all(get_backbone(n).supports(b) for n in EXPECTED for b in ("tensorflow", "jax"))
    with pytest.raises(ValueError, match=r"`backends` must be.*Received: backends=\('theano',\)"):
        register_backbone(
            "x_test", _tiny, default_size=32, min_size=8, preprocessing="tf", backends=("theano",)
        )


def test_preprocessing_recipes_match_keras_applications():
    expected = {
        "vgg16": "caffe",
        "resnet50": "caffe",
        "resnet50_v2": "tf",
        "xception": "tf",
        "densenet121": "torch",
        "efficientnet_b0": "none",
        "convnext_tiny": "none",
        "mobilenet_v3_small": "none",
        "efficientnet_v2_s": "none",
        "nasnet_large": "tf",
    }
    assert {n: get_backbone(n).preprocessing for n in expected} == expected


@pytest.mark.parametrize("name", EXPECTED)
def test_every_backbone_builds_at_its_minimum_size(name):
    spec = get_backbone(name)
    size = spec.min_size
    if not spec.supports():
        # Keras refuses it here: the registry says so first, naming the way out.
        with pytest.raises(ValueError, match=r"does not run on the 'torch' backend.*KERAS_BACKEND"):
            kerastl.FeatureExtractor(name, weights=None, input_shape=(size, size, 3))
        assert keras.config.backend() == "torch" and name == "nasnet_mobile"
        return
    # Shapes and names only: the variables are never initialised (`shapes_only`),
    # which makes 41 builds affordable on every backend, JAX included.
    with shapes_only():
        extractor = kerastl.FeatureExtractor(
            name, weights=None, input_shape=(size, size, 3), pooling="avgmax"
        )
        maps = extractor.backbone.output.shape
        assert maps[1] >= 1 and maps[2] >= 1
        assert extractor.compute_output_shape((None, size, size, 3)) == (None, 2 * maps[-1])
        assert extractor.backbone.count_params() > 0
        # Feature layers exist and sit at their stride (valid padding shrinks small inputs a bit).
        sides = []
        for key, layer_name in spec.feature_layers.items():
            side = extractor.backbone.get_layer(layer_name).output.shape[1]
            stride = int(key[1:])
            assert abs(math.log2(size / side) - math.log2(stride)) <= 1.5, (key, layer_name, side)
            sides.append(side)
        assert sides == sorted(sides, reverse=True) and len(sides) >= 3
        # Blocks: several, in order, covering every layer once.
        blocks = spec.blocks(extractor.backbone)
        assert len(blocks) >= 4, blocks[:3]
        names = [n for _, layer_names in blocks for n in layer_names]
        assert names == [layer.name for layer in extractor.backbone.layers[1:]]


def test_block_boundaries_follow_the_architecture():
    spec = get_backbone("mobilenet_v2")
    with shapes_only():  # blocks are names: no variable needs a value
        model = spec.build((32, 32, 3), alpha=0.35)
        blocks = dict(spec.blocks(model))
        assert list(blocks)[:3] == ["stem", "expanded_conv", "block_1"]
        assert list(blocks)[-1] == "block_16"
        assert blocks["stem"] == ["Conv1", "bn_Conv1", "Conv1_relu"]
        assert "out_relu" in blocks["block_16"]  # the final 1x1 conv joins the last block
        # Inception networks end blocks at their named `mixed` outputs.
        inception = get_backbone("inception_v3").build((75, 75, 3))
        ends = [layers[-1] for _, layers in get_backbone("inception_v3").blocks(inception)]
        assert ends[:11] == [f"mixed{i}" for i in range(11)]


def test_split_blocks_without_patterns_gives_one_block_per_weighted_layer():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="a")(inputs)
    x = keras.layers.ReLU(name="a_relu")(x)
    x = keras.layers.Conv2D(4, 3, name="b")(x)
    model = keras.Model(inputs, x)
    assert split_blocks(model) == [("a", ["a", "a_relu"]), ("b", ["b"])]


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(
        ValueError, match=r"Did you mean \['mobilenet_v2'.*Received: backbone='mobilnet_v2'"
    ):
        get_backbone("mobilnet_v2")
    assert get_backbone("MobileNet-V2").name == "mobilenet_v2"


def _tiny(include_top=False, weights=None, input_shape=(32, 32, 3)):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stage1_conv")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stage2_conv")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def test_register_backbone_user_entry():
    spec = register_backbone(
        "tiny_cnn_test",
        _tiny,
        default_size=32,
        min_size=8,
        preprocessing="tf",
        block_pattern=r"^(stage\d+)_",
        feature_layers={"S2": "stage1_conv", "S4": "stage2_conv"},
        overwrite=True,
    )
    assert "tiny_cnn_test" in list_backbones()
    extractor = kerastl.FeatureExtractor("tiny_cnn_test", weights=None, outputs=["S2", "S4"])
    shapes = extractor.compute_output_shape((None, 32, 32, 3))
    assert shapes == {"S2": (None, 16, 16, 8), "S4": (None, 8, 8, 8)}
    assert [b for b, _ in spec.blocks(extractor.backbone)] == ["stage1", "stage2"]
    with pytest.raises(ValueError, match="registered already"):
        register_backbone("tiny_cnn_test", _tiny, default_size=32, min_size=8, preprocessing="tf")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "Bad Name"}, "snake_case"),
        ({"preprocessing": "imagenet"}, "Received: preprocessing='imagenet'"),
        ({"min_size": 0}, "Received: min_size=0"),
        ({"default_size": 16, "min_size": 32}, "default_size=16, min_size=32"),
        ({"block_pattern": "(unclosed"}, r"Received: block_pattern='\(unclosed'"),
        ({"constructor": "not callable"}, "constructor"),
    ],
)
def test_register_backbone_rejects_bad_entries(kwargs, match):
    args = dict(name="x_test", constructor=_tiny, default_size=32, min_size=8, preprocessing="tf")
    args.update(kwargs)
    name = args.pop("name")
    constructor = args.pop("constructor")
    with pytest.raises(ValueError, match=match):
        register_backbone(name, constructor, **args)


@pytest.mark.parametrize(
    "error, cause",
    [
        (
            urllib.error.URLError(OSError(-2, "Name or service not known")),
            ": [Errno -2] Name or service not known. Offline?",
        ),
        (
            urllib.error.HTTPError("https://x", 403, "Forbidden", {}, None),
            ": HTTP error 403: Forbidden. Offline?",
        ),
    ],
    ids=["no-network", "http-error"],
)
def test_weights_download_error_gives_the_cause_whole_and_the_url_once(error, cause, monkeypatch):
    def fetch(*args, **kwargs):
        raise error

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", fetch)
    # Keras builds the network before it fetches: no variable needs a value.
    with shapes_only(), pytest.raises(kerastl.WeightsDownloadError) as info:
        build_with_weights(get_backbone("mobilenet_v2"), (96, 96, 3), "imagenet", alpha=0.35)
    message = str(info.value)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    url = f"https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/{name}"
    assert message.count("https://") == 1
    assert f"from {url}{cause}" in message
    assert f"({os.path.join(keras_cache_dir(), name)}; set KERAS_HOME" in message
    assert f"weights='/path/to/{name}'" in message
    assert message.endswith("Received: weights='imagenet'")


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.backbones ===
    bad.case(
        "bb-get-int", lambda: kerastl.backbones.get_backbone(3), TypeError, r"Received: name=3"
    ),
    bad.case(
        "bb-get-empty",
        lambda: kerastl.backbones.get_backbone(""),
        ValueError,
        r"Received: backbone=''",
    ),
    bad.case(
        "bb-get-unknown",
        lambda: kerastl.backbones.get_backbone("resnet49"),
        ValueError,
        r"Did you mean.*Received: backbone='resnet49'",
    ),
    bad.case(
        "bb-list-int",
        lambda: kerastl.backbones.list_backbones(3),
        TypeError,
        r"Received: pattern=3",
    ),
    bad.case(
        "bb-split-string",
        lambda: kerastl.backbones.split_blocks("x"),
        TypeError,
        r"Received: model='x'",
    ),
    bad.case(
        "bb-split-bad-regex",
        lambda: kerastl.backbones.split_blocks(bad.tiny_cnn(), block_pattern="["),
        ValueError,
        r"Received: block_pattern='\['",
    ),
    bad.case(
        "bb-split-no-group",
        lambda: kerastl.backbones.split_blocks(bad.tiny_cnn(), block_pattern="conv"),
        ValueError,
        r"Received: block_pattern='conv'",
    ),
    bad.case(
        "bb-split-both-patterns",
        lambda: kerastl.backbones.split_blocks(
            bad.tiny_cnn(), block_pattern="(conv)", block_end_pattern="bn"
        ),
        ValueError,
        r"Received: block_pattern='\(conv\)', block_end_pattern='bn'",
    ),
    bad.case(
        "bb-resolve-int",
        lambda: kerastl.backbones.resolve_backbone(3),
        TypeError,
        r"Received: backbone=3",
    ),
    bad.case(
        "bb-resolve-weights",
        lambda: kerastl.backbones.resolve_backbone(bad.REG, weights=2.5),
        ValueError,
        r"Received: weights=2.5",
    ),
    bad.case(
        "bb-resolve-dtype",
        lambda: kerastl.backbones.resolve_backbone(bad.REG, **bad.MOBILENET, dtype=3),
        ValueError,
        r"Received: dtype=3",
    ),
    bad.case(
        "bb-register-name",
        lambda: bad.register(name="Bad Name"),
        ValueError,
        r"Received: name='Bad Name'",
    ),
    bad.case("bb-register-name-int", lambda: bad.register(name=3), ValueError, r"Received: name=3"),
    bad.case(
        "bb-register-constructor",
        lambda: bad.register(constructor=3),
        ValueError,
        r"Received: constructor=3",
    ),
    bad.case(
        "bb-register-size-zero",
        lambda: bad.register(default_size=0),
        ValueError,
        r"Received: default_size=0",
    ),
    bad.case(
        "bb-register-size-bool",
        lambda: bad.register(default_size=True, min_size=1),
        ValueError,
        r"Received: default_size=True",
    ),
    bad.case(
        "bb-register-size-float",
        lambda: bad.register(min_size=16.5),
        ValueError,
        r"Received: min_size=16.5",
    ),
    bad.case(
        "bb-register-min-above-default",
        lambda: bad.register(min_size=64),
        ValueError,
        r"Received: default_size=32, min_size=64",
    ),
    bad.case(
        "bb-register-preprocessing",
        lambda: bad.register(preprocessing="bgr"),
        ValueError,
        r"Received: preprocessing='bgr'",
    ),
    bad.case(
        "bb-register-pattern-regex",
        lambda: bad.register(block_pattern="["),
        ValueError,
        r"Received: block_pattern='\['",
    ),
    bad.case(
        "bb-register-pattern-group",
        lambda: bad.register(block_pattern="^conv"),
        ValueError,
        r"Received: block_pattern='\^conv'",
    ),
    bad.case(
        "bb-register-end-pattern-int",
        lambda: bad.register(block_end_pattern=3),
        ValueError,
        r"Received: block_end_pattern=3",
    ),
    bad.case(
        "bb-register-both-patterns",
        lambda: bad.register(block_pattern="^(conv)", block_end_pattern="bn"),
        ValueError,
        r"Received: block_pattern='\^\(conv\)', block_end_pattern='bn'",
    ),
    bad.case(
        "bb-register-features-string",
        lambda: bad.register(feature_layers="S8"),
        TypeError,
        r"Received: feature_layers='S8'",
    ),
    bad.case(
        "bb-register-features-values",
        lambda: bad.register(feature_layers={"S8": 3}),
        TypeError,
        r"Received: feature_layers=\{'S8': 3\}",
    ),
    bad.case(
        "bb-register-backends-string",
        lambda: bad.register(backends="jax"),
        ValueError,
        r"Received: backends='jax'",
    ),
    bad.case(
        "bb-register-backends-unknown",
        lambda: bad.register(backends=("cntk",)),
        ValueError,
        r"Received: backends=\('cntk',\)",
    ),
    bad.case(
        "bb-register-overwrite-string",
        lambda: bad.register(overwrite="no"),
        TypeError,
        r"Received: overwrite='no'",
    ),
    bad.case(
        "bb-register-duplicate",
        lambda: bad.register(name=bad.REG, overwrite=False),
        ValueError,
        r"Received: name='mobilenet_v2'",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
