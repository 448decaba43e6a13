"""Every `keras.applications` backbone, registered at import."""

from keras import applications as A

from kerastl.backbones.registry import register_backbone

# Block patterns: group(1) of a search in the layer name names the block.
_VGG = r"^(block\d+)_"
_RESNET = r"^(conv\d+_block\d+)_"
_EFFICIENTNET = r"^(block\d+[a-z])_"


def _add(name, constructor, default_size, preprocessing, min_size=32, **kwargs):
    register_backbone(
        name,
        constructor,
        default_size=default_size,
        min_size=min_size,
        preprocessing=preprocessing,
        **kwargs,
    )


def _vgg_features(last_convs):
    keys = ("S2", "S4", "S8", "S16")
    features = {
        k: f"block{i + 2}_conv{n}" for i, (k, n) in enumerate(zip(keys, last_convs, strict=True))
    }
    features["S32"] = "block5_pool"
    return features


_add("vgg16", A.VGG16, 224, "caffe", block_pattern=_VGG, feature_layers=_vgg_features((2, 3, 3, 3)))
_add("vgg19", A.VGG19, 224, "caffe", block_pattern=_VGG, feature_layers=_vgg_features((2, 4, 4, 4)))

for depth, constructor, (n3, n4) in (
    (50, A.ResNet50, (4, 6)),
    (101, A.ResNet101, (4, 23)),
    (152, A.ResNet152, (8, 36)),
):
    _add(
        f"resnet{depth}",
        constructor,
        224,
        "caffe",
        block_pattern=_RESNET,
        feature_layers={
            "S2": "conv1_relu",
            "S4": "conv2_block3_out",
            "S8": f"conv3_block{n3}_out",
            "S16": f"conv4_block{n4}_out",
            "S32": "conv5_block3_out",
        },
    )

for depth, constructor, (n3, n4) in (
    (50, A.ResNet50V2, (4, 6)),
    (101, A.ResNet101V2, (4, 23)),
    (152, A.ResNet152V2, (8, 36)),
):
    _add(
        f"resnet{depth}_v2",
        constructor,
        224,
        "tf",
        block_pattern=_RESNET,
        feature_layers={
            "S2": "conv1_conv",
            "S4": "conv2_block3_1_relu",
            "S8": f"conv3_block{n3}_1_relu",
            "S16": f"conv4_block{n4}_1_relu",
            "S32": "post_relu",
        },
    )

_add(
    "xception",
    A.Xception,
    299,
    "tf",
    min_size=71,
    block_pattern=r"^(block\d+)_",
    feature_layers={
        "S2": "block2_sepconv2_bn",
        "S4": "block3_sepconv2_bn",
        "S8": "block4_sepconv2_bn",
        "S16": "block13_sepconv2_bn",
        "S32": "block14_sepconv2_act",
    },
)
# The Inception networks name only their block outputs; inner layers get
# generated names, so blocks are found by their last layer.
_add(
    "inception_v3",
    A.InceptionV3,
    299,
    "tf",
    min_size=75,
    block_end_pattern=r"^mixed\d+$",
    feature_layers={"S8": "mixed2", "S16": "mixed7", "S32": "mixed10"},
)
_add(
    "inception_resnet_v2",
    A.InceptionResNetV2,
    299,
    "tf",
    min_size=75,
    block_end_pattern=r"^(mixed_\w+|block\d+_\d+_ac|block8_10)$",
    feature_layers={"S8": "block35_10_ac", "S16": "block17_20_ac", "S32": "conv_7b_ac"},
)
_add(
    "mobilenet",
    A.MobileNet,
    224,
    "tf",
    block_pattern=r"^conv_(?:dw|pw|pad)_(\d+)",
    feature_layers={
        "S2": "conv_pw_1_relu",
        "S4": "conv_pw_3_relu",
        "S8": "conv_pw_5_relu",
        "S16": "conv_pw_11_relu",
        "S32": "conv_pw_13_relu",
    },
)
_add(
    "mobilenet_v2",
    A.MobileNetV2,
    224,
    "tf",
    block_pattern=r"^(block_\d+|expanded_conv)_",
    feature_layers={
        "S2": "block_1_expand_relu",
        "S4": "block_3_expand_relu",
        "S8": "block_6_expand_relu",
        "S16": "block_13_expand_relu",
        "S32": "out_relu",
    },
)
_MOBILENET_V3 = r"^(expanded_conv(?:_\d+)?)_"
_add(
    "mobilenet_v3_small",
    A.MobileNetV3Small,
    224,
    "none",
    block_pattern=_MOBILENET_V3,
    feature_layers={
        "S2": "conv_bn",
        "S4": "expanded_conv_project_bn",
        "S8": "expanded_conv_2_add",
        "S16": "expanded_conv_7_add",
        "S32": "expanded_conv_10_add",
    },
)
_add(
    "mobilenet_v3_large",
    A.MobileNetV3Large,
    224,
    "none",
    block_pattern=_MOBILENET_V3,
    feature_layers={
        "S2": "expanded_conv_add",
        "S4": "expanded_conv_2_add",
        "S8": "expanded_conv_5_add",
        "S16": "expanded_conv_11_add",
        "S32": "expanded_conv_14_add",
    },
)
for depth, constructor in ((121, A.DenseNet121), (169, A.DenseNet169), (201, A.DenseNet201)):
    _add(
        f"densenet{depth}",
        constructor,
        224,
        "torch",
        block_pattern=_RESNET,
        feature_layers={
            "S2": "conv1_relu",
            "S4": "pool2_conv",
            "S8": "pool3_conv",
            "S16": "pool4_conv",
            "S32": "relu",
        },
    )

