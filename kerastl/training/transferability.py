"""How well frozen features transfer to the user's labels: LogME and a linear probe, in numpy.

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

No Keras here: the scores run on features already computed
(`kerastl.training.ranking` computes them).
"""

import math
import numbers
import warnings

import numpy as np


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
    from kerastl.training.transferability import logme

    labels = np.arange(40) % 2
    informative = labels[:, None] + np.random.default_rng(0).normal(0, 0.3, (40, 4))
    noise = np.random.default_rng(1).normal(0, 1, (40, 4))
    print(logme(informative, labels) > logme(noise, labels))  # True
    ```
    """
    return logme_of_codes(*_check_scoring_inputs(features, labels))


def logme_of_codes(features, codes):
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
    from kerastl.training.transferability import linear_probe

    labels = np.arange(40) % 2
    features = labels[:, None] + np.random.default_rng(0).normal(0, 0.1, (40, 3))
    accuracies = linear_probe(features, labels, folds=4)
    print(accuracies.shape, float(accuracies.mean()))  # (4,) 1.0
    ```
    """
    folds = check_folds(folds)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0. Received: seed={seed!r}")
    features, codes = _check_scoring_inputs(features, labels)
    check_classes(codes, folds, "labels")
    return probe_accuracies(features, codes, folds, seed)


def probe_accuracies(features, codes, folds, seed):
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
    from kerastl.training.transferability import stratified_folds

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
    d = x.shape[1]
    objective = softmax_objective(x, np.eye(classes)[y], l2)
    theta = _lbfgs(objective, np.zeros(d * classes + classes), max_iter, tol)
    return theta[: d * classes].reshape(d, classes), theta[d * classes :]


def softmax_objective(x, targets, l2):
    """`theta -> (loss, gradient)`: the mean cross-entropy of `softmax(x W + b)` against
    `targets` (rows of class probabilities) plus `l2 / 2 |W|^2`, `theta = [W.ravel(), b]`."""
    n, d = x.shape
    k = targets.shape[1]

    def loss_and_grad(theta):
        w, b = theta[: d * k].reshape(d, k), theta[d * k :]
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -np.sum(targets * log_p) / n + l2 / 2 * np.sum(w * w)
        error = (np.exp(log_p) - targets) / n
        grad = np.concatenate([(x.T @ error + l2 * w).ravel(), error.sum(axis=0)])
        return loss, grad

    return loss_and_grad


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


def check_folds(folds):
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise ValueError(f"`folds` must be an int >= 2. Received: folds={folds!r}")
    return int(folds)


def encode_labels(labels, n, arg):
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


def check_classes(codes, folds, arg):
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
    codes = encode_labels(labels, len(features), "labels")
    return features, codes
