"""Where a whole classifier's features end: the top to cut off a model someone gave you.

A classifier is a body that makes feature maps, then a top that turns them into
class scores. The top is found by walking back from the output through the
layers a top is made of:

- activations (softmax, sigmoid, ...), dropout and normalisation,
- `Dense` layers, `Flatten`, `Reshape` and global pooling,

to the feature map that the global pooling (or `Flatten`, or `Reshape`) reads:
the output of a ReLU after BatchNorm, of the `Add` of a residual block, of a
pooling with a stride. Unless that map is the class scores: the output of a
final convolution whose channel count equals the model's number of outputs,
linear (or softmax, sigmoid), feeding the pooling directly or through dropout
(or through an activation, when a softmax or sigmoid ends the top). That is the
all-convolutional top of mini-Xception, SqueezeNet, MobileNet v1:
`conv(n classes) -> global pooling -> softmax`. The walk then goes on below
the convolution (and the dropout before it). fastai's `create_body` rule ("the
last layer with a feature map") would keep that convolution, whose "features"
are the class scores themselves.

A top without weights (global pooling alone: a pooled backbone) is not a
classifier's and is not cut; a top with weights and no feature map under it
(images flattened into `Dense` layers) has nothing to cut before, and is
refused. A top holding layers of other kinds is not guessed at.
"""

import dataclasses

import keras

from kerastl._keras_private import producer

L = keras.layers
# Layers that change each value alone: passed in a top at any rank.
_ELEMENTWISE = (
    L.Activation,
    L.Softmax,
    L.ReLU,
    L.LeakyReLU,
    L.PReLU,
    L.ELU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.GaussianDropout,
    L.GaussianNoise,
    L.AlphaDropout,
    L.BatchNormalization,
    L.LayerNormalization,
    L.Identity,
)
_GLOBAL_POOLING = (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)
# kerastl's own poolings (kerastl.layers), by name: backbones/ sits below layers/.
_GLOBAL_POOLING_NAMES = {"GlobalPooling2D", "GeMPooling2D"}
# What may sit between a classifier convolution and the global pooling it feeds.
_DROPOUT = (L.Dropout, L.SpatialDropout2D, L.GaussianDropout, L.AlphaDropout, L.Identity)
_AFTER_CLASSIFIER_CONV = (*_DROPOUT, L.Activation, L.Softmax, L.ReLU)
_CLASSIFIER_ACTIVATIONS = ("linear", "softmax", "sigmoid")


@dataclasses.dataclass(frozen=True)
class ClassifierTop:
    """What `find_classifier_top` found.

    Attributes:
        features: the name of the layer whose output is the feature map the top
            is fed from; `None` when the walk reached the image input without one.
        top: the names of the top's layers, from the features to the output.
        weighted: whether the top holds weights (a `Dense`, a classifier
            convolution): a classifier's top, cut off by itself.
    """

    features: str | None
    top: tuple
    weighted: bool


def find_classifier_top(model):
    """The top of a single-output model whose output is not a feature map; `None` otherwise.

    `None` too when the top holds a layer of a kind a classifier top is not
    made of: nothing is guessed.
    """
    outputs = model.outputs
    if len(outputs) != 1 or len(outputs[0].shape) == 4:
        return None
    classes = outputs[0].shape[-1]
    tensor, layers = outputs[0], []
    reduced = False  # the tensor is read by a global pooling, a Flatten or a Reshape
    while True:
        layer, inputs = producer(tensor)
        if layer is None:
            return None
        if isinstance(layer, L.InputLayer):
            return _found(None, layers)
        if reduced and len(tensor.shape) == 4:
            # The map the pooling (or flattening) reads: the features, unless it is
            # the class scores of a convolutional top.
            conv = _classifier_conv(tensor, classes, layers)
            if conv is None:
                return _found(layer.name, layers)
            passed, below = conv
            if _top_goes_on(below):
                # A pooled vector made a map again (MobileNet): the top goes on.
                layers += passed
                tensor, reduced = below, False
                continue
            under = producer(below)[0]
            while isinstance(under, _DROPOUT):  # the classifier's dropout goes with it
                passed.append(under)
                below = producer(below)[1][0]
                under = producer(below)[0]
            if isinstance(under, L.InputLayer):
                # The image input right under it: that convolution is the body.
                return _found(layer.name, layers)
            return _found(under.name, layers + passed)
        if len(inputs) != 1 or not _is_top_layer(layer):
            return None
        layers.append(layer)
        if _is_global_pooling(layer) or (len(inputs[0].shape) == 4 and len(tensor.shape) != 4):
            reduced = True
        tensor = inputs[0]


def _found(features, layers):
    return ClassifierTop(
        features, tuple(la.name for la in reversed(layers)), any(la.weights for la in layers)
    )


def _is_global_pooling(layer):
    return isinstance(layer, _GLOBAL_POOLING) or type(layer).__name__ in _GLOBAL_POOLING_NAMES


def _is_top_layer(layer):
    return isinstance(layer, (*_ELEMENTWISE, L.Dense, L.Flatten, L.Reshape)) or _is_global_pooling(
        layer
    )


def _activation(layer):
    if isinstance(layer, L.Softmax):
        return "softmax"
    return getattr(getattr(layer, "activation", None), "__name__", None)


def _classifier_conv(tensor, classes, top):
    """`(layers passed, the convolution's input)` when `tensor` is the class scores of a
    convolution (through activations or dropout only), `top` being the layers after it;
    else `None`.

    Its channels must be the model's outputs and its own activation linear,
    softmax or sigmoid. A nonlinearity between it and the pooling (SqueezeNet's
    ReLU) needs a softmax or sigmoid in the top: `conv -> ReLU -> global
    pooling` alone is how a pooled backbone ends, with as many outputs as the
    convolution's channels.
    """
    if any(isinstance(layer, L.Dense) for layer in top):
        return None  # the Dense layers are the classifier
    scored = any(_activation(layer) in ("softmax", "sigmoid") for layer in top)
    passed = []
    while True:
        layer, inputs = producer(tensor)
        if len(inputs) != 1:
            return None
        passed.append(layer)
        if isinstance(layer, (L.Conv2D, L.SeparableConv2D)):
            if layer.filters != classes or _activation(layer) not in _CLASSIFIER_ACTIVATIONS:
                return None
            return passed, inputs[0]
        if not isinstance(layer, _AFTER_CLASSIFIER_CONV):
            return None
        if not isinstance(layer, _DROPOUT) and not scored:
            return None
        tensor = inputs[0]


def _top_goes_on(tensor):
    """Whether `tensor` is a pooled vector made a map again (through dropout or
    activations): `GlobalAveragePooling2D -> Reshape((1, 1, c)) -> Conv2D(classes)`."""
    while True:
        layer, inputs = producer(tensor)
        if len(inputs) != 1:
            return False
        if isinstance(layer, L.Reshape):
            return len(inputs[0].shape) != 4
        if _is_global_pooling(layer):
            return True
        if not isinstance(layer, _ELEMENTWISE):
            return False
        tensor = inputs[0]
