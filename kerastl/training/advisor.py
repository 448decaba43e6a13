"""`recommend`: which transfer-learning recipe fits how much data you have and how far it is.

The classic table (CS231n's transfer-learning notes; Yosinski et al. 2014) has
four regimes, little or much data per class times a task similar to or
different from the backbone's pretraining (ImageNet photographs):

| | similar task | different task |
|---|---|---|
| little data | linear head on the top features | linear head on earlier features |
| much data | fine-tune the top of the backbone | fine-tune the whole backbone |

`recommend` turns a regime into a `Plan` that `kerastl.fine_tune` takes as
`plan=`: its freeze policy, epochs, learning rates and BatchNorm mode, plus the
head and the layer to cut the backbone at. Measured on a real pretrained
network (benchmarks/transfer_suite.py), the table's advice did not hold under
a converged head: fine-tuning the whole backbone at low, layer-wise rates beat
the frozen head with 5 to 100 labels per class, on both a near and a far task.
So every plan now fine-tunes as `fine_tune`'s defaults do; the regime still
chooses the cut (earlier features for a different task with little data) and
the explanation.
"""

import dataclasses
import numbers
import textwrap

from kerastl._checks import is_finite_number
from kerastl.backbones.registry import get_backbone
from kerastl.freeze.policies import FreezeNone, FreezePolicy
from kerastl.heads.builders import binary, multiclass
from kerastl.training.data_advisor import MAX_IMAGES, describe, measure, similarity_of

SIMILARITIES = ("similar", "different")
LITTLE_DATA = 100
"""Images per class from which `recommend` calls the data "much" (see `recommend`)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A transfer-learning recipe: what `kerastl.recommend` returns, `fine_tune(plan=)` takes.

    `kerastl.fine_tune(model, data, epochs=plan.epochs, plan=plan)` uses its
    `head_epochs`, `lr`, `lr_mult`, `unfreeze` and `bn`; arguments given to
    `fine_tune` explicitly win over the plan's.

    Attributes:
        regime: `"little data, similar task"`, `"little data, different task"`,
            `"much data, similar task"` or `"much data, different task"`.
        data: `"little"` or `"much"`.
        similarity: `"similar"` or `"different"`.
        n_samples_per_class: the number the plan was made for.
        threshold: images per class from which the data counted as much.
        n_classes: the number of classes, or `None`.
        backbone: the registry name of the backbone, or `None`.
        head_epochs: epochs of phase 1 (head only, backbone frozen).
        epochs: epochs of phase 2 (the backbone opens): 0 when only the head
            trains. Pass it to `fine_tune` as `epochs=plan.epochs`.
        lr: peak learning rate of phase 1 (phase 2 peaks at `lr / 2`).
        lr_mult: the head's phase-2 rate over the backbone's first block's.
        unfreeze: the `kerastl.freeze` policy of phase 2 (`FreezeAll()` when
            the backbone stays frozen).
        bn: BatchNorm mode in phase 2: `"frozen"`, `"affine"` or `"train"`.
        cut: a feature key (`"S16"`) to cut the backbone at
            (`kerastl.FeatureExtractor(..., cut=plan.cut)`), or `None` for its
            last layer.
        head_kwargs: options for `kerastl.heads.multiclass` / `binary`
            (`plan.head(n_classes)` builds the head with them).
        explanation: why, in a few sentences.
        scores: with `recommend(data=...)`, `((cut, LogME), ...)` of the
            scored cut points, shallowest first; else `None`.
    """

    regime: str
    data: str
    similarity: str
    n_samples_per_class: float
    threshold: float
    n_classes: int | None
    backbone: str | None
    head_epochs: int | str
    epochs: int
    lr: float
    lr_mult: float
    unfreeze: FreezePolicy
    bn: str
    cut: str | None
    head_kwargs: dict = dataclasses.field(hash=False)
    explanation: str = ""
    scores: tuple | None = None

    def head(self, n_classes=None, **options):
        """The recommended head: `binary` for 2 classes, `multiclass` for more.

        Args:
            n_classes: the number of classes (>= 2); defaults to the plan's.
            **options: more `TaskHead` options (`class_names`, `priors` ...),
                over the plan's `head_kwargs`.
        """
        n_classes = self.n_classes if n_classes is None else _check_n_classes(n_classes)
        if n_classes is None:
            raise ValueError(
                "The plan was made without `n_classes`: pass it to head() or to "
                "recommend(). Received: n_classes=None"
            )
        options = {**self.head_kwargs, **options}
        if n_classes == 2:
            return binary(**options)
        return multiclass(n_classes, **options)

    def __str__(self):
        backbone = self.backbone or "backbone"
        cut = f", cut at {self.cut!r}" if self.cut else ""
        head = ", ".join(f"{k}={v!r}" for k, v in self.head_kwargs.items())
        if self.epochs:
            phase2 = (
                f"{_epochs(self.epochs)}, {self.unfreeze!r} trains, BatchNorm {self.bn};\n"
                f"    peak lr {_rate(self.lr / 2)} at the head, {self.lr_mult:g}x lower at the "
                "backbone's first block"
            )
        else:
            phase2 = f"none (epochs=0): {backbone} stays frozen"
        why = textwrap.fill(
            self.explanation, width=88, initial_indent="  why: ", subsequent_indent="    "
        )
        return "\n".join(
            [
                f"Plan: {self.regime} ({_count(self.n_samples_per_class)} images per class; "
                f"much data from {_count(self.threshold)})",
                f"  phase 1: head ({head}) on frozen {backbone}{cut}, "
                f"{_epochs(self.head_epochs)} at lr {_rate(self.lr)}",
                f"  phase 2: {phase2}",
                why,
            ]
        )


