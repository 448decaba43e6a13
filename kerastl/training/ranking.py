"""`rank_backbones`: which backbone to fine-tune, chosen on the user's own labelled images.

Fine-tuning every candidate to compare them costs hours. Here no backbone
trains: each candidate runs once over the images (through the feature cache,
with its own input recipe and size), and its frozen features are scored two
ways:

- **LogME** (You et al. 2021, "LogME: Practical Assessment of Pre-trained
  Models for Transfer Learning"): the evidence (log marginal likelihood) of a
  Bayesian linear model from the features to each class's one-hot target,
  maximised over its prior precision `alpha` and noise precision `beta` by
  MacKay's fixed point, per image, averaged over the classes. One SVD of the
  feature matrix makes every step of the fixed point cost `O(min(n, d))`.
  Higher is better; the values compare candidates on the same data only, and
  do not change when the features are scaled.
- **Linear-probe accuracy**: a multinomial logistic regression on the
  standardised features (scikit-learn's `LogisticRegression(C=1.0)`, written
  here in numpy), its accuracy over stratified k-fold cross-validation.

Beside the quality, the cost: the backbone's parameters and the images per
second it ran at during feature extraction.
"""

import dataclasses
import math
import numbers
import os
import time
import warnings

import keras
import numpy as np

from kerastl._checks import check_positive_int
from kerastl._keras_private import flatten_layers
from kerastl.backbones.recipes import PREPROCESSING_MODES
from kerastl.backbones.registry import get_backbone
from kerastl.backbones.sources import is_model_path
from kerastl.backbones.weights import check_weights_arg
from kerastl.layers.feature_extractor import FeatureExtractor
from kerastl.layers.global_pooling_2d import GLOBAL_POOLING_MODES, GlobalPooling2D
from kerastl.preprocessing.pipelines import pipeline
from kerastl.training.feature_cache import features_of

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
    folds = _check_folds(folds)
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
    source, image_shape, first_batch, codes = _prepare_data(data, batch_size)
    if codes is not None:
        _check_labels(codes, folds, "data")
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
            row, codes = _score(
                front, source, first_batch, codes, folds, seed, batch_size, cache_dir, verbose
            )
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


def logme(features, labels):
    """The LogME score of `features` for classifying `labels` (higher transfers better).

    The evidence (log marginal likelihood) of a Bayesian linear regression from
    the features to each class's one-hot target, maximised over its prior and
    noise precisions, divided by the number of images and averaged over the
    classes (You et al. 2021). One SVD of the features serves every class and
    every step of the maximisation. Scores compare feature extractors on the
    same images and labels; multiplying the features by a constant does not
    change them.

    Args:
        features: `(n, d)` array (or `(n, ...)`, flattened).
        labels: `n` class ids or names.

    Returns:
        A float.

    Example:

    ```python
    from kerastl.training.ranking import logme

    labels = np.arange(40) % 2
    informative = labels[:, None] + np.random.default_rng(0).normal(0, 0.3, (40, 4))
    noise = np.random.default_rng(1).normal(0, 1, (40, 4))
    print(logme(informative, labels) > logme(noise, labels))  # True
    ```
    """
    return _logme(*_check_scoring_inputs(features, labels))


def _logme(features, codes):
    n = len(features)
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    s2 = s**2
    evidences = [
        _max_evidence(u.T @ (codes == c).astype(np.float64), s2, float(np.sum(codes == c)), n)
        for c in range(int(codes.max()) + 1)
    ]
    return float(np.mean(evidences))


