"""rank_backbones: LogME and the linear probe against references, a pretrained backbone first."""

import math
import sys

import keras
import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.datasets import load_digits
from support import calibrate_batchnorm

import kerastl
from kerastl.backbones import registry
from kerastl.backbones.registry import BackboneSpec
from kerastl.training.ranking import BackboneRanking, rank_backbones
from kerastl.training.transferability import linear_probe, logme, stratified_folds

SIZE = 16  # digits' 8x8 scans, upscaled twice


# --- LogME --------------------------------------------------------------------------------


def _brute_force_logme(features, labels):
    """LogME straight from its definition: y ~ N(0, F F^T / alpha + I / beta) per class,
    the log density maximised over (log alpha, log beta) by Nelder-Mead from 3 starts."""
    n = len(labels)
    scores = []
    for c in np.unique(labels):
        y = (labels == c).astype("float64")

        def negative(log_precisions, y=y):
            alpha, beta = np.exp(log_precisions)
            cov = features @ features.T / alpha + np.eye(n) / beta
            _, log_det = np.linalg.slogdet(cov)
            return 0.5 * (log_det + y @ np.linalg.solve(cov, y) + n * math.log(2 * math.pi))

        options = {"xatol": 1e-10, "fatol": 1e-13, "maxiter": 5000}
        best = min(
            minimize(negative, start, method="Nelder-Mead", options=options).fun
            for start in ([0.0, 0.0], [4.0, 4.0], [-4.0, 2.0])
        )
        scores.append(-best / n)
    return float(np.mean(scores))


@pytest.mark.backend_free  # numpy only (training/transferability.py)
@pytest.mark.parametrize("n, d", [(14, 3), (15, 15), (8, 20)], ids=["n>d", "n=d", "n<d"])
def test_logme_is_the_maximised_evidence(n, d):
    rng = np.random.default_rng(n + d)
    labels = np.arange(n) % 3
    features = rng.normal(size=(n, d))
    features[:, 0] += labels
    assert logme(features, labels) == pytest.approx(_brute_force_logme(features, labels), abs=1e-7)


@pytest.mark.backend_free  # numpy only (training/transferability.py)
def test_logme_prefers_informative_features_and_ignores_scale():
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 4
    signal = np.eye(4)[labels] @ rng.normal(size=(4, 16))
    noise = rng.normal(size=(120, 16))
    scores = [logme(signal + level * noise, labels) for level in (0.3, 1.0, 3.0)]
    assert scores[0] > scores[1] > scores[2] > logme(noise, labels)
    for scale in (1e-6, 1e4):  # the evidence's optimum moves with the scale, its value not
        assert logme(scale * (signal + noise), labels) == pytest.approx(
            logme(signal + noise, labels), rel=1e-7
        )
    # Class ids are names: renamed or reordered classes score the same.
    names = np.array(["cat", "dog", "emu", "fox"])[labels]
    assert logme(signal + noise, names) == pytest.approx(logme(signal + noise, labels), rel=1e-9)


# --- linear probe -------------------------------------------------------------------------


@pytest.mark.backend_free  # numpy only (training/transferability.py)
def test_the_linear_probe_separates_separable_data():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    features = 5 * np.eye(3)[labels] + rng.normal(0, 0.3, (60, 3))
    np.testing.assert_array_equal(linear_probe(features, labels, folds=5), np.ones(5))


