"""`rank_backbones`: which backbone to fine-tune, chosen on the user's own labelled images.

Fine-tuning every candidate to compare them costs hours. Here no backbone
trains: each candidate runs once over the images (through the feature cache,
with its own input recipe and size), and its frozen features are scored two
ways (`kerastl.training.transferability`): LogME (You et al. 2021), the
evidence of a Bayesian linear model from the features to the labels, and the
accuracy of a linear probe over stratified k-fold cross-validation.

Beside the quality, the cost: the backbone's parameters and the images per
second it ran at during feature extraction.
"""

import dataclasses
import numbers
import os
import time

import keras
import numpy as np

from kerastl._checks import check_positive_int
from kerastl._keras_private import flatten_layers
from kerastl.backbones.recipes import PREPROCESSING_MODES
from kerastl.backbones.registry import get_backbone
from kerastl.backbones.sources import is_model_path
from kerastl.backbones.weights import check_weights_arg
from kerastl.data.adapter import adapt
from kerastl.layers.feature_extractor import FeatureExtractor
from kerastl.layers.global_pooling_2d import GLOBAL_POOLING_MODES, GlobalPooling2D
from kerastl.preprocessing.pipelines import pipeline
from kerastl.training.feature_cache import features_of
from kerastl.training.transferability import (
    check_classes,
    check_folds,
    encode_labels,
    logme_of_codes,
    probe_accuracies,
)

DEFAULT_CANDIDATES = ("mobilenet_v2", "efficientnet_b0", "resnet50", "densenet121", "convnext_tiny")
"""What `rank_backbones` compares when given no candidates: 2M to 28M parameters."""

CRITERIA = ("logme", "probe_accuracy")

_COLUMNS = (
    # (row key, header, alignment)
    ("rank", "rank", ">"),
    ("backbone", "backbone", "<"),
    ("logme", "LogME", ">"),
    ("probe_accuracy", "probe acc", ">"),
    ("params", "params", ">"),
    ("images_per_s", "images/s", ">"),
    ("feature_dim", "features", ">"),
    ("input", "input", "<"),
)
_CRITERION_NAMES = {"logme": "LogME", "probe_accuracy": "linear-probe accuracy"}


@dataclasses.dataclass(frozen=True, repr=False)
class BackboneRanking:
    """What `rank_backbones` found: the candidates, best first.

    Attributes:
        rows: one dict per candidate, best first by `criterion`: `rank` (1 is
            best), `backbone` (its name), `logme`, `probe_accuracy` and
            `probe_std` (mean and standard deviation over the folds), `params`
            (the backbone's parameters), `images_per_s` (measured while its
            features were computed; on one batch when they came from
            `cache_dir`), `feature_dim`, `input` (`"HxW recipe"`: the size the
            images were resized to and the input recipe), `seconds` (feature
            extraction) and `cached` (whether the features were read from
            `cache_dir`).
        criterion: what `rows` are sorted by: `"logme"` or `"probe_accuracy"`.
        n_images: images scored.
        n_classes: classes among their labels.
        folds: cross-validation folds of the linear probe.
    """

    rows: list
    criterion: str
    n_images: int
    n_classes: int
    folds: int

    @property
    def best(self):
        """The recommended candidate's row: the best `criterion`."""
        return self.rows[0]

    def recommendation(self):
        """One sentence: the best candidate, by which criterion, and whether the other agrees."""
        other = next(c for c in CRITERIA if c != self.criterion)
        best = self.best["backbone"]
        text = f"Recommended: {best} (highest {_CRITERION_NAMES[self.criterion]}"
        if len(self.rows) > 1:
            top = max(self.rows, key=lambda row: row[other])["backbone"]
            agrees = "agrees" if top == best else f"prefers {top}"
            text += f"; {_CRITERION_NAMES[other]} {agrees}"
        return text + ")."

    def table(self):
        """The candidates as a text table, the recommended one marked `*`."""
        cells = [[_cell(row, key) for key, _, _ in _COLUMNS] for row in self.rows]
        headers = [header for _, header, _ in _COLUMNS]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

        def line(values, mark):
            return (
                mark
                + "  ".join(
                    f"{value:{align}{width}}"
                    for value, width, (_, _, align) in zip(values, widths, _COLUMNS, strict=True)
                )
            ).rstrip()

        lines = [line(headers, "  ")]
        lines += [line(c, "* " if i == 0 else "  ") for i, c in enumerate(cells)]
        lines.append(
            f"{self.n_images} images, {self.n_classes} classes; probe accuracy over "
            f"{self.folds}-fold stratified cross-validation (mean +- std)."
        )
        lines.append(self.recommendation())
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"BackboneRanking(best={self.best['backbone']!r} by {self.criterion}, "
            f"candidates={len(self.rows)}, n_images={self.n_images}, "
            f"n_classes={self.n_classes})"
        )