def _max_evidence(z, s2, yy, n, max_iter=1000, tol=1e-10):
    """The largest log evidence per image of a target `y`, given the features' spectrum.

    The model is `y = F w + noise`, `w ~ N(0, I / alpha)`, `noise ~ N(0, I / beta)`;
    `s2` holds the nonzero eigenvalues of `F^T F`, `z` is `U^T y` (the target in
    the features' left singular basis) and `yy` is `|y|^2`. Everything depends on
    `alpha` and `beta` through their ratio `lam = alpha / beta` and on `beta`, whose
    best value for a given `lam` is closed-form: the evidence is a function of
    `lam` alone. MacKay's fixed point (`alpha = gamma / |m|^2`, `beta = (n - gamma)
    / |F m - y|^2`) is run on `lam`, where it cannot overflow when `beta` goes to
    infinity (as many features as images can fit `y` exactly). It starts from the
    best of a coarse grid spanning the spectrum rather than from `alpha = beta = 1`:
    the evidence can have two maxima, and a start that scales with the features
    keeps the result unchanged when they are scaled.
    """
    tiny = np.finfo(np.float64).tiny
    r = len(s2)
    # The part of y outside the features' span: none when they span all n dimensions.
    left = 0.0 if r == n else max(yy - float(z @ z), 0.0)

    def terms(lam):
        gamma = float(np.sum(s2 / (lam + s2)))  # effective number of parameters
        mm = float(np.sum(s2 * (z / (lam + s2)) ** 2))  # |m|^2, m the posterior mean
        res = left + float(np.sum((lam * z / (lam + s2)) ** 2))  # |F m - y|^2
        return gamma, mm, res

    def evidence(lam):
        # At (alpha, beta) = (lam beta, beta), beta at its best, n / (|F m - y|^2 + lam |m|^2);
        # F^T F's other d - r eigenvalues are 0 and cancel out.
        _, mm, res = terms(lam)
        fit = max(res + lam * mm, tiny)
        return (
            r / 2 * math.log(lam)
            + n / 2 * math.log(n / fit)
            - float(np.sum(np.log(lam + s2))) / 2
            - n / 2
            - n / 2 * math.log(2 * math.pi)
        )

    # lam -> infinity: w = 0, y is noise alone (the features explain nothing of it).
    best = n / 2 * math.log(n / max(yy, tiny)) - n / 2 - n / 2 * math.log(2 * math.pi)
    positive = s2[s2 > 0]
    if positive.size:
        low, high = np.log10(positive.min()) - 8, np.log10(positive.max()) + 8
        lam = max((float(v) for v in np.logspace(low, high, 49)), key=evidence)
        best = max(best, evidence(lam))
        for _ in range(max_iter):
            gamma, mm, res = terms(lam)
            new = gamma * res / (max(mm, tiny) * max(n - gamma, tiny))
            new = min(max(new, _LAM_RANGE[0]), _LAM_RANGE[1])
            converged = abs(new - lam) <= tol * lam or new in _LAM_RANGE
            lam = new
            if converged:
                break
        best = max(best, evidence(lam))
    return best / n


_LAM_RANGE = (1e-300, 1e300)


def linear_probe(features, labels, *, folds=5, seed=0):
    """Cross-validated accuracy of a multinomial logistic regression on `features`.

    Stratified k-fold: every class is spread evenly over the folds (a random
    order from `seed`). On each fold the features are standardised with the
    training part's mean and deviation and a softmax regression is fitted by
    L-BFGS to the mean cross-entropy plus `|W|^2 / (2 n_train)` (the bias is
    not penalised): scikit-learn's `LogisticRegression(C=1.0)`. When features
    outnumber the training images, it is fitted in the span of the training
    features (the same solution, found faster).

    Args:
        features: `(n, d)` array (or `(n, ...)`, flattened).
        labels: `n` class ids or names.
        folds: the number of folds, at least 2 and at most `n`.
        seed: the folds' random split.

    Returns:
        The accuracy on each fold, an array of `folds` floats.

    Example:

    ```python
    from kerastl.training.ranking import linear_probe

    labels = np.arange(40) % 2
    features = labels[:, None] + np.random.default_rng(0).normal(0, 0.1, (40, 3))
    accuracies = linear_probe(features, labels, folds=4)
    print(accuracies.shape, float(accuracies.mean()))  # (4,) 1.0
    ```
    """
    folds = _check_folds(folds)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0. Received: seed={seed!r}")
    features, codes = _check_scoring_inputs(features, labels)
    _check_labels(codes, folds, "labels")
    return _probe_accuracies(features, codes, folds, seed)


def _probe_accuracies(features, codes, folds, seed):
    assignment = stratified_folds(codes, folds, seed)
    classes = int(codes.max()) + 1
    accuracies = []
    for fold in range(folds):
        test = assignment == fold
        predicted = _probe_predictions(features[~test], codes[~test], features[test], classes)
        accuracies.append(float(np.mean(predicted == codes[test])))
    return np.asarray(accuracies)