def recommend(
    n_samples_per_class=None,
    similarity=None,
    n_classes=None,
    backbone=None,
    threshold=LITTLE_DATA,
    *,
    data=None,
    model=None,
    max_images=MAX_IMAGES,
    batch_size=32,
):
    """The transfer-learning recipe for your amount of data and task: a `Plan` for `fine_tune`.

    The four regimes (CS231n transfer-learning notes; Yosinski et al. 2014,
    "How transferable are features in deep neural networks?": early layers
    learn general features, the last ones features specific to the
    pretraining task, and fine-tuning helps most when there is enough data to
    move them without overfitting):

    - **little data** (either task): a linear head trains to convergence on
      the frozen features (`head_epochs="auto"`: a logistic regression solved
      exactly on the cached features; no head dropout), then the whole
      backbone fine-tunes for 10 epochs at `fine_tune`'s low, layer-wise
      decreasing rates with BatchNorm frozen (`FreezeNone()`, `lr_mult=100`,
      `bn="frozen"`): `fine_tune`'s defaults. The classic advice, a frozen
      backbone, guards against overfitting a few images; under a converged
      head at these rates, phase 2 does not overfit them, and it gains.
      Measured on the `fer` mini-Xception, 10 labels per class, 3 seeds,
      TensorFlow: digits 0.897 against 0.885 for the converged head alone
      and 0.891 for the top 30% fine-tuned; faces vs non-faces 0.994 against
      0.991 and 0.993; the Keras guide's frozen recipe by hand 0.25 and 0.66.
      For a **different task** and a registry backbone, the plan also cuts at
      earlier, more generic features: `cut="S16"` (the last stride-16 layer;
      for a registry backbone whose deepest key is S16, the key before it), as
      the last stage's features are the most specific to the pretraining
      (Yosinski et al.).
    - **much data, similar task**: the head trains to convergence, then the whole
      backbone fine-tunes for 10 epochs (`FreezeNone()`, `lr_mult=100`,
      BatchNorm frozen): `fine_tune`'s defaults. Opening only the top 30% of
      the backbone's weighted layers for 5 epochs (`TrainFraction(0.3)`, the
      plan this replaced) cost 0.1 points on average on digits with 100 labels
      per class (0.4 on one seed of three); it saves memory and time, so pass
      it as `unfreeze=` when those matter more.
    - **much data, different task**: the head trains to convergence, then the whole
      backbone fine-tunes for 10 epochs (`FreezeNone()`, `lr_mult=100`,
      BatchNorm frozen): `fine_tune`'s defaults. Measured on digits with 100
      labels per class (TensorFlow, 3 seeds): 0.974 against 0.967 for the
      converged head alone. The plan this replaced, a flatter rate profile
      (`lr_mult=10`) with BatchNorm statistics re-estimated on the new images
      (`bn="train"`, AdaBN), raised the training loss in phase 2 (0.068 ->
      0.12-0.15) and scored 0.925.

    All plans' `lr=1e-3` (phase 2 peaks at `lr / 2`) is Adam's default and the
    Keras transfer-learning guide's rate for a new head. Pass `early_stopping=` and a
    validation set to `fine_tune` to stop earlier than the plan's epochs.

    The `threshold` of 100 images per class is a rule of thumb, not a law:
    the gain of fine-tuning over frozen features grows gradually with data. It
    is about where fastai's end-to-end `fine_tune` is routinely shown to work
    (the Oxford-IIIT Pet breeds: ~150-200 training images per class), and
    below it a validation split is too small (~20 images per class) to catch
    a fine-tuned backbone overfitting, while a linear head on frozen features
    (a few thousand weights per class) is hard to overfit. A similar task
    means natural photographs of objects like ImageNet's; a different one,
    e.g. medical, satellite, microscopy or document images.

    **From your data** (`recommend(data=..., model=...)`): the number of
    images and classes are counted, and the similarity is measured, not
    guessed: the frozen backbone runs once over the images (up to
    `max_images`), its candidate cut points (the feature keys of a registry
    backbone, else the end of each stage) are scored by LogME on your labels,
    and the task is "similar" when the deepest features score best, else
    "different" (`kerastl.training.data_advisor`). The scores are in
    `plan.scores` and the explanation.

    Args:
        n_samples_per_class: training images per class (an average is fine),
            a number > 0. Counted from `data` when it is given.
        similarity: `"similar"` or `"different"`: how close the task is to the
            backbone's pretraining (default `"similar"`). Measured from
            `data` when it is given.
        n_classes: the number of classes (>= 2), for `plan.head()`; or `None`.
        backbone: a registry name (`kerastl.backbones.list_backbones()`): the
            plan's `cut` is then one of its feature keys. `None`: no cut is
            named (the explanation says where to cut).
        threshold: images per class from which the data counts as "much".
        data: labelled training images, as `fine_tune` takes them (arrays,
            a `kerastl.data` dataset, `tf.data`, a torch `DataLoader`), scaled
            as `model` takes them; with `model`.
        model: the model `fine_tune` will train (`kerastl.build_model`) or its
            `FeatureExtractor`: its backbone is scored. Its head, if any, must
            have a class for every label.
        max_images: the most images scored (the first ones of a shuffled pass).
        batch_size: images per batch of the scoring pass.

    Returns:
        A frozen `Plan`.

    Example:

    ```python
    plan = kerastl.recommend(40, similarity="different", n_classes=5, backbone="resnet50")
    print(plan.regime)  # little data, different task
    print(plan.unfreeze, plan.epochs, plan.cut)  # FreezeNone() 10 S16
    plan = kerastl.recommend(500, "similar", n_classes=3)
    print(plan.unfreeze, plan.head_epochs, plan.epochs, plan.lr_mult)
    # FreezeNone() auto 10 100.0
    backbone = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, name="conv")], name="tiny"
    )
    extractor = kerastl.FeatureExtractor(backbone, pooling="avg", cut=plan.cut)
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    model = kerastl.build_model(extractor, plan.head(), prep)
    x = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3)).astype("uint8")
    y = np.arange(12) % 3
    history = kerastl.fine_tune(model, (x, y), epochs=plan.epochs, plan=plan, verbose=0)
    print(history.phases, len(history.epoch))  # ['head', 'fine-tune'] 11
    ```
    """
    if data is not None or model is not None:
        return _from_data(
            data,
            model,
            n_samples_per_class,
            similarity,
            n_classes,
            backbone,
            threshold,
            max_images,
            batch_size,
        )
    if n_samples_per_class is None:
        raise TypeError(
            "recommend() needs `n_samples_per_class` (training images per class), or "
            "`data=` and `model=` to count and measure from. Received: n_samples_per_class=None"
        )
    return _fixed_plan(n_samples_per_class, similarity, n_classes, backbone, threshold)


