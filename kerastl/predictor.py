"""`Predictor`: image files, PIL images or arrays in; class names with probabilities out."""

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kerastl._checks import check_positive_int, is_finite_number
from kerastl.backbones.recipes import PREPROCESSING_MODES
from kerastl.data.images import read_image
from kerastl.evaluation.tta import check_tta, predict_probabilities
from kerastl.preprocessing.backbone_normalization import BackboneNormalization
from kerastl.saving.load import load_model, read_metadata

_CLASSIFIER_TASKS = ("binary", "multiclass", "multilabel")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The prediction for one image.

    Attributes:
        label: the predicted class (multilabel: the most probable label above
            the threshold, or `None` when no label reaches it).
        labels: every predicted class: `(label,)`, or for multilabel heads all
            labels at or above the threshold, most probable first.
        top: `[(class_name, probability), ...]`, most probable first, `top_k` long.
        probabilities: `{class_name: probability}` for every class.
    """

    label: str | None
    labels: tuple[str, ...]
    top: list[tuple[str, float]]
    probabilities: dict[str, float]


class Predictor:
    """Classifies images with a saved or in-memory model, by class name.

    Images go in as they come: file paths, PIL images, or uint8/float arrays of
    raw 0..255 pixels (one `(height, width, channels)` image or a
    `(batch, height, width, channels)` batch), mixed freely in a list. Each
    is read with `kerastl.data.images.read_image` (16-bit files scaled to
    0..255, alpha dropped), converted to the model's channels and resized to
    its input size with PIL's bilinear filter, as `kerastl.data.load_image`
    does. A model whose first layer is its FeatureExtractor gets the
    backbone's input recipe from `kerastl.preprocessing.BackboneNormalization`;
    a model with its own preprocessing gets the raw pixels.

    Args:
        model: a `keras.Model` or the path of a `.keras` / `.h5` file
            (loaded uncompiled with `kerastl.load_model`).
        class_names: overrides the names saved with the model; defaults to
            `"0"`, `"1"`, ... for a model saved without names.
        batch_size: images per forward pass.
        threshold: multilabel heads: the probability at which a label counts.
        tta: test-time augmentation: `None` (default), `"flip"`, `"crops"` or
            `"flip+crops"`; the probabilities are averaged over the views
            (`kerastl.evaluation.tta.views`). Costs one forward pass per view.
        safe_mode: passed to `kerastl.load_model` for paths.

    Example:

    ```python
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(96, 96, 3), pooling="avg",
        backbone_kwargs={"alpha": 0.35},
    )
    head = kerastl.heads.binary(class_names=["cat", "dog"])
    kerastl.save_model(kerastl.build_model(extractor, head), "pets.keras")
    predictor = kerastl.Predictor("pets.keras")
    photo = np.random.randint(0, 256, (120, 160, 3)).astype("uint8")  # or a file path
    result = predictor.predict(photo)[0]
    print(sorted(result.probabilities), len(result.top))  # ['cat', 'dog'] 2
    ```
    """

    def __init__(
        self,
        model: keras.Model | str | os.PathLike[str],
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
        threshold: float = 0.5,
        safe_mode: bool = True,
        tta: str | None = None,
    ) -> None:
        # The arguments first: a wrong one is named before any model loads.
        batch_size = check_positive_int(batch_size, "batch_size")
        if not is_finite_number(threshold) or not 0.0 < threshold < 1.0:
            raise ValueError(
                f"`threshold` must be a number in (0, 1). Received: threshold={threshold!r}"
            )
        if class_names is not None:
            class_names = _check_names(class_names)
        self.tta = check_tta(tta)
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model, compile=False, safe_mode=safe_mode)
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`model` must be a keras.Model or a model file path. Received: model={model!r}"
            )
        meta = read_metadata(model)
        self.model = model
        self.task = meta["task"]
        if self.task not in _CLASSIFIER_TASKS:
            raise ValueError(
                f"Predictor classifies images; this model's head is task={self.task!r}. "
                "Use model.predict, or save the model with metadata={'task': ...} if it "
                f"does classify. Received: model={model.name!r}"
            )
        self.logits = meta["outputs"] == "logits"
        self.recipe = meta["input_preprocessing"]
        if self.recipe is not None and self.recipe not in PREPROCESSING_MODES:
            raise ValueError(
                f"The model's metadata names an unknown input recipe; known: "
                f"{PREPROCESSING_MODES}. Received: input_preprocessing={self.recipe!r}"
            )
        # The recipe the model leaves to its caller, with the layer models use inside.
        self._normalize = (
            BackboneNormalization(self.recipe, dtype="float32")
            if self.recipe not in (None, "none")
            else None
        )
        self.batch_size = batch_size
        self.threshold = threshold
        count = 2 if self.task == "binary" else meta["num_outputs"]
        names = class_names if class_names is not None else meta["class_names"]
        if names is None:
            names = [str(i) for i in range(count)]
        if isinstance(names, str) or len(names) != count:
            raise ValueError(
                f"`class_names` must name the model's {count} classes ({self.task}). "
                f"Received: class_names={names!r}"
            )
        self.class_names = [str(n) for n in names]
        shape = model.input_shape
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise ValueError(
                "Predictor needs a model with one image input (batch, height, width, "
                f"channels). Received: model input_shape={shape!r}"
            )
        size = tuple(shape[1:3])
        if None in size:  # a model that resizes itself: batch at the backbone's size
            size = _backbone_size(meta["backbone"], model)
        self.image_size = size if None not in size else None
        self.channels = shape[3] or 3
        if self.channels not in (1, 3):
            raise ValueError(
                "Predictor feeds 1-channel (grayscale) or 3-channel (RGB) images. "
                f"Received: model input_shape={shape!r}"
            )

    def predict(self, inputs: Any, top_k: int | None = 5) -> list[Prediction]:
        """Returns one `Prediction` per image, in input order.

        Args:
            inputs: a path, PIL image or array, or a list of them (see the class
                docstring); a 4-D array is a batch.
            top_k: how many `(class_name, probability)` pairs `Prediction.top`
                keeps; `None` keeps all.
        """
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive int or None. Received: top_k={top_k!r}")
        items = self._items(inputs)
        results: list[Prediction] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            images = [
                read_image(item, self.image_size, self.channels, arg=f"inputs[{start + i}]")
                for i, item in enumerate(chunk)
            ]
            # Images of different sizes (no size to resize to) go through one by one.
            same_size = len({image.shape for image in images}) == 1
            batches = [np.stack(images)] if same_size else [image[None] for image in images]
            for batch in batches:
                rows = predict_probabilities(
                    self.model, self._preprocess(batch), self.task, self.logits, self.tta
                )
                results.extend(self._decode(row, top_k) for row in rows)
        return results

    # --- inputs ---------------------------------------------------------------

    def _items(self, inputs):
        if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
            if len(inputs) == 0:
                raise ValueError(f"`inputs` is empty. Received: inputs.shape={inputs.shape}")
            return list(inputs)
        if isinstance(inputs, (list, tuple)):
            items = []
            for item in inputs:
                if isinstance(item, np.ndarray) and item.ndim == 4:
                    items.extend(item)
                else:
                    items.append(item)
            if not items:
                raise ValueError("`inputs` is empty. Received: inputs=[]")
            return items
        return [inputs]

    def _preprocess(self, batch):
        batch = batch.astype("float32")
        if self._normalize is None:  # the model takes raw 0..255 pixels itself
            return batch
        return keras.ops.convert_to_numpy(self._normalize(batch))

    # --- outputs --------------------------------------------------------------

    def _decode(self, probs, top_k):
        """A `Prediction` from one row of probabilities (binary: `[1 - p, p]`)."""
        order = np.argsort(-probs, kind="stable")
        top = [(self.class_names[i], float(probs[i])) for i in order[:top_k]]
        if self.task == "multilabel":
            labels = tuple(self.class_names[i] for i in order if probs[i] >= self.threshold)
        else:
            labels = (self.class_names[order[0]],)
        return Prediction(
            label=labels[0] if labels else None,
            labels=labels,
            top=top,
            probabilities={n: float(p) for n, p in zip(self.class_names, probs, strict=True)},
        )


def _check_names(class_names):
    """An ordered sequence of names (not one string, a dict or a set), as a list."""
    ordered = isinstance(class_names, (list, tuple)) or (
        getattr(class_names, "ndim", None) == 1 and hasattr(class_names, "tolist")
    )
    if not ordered:
        raise TypeError(
            "`class_names` must be a list of the model's class names, in the order of its "
            f"outputs. Received: class_names={class_names!r}"
        )
    return list(class_names)


def _backbone_size(backbone, model):
    """`(height, width)` the metadata's backbone takes, `(None, None)` if it does not say."""
    if backbone is None:
        return (None, None)
    shape = backbone.get("input_shape") if isinstance(backbone, dict) else None
    if shape is None and isinstance(backbone, dict):
        return (None, None)
    sizes = shape[:2] if isinstance(shape, (list, tuple)) and len(shape) >= 2 else None
    if sizes is None or not all(s is None or is_finite_number(s, 1) for s in sizes):
        raise ValueError(
            "The model's kerastl metadata does not describe its backbone (a dict whose "
            "`input_shape` is [height, width, channels]), and the model takes images of any "
            "size: save the model again without overriding metadata['backbone']. "
            f"Received: backbone={backbone!r} in the metadata of model={model.name!r}"
        )
    return tuple(None if s is None else int(s) for s in sizes)