def stratified_folds(labels, folds, seed):
    """The fold (0 .. folds - 1) of each image: each class dealt out in turn, in a random order.

    Fold sizes differ by one at most, and so do a class's counts in two folds.

    Example:

    ```python
    from kerastl.training.ranking import stratified_folds

    folds = stratified_folds(np.array([0] * 6 + [1] * 4), folds=2, seed=0)
    print(np.bincount(folds).tolist(), np.bincount(folds[6:]).tolist())  # [5, 5] [2, 2]
    ```
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    )
    assignment = np.empty(len(labels), dtype=int)
    assignment[order] = np.arange(len(labels)) % folds
    return assignment


def _probe_predictions(x, y, x_test, classes):
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0  # a constant feature stays 0, as scikit-learn's StandardScaler leaves it
    x = (x - mean) / std
    x_test = (x_test - mean) / std
    n, d = x.shape
    if d > n:
        # The L2-penalised solution lies in the span of the training rows: fit in that basis.
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        keep = s > s[0] * 1e-10 if s[0] > 0 else s > 0
        x, x_test = u[:, keep] * s[keep], x_test @ vt[keep].T
    weights, bias = _fit_softmax(x, y, classes, l2=1.0 / n)
    return np.argmax(x_test @ weights + bias, axis=1)


def _fit_softmax(x, y, classes, l2, max_iter=500, tol=1e-5):
    """`(W, b)` minimising the mean cross-entropy of `softmax(x W + b)` plus `l2 / 2 |W|^2`."""
    n, d = x.shape
    onehot = np.eye(classes)[y]

    def loss_and_grad(theta):
        w, b = theta[: d * classes].reshape(d, classes), theta[d * classes :]
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -np.sum(onehot * log_p) / n + l2 / 2 * np.sum(w * w)
        error = (np.exp(log_p) - onehot) / n
        grad = np.concatenate([(x.T @ error + l2 * w).ravel(), error.sum(axis=0)])
        return loss, grad

    theta = _lbfgs(loss_and_grad, np.zeros(d * classes + classes), max_iter, tol)
    return theta[: d * classes].reshape(d, classes), theta[d * classes :]


def _lbfgs(loss_and_grad, theta, max_iter, tol, memory=10):
    """Limited-memory BFGS with a backtracking (Armijo) line search: a smooth convex minimum."""
    loss, grad = loss_and_grad(theta)
    history = []
    for _ in range(max_iter):
        if np.max(np.abs(grad)) <= tol:
            break
        # The two-loop recursion: direction = -(inverse Hessian estimate) @ grad.
        q = grad.copy()
        coefficients = []
        for s, y, rho in reversed(history):
            a = rho * (s @ q)
            q -= a * y
            coefficients.append(a)
        if history:
            s, y, _ = history[-1]
            q *= (s @ y) / (y @ y)
        else:
            q /= max(np.linalg.norm(q), 1.0)
        for (s, y, rho), a in zip(history, reversed(coefficients), strict=True):
            q += s * (a - rho * (y @ q))
        direction = -q
        slope = grad @ direction
        if slope >= 0:  # not a descent direction: restart from the gradient
            history.clear()
            direction, slope = -grad, -(grad @ grad)
        step = 1.0
        while True:
            candidate = theta + step * direction
            new_loss, new_grad = loss_and_grad(candidate)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-12:
                break
            step /= 2
        s, y = candidate - theta, new_grad - grad
        if s @ y > 1e-12 * (y @ y):
            history.append((s, y, 1.0 / (s @ y)))
            if len(history) > memory:
                history.pop(0)
        done = loss - new_loss <= 1e-12 * max(abs(loss), 1.0)
        theta, loss, grad = candidate, new_loss, new_grad
        if done:
            break
    return theta


# --- data and candidates -----------------------------------------------------------------


def _check_folds(folds):
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise ValueError(f"`folds` must be an int >= 2. Received: folds={folds!r}")
    return int(folds)


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


def _prepare_data(data, batch_size):
    """`(source for features_of, raw image shape, first batch, label codes or None)`.

    Arrays are checked here, labels included; a dataset's labels come with its
    features.
    """
    if isinstance(data, np.ndarray):
        raise ValueError(
            "`data` needs labels: pass (images, labels). "
            f"Received: data of shape {data.shape} without labels"
        )
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if y is None:
            raise ValueError("`data` needs labels: pass (images, labels). Received: labels=None")
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(
                "`data` images must be an array (n, height, width, 1 or 3); add the channel "
                f"axis to grayscale images (x[..., None]). Received: images of shape {x.shape}"
            )
        if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
            raise ValueError(
                f"`data` images must be numbers in 0..255. Received: images of dtype {x.dtype}"
            )
        codes = _encode_labels(y, len(x), "data")
        return (x, codes), x.shape[1:], x[:batch_size], codes
    if isinstance(data, keras.utils.PyDataset):
        if len(data) == 0:
            raise ValueError("`data` holds no batches. Received: data with 0 batches")
        first = data[0]
    elif type(data).__module__.startswith(("tensorflow", "torch")):
        first = next(iter(data), None)
        if first is None:
            raise ValueError(f"`data` holds no batches. Received: data={data!r}")
    else:
        raise TypeError(
            "`data` must be (images, labels) arrays, a kerastl.data dataset, a tf.data.Dataset "
            f"or a torch DataLoader. Received: data={data!r}"
        )
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise ValueError(
            "`data` must yield (images, labels) batches: ranking needs labels. "
            f"Received: a batch of type {type(first).__name__}"
        )
    x = np.asarray(keras.ops.convert_to_numpy(first[0]))
    if x.ndim != 4:
        raise ValueError(
            "`data` must yield image batches (batch, height, width, channels). "
            f"Received: a batch of shape {x.shape}"
        )
    return data, x.shape[1:], x, None


def _encode_labels(labels, n, arg):
    """Labels (ids, names or one-hot rows) as codes 0 .. k - 1."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2:
        labels = np.argmax(labels, axis=1)  # one-hot (or probability) rows
    if labels.ndim != 1 or (n is not None and len(labels) != n):
        raise ValueError(
            f"`{arg}` must have one label per image ({n} images). "
            f"Received: labels of shape {labels.shape}"
        )
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError(
                f"`{arg}` labels must be class ids (the ranking is for classification). "
                f"Received: non-integer labels such as {labels[labels != np.round(labels)][:3]}"
            )
    elif labels.dtype.kind not in "iuUSOb":
        raise ValueError(
            f"`{arg}` labels must be class ids or names. Received: labels of dtype {labels.dtype}"
        )
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _check_labels(codes, folds, arg):
    counts = np.bincount(codes)
    if len(counts) < 2:
        raise ValueError(
            f"`{arg}` must hold at least 2 classes to rank backbones for classifying them. "
            f"Received: {len(counts)} class"
        )
    if len(codes) < folds:
        raise ValueError(
            f"`{arg}` holds fewer images than folds: each fold needs one to test on. "
            f"Received: {len(codes)} images, folds={folds}"
        )
    if counts.min() < 2:
        raise ValueError(
            f"Every class in `{arg}` needs at least 2 images (one to train the probe on, one "
            f"to test it). Received: {int(np.sum(counts < 2))} class(es) with 1 image"
        )
    if counts.min() < folds:
        warnings.warn(
            f"The smallest class in `{arg}` has {counts.min()} images, fewer than folds={folds}: "
            "some folds test without it.",
            stacklevel=3,
        )