def _cell(row, key):
    value = row[key]
    if key == "logme":
        return f"{value:.4f}"
    if key == "probe_accuracy":
        return f"{value:.3f} +- {row['probe_std']:.3f}"
    if key == "params":
        return _count(value)
    if key == "images_per_s":
        return f"{value:,.0f}"
    return str(value)


def _count(n):
    for unit, size in (("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def rank_backbones(
    data,
    candidates=None,
    *,
    weights="imagenet",
    image_size=None,
    mode=None,
    pooling="avg",
    folds=5,
    criterion="logme",
    batch_size=32,
    cache_dir=None,
    seed=0,
    verbose=1,
):
    """Ranks candidate backbones on labelled images, in minutes, without fine-tuning any.

    Each candidate runs once over the images (preprocessing with its own input
    recipe and size, then the frozen backbone, globally pooled), through the
    feature cache. Its features get two scores (see the module's text): LogME
    (You et al. 2021), a transferability estimate, and the accuracy of a
    linear probe over stratified k-fold cross-validation. Beside them stand
    the cost: parameters, and the images per second measured during
    extraction (after one warm-up batch, so compilation is not counted).

    Args:
        data: labelled images in 0..255: `(x, y)` arrays (`x` of shape
            `(n, height, width, 1 or 3)`, `y` class ids, class names or
            one-hot rows), or a `kerastl.data` dataset, `tf.data.Dataset` or
            torch `DataLoader` of `(images, labels)` batches.
        candidates: a list of backbones: registry names
            (`kerastl.backbones.list_backbones()`), `FeatureExtractor`s,
            functional `keras.Model`s (a classifier gives its backbone as
            `FeatureExtractor` finds it) or `.keras` / `.h5` model file paths;
            or a dict `{name: backbone}` to name them. `None`:
            `DEFAULT_CANDIDATES`. A model's trainable flags are left as they
            were.
        weights: the weights of registry-name candidates: `"imagenet"` (the
            download, or the copy in the Keras cache directory; offline and
            not cached, it fails before any features are computed), `None`,
            a weights file; or a dict `{candidate name: weights}` (the others
            get `"imagenet"`). Models, files and extractors bring their own.
        image_size: `None`: every candidate sees the images at its own size
            (its pretraining size for registry names, its input size for
            models). An int or `(height, width)`: registry backbones are built
            at that size, and models that take any size are fed it; a model
            with a fixed input size keeps its own.
        mode: the input recipe (`"caffe"`, `"tf"`, `"torch"`, `"none"`) of
            candidates whose recipe kerastl does not know (models and files
            of an architecture not in the registry), or a dict
            `{candidate name: recipe}`, which also overrides known recipes.
        pooling: how feature maps become one vector per image: `"avg"`,
            `"max"`, `"gem"` or `"avgmax"`. Features that are vectors already
            are used as they are.
        folds: cross-validation folds of the linear probe (at least 2).
        criterion: what the ranking and the recommendation follow: `"logme"`
            or `"probe_accuracy"` (ties go to the other, then to fewer
            parameters).
        batch_size: images per batch of feature extraction.
        cache_dir: a directory for the features (`kerastl.cache_features`):
            a second call on the same candidates and data reads them back.
        seed: the folds' random split.
        verbose: 0 silent; 1 progress bars and the table; 2 the table only.

    Returns:
        A `BackboneRanking` (`.rows`, `.best`, `.table()`).

    Example:

    ```python
    def tiny(seed):
        keras.utils.set_random_seed(seed)
        layers = [keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="conv")]
        return keras.Sequential(layers, name=f"tiny_{seed}")

    x = np.random.default_rng(0).integers(0, 256, (30, 16, 16, 3)).astype("uint8")
    y = np.arange(30) % 3
    ranking = kerastl.rank_backbones((x, y), [tiny(1), tiny(2)], mode="tf", folds=3, verbose=0)
    print(len(ranking.rows), ranking.criterion, ranking.best["rank"])  # 2 logme 1
    ```
    """
    folds = check_folds(folds)
    check_positive_int(batch_size, "batch_size")
    if criterion not in CRITERIA:
        raise ValueError(
            f"`criterion` must be one of {CRITERIA}. Received: criterion={criterion!r}"
        )
    if pooling not in GLOBAL_POOLING_MODES:
        raise ValueError(
            f"`pooling` must be one of {GLOBAL_POOLING_MODES}. Received: pooling={pooling!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0. Received: seed={seed!r}")
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(
            f"`cache_dir` must be a directory path or None. Received: cache_dir={cache_dir!r}"
        )
    image_size = _check_image_size(image_size)
    data = adapt(data, "data", batch_size=batch_size, needs_labels=True)
    first_batch = data.first_batch()[0]  # its images checked: a bad source fails here
    if data.labels is not None:  # known now: checked before any backbone is built
        check_classes(encode_labels(data.labels, data.count, "data"), folds, "data")
    image_shape = first_batch.shape[1:]
    chosen = _candidates(candidates)
    weights = _per_candidate(weights, chosen, "weights", check_weights_arg, registry_only=True)
    if isinstance(mode, dict):
        recipes, fallback = _per_candidate(mode, chosen, "mode", _check_mode), None
    else:
        recipes, fallback = {}, (None if mode is None else _check_mode(mode))

    restore = _trainable_flags([c.value for c in chosen if isinstance(c.value, keras.Model)])
    try:
        # Every candidate is built before any runs: a missing download or recipe fails fast.
        fronts = [
            _front(
                c, weights[c.name], recipes.get(c.name), fallback, image_shape, image_size, pooling
            )
            for c in chosen
        ]
        rows = []
        for i, candidate in enumerate(chosen):
            front, params, described = fronts[i]
            fronts[i] = None  # dropped once scored: one candidate's model and features at a time
            if verbose == 1:
                print(f"[{i + 1}/{len(chosen)}] {candidate.name}: features at {described}")
            row, codes = _score(front, data, first_batch, folds, seed, cache_dir, verbose)
            rows.append({"backbone": candidate.name, **row, "params": params, "input": described})
    finally:
        for layer, trainable in restore:
            layer.trainable = trainable
    other = next(c for c in CRITERIA if c != criterion)
    rows.sort(key=lambda r: (-r[criterion], -r[other], r["params"]))
    ranking = BackboneRanking(
        rows=[{"rank": rank, **row} for rank, row in enumerate(rows, 1)],
        criterion=criterion,
        n_images=len(codes),
        n_classes=int(codes.max()) + 1,
        folds=folds,
    )
    if verbose:
        print(ranking.table())
    return ranking


# --- data and candidates -----------------------------------------------------------------


def _check_image_size(image_size):
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, numbers.Integral) else image_size
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return tuple(int(s) for s in size)
    raise ValueError(
        "`image_size` must be None (each backbone's own size), an int or (height, width). "
        f"Received: image_size={image_size!r}"
    )