def _from_data(
    data, model, n_samples, similarity, n_classes, backbone, threshold, max_images, batch_size
):
    if data is None or model is None:
        missing = "data" if data is None else "model"
        raise ValueError(
            "recommend() measures the plan from `data=` (labelled images) and `model=` "
            f"(the model or FeatureExtractor to train) together. Received: {missing}=None"
        )
    for name, value in (("n_samples_per_class", n_samples), ("similarity", similarity)):
        if value is not None:
            raise ValueError(
                f"With `data=`, `{name}` is measured from the data: leave it out. "
                f"Received: {name}={value!r}"
            )
    if n_classes is not None:
        n_classes = _check_n_classes(n_classes)
    scores, per_class, classes, extractor = measure(
        data, model, max_images=max_images, batch_size=batch_size
    )
    if n_classes is not None and n_classes != classes:
        raise ValueError(
            f"`data` holds {classes} classes, not n_classes={n_classes}. "
            f"Received: n_classes={n_classes}"
        )
    if backbone is None and extractor.spec is not None:
        backbone = extractor.spec.name
    plan = _fixed_plan(per_class, similarity_of(scores), classes, backbone, threshold)
    return dataclasses.replace(
        plan, explanation=f"{describe(scores)} {plan.explanation}", scores=tuple(scores)
    )