def _check_scoring_inputs(features, labels):
    features = np.asarray(features)
    if features.ndim < 2 or len(features) < 2:
        raise ValueError(
            "`features` must be an array (n, d) with n >= 2. "
            f"Received: features of shape {features.shape}"
        )
    if features.dtype == bool or not np.issubdtype(features.dtype, np.number):
        raise ValueError(f"`features` must be numbers. Received: dtype {features.dtype}")
    features = features.reshape(len(features), -1).astype(np.float64)
    if not np.all(np.isfinite(features)):
        raise ValueError("`features` must be finite. Received: features with NaN or inf")
    codes = _encode_labels(labels, len(features), "labels")
    return features, codes


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


def _score(front, source, first_batch, codes, folds, seed, batch_size, cache_dir, verbose):
    """`(row, label codes)` of one candidate: features (timed), LogME, probe accuracy."""
    front.predict_on_batch(first_batch)  # compiles: not counted in the throughput
    started = time.perf_counter()
    cache = features_of(
        front, source, batch_size=batch_size, cache_dir=cache_dir, verbose=int(verbose == 1)
    )
    seconds = time.perf_counter() - started
    images_per_s = len(cache.features) / max(seconds, 1e-9)
    if cache.reused:  # read from cache_dir, nothing ran: time one batch instead
        started = time.perf_counter()
        front.predict_on_batch(first_batch)
        images_per_s = len(first_batch) / max(time.perf_counter() - started, 1e-9)
    if codes is None:  # a dataset: its labels came with the features
        if cache.labels is None:
            raise ValueError("`data` must yield (images, labels) batches. Received: no labels")
        codes = _encode_labels(cache.labels, len(cache.features), "data")
        _check_labels(codes, folds, "data")
    features = np.asarray(cache.features, dtype=np.float64).reshape(len(codes), -1)
    if not np.all(np.isfinite(features)):
        raise ValueError(
            f"Backbone {front.name!r} gave NaN or infinite features: check its weights and "
            "input recipe. Received: non-finite features"
        )
    accuracies = _probe_accuracies(features, codes, folds, seed)
    row = {
        "logme": _logme(features, codes),
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