def _check_mode(mode):
    if mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"`mode` must be one of {PREPROCESSING_MODES} (or a dict of them). "
            f"Received: mode={mode!r}"
        )
    return mode


@dataclasses.dataclass(frozen=True)
class _Candidate:
    name: str
    value: object
    registry: bool


def _candidates(candidates):
    if candidates is None:
        candidates = list(DEFAULT_CANDIDATES)
    if isinstance(candidates, dict):
        if not all(isinstance(k, str) and k for k in candidates):
            raise TypeError(
                "`candidates` as a dict must map names (strings) to backbones. "
                f"Received: candidates with keys {list(candidates)!r}"
            )
        items = list(candidates.items())
    elif isinstance(candidates, (list, tuple)):
        items = [(None, c) for c in candidates]
    else:
        raise TypeError(
            "`candidates` must be a list of backbones (registry names, FeatureExtractors, "
            "keras.Models, model file paths) or a dict of them. "
            f"Received: candidates={candidates!r}"
        )
    if not items:
        raise ValueError("`candidates` is empty. Received: candidates=[]")
    chosen, seen = [], set()
    for name, value in items:
        registry = False
        if isinstance(value, os.PathLike) or (isinstance(value, str) and is_model_path(value)):
            path = os.fspath(value)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"`candidates` names a model file that does not exist. Received: {path!r}"
                )
            default = os.path.basename(path)
        elif isinstance(value, str):
            try:
                spec = get_backbone(value)
            except ValueError as e:
                raise ValueError(f"`candidates` names an unknown backbone. {e}") from None
            if not spec.supports():
                raise ValueError(
                    f"Backbone {spec.name!r} does not run on the {keras.config.backend()!r} "
                    f"backend. Received: candidates entry {value!r}"
                )
            value, default, registry = spec.name, spec.name, True
        elif isinstance(value, FeatureExtractor):
            default = value.backbone.name
        elif isinstance(value, keras.Model):
            default = value.name
        else:
            raise TypeError(
                "Each of `candidates` must be a registry name, a FeatureExtractor, a "
                f"keras.Model or a model file path. Received: {value!r}"
            )
        name = name or default
        unique, i = name, 1
        while unique in seen:
            i += 1
            unique = f"{name}_{i}"
        seen.add(unique)
        chosen.append(_Candidate(unique, value, registry))
    return chosen