_EFFICIENTNET_FEATURES = {
    "S2": "block2a_expand_activation",
    "S4": "block3a_expand_activation",
    "S8": "block4a_expand_activation",
    "S16": "block6a_expand_activation",
    "S32": "top_activation",
}
for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600)):
    _add(
        f"efficientnet_b{i}",
        getattr(A, f"EfficientNetB{i}"),
        size,
        "none",
        block_pattern=_EFFICIENTNET,
        feature_layers=_EFFICIENTNET_FEATURES,
    )

for variant, size, (s2, s4) in (
    ("b0", 224, ("block1a_project_activation", "block2b_add")),
    ("b1", 240, ("block1b_add", "block2c_add")),
    ("b2", 260, ("block1b_add", "block2c_add")),
    ("b3", 300, ("block1b_add", "block2c_add")),
    ("s", 384, ("block1b_add", "block2d_add")),
    ("m", 480, ("block1c_add", "block2e_add")),
    ("l", 480, ("block1d_add", "block2g_add")),
):
    _add(
        f"efficientnet_v2_{variant}",
        getattr(A, f"EfficientNetV2{variant.upper()}"),
        size,
        "none",
        block_pattern=_EFFICIENTNET,
        feature_layers={
            "S2": s2,
            "S4": s4,
            "S8": "block4a_expand_activation",
            "S16": "block6a_expand_activation",
            "S32": "top_activation",
        },
    )

for variant, constructor, stage2_depth in (
    ("tiny", A.ConvNeXtTiny, 9),
    ("small", A.ConvNeXtSmall, 27),
    ("base", A.ConvNeXtBase, 27),
    ("large", A.ConvNeXtLarge, 27),
    ("xlarge", A.ConvNeXtXLarge, 27),
):
    prefix = f"convnext_{variant}"
    _add(
        prefix,
        constructor,
        224,
        "none",
        block_pattern=r"_(stage_\d+_block_\d+)_",
        feature_layers={
            "S4": f"{prefix}_stage_0_block_2_identity",
            "S8": f"{prefix}_stage_1_block_2_identity",
            "S16": f"{prefix}_stage_2_block_{stage2_depth - 1}_identity",
            "S32": f"{prefix}_stage_3_block_2_identity",
        },
    )

# Keras refuses NASNetMobile on torch ("outstanding bug"); NASNetLarge builds everywhere.
for variant, constructor, size, (s8, s16, s32), backends in (
    (
        "mobile",
        A.NASNetMobile,
        224,
        ("adjust_relu_1_5", "adjust_relu_1_9", "normal_concat_12"),
        ("tensorflow", "jax"),
    ),
    (
        "large",
        A.NASNetLarge,
        331,
        ("adjust_relu_1_7", "adjust_relu_1_13", "normal_concat_18"),
        ("tensorflow", "jax", "torch"),
    ),
):
    _add(
        f"nasnet_{variant}",
        constructor,
        size,
        "tf",
        block_end_pattern=r"^(normal|reduction)_concat_",
        feature_layers={
            "S2": "adjust_relu_1_stem_2",
            "S4": "adjust_relu_1_0",
            "S8": s8,
            "S16": s16,
            "S32": s32,
        },
        backends=backends,
    )
