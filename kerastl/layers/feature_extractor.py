import os
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from kerastl import _keras_private
from kerastl.backbones.classifier_top import find_classifier_top
from kerastl.backbones.sources import (
    compatible_shapes,
    feature_map_ranks,
    is_model_path,
    nested_models,
    resolve_backbone,
)
from kerastl.freeze.lora import LoRA, get_lora
from kerastl.freeze.policies import FreezePolicy, get_policy, set_trainable, validate_bn
from kerastl.layers.global_pooling_2d import GlobalPooling2D
from kerastl.layers.lora import adapters, apply_lora, remove_adapters, train_adapters

POOLING_MODES = (None, "avg", "max", "gem", "avgmax")


@keras.saving.register_keras_serializable(package="kerastl")
class FeatureExtractor(keras.layers.Layer):
    """A pretrained backbone as one Keras layer: images in, features out.

    Args:
        backbone: a registry name (`kerastl.backbones.list_backbones()`), a
            functional `keras.Model` (a keras-hub backbone included), or the
            path of a `.keras` / `.h5` full-model file. A whole classifier is
            cut before its top by itself (see `submodel` and `cut`).
        weights: `"imagenet"` (the `keras.applications` download, or the copy
            in the Keras cache directory), `None` (random init), the path of a
            weights file, or the path of a whole model file (`.keras` / `.h5`)
            whose body is this architecture, such as a classifier someone
            fine-tuned: its weights are matched to the backbone's layers by
            name and shape (see `weights_report`; layers left unfilled are
            warned about). Registry backbones only; a model or model file
            brings its own weights. Never stored in the config: a saved model
            carries its weights and loading it downloads nothing.
        input_shape: `(height, width, channels)`. Defaults to the backbone's
            pretraining size for registry names and to the model's own input
            shape otherwise.
        pooling: `None` (feature maps), `"avg"`, `"max"`, `"gem"` (generalised
            mean with a learnable power) or `"avgmax"` (average and max
            concatenated).
        cut: name of a layer (or a feature key such as `"S16"`) whose output
            becomes the output: the layers after it are dropped. Without it, a
            model or model file that is a whole classifier (its output is not
            a feature map) is cut before its top: past its activations,
            dropout, `Dense` layers, flattening and global pooling, and a
            final convolution to as many channels as there are classes (an
            all-convolutional top), at the feature map that feeds them. A line
            says where, and `cut` records it. A classifier whose top has no
            feature map under it is refused.
        outputs: list of layer names or feature keys; the layer then returns a
            dict of feature maps keyed by these names (multi-scale features).
        freeze: `"all"` (default: nothing in the backbone trains), `"none"` or
            a `kerastl.freeze` policy. A `kerastl.freeze.LoRA` here means
            `freeze="all", lora=...`: only the adapters train.
        bn: what the backbone's BatchNorm layers do. `"frozen"` (default):
            inference mode, gamma and beta fixed, even in blocks that train.
            `"affine"`: gamma and beta train where their block trains,
            statistics fixed. `"train"`: statistics update where their block
            trains.
        submodel: with a model or model file, the name of a nested model to use
            as the backbone (e.g. the `"mobilenetv2_1.00_160"` inside a saved
            classifier). Without it, a whole classifier gives its backbone by
            itself when it holds exactly one nested model, or when it is a
            registry architecture with a top (its top is cut off); with several
            nested models it is refused with their names.
        backbone_kwargs: extra constructor arguments for registry backbones
            (e.g. `{"alpha": 0.35}` for the MobileNets).
        arch: with a model or model file: `"auto"` (default) recognises a
            registry architecture by its layers (classes and names, in order);
            a registry name declares it (and is checked); `None` treats the
            model as unknown. A recognised model gets the entry's blocks,
            feature keys (`cut="S16"`) and input recipe, as if named.
        safe_mode: refuse a model file (as `backbone` or `weights`) that holds
            Python code, such as a `Lambda` layer. Pass `False` only for files
            you trust.
        lora: a `kerastl.freeze.LoRA` policy: low-rank adapters on the
            backbone's convolutions and dense layers (depthwise and separable
            ones included). The adapted layers' own weights never train; the
            adapters train whatever `freeze` says (it still decides what else
            in the backbone trains). Outputs are unchanged until they train.

    Call arguments:
        inputs: image batch `(batch, height, width, channels)`, already in the
            backbone's input range (see `kerastl.preprocessing`).
        training: Python bool. BatchNorm layers follow `bn` whatever its value.

    Attributes (set once, in `__init__`):
        backbone: the built functional backbone (cut where asked).
        spec: its registry entry: the one named, or the one a model or model
            file was recognised as; `None` for an unknown architecture.
        arch: the registry name a model or model file was recognised as (or
            declared); `None` for a registry name or an unknown architecture.
        weights_report: with `weights=` a whole model file (a classifier with
            this backbone inside), the `WeightsReport` of what was loaded by
            layer name; `None` otherwise.
        image_shape: `(height, width, channels)` it takes.
        cut: the layer (or feature key) the backbone was cut at: `cut=` as
            given, or where a whole classifier's features end; `None` when
            nothing was cut.
        removed_top: the layers of a whole classifier's top left behind by
            themselves, in order; `()` when none were.
        blocks: `[(block name, [layer names])]`, shallow to deep.
        lora: the `kerastl.freeze.LoRA` policy, or `None`.

    `freeze` and `bn` change only through `set_freeze` (or
    `kerastl.set_freeze`, which also recompiles), `lora` only through
    `set_lora` and `merge_lora`. `get_config` stores the backbone as a
    registry name or a serialised model (with any `submodel` already applied,
    without adapters), `weights=None` (a saved model carries its weights) and
    the LoRA policy: loading rebuilds the adapted backbone before its weights
    are read.

    Example:

    ```python
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(96, 96, 3), pooling="avg",
        backbone_kwargs={"alpha": 0.35},
    )
    images = np.random.uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    print(tuple(extractor(images).shape))  # (2, 1280)
    ```
    """

    def __init__(
        self,
        backbone: str | os.PathLike[str] | keras.Model,
        weights: str | os.PathLike[str] | None = "imagenet",
        input_shape: Sequence[int | None] | None = None,
        pooling: str | None = None,
        cut: str | None = None,
        outputs: Sequence[str] | None = None,
        freeze: FreezePolicy | str | dict[str, Any] = "all",
        bn: str = "frozen",
        submodel: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        arch: str = "auto",
        safe_mode: bool = True,
        lora: LoRA | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if pooling not in POOLING_MODES:
            raise ValueError(
                f"`pooling` must be one of {POOLING_MODES}. Received: pooling={pooling!r}"
            )
        self.pooling = pooling
        self.outputs = list(outputs) if isinstance(outputs, (list, tuple)) else outputs
        if isinstance(freeze, LoRA):  # adapters as the policy: they alone train
            if lora is not None and get_lora(lora) != freeze:
                raise ValueError(
                    f"`freeze` is a LoRA policy ({freeze!r}) and `lora` another: pass the "
                    f"adapters once, as `lora=`. Received: freeze={freeze!r}, lora={lora!r}"
                )
            freeze, lora = "all", freeze
        self.freeze = get_policy(freeze)
        self.bn = validate_bn(bn)
        self.lora = get_lora(lora)
        self.submodel = submodel
        self.backbone_kwargs = backbone_kwargs

        # === Backbone ===
        resolved = resolve_backbone(
            backbone,
            weights=weights,
            input_shape=input_shape,
            cut=cut,
            outputs=self.outputs,
            submodel=submodel,
            backbone_kwargs=backbone_kwargs,
            dtype=self.dtype_policy,
            arch=arch,
            safe_mode=safe_mode,
        )
        if pooling is not None:
            _check_feature_maps(resolved.model, pooling)
        model = resolved.model
        if self.lora is not None:
            model = apply_lora(model, self.lora, resolved.blocks)
        self.backbone = model
        self.spec = resolved.spec
        self.image_shape = resolved.image_shape
        self.blocks = resolved.blocks
        self._backbone_config = resolved.config
        self.arch = resolved.arch
        self.weights_report = resolved.weights_report
        self.cut = resolved.cut
        self.removed_top = resolved.top
        _keras_private.set_build_input_shape(self, self.image_shape)
        self.set_freeze()

        # === Pooling ===
        self.poolers = None
        if pooling is not None:
            keys = self.outputs or ["features"]
            self.poolers = {
                key: GlobalPooling2D(pooling, name=f"pool_{_safe(key)}", dtype=self.dtype_policy)
                for key in keys
            }

    def __repr__(self):
        config = self._backbone_config  # a registry name, or a model
        backbone = config if isinstance(config, str) else self.backbone.name
        cut = "" if self.cut is None else f", cut={self.cut!r}"
        if self.removed_top:
            cut += f" (a classifier's top left behind: {' -> '.join(self.removed_top)})"
        return (
            f"<FeatureExtractor name={self.name}, backbone={backbone!r}{cut}, "
            f"pooling={self.pooling!r}, image_shape={self.image_shape}, built={self.built}>"
        )

    # --- layer API ------------------------------------------------------------

    def set_freeze(self, freeze=None, bn=None):
        """Applies a new freeze policy and/or BatchNorm mode; returns the layers that train.

        The new policy is what `get_config` saves. A compiled model must be
        recompiled to see the change (`kerastl.set_freeze` does both).
        """
        freeze = self.freeze if freeze is None else get_policy(freeze)
        bn = self.bn if bn is None else validate_bn(bn)
        # A policy that does not fit the backbone raises before anything changes.
        trained = set_trainable(self.backbone, freeze, self.blocks, bn=bn)
        if self.lora is not None:
            trained = train_adapters(self.backbone)
        self.freeze, self.bn = freeze, bn
        return trained

    def set_lora(self, lora):
        """Adds low-rank adapters (a `kerastl.freeze.LoRA`) or, with `None`, removes them.

        The backbone is rebuilt around the same layers: its weights are kept,
        and new adapters start at zero, so outputs do not change. Adapters
        already there are dropped, not merged (`kerastl.layers.merge_lora`
        keeps what they learned). Works on a built extractor too, but a model
        holding it keeps the functions it traced (on TensorFlow, `predict`
        would still run the old backbone): recompile it afterwards (which
        also makes `fit` train the new set), or, to predict only, call
        `model.make_predict_function(force=True)`. Returns the layers that
        train (see `set_freeze`).

        Example:

        ```python
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.DepthwiseConv2D(3, name="depthwise")(inputs)
        extractor = kerastl.FeatureExtractor(keras.Model(inputs, x), arch=None, pooling="avg")
        print(sorted(extractor.set_lora(kerastl.freeze.LoRA(rank=2))))  # ['depthwise']
        ```
        """
        policy = get_lora(lora)
        base = remove_adapters(self.backbone) if adapters(self.backbone) else self.backbone
        # A policy that does not fit the backbone raises before anything changes.
        model = base if policy is None else apply_lora(base, policy, self.blocks)
        if model is not self.backbone:
            _keras_private.replace_sublayer(self, "backbone", model)
        self.lora = policy
        return self.set_freeze()

    def merge_lora(self):
        """Folds the adapters into the backbone's kernels and removes them (`lora` becomes `None`).

        Same outputs (up to float rounding), no adapter variables: what to
        serve or export. See `kerastl.layers.merge_lora`.
        """
        if self.lora is None:
            raise ValueError(
                f"FeatureExtractor {self.name!r} has no LoRA adapters to merge. Received: lora=None"
            )
        for wrapper in adapters(self.backbone):
            wrapper.merge()
        return self.set_lora(None)

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
        if not compatible_shapes(tuple(input_shape[1:]), self.image_shape):
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
        if self.poolers is None:
            return features
        if isinstance(features, dict):
            return {key: self.poolers[key](value) for key, value in features.items()}
        return self.poolers["features"](features)

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
        if self.poolers is None:
            if isinstance(maps, dict):
                return {key: tuple(shape) for key, shape in maps.items()}
            return tuple(maps)
        if isinstance(maps, dict):
            return {
                key: self.poolers[key].compute_output_shape(shape) for key, shape in maps.items()
            }
        return self.poolers["features"].compute_output_shape(maps)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": self._backbone_config,
                # Weights travel with the saved model: never download again.
                "weights": None,
                "input_shape": self.image_shape,
                "pooling": self.pooling,
                "cut": self.cut,
                "outputs": self.outputs,
                "freeze": keras.saving.serialize_keras_object(self.freeze),
                "bn": self.bn,
                # Loading adapts the rebuilt backbone again; the adapters' weights travel
                # with the saved model.
                "lora": self.lora and keras.saving.serialize_keras_object(self.lora),
                "submodel": None,  # already applied to the stored backbone
                "backbone_kwargs": self.backbone_kwargs,
                # None: not a registry architecture; loading does not look again.
                "arch": self.arch,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = config.get("backbone")
        if not isinstance(backbone, (str, dict)) or (
            isinstance(backbone, str) and is_model_path(backbone)
        ):
            # A loaded config never opens other files: a model file's backbone is
            # stored serialised, a registry one by name.
            raise ValueError(
                "A saved FeatureExtractor config must hold a registry name or a serialised "
                f"model as its backbone, not a file path. Received: backbone={backbone!r}"
            )
        config["freeze"] = get_policy(config["freeze"])
        config["lora"] = get_lora(config.get("lora"))
        if isinstance(backbone, dict):
            config.setdefault("arch", None)
        return cls(**config)


def find_extractor(model_or_layer):
    """The `FeatureExtractor` that is, or is inside, `model_or_layer`; `None` if none.

    Raises `ValueError` when the model holds more than one.
    """
    if isinstance(model_or_layer, FeatureExtractor):
        return model_or_layer
    if not isinstance(model_or_layer, keras.layers.Layer):
        return None
    found = [
        layer
        for layer in _keras_private.flatten_layers(model_or_layer)
        if isinstance(layer, FeatureExtractor)
    ]
    if len(found) > 1:
        raise ValueError(
            f"Model {model_or_layer.name!r} holds {len(found)} FeatureExtractors "
            f"({[f.name for f in found]}); pass the one to change. "
            f"Received: model_or_layer={model_or_layer.name!r}"
        )
    return found[0] if found else None


def extractor_and_front(model, purpose):
    """The `FeatureExtractor` in `model`, and the layers before it as a model (or `None`).

    `model` is a `FeatureExtractor` (no front) or a functional model built
    around one (`kerastl.build_model`). `purpose` ends the `TypeError` for a
    model without one: what the caller needs the extractor for.
    """
    if isinstance(model, FeatureExtractor):
        return model, None
    extractor = find_extractor(model) if isinstance(model, keras.layers.Layer) else None
    if extractor is None:
        raise TypeError(
            "`model` must be a kerastl.FeatureExtractor or a model holding one "
            f"(kerastl.build_model): {purpose}. Received: model={model!r}"
        )
    inputs = input_of(extractor, model) if isinstance(model, keras.Model) else None
    if inputs is None or not model.inputs:
        raise ValueError(
            "`model` must be a functional model built around its FeatureExtractor "
            "(kerastl.build_model), or pass the FeatureExtractor itself. Received: "
            f"model={getattr(model, 'name', model)!r}"
        )
    if any(inputs is tensor for tensor in model.inputs):
        return extractor, None
    images = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return extractor, keras.Model(images, inputs, name="before_the_backbone")


def input_of(layer, model):
    """The tensor `layer` takes in `model`'s graph (the layer may serve other models).

    `None` when `layer` is not in the graph, takes several tensors, or `model`
    has no graph (a subclassed model).
    """
    stack, seen = list(keras.tree.flatten(getattr(model, "outputs", None) or [])), set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        made_by, inputs = _keras_private.producer(tensor)
        if made_by is layer:
            return inputs[0] if len(inputs) == 1 else None
        stack.extend(inputs)
    return None


# --- helpers ---------------------------------------------------------------------


def _check_feature_maps(model, pooling):
    ranks = feature_map_ranks(model)
    flat = {key: rank for key, rank in ranks.items() if rank != 4}
    if not flat:
        return
    nested = nested_models(model)
    found = find_classifier_top(model)
    layer = f" (its last one is {found.features!r})" if found and found.features else ""
    hint = (
        f" It holds these nested models: {nested}; pick the backbone with `submodel=`."
        if nested
        else f" Cut it at a feature-map layer{layer} with `cut=`, or use pooling=None."
    )
    raise ValueError(
        f"Backbone {model.name!r} outputs a tensor of rank {next(iter(flat.values()))}, "
        f"not a feature map (batch, height, width, channels): its maps are already pooled "
        f"or flattened, so there is nothing left to pool.{hint} "
        f"Received: pooling={pooling!r}"
    )


def _safe(name):
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)