def _fixed_plan(n_samples_per_class, similarity, n_classes, backbone, threshold):
    similarity = "similar" if similarity is None else similarity
    if isinstance(n_samples_per_class, bool) or not isinstance(n_samples_per_class, numbers.Real):
        raise TypeError(
            "`n_samples_per_class` must be a number (training images per class). "
            f"Received: n_samples_per_class={n_samples_per_class!r}"
        )
    if not is_finite_number(n_samples_per_class) or n_samples_per_class <= 0:
        raise ValueError(
            "`n_samples_per_class` must be a finite number > 0. "
            f"Received: n_samples_per_class={n_samples_per_class!r}"
        )
    if not isinstance(similarity, str) or similarity not in SIMILARITIES:
        raise ValueError(
            f"`similarity` must be one of {SIMILARITIES}: how close the task is to the "
            f"backbone's pretraining. Received: similarity={similarity!r}"
        )
    if n_classes is not None:
        n_classes = _check_n_classes(n_classes)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            f"`threshold` must be a number (images per class). Received: threshold={threshold!r}"
        )
    if not is_finite_number(threshold) or threshold <= 0:
        raise ValueError(
            f"`threshold` must be a finite number > 0 (images per class). "
            f"Received: threshold={threshold!r}"
        )
    spec = None
    if backbone is not None:
        if not isinstance(backbone, str):
            raise TypeError(
                "`backbone` must be a registry name (kerastl.backbones.list_backbones()) "
                f"or None. Received: backbone={backbone!r}"
            )
        spec = get_backbone(backbone)  # unknown names: ValueError with close matches

    data = "little" if n_samples_per_class < threshold else "much"
    regime = f"{data} data, {similarity} task"
    count = (
        f"{_count(n_samples_per_class)} images per class is "
        f"{'below' if data == 'little' else 'at least'} the {_count(threshold)} from which "
        "fine-tuning the backbone pays off without overfitting."
    )
    cut = None
    # Every regime fine-tunes as `fine_tune`'s defaults do (measured: docs/fine_tuning.md);
    # no head dropout: the converged head is fitted without it (digits, 10 per class:
    # 0.879 with 0.3, 0.897 without).
    head_epochs, epochs, lr_mult, unfreeze, bn, head_kwargs = (
        "auto",
        10,
        100.0,
        FreezeNone(),
        "frozen",
        {},
    )
    if data == "little":
        tune = (
            "a linear head trains to convergence on them, then the whole backbone fine-tunes "
            "for 10 epochs at low, layer-wise decreasing rates with BatchNorm frozen (10 "
            "labels per class: 0.897 against 0.885 for the frozen head alone on digits, "
            "0.994 against 0.991 on faces)."
        )
        if similarity == "similar":
            why = (
                f"{count} The backbone's top features already describe classes like yours: "
                f"{tune} At these rates, under a head that already fits, the few images are "
                "not overfitted."
            )
        else:
            cut = _earlier_cut(spec) if spec is not None else None
            where = (
                f"cut {spec.name} at {cut!r}, where the features are more generic; "
                if cut
                else "cut the backbone before its last stage, where the features are more "
                "generic (FeatureExtractor(..., cut='S16') for a registry backbone); "
            )
            why = (
                f"{count} The task is far from the pretraining, so the frozen features "
                f"fit it less well: {where}{tune}"
            )
    else:
        measured = (
            "(digits, 100 labels per class: 0.974 against 0.967 for the head alone and "
            "0.973 with only the top 30% of layers open"
        )
        if similarity == "similar":
            why = (
                f"{count} After the head converges, the whole backbone fine-tunes for 10 "
                "epochs at low, layer-wise decreasing rates with BatchNorm frozen "
                f"{measured}; TrainFraction(0.3) as `unfreeze` saves memory and time at "
                "that small cost)."
            )
        else:
            why = (
                f"{count} The task is far from the pretraining, so after the head converges "
                "the whole backbone fine-tunes for 10 epochs at low, layer-wise decreasing "
                f"rates with BatchNorm frozen {measured}; re-estimating BatchNorm on the new "
                "images with 10x flatter rates un-learned: 0.925)."
            )
    return Plan(
        regime=regime,
        data=data,
        similarity=similarity,
        n_samples_per_class=n_samples_per_class,
        threshold=threshold,
        n_classes=n_classes,
        backbone=None if spec is None else spec.name,
        head_epochs=head_epochs,
        epochs=epochs,
        lr=1e-3,
        lr_mult=lr_mult,
        unfreeze=unfreeze,
        bn=bn,
        cut=cut,
        head_kwargs=head_kwargs,
        explanation=why,
    )


# --- helpers ---------------------------------------------------------------------


def _earlier_cut(spec):
    """The feature key to cut at for a far task: `"S16"`, else the one before the deepest."""
    keys = list(spec.feature_layers)
    if "S16" in keys[:-1]:
        return "S16"
    return keys[-2] if len(keys) >= 2 else None


def _check_n_classes(n_classes):
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral):
        raise TypeError(f"`n_classes` must be an int >= 2. Received: n_classes={n_classes!r}")
    if n_classes < 2:
        raise ValueError(
            "`n_classes` must be at least 2 (one yes/no output is 2 classes: a binary "
            f"head). Received: n_classes={n_classes!r}"
        )
    return int(n_classes)


def _count(value):
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _epochs(count):
    if count == "auto":
        return "until its loss stops improving"
    return f"{count} epoch{'s' if count != 1 else ''}"


def _rate(value):
    return f"{value:.0e}" if value < 0.01 else f"{value:g}"