@pytest.mark.backend_free  # numpy only (training/transferability.py)
@pytest.mark.parametrize("extra", [0, 150], ids=["n>d", "d>n"])
def test_the_linear_probe_is_scikit_learns_logistic_regression(extra):
    """The same convex problem as `LogisticRegression(C=1.0)` on standardised features; with
    more features than training images the probe fits in their span: the same solution."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    rng = np.random.default_rng(0)
    n = 400 if not extra else 100
    x = digits.data[:n] + rng.normal(0, 2, (n, 64))  # not separable: the fold scores differ
    x = np.concatenate([x, rng.normal(0, 1, (n, extra))], axis=1)
    y = digits.target[:n]
    ours = linear_probe(x, y, folds=4, seed=3)
    folds = stratified_folds(y, 4, seed=3)
    theirs = []
    for fold in range(4):
        test = folds == fold
        scaler = StandardScaler().fit(x[~test])
        model = LogisticRegression(C=1.0, tol=1e-6, max_iter=10_000)
        model.fit(scaler.transform(x[~test]), y[~test])
        theirs.append(model.score(scaler.transform(x[test]), y[test]))
    # The same predictions, but for an image at a near-tie.
    np.testing.assert_allclose(ours, theirs, atol=1.5 / (n / 4))
    assert 0.3 < ours.mean() < 0.99


@pytest.mark.backend_free  # numpy only (training/transferability.py)
def test_folds_are_stratified_and_balanced():
    labels = np.repeat(np.arange(3), [10, 7, 4])
    folds = stratified_folds(labels, 4, seed=0)
    sizes = np.bincount(folds)
    assert sizes.sum() == 21 and sizes.max() - sizes.min() <= 1
    for c in range(3):
        per_fold = np.bincount(folds[labels == c], minlength=4)
        assert per_fold.max() - per_fold.min() <= 1
    assert not np.array_equal(folds, stratified_folds(labels, 4, seed=1))


# --- rank_backbones on real images -----------------------------------------------------------


def _digits():
    data = load_digits()
    images = np.kron(data.images, np.ones((SIZE // 8, SIZE // 8))) * (255.0 / 16.0)
    return np.repeat(images[..., None], 3, axis=-1).astype("uint8"), data.target


def _cnn(weights=None, seed=0, filters=(16, 32), name="digits_cnn"):
    """Conv / BatchNorm / ReLU / max-pool blocks on raw 0..255 images (it rescales itself)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for i, channels in enumerate(filters):
        x = keras.layers.Conv2D(channels, 3, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool_{i}")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def transfer():
    """A small CNN pretrained on 600 digit images; 250 other digit images to rank for.

    `random` is the same architecture with random weights, its BatchNorm calibrated on
    the images to rank for (uncalibrated, its features are ~1e-11 and lose for nothing).
    Frozen features of a network trained on digits 0-4 are no better than random ones
    for digits 5-9 (measured: a 0.02 LogME margin either way, depending on the training),
    so the network learns the same ten classes, on other images.
    """
    images, labels = _digits()
    backbone = _cnn(seed=1)
    classifier = keras.Sequential(
        [backbone, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, "softmax")]
    )
    classifier.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    classifier.fit(images[:600], labels[:600], epochs=2, batch_size=32, verbose=0)
    # Moving statistics lag behind weights trained for ~40 steps: recompute them.
    calibrate_batchnorm(backbone, images[:600])
    x, y = images[900:1150], labels[900:1150]
    random = calibrate_batchnorm(_cnn(seed=2), x)
    return {
        "x": x,
        "y": y,
        "pretrained": backbone.get_weights(),
        "random": random.get_weights(),
    }


def test_a_pretrained_backbone_ranks_above_the_same_network_at_random(transfer, capsys):
    x, y = transfer["x"], transfer["y"]
    candidates = {
        "random": _cnn(transfer["random"]),
        "pretrained": _cnn(transfer["pretrained"]),
    }
    ranking = rank_backbones((x, y), candidates, mode="none", verbose=2)
    assert isinstance(ranking, BackboneRanking)
    assert [row["backbone"] for row in ranking.rows] == ["pretrained", "random"]
    best, other = ranking.rows
    assert best is ranking.best and best["rank"] == 1 and other["rank"] == 2
    # Measured: LogME 0.36-0.41 against 0.09-0.15; accuracy 0.98-0.99 against 0.92-0.95.
    assert best["logme"] > other["logme"] + 0.1
    assert best["probe_accuracy"] > other["probe_accuracy"] + 0.01
    assert best["probe_accuracy"] > 0.95
    params = candidates["pretrained"].count_params()
    assert best["params"] == other["params"] == params
    assert best["feature_dim"] == 32 and best["input"] == f"{SIZE}x{SIZE} none"
    assert best["images_per_s"] > 0 and not best["cached"]
    assert (ranking.n_images, ranking.n_classes, ranking.folds) == (250, 10, 5)
    # Printed (verbose=2: the table alone), the recommendation with its criterion.
    table = capsys.readouterr().out
    assert table == ranking.table() + "\n"
    assert "* " in table.splitlines()[1] and "pretrained" in table.splitlines()[1]
    assert "Recommended: pretrained (highest LogME; linear-probe accuracy agrees)" in table
    assert "best='pretrained' by logme" in repr(ranking)
    # The other criterion ranks too.
    by_probe = rank_backbones(
        (x, y), candidates, mode="none", criterion="probe_accuracy", verbose=0
    )
    assert by_probe.best["backbone"] == "pretrained" and by_probe.criterion == "probe_accuracy"
    assert capsys.readouterr().out == ""