def _per_candidate(value, chosen, arg, check, registry_only=False):
    """`{candidate name: setting}` from one setting for all, or from a dict of them.

    With `registry_only` (weights) the setting applies to registry names only
    (the others `None`), and a dict's missing names get `"imagenet"`.
    """
    allowed = [c.name for c in chosen if c.registry or not registry_only]
    if not isinstance(value, dict):
        value = check(value)
        return {c.name: (value if c.registry else None) for c in chosen}
    unknown = [k for k in value if k not in allowed]
    if unknown:
        which = "registry-name candidates" if registry_only else "candidates"
        raise ValueError(
            f"`{arg}` names {unknown}, which are not among the {which} {allowed}. "
            f"Received: {arg}={value!r}"
        )
    default = "imagenet" if registry_only else None
    return {c.name: (check(value[c.name]) if c.name in value else default) for c in chosen}


def _trainable_flags(models):
    return [
        (layer, layer.trainable)
        for model in models
        for layer in flatten_layers(model, include_self=True, recursive=True)
    ]


def _front(candidate, weights, recipe, fallback, image_shape, image_size, pooling):
    """`(model: raw images -> features, backbone parameters, "HxW recipe")` of a candidate.

    `recipe` (from a `mode` dict) wins; else the backbone's own; else `fallback`.
    """
    value = candidate.value
    if isinstance(value, FeatureExtractor):
        extractor = value
    elif candidate.registry:
        spec = get_backbone(value)
        if image_size is not None and min(image_size) < spec.min_size:
            raise ValueError(
                f"`image_size` is below the smallest input backbone {spec.name!r} takes "
                f"({spec.min_size}x{spec.min_size}). Received: image_size={image_size}"
            )
        shape = None if image_size is None else (*image_size, 3)
        extractor = FeatureExtractor(value, weights=weights, input_shape=shape)
    else:
        extractor = FeatureExtractor(value)  # a model or model file: its own weights
    own = extractor.spec.preprocessing if extractor.spec is not None else None
    recipe = recipe or own or fallback
    if recipe is None:
        raise ValueError(
            f"Candidate {candidate.name!r} is not a registry architecture, so its input recipe "
            "is unknown: give it with `mode` ('caffe', 'tf', 'torch' or 'none'; 'none' when "
            "the model rescales raw 0..255 images itself), for all such candidates or as "
            f"{{{candidate.name!r}: ...}}. Received: mode=None"
        )
    if extractor.image_shape[-1] not in (3, None):
        raise ValueError(
            f"Candidate {candidate.name!r} takes {extractor.image_shape[-1]}-channel images; "
            "the ranking feeds RGB images (grayscale ones are repeated to 3 channels). "
            f"Received: candidates entry with input shape {extractor.image_shape}"
        )
    fixed = tuple(extractor.image_shape[:2])
    target = fixed if None not in fixed else image_size
    inputs = keras.Input(image_shape, name="images")
    prep = pipeline(extractor, resize=target if target is not None else False, mode=recipe)
    features = extractor(prep(inputs))
    if isinstance(features, dict):
        raise ValueError(
            f"Candidate {candidate.name!r} gives a dict of feature maps: give one output. "
            f"Received: outputs={extractor.outputs!r}"
        )
    if len(features.shape) == 4:
        features = GlobalPooling2D(pooling, name="pool")(features)
    elif len(features.shape) != 2:
        raise ValueError(
            f"Candidate {candidate.name!r} gives features of rank {len(features.shape)}; "
            "the ranking takes feature maps (batch, height, width, channels) or vectors. "
            f"Received: features of shape {tuple(features.shape)}"
        )
    front = keras.Model(inputs, features, name=f"rank_{_safe(candidate.name)}")
    size = "x".join(str(s) for s in target) if target is not None else "own size"
    return front, int(extractor.backbone.count_params()), f"{size} {recipe}"


