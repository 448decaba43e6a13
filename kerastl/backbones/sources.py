"""Backbone sources: whatever a user names as a backbone, resolved to one built, cut model.

`resolve_backbone` is the one place that turns a registry name, a
`keras.Model` (a keras-hub backbone included), a model file (and a model nested
in it) into a functional model with its weights, cut where asked, with its
blocks. A `FeatureExtractor` wraps the result in a layer; a feature cache or a
command line can call it without building a layer.
"""

import contextlib
import dataclasses
import difflib
import os

import keras

from kerastl._checks import check_bool
from kerastl._keras_private import print_msg
from kerastl.backbones.classifier_top import find_classifier_top
from kerastl.backbones.recognition import check_architecture, match_length, recognise
from kerastl.backbones.registry import BackboneSpec, get_backbone, split_blocks
from kerastl.backbones.weights import build_with_weights, check_weights_arg, load_weights_file
from kerastl.files.model_files import load_model_file

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclasses.dataclass(frozen=True)
class ResolvedBackbone:
    """A backbone ready to use.

    Attributes:
        model: the functional model, cut (`cut=`) or with a dict of outputs
            (`outputs=`) where asked.
        spec: the registry entry: the one named, or the one a model or model
            file was recognised as (or declared with `arch=`); `None` otherwise.
        image_shape: `(height, width, channels)` of its input.
        blocks: `[(block name, [layer names])]`, shallow to deep.
        config: what rebuilds it without a file: the registry name, or the
            serialised model (weights travel separately, with the saved layer).
        arch: for a model or model file, the registry name of its architecture
            (`None` when it has none); `None` for a registry name.
        weights_report: a `WeightsReport` when `weights=` was a whole model
            file whose weights were matched by name; `None` otherwise.
        cut: the layer (or feature key) the backbone was cut at: `cut=` as
            given, or, for a whole classifier, the layer its features end at.
        top: the layers of a whole classifier's top that were left behind by
            themselves, in order; `()` when none were.
    """

    model: keras.Model
    spec: BackboneSpec | None
    image_shape: tuple
    blocks: list
    config: str | dict
    arch: str | None = None
    weights_report: object = None
    cut: str | None = None
    top: tuple = ()