def test_scores_are_those_of_the_backbones_features_in_its_own_recipe(transfer, monkeypatch):
    """A registry name gets its entry's size and recipe; a model its own, with `mode`."""
    x, y = transfer["x"][:60], transfer["y"][:60]
    net = _cnn(transfer["pretrained"])

    def constructor(include_top=False, weights=None, input_shape=(12, 12, 3)):
        keras.utils.set_random_seed(5)
        inputs = keras.Input(input_shape)
        z = keras.layers.Conv2D(6, 3, strides=2, name="stage1_conv")(inputs)
        return keras.Model(inputs, keras.layers.ReLU(name="stage1_relu")(z), name="tiny")

    spec = BackboneSpec(
        "ranking_tiny", constructor, default_size=12, min_size=8, preprocessing="tf"
    )
    monkeypatch.setitem(registry._REGISTRY, "ranking_tiny", spec)
    ranking = rank_backbones(
        (x, y), ["ranking_tiny", net], weights=None, mode="none", folds=3, verbose=0
    )
    rows = {row["backbone"]: row for row in ranking.rows}
    assert rows["ranking_tiny"]["input"] == "12x12 tf" and rows["ranking_tiny"]["feature_dim"] == 6
    assert rows["digits_cnn"]["input"] == f"{SIZE}x{SIZE} none"

    # The same scores from features computed by hand: resized, in the tf recipe, pooled.
    tiny = constructor()
    resized = keras.ops.image.resize(x.astype("float32"), (12, 12))
    by_hand = {
        "ranking_tiny": keras.ops.mean(tiny(resized / 127.5 - 1.0), axis=(1, 2)),
        "digits_cnn": keras.ops.mean(net(x.astype("float32")), axis=(1, 2)),
    }
    for name, features in by_hand.items():
        features = keras.ops.convert_to_numpy(features)
        assert rows[name]["logme"] == pytest.approx(logme(features, y), abs=1e-4)
        probe = linear_probe(features, y, folds=3).mean()
        assert rows[name]["probe_accuracy"] == pytest.approx(probe, abs=0.02)

    # image_size= builds registry backbones at that size; a fixed-size model keeps its own.
    resized = rank_backbones(
        (x, y), ["ranking_tiny", net], weights=None, mode="none", image_size=10, folds=3, verbose=0
    )
    inputs = {row["backbone"]: row["input"] for row in resized.rows}
    assert inputs == {"ranking_tiny": "10x10 tf", "digits_cnn": f"{SIZE}x{SIZE} none"}
    with pytest.raises(ValueError, match=r"`image_size` is below.*\(8x8\).*image_size=\(6, 6\)"):
        rank_backbones((x, y), ["ranking_tiny"], weights=None, image_size=6, folds=3, verbose=0)


