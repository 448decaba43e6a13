"""`recommend(data=..., model=...)`: the plan decided from your images, not from a guess.

The fixed plans of `kerastl.recommend` need two things a user must guess: how
many images per class there are (easy) and whether the task is "similar" to
the backbone's pretraining (not easy: are faces similar to ImageNet? digits to
emotions?). With `data=` and `model=`, `recommend` measures it instead:

1. The backbone's candidate cut points are its feature keys (`S4` ... `S32`)
   for a registry architecture, else the last layer at each spatial
   resolution (the end of each stage of an unknown model), the deepest
   `MAX_CANDIDATES` of them down to the extractor's own output.
2. One pass of the frozen backbone over (up to `max_images` of) the images
   gives every candidate's features at once (a model with one output per
   candidate, each globally average-pooled).
3. Each candidate is scored by LogME (You et al. 2021, the evidence of a
   linear model of the labels on the features: how well the frozen features
   at that depth explain your labels, higher is better).
4. When the deepest features score best (within `TIE`), they already fit the
   task: it is "similar" to the pretraining. When earlier features score
   better, the last stages are specific to the pretraining task and must
   change: it is "different". The plan is then `recommend`'s for that regime,
   its explanation holding the scores.

This is the measured version of Yosinski et al.'s observation (early layers
general, late layers specific) on the user's own images.
"""

import numbers

import keras
import numpy as np

from kerastl._keras_private import producer
from kerastl.data.adapter import adapt
from kerastl.heads.head_info import find_head
from kerastl.layers.feature_extractor import extractor_and_front
from kerastl.training.transferability import encode_labels, logme_of_codes

MAX_CANDIDATES = 4
"""The deepest this many cut points are scored."""
MAX_IMAGES = 2000
"""Images scored by default: LogME's ranking is stable well before this."""
TIE = 0.02
"""LogME differences under this (per image, in nats) count as ties: the deeper cut wins."""


def measure(data, model, *, max_images=MAX_IMAGES, batch_size=32):
    """`(scores, n_per_class, n_classes, extractor)`: LogME per candidate cut, deepest last.

    `scores` is a list of `(layer name or feature key, LogME)` from the
    shallowest candidate to the deepest (the extractor's output).
    """
    extractor, front = extractor_and_front(model, "its backbone is scored at each cut point")
    if isinstance(max_images, bool) or not isinstance(max_images, numbers.Integral):
        raise TypeError(f"`max_images` must be an int >= 10. Received: max_images={max_images!r}")
    if max_images < 10:
        raise ValueError(f"`max_images` must be an int >= 10. Received: max_images={max_images!r}")
    adapted = adapt(data, "data", batch_size=batch_size, needs_labels=True)
    head = find_head(model)
    if head is not None:  # labels it lacks: refused now, or batch by batch for a stream
        adapted.check_labels(head)
    candidates = cut_points(extractor)
    scorer = _scorer(extractor, candidates)
    features = [[] for _ in candidates]
    labels = []
    seen = 0
    for x, y in adapted.numpy_batches(shuffle=True, seed=0):
        if front is not None:
            x = keras.ops.convert_to_numpy(front(x, training=False))
        outputs = scorer.predict_on_batch(x)
        for store, output in zip(features, outputs, strict=True):
            store.append(np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float64))
        labels.append(np.asarray(y))
        seen += len(x)
        if seen >= max_images:
            break
    labels = np.concatenate(labels)[:max_images]
    codes, n_classes = _codes(labels)
    scores = [
        (name, logme_of_codes(np.concatenate(store)[:max_images], codes))
        for name, store in zip(candidates, features, strict=True)
    ]
    n_per_class = adapted.count / n_classes if adapted.count else len(codes) / n_classes
    return scores, n_per_class, n_classes, extractor


def similarity_of(scores):
    """`"similar"` when the deepest features score best (ties go deeper), else `"different"`."""
    best = max(score for _, score in scores)
    return "similar" if scores[-1][1] >= best - TIE else "different"


def describe(scores):
    """The scores as a sentence for a plan's explanation."""
    best = max(scores, key=lambda item: item[1])[0]
    listed = ", ".join(
        f"{name} {score:.3f}{' (best)' if name == best else ''}" for name, score in scores
    )
    deepest = scores[-1][0]
    verdict = (
        f"the deepest features ({deepest}) explain your labels best, so the task is close "
        "to the pretraining"
        if similarity_of(scores) == "similar"
        else f"earlier features ({best}) explain your labels better than the deepest "
        f"({deepest}), so the last stages are specific to the pretraining and must change"
    )
    return f"LogME of the frozen features at each cut (higher fits better): {listed}: {verdict}."


def cut_points(extractor):
    """The candidate cuts of `extractor.backbone`, shallowest first, its output last."""
    backbone = extractor.backbone
    names = [layer.name for layer in backbone.layers]
    if extractor.spec is not None and extractor.spec.feature_layers:
        keyed = [
            (key, layer) for key, layer in extractor.spec.feature_layers.items() if layer in names
        ]
        chosen = [layer for _, layer in keyed]
    else:
        by_resolution = {}
        for name in _bottlenecks(backbone):
            shape = backbone.get_layer(name).output.shape
            if len(shape) == 4:
                by_resolution[(shape[1], shape[2])] = name  # the last one at each size
        chosen = list(by_resolution.values())
    output = _output_layer(backbone)
    chosen = [name for name in chosen if names.index(name) < names.index(output)]
    chosen.append(output)
    return chosen[-MAX_CANDIDATES:]


# --- helpers ---------------------------------------------------------------------


def _scorer(extractor, candidates):
    backbone = extractor.backbone
    pool = keras.layers.GlobalAveragePooling2D
    outputs = [pool()(backbone.get_layer(name).output) for name in candidates]
    inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
    return keras.Model(inputs, outputs, name=f"{backbone.name}_cuts")


def _bottlenecks(backbone):
    """The layers every path from the input to the output passes through, in order.

    In a residual network, the adds that close each block: no branch skips
    past them. A layer is one when no connection runs from a layer before it
    to a layer after it.
    """
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    index = {layer.name: i for i, layer in enumerate(layers)}
    reach = [-1] * len(layers)  # the furthest layer fed by layer i
    for j, layer in enumerate(layers):
        for parent in _parents(layer):
            if parent in index:
                reach[index[parent]] = max(reach[index[parent]], j)
    found, furthest = [], -1
    for i, layer in enumerate(layers):
        if furthest <= i:
            found.append(layer.name)
        furthest = max(furthest, reach[i])
    return found


def _parents(layer):
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return []
    made_by = [producer(tensor)[0] for tensor in keras.tree.flatten(inputs)]
    return [parent.name for parent in made_by if parent is not None]


def _output_layer(backbone):
    layer, _ = producer(backbone.outputs[0])
    return backbone.layers[-1].name if layer is None else layer.name


def _codes(labels):
    """Label codes 0 .. k - 1 and k, refusing fewer than 2 classes."""
    codes = encode_labels(labels, len(labels), "data")
    if codes.size == 0 or codes.max() < 1:
        received = (
            f"every label is {np.asarray(labels).ravel()[0]!r}" if codes.size else "no labels"
        )
        raise ValueError(
            "`data` must hold at least 2 classes to plan a classifier for them. "
            f"Received: {received}"
        )
    return codes, int(codes.max()) + 1
