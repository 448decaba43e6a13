"""`lr_find`: the sweep measures batch losses, stops on divergence and leaves no trace."""

import re

import keras
import numpy as np
import pytest
from support import calibrated_cnn, real_images

import kerastl
from kerastl.training.lr_find import LRFinderResult, lr_find, suggest_lr

SIZE = 16


@pytest.fixture(scope="module")
def images():
    """Real photographs, 16x16, uint8."""
    return real_images(size=SIZE, count=24, seed=3)


def _backbone(images):
    """Two conv / BatchNorm / ReLU blocks (conv_0, conv_1), calibrated on real photos."""
    return calibrated_cnn(images, filters=(6, 8))


def _model(images, optimizer=None, bn="train", dropout=0.2, freeze="none"):
    """Raw images -> "tf" preprocessing -> tiny backbone -> 3-class head, compiled.

    The head pools: a head given pooled features leaves its own pooler unbuilt, and
    then every `train_on_batch` reruns Keras's symbolic build (slow on torch).
    """
    extractor = kerastl.FeatureExtractor(_backbone(images), freeze=freeze, bn=bn)
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    head = kerastl.heads.multiclass(3, hidden=(8,), dropout=dropout)
    model = kerastl.build_model(extractor, head, preprocessing=prep, compile=False)
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _labels(n):
    return np.arange(n) % 3


def _state(model):
    """{path: value} of every model variable (BatchNorm statistics, seeds) and optimizer one."""
    state = {}
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        for i, v in enumerate(variables):
            state[f"{prefix}/{i}/{v.path}"] = np.array(keras.ops.convert_to_numpy(v), copy=True)
    return state


# --- state restored -------------------------------------------------------------------

OPTIMIZERS = {
    "adam-after-fit": (lambda: keras.optimizers.Adam(1e-3), True),
    "per_layer_lr-after-fit": (
        lambda: kerastl.optimizers.PerLayerLR(
            keras.optimizers.Adam(1e-3), multipliers={"conv_0": 0.1}
        ),
        True,
    ),
    "sgd_momentum-unbuilt": (lambda: keras.optimizers.SGD(1e-3, momentum=0.9), False),
}


@pytest.mark.parametrize("case", list(OPTIMIZERS), ids=list(OPTIMIZERS))
def test_weights_statistics_and_optimizer_state_are_restored_exactly(case, images):
    make_optimizer, fit_first = OPTIMIZERS[case]
    x, y = images, _labels(len(images))
    model = _model(images, make_optimizer())
    optimizer = model.optimizer
    if fit_first:  # optimizer slots, iterations and statistics away from their initial values
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert int(optimizer.iterations) == 3
    else:
        assert not optimizer.built
    before = _state(model)

    result = lr_find(
        model, (x, y), start_lr=1e-4, end_lr=1.0, num_steps=7, batch_size=8, seed=0, verbose=0
    )

    assert optimizer.built and model.optimizer is optimizer and model.compiled
    after = _state(model)
    if not fit_first:  # built by lr_find: its fresh state comes back
        assert int(optimizer.iterations) == 0
        slots = [k for k in after if k.startswith("optimizer/") and "momentum" in k]
        assert slots and all(not after[k].any() for k in slots)
        after = {k: v for k, v in after.items() if k in before}
    assert list(after) == list(before)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert not changed, changed
    assert any("moving_mean" in k for k in before) and any("seed" in k for k in before)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(1e-3)
    # 24 images in batches of 8: 3 batches, cycled over for 7 steps.
    assert len(result.learning_rates) == len(result.losses) == 7
    assert not result.diverged
    np.testing.assert_allclose(result.learning_rates[[0, -1]], [1e-4, 1.0])
    assert np.all(np.diff(result.learning_rates) > 0)
    assert len(set(np.round(result.losses, 6))) > 1  # it trained


def test_the_sweep_trains_and_restoring_undoes_it(images):
    """Without the restore the weights would differ: what the restore test relies on."""
    x, y = images, _labels(len(images))
    model = _model(images)
    before = _state(model)
    seen = {}
    original = model.train_on_batch

    def spy(*args, **kwargs):
        logs = original(*args, **kwargs)
        seen.update(_state(model))
        return logs

    model.train_on_batch = spy
    lr_find(model, (x, y), start_lr=1e-3, end_lr=1e-1, num_steps=3, batch_size=8, verbose=0)
    assert any("moving_mean" in k and not np.array_equal(seen[k], before[k]) for k in before)
    assert any("kernel" in k and not np.array_equal(seen[k], before[k]) for k in before)
    assert all(np.array_equal(v, _state(model)[k]) for k, v in before.items())


# --- divergence and the suggestion ------------------------------------------------------