def test_every_kind_of_candidate_and_data(transfer, tmp_path):
    x, y = transfer["x"][:80], transfer["y"][:80]
    net = _cnn(transfer["pretrained"])
    net.get_layer("conv_1").trainable = False
    path = str(tmp_path / "digits_cnn.keras")
    net.save(path)
    extractor = kerastl.FeatureExtractor(_cnn(transfer["pretrained"]), pooling="max")
    candidates = [net, path, extractor]
    ranking = rank_backbones((x, y), candidates, mode="none", folds=4, verbose=0)
    rows = {row["backbone"]: row for row in ranking.rows}
    # Names: the model's, the file's, the extractor's backbone's (deduplicated).
    assert set(rows) == {"digits_cnn", "digits_cnn.keras", "digits_cnn_2"}
    # The model and its file are one network: the same features, the same scores.
    assert rows["digits_cnn"]["logme"] == pytest.approx(rows["digits_cnn.keras"]["logme"])
    # The extractor's own max pooling, not `pooling=`: other features.
    assert rows["digits_cnn_2"]["logme"] != pytest.approx(rows["digits_cnn"]["logme"])
    # A model candidate keeps its trainable flags.
    assert net.trainable and net.get_layer("conv_0").trainable
    assert not net.get_layer("conv_1").trainable

    # A kerastl.data dataset in a fixed order scores as the arrays do.
    batches = kerastl.data.from_arrays(x, y, batch_size=16, shuffle=False)
    again = rank_backbones(batches, [net], mode="none", folds=4, verbose=0)
    assert again.best["logme"] == pytest.approx(rows["digits_cnn"]["logme"], rel=1e-5)
    assert again.best["probe_accuracy"] == pytest.approx(rows["digits_cnn"]["probe_accuracy"])
    # One-hot labels, and class names, are the same classes.
    names = np.array(list("abcdefghij"))[y]
    for labels in (keras.utils.to_categorical(y, 10), names):
        same = rank_backbones((x, labels), [net], mode="none", folds=4, verbose=0)
        assert same.best["logme"] == pytest.approx(rows["digits_cnn"]["logme"], rel=1e-6)


def test_cache_dir_reuses_the_features(transfer, tmp_path, capsys):
    x, y = transfer["x"][:80], transfer["y"][:80]
    net = _cnn(transfer["pretrained"])
    first = rank_backbones((x, y), [net], mode="none", folds=4, cache_dir=tmp_path, verbose=1)
    printed = capsys.readouterr().out
    assert "[1/1] digits_cnn: features at 16x16 none" in printed and "Recommended" in printed
    again = rank_backbones((x, y), [net], mode="none", folds=4, cache_dir=tmp_path, verbose=0)
    assert not first.best["cached"] and again.best["cached"]
    assert again.best["logme"] == first.best["logme"]
    assert again.best["images_per_s"] > 0  # timed on one batch


def test_a_missing_download_fails_before_any_features_are_computed(transfer, monkeypatch):
    x, y = transfer["x"][:40], transfer["y"][:40]

    def offline(include_top=False, weights=None, input_shape=(12, 12, 3)):
        if weights == "imagenet":
            raise Exception("URL fetch failure on https://example.invalid/tiny.h5: None -- offline")
        raise AssertionError("built without weights")

    spec = BackboneSpec("ranking_offline", offline, default_size=12, min_size=8, preprocessing="tf")
    monkeypatch.setitem(registry._REGISTRY, "ranking_offline", spec)

    def refuse(*args, **kwargs):
        raise AssertionError("features were computed before every candidate was built")

    monkeypatch.setattr(sys.modules["kerastl.training.ranking"], "features_of", refuse)
    net = _cnn(transfer["pretrained"])
    net.get_layer("conv_0").trainable = False
    with pytest.raises(kerastl.WeightsDownloadError, match="Received: weights='imagenet'"):
        rank_backbones((x, y), [net, "ranking_offline"], mode="none", folds=2, verbose=0)
    assert not net.get_layer("conv_0").trainable and net.get_layer("bn_0").trainable


# --- bad input ------------------------------------------------------------------------------