def resolve_backbone(
    backbone,
    weights="imagenet",
    input_shape=None,
    cut=None,
    outputs=None,
    submodel=None,
    backbone_kwargs=None,
    dtype=None,
    arch="auto",
    safe_mode=True,
):
    """Resolves a backbone argument into a `ResolvedBackbone`.

    A model, or a model file, may be a whole classifier someone trained. Then,
    unless `submodel` names the part to use or `cut` / `outputs` the layers:

    - a classifier holding exactly one nested model (`keras.applications`
      body + new top, the usual Keras recipe) gives that nested model;
    - a classifier built flat on a registry architecture
      (`MobileNetV2(include_top=True)`) is cut where the registry backbone ends;
    - any other classifier is cut before its top: walking back from the output
      past activations, dropout, `Dense`, `Flatten`, `Reshape`, global pooling
      and a final convolution to as many channels as there are classes (an
      all-convolutional top), to the feature map that feeds them
      (`kerastl.backbones.classifier_top`). A line says where; `cut` is set to it.
      A top with weights but no feature map under it is refused.

    A model whose layers are a registry architecture's (by class and name, in
    order) is that entry: it gets the entry's blocks, feature keys and input
    recipe. `arch=` declares it instead, and is checked.

    Args:
        backbone: a registry name, a functional `keras.Model`, the path of a
            `.keras` / `.h5` full-model file, or a serialised model (a dict, as
            a saved `FeatureExtractor` config holds it).
        weights: `"imagenet"`, `None` or the path of a weights file.
        input_shape: `(height, width, channels)`; defaults to the registry
            size or the model's own input shape.
        cut: a layer name or feature key whose output becomes the output.
        outputs: a list of layer names or feature keys: a dict of outputs.
        submodel: the name of a model nested in a model or model file.
        backbone_kwargs: extra constructor arguments for registry backbones.
        dtype: a dtype policy (or its name) to build a registry backbone with:
            `keras.applications` constructors read the global policy only.
        arch: for a model or model file: `"auto"` (recognise a registry
            architecture by its layers), a registry name (declare it; checked),
            or `None` (none: one block per weighted layer).
        safe_mode: refuse a model file (backbone or `weights=`) that holds
            Python code.

    Example:

    ```python
    resolved = kerastl.backbones.resolve_backbone(
        "mobilenet_v2", weights=None, input_shape=(96, 96, 3), cut="S16",
        backbone_kwargs={"alpha": 0.35},
    )
    print(tuple(resolved.model.output.shape), len(resolved.blocks))  # (None, 6, 6, 192) 15
    ```
    """
    _check_cut_and_outputs(cut, outputs)
    if submodel is not None and not isinstance(submodel, str):
        raise TypeError(
            f"`submodel` must be the name of a nested model. Received: submodel={submodel!r}"
        )
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
        raise TypeError(
            f"`backbone_kwargs` must be a dict. Received: backbone_kwargs={backbone_kwargs!r}"
        )
    backbone_kwargs = dict(backbone_kwargs or {})
    check_bool(safe_mode, "safe_mode")
    if arch not in ("auto", None) and not isinstance(arch, str):
        raise TypeError(f"`arch` must be 'auto', None or a registry name. Received: arch={arch!r}")
    weights = check_weights_arg(weights)
    if input_shape is not None:
        input_shape = check_input_shape(input_shape)

    spec = None
    given = backbone
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    elif isinstance(backbone, os.PathLike) or (
        isinstance(backbone, str) and is_model_path(backbone)
    ):
        backbone = load_model_file(os.fspath(backbone), safe_mode, arg="backbone")
    report = None
    top = ()
    if isinstance(backbone, str):
        for arg, value in (("submodel", submodel), ("arch", None if arch == "auto" else arch)):
            if value is not None:
                raise ValueError(
                    f"`{arg}` applies to a model or model file, not to a registry backbone "
                    f"(which is its own architecture). Received: {arg}={value!r}"
                )
        spec = get_backbone(backbone)
        if input_shape is None:
            input_shape = (spec.default_size, spec.default_size, 3)
        _check_size(spec, input_shape)
        with _global_dtype_policy(dtype):
            source, report = build_with_weights(
                spec, input_shape, weights, safe_mode=safe_mode, **backbone_kwargs
            )
        config = spec.name
    elif isinstance(backbone, keras.Model):
        if backbone_kwargs:
            raise ValueError(
                "`backbone_kwargs` apply to registry backbones only. "
                f"Received: backbone_kwargs={backbone_kwargs!r}"
            )
        backbone = _functional(backbone)
        if submodel is not None:
            source = _functional(_pick_submodel(backbone, submodel))
        else:
            source = _functional(_find_backbone(backbone, cut, outputs))
        _check_model(source, input_shape)
        if weights not in (None, "imagenet"):
            load_weights_file(source, weights, owner=f"model {source.name!r}")
        spec, source, top = _architecture(source, arch)
        if cut is not None or outputs is not None:
            top = ()  # the layers asked for: nothing to say about the top
        elif not top and spec is None:
            source, top = _cut_classifier_top(source, given)
        if top:
            cut = top[0]
            _say_cut(given, source, top)
            top = top[1]
        config = keras.saving.serialize_keras_object(source)
    else:
        raise TypeError(
            "`backbone` must be a registry name, a keras.Model or the path of a "
            f".keras/.h5 model file. Received: backbone={backbone!r}"
        )
    model = _cut(source, spec, cut, outputs)
    blocks = spec.blocks(model) if spec else split_blocks(model)
    return ResolvedBackbone(
        model=model,
        spec=spec,
        image_shape=tuple(source.input_shape[1:]),
        blocks=blocks,
        config=config,
        arch=spec.name if spec is not None and not isinstance(config, str) else None,
        weights_report=report,
        cut=cut,
        top=tuple(top),
    )