def _score(front, data, first_batch, folds, seed, cache_dir, verbose):
    """`(row, label codes)` of one candidate: features (timed), LogME, probe accuracy.

    The codes are those of the labels that came with this candidate's features:
    a shuffling source gives each candidate its own order.
    """
    front.predict_on_batch(first_batch)  # compiles: not counted in the throughput
    started = time.perf_counter()
    cache = features_of(front, data, cache_dir=cache_dir, verbose=int(verbose == 1))
    seconds = time.perf_counter() - started
    images_per_s = len(cache.features) / max(seconds, 1e-9)
    if cache.reused:  # read from cache_dir, nothing ran: time one batch instead
        started = time.perf_counter()
        front.predict_on_batch(first_batch)
        images_per_s = len(first_batch) / max(time.perf_counter() - started, 1e-9)
    codes = encode_labels(cache.labels, len(cache.features), "data")
    if data.labels is None:  # a dataset's labels, known once drawn
        check_classes(codes, folds, "data")
    features = np.asarray(cache.features, dtype=np.float64).reshape(len(codes), -1)
    if not np.all(np.isfinite(features)):
        raise ValueError(
            f"Backbone {front.name!r} gave NaN or infinite features: check its weights and "
            "input recipe. Received: non-finite features"
        )
    accuracies = probe_accuracies(features, codes, folds, seed)
    row = {
        "logme": logme_of_codes(features, codes),
        "probe_accuracy": float(np.mean(accuracies)),
        "probe_std": float(np.std(accuracies)),
        "images_per_s": float(images_per_s),
        "feature_dim": features.shape[1],
        "seconds": round(seconds, 2),
        "cached": bool(cache.reused),
    }
    return row, codes


def _safe(name):
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)