def _images(n=20, classes=2):
    x = np.random.default_rng(0).integers(0, 256, (n, SIZE, SIZE, 3)).astype("uint8")
    return x, np.arange(n) % classes


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"folds": 1}, ValueError, r"`folds`.*Received: folds=1"),
        ({"folds": 2.5}, ValueError, r"`folds`.*Received: folds=2.5"),
        ({"folds": True}, ValueError, r"`folds`.*Received: folds=True"),
        ({"criterion": "accuracy"}, ValueError, r"`criterion`.*Received: criterion='accuracy'"),
        ({"pooling": "mean"}, ValueError, r"`pooling`.*Received: pooling='mean'"),
        ({"seed": -1}, ValueError, r"`seed`.*Received: seed=-1"),
        ({"seed": "0"}, ValueError, r"`seed`.*Received: seed='0'"),
        ({"verbose": 3}, ValueError, r"`verbose`.*Received: verbose=3"),
        ({"batch_size": 0}, ValueError, r"`batch_size`.*Received: batch_size=0"),
        ({"image_size": 0}, ValueError, r"`image_size`.*Received: image_size=0"),
        ({"image_size": (16,)}, ValueError, r"`image_size`.*Received: image_size=\(16,\)"),
        ({"cache_dir": 5}, TypeError, r"`cache_dir`.*Received: cache_dir=5"),
        ({"candidates": "mobilenet_v2"}, TypeError, r"`candidates`.*Received: candidates="),
        ({"candidates": []}, ValueError, r"`candidates` is empty.*Received: candidates=\[\]"),
        ({"candidates": ["mobilenet_v9"]}, ValueError, r"`candidates`.*Did you mean.*Received"),
        ({"candidates": [42]}, TypeError, r"`candidates`.*Received: 42"),
        ({"candidates": {"": "resnet50"}}, TypeError, r"`candidates`.*Received: candidates"),
        ({"candidates": ["gone/x.keras"]}, FileNotFoundError, r"Received: 'gone/x.keras'"),
        ({"weights": "imagenett"}, ValueError, r"`weights`.*Received: weights='imagenett'"),
        ({"weights": {"vgg16": None}}, ValueError, r"`weights` names \['vgg16'\].*Received"),
        ({"mode": "bgr"}, ValueError, r"`mode`.*Received: mode='bgr'"),
        ({"mode": {"vgg16": "tf"}}, ValueError, r"`mode` names \['vgg16'\].*Received"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    kwargs = {"candidates": ["mobilenet_v2"], **kwargs}
    with pytest.raises(error, match=match):
        rank_backbones(_images(), **{"verbose": 0, **kwargs})


@pytest.mark.parametrize(
    "data, match",
    [
        (_images()[0], r"`data` needs labels.*Received: data=images of shape \(20, 16, 16, 3\)"),
        ((_images()[0], None), r"`data` needs labels.*Received: data=\(x, None\)"),
        (
            (_images()[0][..., 0], _images()[1]),
            r"`data` images must have rank 4.*Received: data images of shape \(20, 16, 16\)",
        ),
        (
            (_images()[0].astype(str), _images()[1]),
            r"`data` images must be numbers.*Received: data images of dtype <U",
        ),
        (
            (_images()[0], np.arange(19) % 2),
            r"20 images but 19 labels.*Received: data labels of shape \(19,\)",
        ),
        ((_images()[0], np.zeros(20)), r"at least 2 classes.*Received: 1 class"),
        ((_images()[0], np.arange(20) * 0.5), r"class ids.*Received: non-integer labels"),
        ((_images(4)[0], np.arange(4) % 2), r"fewer images than folds.*Received: 4 images"),
        ((_images()[0], np.r_[np.zeros(19), 1]), r"at least 2 images.*Received: 1 class"),
    ],
    ids=[
        "no-labels",
        "labels-none",
        "no-channel-axis",
        "strings",
        "label-count",
        "one-class",
        "float-labels",
        "fewer-than-folds",
        "single-image-class",
    ],
)
def test_bad_data_is_refused_clearly(data, match):
    with pytest.raises(ValueError, match=match):
        rank_backbones(data, ["mobilenet_v2"], verbose=0)


def test_bad_data_types_and_unknown_recipes(transfer):
    with pytest.raises(TypeError, match=r"`data` must be.*Received: data='images'"):
        rank_backbones("images", ["mobilenet_v2"], verbose=0)
    x, y = transfer["x"][:20], transfer["y"][:20] % 2
    net = _cnn(transfer["pretrained"])
    with pytest.raises(ValueError, match=r"input recipe is unknown.*`mode`.*Received: mode=None"):
        rank_backbones((x, y), [net], verbose=0)
    with pytest.warns(UserWarning, match=r"smallest class.*fewer than folds=5"):
        rank_backbones((x[:12], np.r_[np.zeros(9), np.ones(3)]), [net], mode="none", verbose=0)
    with pytest.raises(ValueError, match=r"`features`.*Received"):
        logme(np.zeros(5), np.arange(5) % 2)
    with pytest.raises(ValueError, match=r"`features` must be finite"):
        linear_probe(np.full((6, 2), np.nan), np.arange(6) % 2, folds=2)