def feature_map_ranks(model):
    """`{output name: rank}` of a model's outputs (one entry, `None`, for a single output)."""
    output = model.output
    if isinstance(output, dict):
        return {key: len(value.shape) for key, value in output.items()}
    if isinstance(output, (list, tuple)):
        return {i: len(value.shape) for i, value in enumerate(output)}
    return {None: len(output.shape)}


def nested_models(model):
    """Names of the models nested at the top level of `model` (what `submodel=` picks)."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.Model)]


# --- checks and helpers ----------------------------------------------------------------


def is_model_path(name):
    """Whether a backbone string names a file: registry names have no suffix nor separator."""
    return name.lower().endswith(MODEL_FILE_SUFFIXES) or any(sep in name for sep in "/\\")


def _check_cut_and_outputs(cut, outputs):
    if cut is not None and not isinstance(cut, str):
        raise TypeError(
            f"`cut` must be a layer name or feature key (a string). Received: cut={cut!r}"
        )
    if cut == "":
        raise ValueError(f"`cut` must name a layer or feature key. Received: cut={cut!r}")
    if cut is not None and outputs is not None:
        raise ValueError(
            f"Give `cut` or `outputs`, not both. Received: cut={cut!r}, outputs={outputs!r}"
        )
    if outputs is not None and (
        isinstance(outputs, str)
        or not isinstance(outputs, (list, tuple))
        or not outputs
        or not all(isinstance(o, str) and o for o in outputs)
        or len(set(outputs)) != len(outputs)
    ):
        raise TypeError(
            "`outputs` must be a non-empty list of distinct layer names or feature keys. "
            f"Received: outputs={outputs!r}"
        )


def check_input_shape(input_shape):
    try:
        shape = tuple(None if d is None else _positive_int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels) with positive sizes. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def _positive_int(value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(value)
    return int(value)


def compatible_shapes(shape, expected):
    """Whether two shapes agree wherever both are known."""
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape, expected, strict=True)
    )


def _check_size(spec, input_shape):
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


def _check_model(model, input_shape):
    if len(model.inputs) != 1:
        raise ValueError(
            f"The backbone must take one image input; model {model.name!r} takes "
            f"{len(model.inputs)}. Received: backbone={model.name!r}"
        )
    if len(model.input_shape) != 4:
        raise ValueError(
            f"The backbone must take images (batch, height, width, channels); model "
            f"{model.name!r} takes {model.input_shape}. Received: backbone={model.name!r}"
        )
    if input_shape is not None and not compatible_shapes(input_shape, model.input_shape[1:]):
        raise ValueError(
            f"`input_shape` does not match the input of model {model.name!r} "
            f"({model.input_shape[1:]}). Received: input_shape={input_shape}"
        )


@contextlib.contextmanager
def _global_dtype_policy(policy):
    """Builds under `policy`: `keras.applications` read the global dtype policy only."""
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(policy)
    except ValueError:
        raise ValueError(
            f"`dtype` must be a dtype policy or its name ('float32', 'mixed_float16', ...). "
            f"Received: dtype={policy!r}"
        ) from None
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _functional(model):
    """`model` as a functional model (a Sequential shares its layers with one)."""
    if not isinstance(model, keras.Sequential):
        return model
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"The Sequential backbone {model.name!r} has no input shape yet: start it with "
            f"keras.Input((height, width, channels)). Received: backbone={model.name!r}"
        )
    return keras.Model(inputs, outputs[0], name=model.name)


def _is_feature_model(model):
    """Whether every output of `model` is a feature map (batch, height, width, channels)."""
    return all(rank == 4 for rank in feature_map_ranks(model).values())


def _find_backbone(model, cut, outputs):
    """The backbone inside a whole classifier: its one nested model; else `model` itself."""
    if _is_feature_model(model):
        return model
    wanted = [cut] if cut is not None else list(outputs or [])
    top = {layer.name for layer in model.layers}
    if wanted and all(name in top for name in wanted):
        return model  # the cut names the outer model's own layers
    nested = nested_models(model)
    if len(nested) == 1:
        return model.get_layer(nested[0])
    if len(nested) > 1:
        raise ValueError(
            f"Model {model.name!r} outputs no feature map (a classifier?) and holds "
            f"{len(nested)} nested models, {nested}: name the backbone with `submodel=`. "
            f"Received: submodel=None"
        )
    return model


def _architecture(model, arch):
    """`(registry entry or None, model, top)`, a flat classifier's top cut off when recognised.

    `top` is `(the layer cut at, [the names of the layers cut off])`, or `()`.
    """
    if arch is None:
        return None, model, ()
    if arch == "auto":
        spec = recognise(model)
        if spec is None:
            return None, model, ()
        length = match_length(model, spec)
    else:
        try:
            spec = get_backbone(arch)
        except ValueError as e:
            raise ValueError(str(e).replace("Received: backbone=", "Received: arch=")) from None
        length = check_architecture(model, spec)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if any(layer.weights for layer in layers[length:]):
        # A top with weights of its own (a classifier): the backbone ends before it.
        end = layers[length - 1]
        dropped = [layer.name for layer in layers[length:]]
        return spec, keras.Model(model.inputs, end.output, name=model.name), (end.name, dropped)
    return spec, model, ()


def _cut_classifier_top(model, given):
    """`(model, top)`: a whole classifier cut before its top (`classifier_top`)."""
    found = find_classifier_top(model)
    if found is None or not found.weighted:
        return model, ()  # a feature model, a pooled backbone, or a top of unknown layers
    if found.features is None:
        raise ValueError(
            f"{_describe(given, model)} is a classifier with no feature map to cut before "
            f"its top: its image input goes straight into {list(found.top)}. "
            "A backbone needs layers that make feature maps (batch, height, width, "
            f"channels), such as convolutions. Received: backbone={_shown(given)}"
        )
    output = model.get_layer(found.features).output
    return keras.Model(model.inputs, output, name=model.name), (found.features, found.top)


def _say_cut(given, model, top):
    features, dropped = top
    print_msg(
        f"{_describe(given, model)} is a whole classifier: cut before its top, at layer "
        f"{features!r} (left behind: {' -> '.join(dropped)}). Pass `cut=` to cut elsewhere."
    )


def _describe(given, model):
    if isinstance(given, (str, os.PathLike)):
        return f"Model file {os.path.basename(os.fspath(given))!r} (model {model.name!r})"
    return f"Model {model.name!r}"


def _shown(given):
    if isinstance(given, (str, os.PathLike)):
        return repr(os.fspath(given))
    return repr(getattr(given, "name", given))


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


def _feature(source, spec, name, arg):
    """The tensor a layer name or feature key names in `source`."""
    # keras-hub backbones publish their multi-scale maps as `pyramid_outputs`.
    pyramid = getattr(source, "pyramid_outputs", None) or {}
    if name in pyramid:
        return pyramid[name]
    resolved = spec.feature_layers.get(name, name) if spec else name
    try:
        return source.get_layer(resolved).output
    except ValueError:
        names = [layer.name for layer in source.layers]
        keys = list(spec.feature_layers) if spec else list(pyramid)
        close = difflib.get_close_matches(resolved, names, n=5, cutoff=0.6)
        hint = f" Close layer names: {close}." if close else ""
        feature_hint = f" Feature keys: {keys}." if keys else ""
        raise ValueError(
            f"Backbone {source.name!r} has no layer named {resolved!r}.{hint}"
            f"{feature_hint} Received: {arg}={name!r}"
        ) from None


def _cut(source, spec, cut, outputs):
    if cut is not None:
        output = _feature(source, spec, cut, "cut")
    elif outputs is not None:
        output = {name: _feature(source, spec, name, "outputs") for name in outputs}
    else:
        return source
    return keras.Model(source.inputs, output, name=source.name)