def test_a_huge_end_lr_diverges_early_and_the_suggestion_lies_below(images):
    x, y = images, _labels(len(images))
    model = _model(images, keras.optimizers.SGD(1e-2, momentum=0.9), dropout=0.0)
    result = lr_find(
        model, (x, y), start_lr=1e-3, end_lr=1e7, num_steps=24, batch_size=8, seed=0, verbose=0
    )
    assert result.diverged
    steps = len(result.losses)
    assert 2 <= steps < 24
    assert len(result.learning_rates) == len(result.smoothed_losses) == steps
    diverged_at = result.learning_rates[-1]
    assert result.method in ("valley", "minimum/10")
    assert 1e-3 <= result.suggestion < diverged_at
    assert result.suggestion in result.learning_rates[:-1] or result.method == "minimum/10"
    assert np.all(np.isfinite(result.losses[:-1]))


def test_valley_rule():
    rates = 10.0 ** np.arange(-6, 2, dtype="float64")
    # Longest decreasing run: steps 1..6 (noise at step 3 skipped), 2/3 of the way: step 4.
    losses = [2.0, 2.5, 2.2, 2.3, 1.6, 1.0, 0.7, 5.0]
    assert suggest_lr(rates, losses) == (pytest.approx(1e-2), "valley")


def test_no_valley_falls_back_to_minimum_over_ten_inside_the_range():
    rates = np.array([1e-3, 1e-2, 1e-1, 1.0])
    assert suggest_lr(rates, [1.0, 2.0, 3.0, 4.0]) == (pytest.approx(1e-3), "minimum/10")
    assert suggest_lr(rates, [2.0, 1.0, 3.0, 4.0]) == (pytest.approx(1e-3), "minimum/10")
    assert suggest_lr(rates, [np.nan, np.nan, np.nan, np.nan]) == (None, None)
    # Non-finite points are skipped.
    assert suggest_lr(rates, [3.0, np.nan, 2.0, 1.0]) == (pytest.approx(1e-1), "valley")


# --- per-step losses --------------------------------------------------------------------


def _sources(x, y):
    """The data sources that give batches in a fixed order, keyed by test id."""

    def py_dataset():
        return kerastl.data.from_arrays(x, y, batch_size=4, shuffle=False)

    def tf_data():
        tf = pytest.importorskip("tensorflow", reason="tf.data needs TensorFlow installed")
        return kerastl.data.from_tf_dataset(tf.data.Dataset.from_tensor_slices((x, y)), 4, 0)

    def torch_dataloader():
        torch = pytest.importorskip("torch", reason="a DataLoader needs torch installed")
        dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        return kerastl.data.from_torch_dataset(dataset, batch_size=4, shuffle=False)

    return {"py_dataset": py_dataset, "tf_data": tf_data, "torch_dataloader": torch_dataloader}


@pytest.mark.parametrize("source", ["py_dataset", "tf_data", "torch_dataloader"])
def test_step_losses_are_the_losses_of_their_batches(source, images):
    """Each step's loss is its own batch's, not the epoch's running mean; batches cycle."""
    x, y = images[:12], _labels(12)
    train = _sources(x, y)[source]()
    # BatchNorm frozen and no dropout: training-mode losses are inference losses, and
    # at learning rates of 1e-12 the weights do not move.
    model = _model(images, keras.optimizers.SGD(0.0), bn="frozen", dropout=0.0)
    batch_losses = [
        model.evaluate(x[i : i + 4], y[i : i + 4], verbose=0, return_dict=True)["loss"]
        for i in (0, 4, 8)
    ]
    assert max(batch_losses) - min(batch_losses) > 1e-3  # a running mean would differ
    result = lr_find(model, train, start_lr=1e-12, end_lr=1e-11, num_steps=7, verbose=0)
    expected = [batch_losses[i % 3] for i in range(7)]
    np.testing.assert_allclose(result.losses, expected, rtol=1e-4)


def test_a_one_shot_iterator_ends_the_sweep(images):
    x, y = images[:12], _labels(12)
    model = _model(images, keras.optimizers.SGD(0.0), bn="frozen", dropout=0.0)
    batches = ((x[i : i + 4], y[i : i + 4]) for i in (0, 4, 8))
    result = lr_find(model, batches, start_lr=1e-5, end_lr=1e-3, num_steps=10, verbose=0)
    assert len(result.losses) == 3 and not result.diverged


def test_result_repr_is_short():
    result = LRFinderResult(
        np.array([1e-3, 1e-2]), np.array([1.0, 0.5]), np.array([1.0, 0.7]), 1e-3, "valley", False
    )
    assert repr(result) == (
        "LRFinderResult(steps=2, suggestion=0.001, method='valley', diverged=False)"
    )


