import difflib
import os

import keras
from keras import ops

from kerastl.backbones import get_backbone
from kerastl.backbones.registry import split_blocks
from kerastl.backbones.weights import build_with_weights, check_weights_arg, load_weights_file
from kerastl.freeze.policies import get_policy, set_trainable, validate_bn
from kerastl.layers.gem_pooling_2d import GeMPooling2D
from kerastl.layers.pooling import global_pool

POOLING_MODES = (None, "avg", "max", "gem", "avgmax")
_MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


@keras.saving.register_keras_serializable(package="kerastl")
class FeatureExtractor(keras.layers.Layer):
    """A pretrained backbone as one Keras layer: images in, features out.

    Args:
        backbone: a registry name (`kerastl.backbones.list_backbones()`), a
            functional `keras.Model` (a keras-hub backbone included), or the
            path of a `.keras` / `.h5` full-model file.
        weights: `"imagenet"` (the `keras.applications` download, or the copy
            in the Keras cache directory), `None` (random init) or the path of
            a weights file. Registry backbones only; a model or model file
            brings its own weights. Never stored in the config: a saved model
            carries its weights and loading it downloads nothing.
        input_shape: `(height, width, channels)`. Defaults to the backbone's
            pretraining size for registry names and to the model's own input
            shape otherwise.
        pooling: `None` (feature maps), `"avg"`, `"max"`, `"gem"` (generalised
            mean with a learnable power) or `"avgmax"` (average and max
            concatenated).
        cut: name of a layer (or a feature key such as `"S16"`) whose output
            becomes the output: the layers after it are dropped.
        outputs: list of layer names or feature keys; the layer then returns a
            dict of feature maps keyed by these names (multi-scale features).
        freeze: `"all"` (default: nothing in the backbone trains), `"none"` or
            a `kerastl.freeze` policy.
        bn: what the backbone's BatchNorm layers do. `"frozen"` (default):
            inference mode, gamma and beta fixed, even in blocks that train.
            `"affine"`: gamma and beta train where their block trains,
            statistics fixed. `"train"`: statistics update where their block
            trains.
        submodel: with a model or model file, the name of a nested model to use
            as the backbone (e.g. the `"mobilenetv2_1.00_160"` inside a saved
            classifier).
        backbone_kwargs: extra constructor arguments for registry backbones
            (e.g. `{"alpha": 0.35}` for the MobileNets).

    Call arguments:
        inputs: image batch `(batch, height, width, channels)`, already in the
            backbone's input range (see `kerastl.preprocessing`).
        training: Python bool. BatchNorm layers follow `bn` whatever its value.

    Example:

    ```python
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(96, 96, 3), pooling="avg"
    )
    images = np.random.uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    print(tuple(extractor(images).shape))  # (2, 1280)
    ```
    """

    def __init__(
        self,
        backbone,
        weights="imagenet",
        input_shape=None,
        pooling=None,
        cut=None,
        outputs=None,
        freeze="all",
        bn="frozen",
        submodel=None,
        backbone_kwargs=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in POOLING_MODES:
            raise ValueError(
                f"`pooling` must be one of {POOLING_MODES}. Received: pooling={pooling!r}"
            )
        if cut is not None and outputs is not None:
            raise ValueError(
                f"Give `cut` or `outputs`, not both. Received: cut={cut!r}, outputs={outputs!r}"
            )
        if outputs is not None and (
            isinstance(outputs, str) or not outputs or not all(isinstance(o, str) for o in outputs)
        ):
            raise ValueError(
                f"`outputs` must be a non-empty list of layer names. Received: outputs={outputs!r}"
            )
        if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
            raise ValueError(
                f"`backbone_kwargs` must be a dict. Received: backbone_kwargs={backbone_kwargs!r}"
            )
        check_weights_arg(weights)
        self.pooling = pooling
        self.cut = cut
        self.outputs = list(outputs) if outputs is not None else None
        self.freeze = get_policy(freeze)
        self.bn = validate_bn(bn)
        self.submodel = submodel
        self.backbone_kwargs = dict(backbone_kwargs or {})

        # === Backbone ===
        self.spec = None
        with _dtype_policy(self.dtype_policy):
            source = self._resolve_source(backbone, input_shape, weights)
        self.image_shape = tuple(source.input_shape[1:])
        self._input_shape_arg = self.image_shape  # lets Sequential add its Input
        self.backbone = self._cut(source)
        self.blocks = self.spec.blocks(self.backbone) if self.spec else split_blocks(self.backbone)
        self.set_freeze()

        # === Pooling ===
        self.poolers = None
        if pooling == "gem":
            keys = self.outputs or ["features"]
            self.poolers = {key: GeMPooling2D(name=f"gem_{_safe(key)}") for key in keys}

    # --- construction helpers -------------------------------------------------

    def _resolve_source(self, backbone, input_shape, weights):
        if input_shape is not None:
            input_shape = _check_input_shape(input_shape)
        if isinstance(backbone, dict):  # from_config of a model backbone
            backbone = keras.saving.deserialize_keras_object(backbone)
        if isinstance(backbone, os.PathLike) or (
            isinstance(backbone, str) and backbone.lower().endswith(_MODEL_FILE_SUFFIXES)
        ):
            backbone = _load_model_file(os.fspath(backbone))
        if isinstance(backbone, str):
            if self.submodel is not None:
                raise ValueError(
                    f"`submodel` picks a model inside a model or model file, not inside a "
                    f"registry backbone. Received: submodel={self.submodel!r}"
                )
            self.spec = get_backbone(backbone)
            if input_shape is None:
                size = self.spec.default_size
                input_shape = (size, size, 3)
            self._check_size(input_shape)
            self.backbone_config = self.spec.name
            return build_with_weights(self.spec, input_shape, weights, **self.backbone_kwargs)
        if not isinstance(backbone, keras.Model):
            raise ValueError(
                "`backbone` must be a registry name, a keras.Model or the path of a "
                f".keras/.h5 model file. Received: backbone={backbone!r}"
            )
        if self.backbone_kwargs:
            raise ValueError(
                "`backbone_kwargs` apply to registry backbones only. "
                f"Received: backbone_kwargs={self.backbone_kwargs!r}"
            )
        model = _pick_submodel(backbone, self.submodel)
        if len(model.inputs) != 1:
            raise ValueError(
                f"The backbone must take one image input; model {model.name!r} takes "
                f"{len(model.inputs)}. Received: backbone={model.name!r}"
            )
        if input_shape is not None and not _compatible(input_shape, model.input_shape[1:]):
            raise ValueError(
                f"`input_shape` does not match the input of model {model.name!r} "
                f"({model.input_shape[1:]}). Received: input_shape={input_shape}"
            )
        if weights not in (None, "imagenet"):
            load_weights_file(model, weights, owner=f"model {model.name!r}")
        self.backbone_config = keras.saving.serialize_keras_object(model)
        return model

    def _check_size(self, input_shape):
        spec = self.spec
        height, width, channels = input_shape
        if channels != 3:
            raise ValueError(
                f"Backbone {spec.name!r} takes 3-channel (RGB) images; convert grayscale "
                f"with kerastl.preprocessing. Received: input_shape={input_shape}"
            )
        for side in (height, width):
            if side is not None and side < spec.min_size:
                raise ValueError(
                    f"Backbone {spec.name!r} needs inputs of at least "
                    f"{spec.min_size}x{spec.min_size}; resize smaller images with "
                    f"kerastl.preprocessing. Received: input_shape={input_shape}"
                )

    def _feature(self, source, name, arg):
        """The tensor a layer name or feature key names in `source`."""
        # keras-hub backbones publish their multi-scale maps as `pyramid_outputs`.
        pyramid = getattr(source, "pyramid_outputs", None) or {}
        if name in pyramid:
            return pyramid[name]
        resolved = self.spec.feature_layers.get(name, name) if self.spec else name
        try:
            return source.get_layer(resolved).output
        except ValueError:
            names = [layer.name for layer in source.layers]
            keys = list(self.spec.feature_layers) if self.spec else list(pyramid)
            close = difflib.get_close_matches(resolved, names, n=5, cutoff=0.6)
            hint = f" Close layer names: {close}." if close else ""
            feature_hint = f" Feature keys: {keys}." if keys else ""
            raise ValueError(
                f"Backbone {source.name!r} has no layer named {resolved!r}.{hint}"
                f"{feature_hint} Received: {arg}={name!r}"
            ) from None

    def _cut(self, source):
        if self.cut is not None:
            output = self._feature(source, self.cut, "cut")
        elif self.outputs is not None:
            output = {name: self._feature(source, name, "outputs") for name in self.outputs}
        else:
            return source
        return keras.Model(source.inputs, output, name=source.name)

    # --- layer API ------------------------------------------------------------

    def set_freeze(self, freeze=None, bn=None):
        """Applies a new freeze policy and/or BatchNorm mode; returns the layers that train.

        The new policy is what `get_config` saves. A compiled model must be
        recompiled to see the change (`kerastl.freeze.apply` does both).
        """
        if freeze is not None:
            self.freeze = get_policy(freeze)
        if bn is not None:
            self.bn = validate_bn(bn)
        return set_trainable(self.backbone, self.freeze, self.blocks, bn=self.bn)

    @property
    def fully_frozen(self):
        """True when no backbone weight trains: no gradient flows into the backbone."""
        return not self.backbone.trainable_weights

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "FeatureExtractor expects an image batch (batch, height, width, channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if not _compatible(tuple(input_shape[1:]), self.image_shape):
            raise ValueError(
                f"FeatureExtractor {self.name!r} was built for images of shape "
                f"{self.image_shape}; resize or convert them first "
                f"(kerastl.preprocessing). Received: input_shape={tuple(input_shape)}"
            )
        maps = self._map_shapes(input_shape)
        if self.poolers:
            for key, pooler in self.poolers.items():
                pooler.build(maps[key] if isinstance(maps, dict) else maps)

    def call(self, inputs, training=None):
        frozen = self.fully_frozen
        # Statistics move only under bn="train"; the Keras fine-tuning guide's
        # rule (backbone in inference mode) is the default.
        backbone_training = training if (self.bn == "train" and not frozen) else False
        features = self.backbone(inputs, training=backbone_training)
        if frozen:
            # Nothing upstream of the backbone trains: cut the graph so no
            # backward pass runs through it.
            features = keras.tree.map_structure(ops.stop_gradient, features)
        if self.pooling is None:
            return features
        if isinstance(features, dict):
            return {key: self._pool(key, value) for key, value in features.items()}
        return self._pool("features", features)

    def _pool(self, key, x):
        if self.pooling == "gem":
            return self.poolers[key](x)
        return global_pool(x, self.pooling)

    def _map_shapes(self, input_shape):
        input_shape = tuple(input_shape)
        if input_shape[1:] == self.image_shape:
            # The backbone's graph already holds these shapes: no need to trace it again.
            return keras.tree.map_structure(
                lambda t: (input_shape[0], *t.shape[1:]), self.backbone.output
            )
        return self.backbone.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        maps = self._map_shapes(input_shape)

        def pooled(shape):
            if self.pooling is None:
                return tuple(shape)
            channels = shape[-1] * 2 if self.pooling == "avgmax" else shape[-1]
            return (shape[0], channels)

        if isinstance(maps, dict):
            return {key: pooled(shape) for key, shape in maps.items()}
        return pooled(maps)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": self.backbone_config,
                # Weights travel with the saved model: never download again.
                "weights": None,
                "input_shape": self.image_shape,
                "pooling": self.pooling,
                "cut": self.cut,
                "outputs": self.outputs,
                "freeze": keras.saving.serialize_keras_object(self.freeze),
                "bn": self.bn,
                "submodel": None,  # already applied to the stored backbone
                "backbone_kwargs": self.backbone_kwargs,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["freeze"] = get_policy(config["freeze"])
        return cls(**config)


# --- helpers ---------------------------------------------------------------------


class _dtype_policy:
    """Builds the backbone under the layer dtype policy (keras.applications read the global one)."""

    def __init__(self, policy):
        self.policy = policy

    def __enter__(self):
        self.previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.policy)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.previous)


def _safe(name):
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _check_input_shape(input_shape):
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3 or any(d is not None and d < 1 for d in shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels) with positive sizes. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def _compatible(shape, expected):
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape, expected, strict=True)
    )


def _load_model_file(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at this path. Received: backbone={path!r}")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:
        raise ValueError(
            f"Could not load a Keras model from the backbone file ({type(e).__name__}: {e}). "
            f"Received: backbone={path!r}"
        ) from None


def _pick_submodel(model, name):
    if name is None:
        return model
    nested = {layer.name: layer for layer in model.layers if isinstance(layer, keras.Model)}
    if name not in nested:
        raise ValueError(
            f"Model {model.name!r} holds no nested model named {name!r}; nested models: "
            f"{sorted(nested)}. Received: submodel={name!r}"
        )
    return nested[name]