# --- bad arguments ----------------------------------------------------------------------


def _schedule_model(images):
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)
    return _model(images, keras.optimizers.Adam(schedule))


def _uncompiled(images):
    model = _model(images)
    return keras.Model(model.inputs, model.outputs)


BAD = {
    "num_steps-0": (lambda m, x, y: lr_find(m, (x, y), num_steps=0), ValueError, "num_steps=0"),
    "num_steps-1": (lambda m, x, y: lr_find(m, (x, y), num_steps=1), ValueError, "num_steps=1"),
    "num_steps-float": (
        lambda m, x, y: lr_find(m, (x, y), num_steps=10.0),
        ValueError,
        "num_steps=10.0",
    ),
    "start_lr-above-end_lr": (
        lambda m, x, y: lr_find(m, (x, y), start_lr=1.0, end_lr=0.1),
        ValueError,
        "start_lr=1.0, end_lr=0.1",
    ),
    "start_lr-equal-end_lr": (
        lambda m, x, y: lr_find(m, (x, y), start_lr=0.1, end_lr=0.1),
        ValueError,
        "start_lr=0.1, end_lr=0.1",
    ),
    "start_lr-negative": (
        lambda m, x, y: lr_find(m, (x, y), start_lr=-1e-3),
        ValueError,
        "start_lr=-0.001",
    ),
    "end_lr-nan": (
        lambda m, x, y: lr_find(m, (x, y), end_lr=float("nan")),
        ValueError,
        "end_lr=nan",
    ),
    "start_lr-bool": (
        lambda m, x, y: lr_find(m, (x, y), start_lr=True),
        ValueError,
        "start_lr=True",
    ),
    "smoothing-1": (lambda m, x, y: lr_find(m, (x, y), smoothing=1.0), ValueError, "smoothing=1.0"),
    "divergence-1": (lambda m, x, y: lr_find(m, (x, y), divergence=1), ValueError, "divergence=1"),
    "batch_size-0": (lambda m, x, y: lr_find(m, (x, y), batch_size=0), ValueError, "batch_size=0"),
    "verbose-negative": (lambda m, x, y: lr_find(m, (x, y), verbose=-1), ValueError, "verbose=-1"),
    "seed-str": (lambda m, x, y: lr_find(m, (x, y), seed="0"), TypeError, "seed='0'"),
    "model-not-a-model": (lambda m, x, y: lr_find("model", (x, y)), TypeError, "model='model'"),
    "model-uncompiled": (
        lambda m, x, y: lr_find(_uncompiled(x), (x, y)),
        ValueError,
        "(not compiled)",
    ),
    "model-lr-schedule": (
        lambda m, x, y: lr_find(_schedule_model(x), (x, y)),
        ValueError,
        "model.optimizer.learning_rate=",
    ),
    "model-all-frozen": (
        lambda m, x, y: lr_find(_frozen(x), (x, y), verbose=0),
        ValueError,
        "model='tiny_multiclass'",
    ),
    "train-empty-arrays": (
        lambda m, x, y: lr_find(m, (x[:0], y[:0]), verbose=0),
        ValueError,
        "train images of shape (0, 16, 16, 3)",
    ),
    "train-empty-dataset": (
        lambda m, x, y: lr_find(m, [], verbose=0),
        ValueError,
        "train=list of []",
    ),
    "train-no-labels": (
        lambda m, x, y: lr_find(m, (x,), verbose=0),
        ValueError,
        "train=images of shape (8, 16, 16, 3)",
    ),
    "train-y-none": (
        lambda m, x, y: lr_find(m, (x, None), verbose=0),
        ValueError,
        "train=(x, None)",
    ),
    "train-length-mismatch": (
        lambda m, x, y: lr_find(m, (x, y[:3]), verbose=0),
        ValueError,
        "train labels of shape (3,)",
    ),
    "train-dataset-without-labels": (
        lambda m, x, y: lr_find(m, kerastl.data.from_arrays(x, batch_size=4), verbose=0),
        ValueError,
        "train=ImageBatches",
    ),
    "train-str": (lambda m, x, y: lr_find(m, "images/", verbose=0), TypeError, "train='images/'"),
}


def _frozen(images):
    model = _model(images)
    model.trainable = False
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def valid_model(images):
    """One compiled model for the argument checks, which must all fail before training."""
    return _model(images)


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_arguments_raise_clear_errors(case, images, valid_model):
    call, error, received = BAD[case]
    x, y = images[:8], _labels(8)
    model = valid_model
    with pytest.raises(error, match=r"Received: .*" + re.escape(received)):
        call(model, x, y)
    assert int(model.optimizer.iterations) == 0  # nothing trained before the error
