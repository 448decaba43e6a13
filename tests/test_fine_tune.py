"""`kerastl.fine_tune`: the two phases, what each trains, reported figures, resume after SIGKILL."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from support import calibrated_cnn, real_images, tf_mode

import kerastl
from kerastl.freeze import FreezeAll, TrainPattern, TrainTopBlocks
from kerastl.training import checkpoints as checkpoints_module
from kerastl.training.checkpoints import Checkpoints, variables_differ


def _backbone(photos):
    """Three conv / BatchNorm / ReLU blocks (conv_0..2), calibrated on the 32 px photos."""
    return calibrated_cnn(photos[:, ::3, ::3])


def _model(photos, bn="frozen"):
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg", bn=bn)
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    return kerastl.build_model(extractor, kerastl.heads.multiclass(3), preprocessing=prep)


def _data(photos):
    return photos[:, ::3, ::3][:18], np.arange(18) % 3


def _snapshot(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


class _Snapshots(keras.callbacks.Callback):
    """The weights at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(_snapshot(self.model))


def _changed(before, after):
    return {path for path in before if not np.array_equal(before[path], after[path])}


@pytest.mark.keras_floor
@pytest.mark.parametrize("bn", ["frozen", "train"])
def test_phase_one_trains_the_head_phase_two_the_base(photos, bn):
    model = _model(photos, bn=bn)
    x, y = _data(photos)
    start = _snapshot(model)
    snapshots = _Snapshots()
    history = kerastl.fine_tune(
        model,
        (x, y),
        (x, y),
        epochs=1,
        head_epochs=1,
        lr=1e-2,
        batch_size=6,
        callbacks=[snapshots],
        verbose=0,
    )
    head_phase = _changed(start, snapshots.epochs[0])
    assert head_phase and all(path.startswith("head/") for path in head_phase)
    base_phase = _changed(snapshots.epochs[0], snapshots.epochs[1])
    assert any("conv_0/kernel" in p for p in base_phase)
    moving = {p for p in base_phase if "moving_" in p}
    if bn == "train":
        assert moving  # statistics move only under bn="train"
    else:
        assert not moving
    assert history.phases == ["head", "fine-tune"] and history.phase_boundaries == [1]
    assert len(history.history["loss"]) == len(history.history["val_accuracy"]) == 2


def test_reported_figures_are_those_of_predict(photos):
    model = _model(photos)
    x, y = _data(photos)
    history = kerastl.fine_tune(model, (x, y), (x, y), epochs=1, lr=1e-2, batch_size=6, verbose=0)
    p = model.predict(x, verbose=0).astype("float64")
    accuracy = float(np.mean(p.argmax(-1) == y))
    loss = float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0))))
    assert history.final["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert history.final["loss"] == pytest.approx(loss, rel=1e-4)
    assert history.initial is not None and history.initial["loss"] != history.final["loss"]


def test_phase_two_rates_spread_over_the_blocks(photos):
    model = _model(photos)
    x, y = _data(photos)
    kerastl.fine_tune(model, (x, y), epochs=1, lr_mult=100.0, batch_size=6, verbose=0)
    optimizer = model.optimizer
    assert isinstance(optimizer, kerastl.optimizers.PerLayerLR)
    extractor = kerastl.layers.find_extractor(model)
    first = extractor.blocks[0][1][0]
    last = extractor.blocks[-1][1][0]
    assert optimizer.multiplier_for_path(f"{first}/kernel") == pytest.approx(0.01)
    assert optimizer.multiplier_for_path(f"{last}/kernel") > 0.1
    assert optimizer.multiplier_for_path("head/dense_0/kernel") == 1.0
    # `layer_decay` alone replaces the default `lr_mult` (passing both is refused).
    model = _model(photos)
    kerastl.fine_tune(model, (x, y), epochs=1, layer_decay=0.5, batch_size=6, verbose=0)
    blocks = len(extractor.blocks)
    assert model.optimizer.multiplier_for_path(f"{first}/kernel") == pytest.approx(0.5**blocks)
    # Top blocks only: the rest stays frozen.
    model = _model(photos)
    kerastl.fine_tune(model, (x, y), epochs=1, unfreeze=TrainTopBlocks(1), batch_size=6, verbose=0)
    trained = {v.path.split("/")[0] for v in model.trainable_weights}
    assert "conv_2" in trained and "conv_0" not in trained


def test_label_smoothing_ema_one_cycle_and_early_stopping_run(photos):
    model = _model(photos)
    x, y = _data(photos)
    # Validation labels that disagree with training ones: the better the model fits
    # `y`, the worse its validation loss, so early stopping must end phase 2.
    history = kerastl.fine_tune(
        model,
        (x, y),
        (x, (y + 1) % 3),
        epochs=8,  # room to stop: in the full suite a run went 4 epochs before stopping
        head_epochs=1,
        schedule="one_cycle",
        label_smoothing=0.1,
        ema=True,
        early_stopping=1,
        lr=1e-2,
        batch_size=6,
        verbose=0,
    )
    assert isinstance(model.loss, kerastl.losses.SparseCategoricalCrossentropy)
    assert model.optimizer.inner_optimizer.use_ema
    assert history.stopped_early and len(history.epoch) < 9
    val = history.history["val_loss"]
    best = min(val[1:])  # phase 2's best epoch: its weights are restored
    final = history.final["loss"]
    assert final == pytest.approx(best, rel=1e-3) or final <= best + 1e-6


def test_schedules_warm_up_then_decay():
    schedule = kerastl.optimizers.WarmupCosine(1e-3, total_steps=50, warmup_steps=5)
    rates = [float(schedule(step)) for step in range(50)]
    assert rates[0] < rates[4] == pytest.approx(1e-3) and rates[-1] == pytest.approx(0, abs=1e-9)
    assert all(a >= b for a, b in zip(rates[5:], rates[6:], strict=False))
    clone = kerastl.optimizers.WarmupCosine.from_config(
        json.loads(json.dumps(schedule.get_config()))
    )
    assert float(clone(17)) == pytest.approx(rates[17])
    cycle = kerastl.optimizers.OneCycle(1e-3, total_steps=40, pct_start=0.25)
    values = [float(cycle(step)) for step in range(40)]
    assert max(values) == pytest.approx(1e-3) and values.index(max(values)) == 10


# --- resume after a crash ---------------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import os, json, signal, sys
    sys.path.insert(0, {tests!r})
    import keras, numpy as np
    import kerastl
    from support import real_images
    from test_fine_tune import _model, _data

    photos = real_images(size=96, count=24, seed=0)

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)

    # One fine_tune call per (checkpoint directory, output file), each on a model built
    # afresh in a fresh Keras session (random seeds reset): as if in its own process.
    for directory, out in {runs!r}:
        keras.backend.clear_session()
        model = _model(photos)
        x, y = _data(photos)
        data = kerastl.data.from_arrays(x, y, batch_size=6, shuffle=False)
        history = kerastl.fine_tune(
            model, data, data, epochs=3, head_epochs=1, lr=1e-2,
            unfreeze=kerastl.freeze.TrainTopBlocks(2), checkpoint_dir=directory,
            callbacks=[Kill()], verbose=0,
        )
        np.savez(out, *[keras.ops.convert_to_numpy(w) for w in model.weights])
        with open(out + ".json", "w") as f:
            json.dump({{
                "history": history.history,
                "trainable": sorted(v.path for v in model.trainable_weights),
                "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            }}, f)
    """
)


def _run(runs, kill_at):
    """One fresh process running `fine_tune` for each `(checkpoint directory, output)` in turn."""
    runs = [(str(directory), str(out)) for directory, out in runs]
    code = _SCRIPT.format(tests=os.path.dirname(__file__), runs=runs, kill_at=kill_at)
    env = {**os.environ, "KERAS_BACKEND": keras.config.backend()}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )


def test_sigkill_in_phase_two_then_the_same_call_resumes(tmp_path):
    # Killed at the start of epoch 3: the second of phase 2 (epochs 1, 2, 3).
    killed = _run([(tmp_path / "run", tmp_path / "resumed.npz")], kill_at=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state, _ = Checkpoints(str(tmp_path / "run")).latest()
    assert state["epochs_done"] == 2 and state["phase"] == 1
    # The same call again, in a new process, resumes; then, in that process, the call
    # never interrupted (its own checkpoint directory, a fresh model and session).
    runs = [
        (tmp_path / "run", tmp_path / "resumed.npz"),
        (tmp_path / "straight", tmp_path / "straight.npz"),
    ]
    resumed = _run(runs, kill_at=-1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with open(tmp_path / "resumed.npz.json") as f:
        after = json.load(f)
    with open(tmp_path / "straight.npz.json") as f:
        reference = json.load(f)
    # Not re-frozen on resume, and no epoch lost or counted twice.
    assert after["trainable"] == reference["trainable"]
    assert any("conv_2" in path for path in after["trainable"])
    assert {k: len(v) for k, v in after["history"].items()} == {k: 4 for k in reference["history"]}
    assert after["iterations"] == reference["iterations"]  # the schedule went on
    np.testing.assert_allclose(
        after["history"]["loss"], reference["history"]["loss"], rtol=1e-4, atol=1e-6
    )
    with np.load(tmp_path / "resumed.npz") as a, np.load(tmp_path / "straight.npz") as b:
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(photos, tmp_path, monkeypatch):
    model = _model(photos)
    x, y = _data(photos)
    kerastl.fine_tune(
        model, (x, y), epochs=0, head_epochs=1, batch_size=6, checkpoint_dir=tmp_path, verbose=0
    )
    checkpoints = Checkpoints(str(tmp_path))
    state, path = checkpoints.latest()
    weights = _snapshot(model)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints_module.os, "replace", crash)
    state["epochs_done"] = 2
    with pytest.raises(OSError, match="disk full"):
        checkpoints.write(model, state)
    monkeypatch.undo()
    again, same = checkpoints.latest()
    assert same == path and again["epochs_done"] == 1
    model.optimizer.build(model.trainable_variables)
    checkpoints.restore(model, same)
    assert not _changed(weights, _snapshot(model))
    checkpoints.write(model, again)  # the next write clears the leftovers
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".partial-")]


def test_other_settings_are_not_resumed(photos, tmp_path):
    model = _model(photos)
    x, y = _data(photos)
    kerastl.fine_tune(model, (x, y), epochs=0, batch_size=6, checkpoint_dir=tmp_path, verbose=0)
    with pytest.raises(ValueError, match=r"other settings.*lr.*Received: checkpoint_dir="):
        kerastl.fine_tune(
            model, (x, y), epochs=0, lr=0.5, batch_size=6, checkpoint_dir=tmp_path, verbose=0
        )


# --- resume: only the same run ------------------------------------------------------------


def _head_only(photos, tmp_path, train=None, validation=None, model=None, **kwargs):
    """A head-only run (the cache makes it quick) with checkpoints in `tmp_path`."""
    x, y = _data(photos)
    args = dict(epochs=0, batch_size=6, checkpoint_dir=tmp_path, verbose=0, **kwargs)
    train = (x, y) if train is None else train
    return kerastl.fine_tune(model or _model(photos), train, validation, **args)


def test_a_finished_run_is_not_resumed_with_another_optimizer_or_data(photos, tmp_path):
    x, y = _data(photos)
    model = _model(photos)
    first = _head_only(photos, tmp_path, validation=(x, y), model=model)
    cases = {
        "optimizer: Adam there, SGD here": dict(optimizer="sgd"),
        "optimizer's beta_1: 0.9 there, 0.5 here": dict(
            optimizer=keras.optimizers.Adam(beta_1=0.5)
        ),
        "`train`: other data": dict(train=(x[:12], y[:12]), validation=(x, y)),
        "`validation`: other data .*not given here": dict(),
    }
    for message, kwargs in cases.items():
        kwargs.setdefault("validation", (x, y) if "optimizer" in kwargs else None)
        with pytest.raises(
            ValueError, match=rf"other settings.*{message}.*Received: checkpoint_dir="
        ):
            _head_only(photos, tmp_path, model=model, **kwargs)
    # The same optimizer given as an instance with its defaults is the same run.
    again = _head_only(
        photos, tmp_path, validation=(x, y), model=model, optimizer=keras.optimizers.Adam()
    )
    assert again.history == first.history


def test_a_checkpoint_of_another_model_names_the_variables_that_differ(photos, tmp_path):
    _head_only(photos, tmp_path)
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    other = kerastl.build_model(extractor, kerastl.heads.multiclass(5), preprocessing=prep)
    shapes = r"head/predictions/kernel \(\d+, 3\) there, \(\d+, 5\) here"
    with pytest.raises(
        ValueError, match=rf"variables differ: .*{shapes}.*Received: checkpoint_dir"
    ):
        _head_only(photos, tmp_path, model=other)
    # Restored directly, the checkpoint's files say the same.
    checkpoints = Checkpoints(str(tmp_path))
    _, path = checkpoints.latest()
    n = len(other.weights)
    with pytest.raises(ValueError, match=rf"model state.*{n} saved variables, {n} here.*{shapes}"):
        checkpoints.restore(other, path, optimizer=False)


@pytest.mark.backend_free
def test_variables_differ_says_which():
    saved = [["conv/kernel", [3, 3, 3, 8]], ["head/dense/kernel", [8, 3]]]
    assert variables_differ(saved, saved) is None
    # Keras' automatic numbering depends on the session: not a difference.
    renumbered = [["conv_4/kernel", [3, 3, 3, 8]], ["head/dense_2/kernel", [8, 3]]]
    assert variables_differ(saved, renumbered) is None
    here = [["conv/kernel", [3, 3, 3, 8]], ["head/dense/kernel", [8, 5]], ["head/dense/bias", [5]]]
    message = variables_differ(saved, here)
    assert message.startswith("2 saved variables, 3 here")
    assert "head/dense/kernel (8, 3) there, (8, 5) here" in message
    assert "only here: head/dense/bias" in message


def test_a_cut_or_corrupt_checkpoint_is_named(photos, tmp_path):
    _head_only(photos, tmp_path)
    checkpoints = Checkpoints(str(tmp_path))
    _, path = checkpoints.latest()
    weights = os.path.join(path, "model.npz")
    with open(weights, "rb") as f:
        content = f.read()
    # Bytes changed in the middle: the archive opens, an array's CRC fails.
    with open(weights, "wb") as f:
        f.write(content[:200] + bytes(255 - b for b in content[200:400]) + content[400:])
    named = r"checkpoint file '.*model\.npz' in `checkpoint_dir` cannot be read"
    with pytest.raises(ValueError, match=rf"{named}.*Received: checkpoint_dir="):
        checkpoints.restore(_model(photos), path, optimizer=False)
    # Cut short: refused before any training.
    with open(weights, "wb") as f:
        f.write(content[: len(content) // 2])
    with pytest.raises(ValueError, match=rf"{named}.*Received: checkpoint_dir="):
        _head_only(photos, tmp_path)


def test_a_checkpoint_without_its_run_record_is_refused(photos, tmp_path):
    _head_only(photos, tmp_path)
    _, path = Checkpoints(str(tmp_path)).latest()
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    del state["run"]  # as written before checkpoints recorded their run
    with open(os.path.join(path, "state.json"), "w") as f:
        json.dump(state, f)
    with pytest.raises(ValueError, match=r"does not record what its run.*Received: checkpoint_dir"):
        _head_only(photos, tmp_path)


def test_remat_is_the_same_run_rematerialised_in_phase_two_only(photos, monkeypatch):
    x, y = _data(photos)
    fine_tune_module = sys.modules["kerastl.training.fine_tune"]
    original = fine_tune_module.rematerialized
    entered = []

    def spy(layer, scope):
        entered.append((layer.name, scope.mode, layer.trainable))
        return original(layer, scope)

    monkeypatch.setattr(fine_tune_module, "rematerialized", spy)
    runs = {}
    for remat in (None, "full", keras.RematScope(mode="larger_than", output_size_threshold=64)):
        model = _model(photos)
        keras.utils.set_random_seed(0)
        history = kerastl.fine_tune(
            model, (x, y), epochs=2, head_epochs=1, batch_size=6, remat=remat, verbose=0
        )
        runs[getattr(remat, "mode", remat)] = (history.history["loss"], _snapshot(model))
        assert all(layer._remat_mode is None for layer in model.layers)
    # Entered once per run, for phase 2 (the extractor open), on the extractor.
    assert [(mode, trainable) for _, mode, trainable in entered] == [
        ("full", True),
        ("larger_than", True),
    ]
    plain_loss, plain_weights = runs[None]
    for mode in ("full", "larger_than"):
        loss, weights = runs[mode]
        np.testing.assert_allclose(loss, plain_loss, rtol=1e-5)
        for path, value in weights.items():
            np.testing.assert_allclose(value, plain_weights[path], rtol=1e-4, atol=1e-6)


# --- bad input ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(photos):
    return _model(photos)


BAD = {
    "epochs-negative": (dict(epochs=-1), ValueError, r"Received: epochs=-1"),
    "epochs-float": (dict(epochs=1.5), ValueError, r"Received: epochs=1.5"),
    "nothing-to-train": (dict(epochs=0, head_epochs=0), ValueError, r"Nothing to train"),
    "lr-zero": (dict(epochs=1, lr=0), ValueError, r"Received: lr=0"),
    "lr-mult-small": (dict(epochs=1, lr_mult=0.5), ValueError, r"Received: lr_mult=0.5"),
    "unfreeze-matches-nothing": (
        dict(epochs=1, unfreeze=TrainPattern("^nope")),
        ValueError,
        r"matches no layer.*Received: unfreeze=TrainPattern",
    ),
    "unfreeze-bn-only": (
        dict(epochs=1, unfreeze=TrainPattern("^bn_")),
        ValueError,
        r"would train nothing.*Received: unfreeze=",
    ),
    "unfreeze-all-frozen": (dict(epochs=1, unfreeze="all"), ValueError, r"Received: unfreeze="),
    "schedule": (dict(epochs=1, schedule="step"), ValueError, r"Received: schedule='step'"),
    "optimizer": (dict(epochs=1, optimizer="adamax2"), ValueError, r"Received: optimizer="),
    "warmup": (dict(epochs=1, warmup=1.0), ValueError, r"Received: warmup=1.0"),
    "smoothing": (dict(epochs=1, label_smoothing=-0.1), ValueError, r"label_smoothing=-0.1"),
    "ema": (dict(epochs=1, ema="yes"), TypeError, r"Received: ema='yes'"),
    "early": (dict(epochs=1, early_stopping=0), ValueError, r"Received: early_stopping=0"),
    "callbacks": (dict(epochs=1, callbacks=["cb"]), TypeError, r"Received: callbacks="),
    "bn": (dict(epochs=1, bn="moving"), ValueError, r"Received: bn='moving'"),
    "plan": (dict(epochs=1, plan="fast"), TypeError, r"Received: plan='fast'"),
    "layer-decay-with-lr-mult": (
        dict(epochs=1, layer_decay=0.5, lr_mult=10.0),
        ValueError,
        r"`layer_decay` and `lr_mult`.*Received: layer_decay=0.5, lr_mult=10.0",
    ),
    "unfreeze-without-phase-two": (
        dict(epochs=0, unfreeze="none"),
        ValueError,
        r"`unfreeze` applies to phase 2.*`epochs` is 0.*Received: unfreeze='none', epochs=0",
    ),
    "bn-without-phase-two": (
        dict(epochs=0, bn="train"),
        ValueError,
        r"`bn` applies to phase 2.*Received: bn='train', epochs=0",
    ),
    "lr-mult-without-phase-two": (
        dict(epochs=0, lr_mult=10.0),
        ValueError,
        r"`lr_mult` applies to phase 2.*Received: lr_mult=10.0, epochs=0",
    ),
    "layer-decay-without-phase-two": (
        dict(epochs=0, layer_decay=0.5),
        ValueError,
        r"`layer_decay` applies to phase 2.*Received: layer_decay=0.5, epochs=0",
    ),
    "remat": (dict(epochs=1, remat="yes"), ValueError, r"`remat` must be.*Received: remat='yes'"),
    "remat-mode-needing-names": (
        dict(epochs=1, remat="list_of_layers"),
        ValueError,
        r"keras.RematScope.*Received: remat='list_of_layers'",
    ),
    "remat-without-phase-two": (
        dict(epochs=0, remat="full"),
        ValueError,
        r"`remat` applies to phase 2.*Received: remat='full', epochs=0",
    ),
    "cache-dir-without-cache": (
        dict(epochs=1, cache=False, cache_dir="features"),
        ValueError,
        r"Received: cache_dir='features', cache=False",
    ),
}


@pytest.mark.backend_free
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_arguments_are_refused_clearly(tiny, photos, case):
    kwargs, error, match = BAD[case]
    x, y = _data(photos)
    with pytest.raises(error, match=match):
        kerastl.fine_tune(tiny, (x, y), verbose=0, **kwargs)


def test_bad_data_is_refused_clearly(tiny, photos, tmp_path):
    x, y = _data(photos)
    with pytest.raises(ValueError, match=r"labels the head does not have.*\[3, 7\].*validation"):
        kerastl.fine_tune(tiny, (x, y), (x[:2], np.array([3, 7])), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"holds no images.*train"):
        kerastl.fine_tune(tiny, (x[:0], y[:0]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"6 images but 5 labels"):
        kerastl.fine_tune(tiny, (x[:6], y[:5]), epochs=1, verbose=0)
    with pytest.raises(TypeError, match=r"Received: train='images/'"):
        kerastl.fine_tune(tiny, "images/", epochs=1, verbose=0)
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match=r"Received: checkpoint_dir="):
        kerastl.fine_tune(tiny, (x, y), epochs=1, checkpoint_dir=a_file, verbose=0)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"no kerastl.FeatureExtractor.*Received: model="):
        kerastl.fine_tune(plain, (np.zeros((2, 4)), np.zeros(2)), epochs=1, verbose=0)


def _one_hot_model(photos):
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    head = kerastl.heads.multiclass(3, sparse_labels=False)
    return kerastl.build_model(extractor, head, preprocessing=prep)


def _nan_images(x):
    images = x.astype("float32")
    images[3, 0, 0, 0] = np.nan
    return images


# What the data door refuses, through fine_tune: (train, validation, the message).
BAD_DATA = {
    "one-hot-width": (
        lambda x, y: (x, keras.utils.to_categorical(y, 4)),
        None,
        r"`train` has labels of 4 classes; the head has 3.*Received: train labels of shape",
    ),
    "rank-3-images": (
        lambda x, y: (x[..., 0], y),
        None,
        r"`train` images must have rank 4.*Received: train images of shape \(18, 32, 32\)",
    ),
    "5-channels": (
        lambda x, y: (np.concatenate([x, x[..., :2]], axis=-1), y),
        None,
        r"1 \(grayscale\) or 3 \(RGB\) channels.*Received: train images of shape \(18, 32, 32, 5\)",
    ),
    "strings": (
        lambda x, y: (x.astype(str), y),
        None,
        r"`train` images must be numbers.*Received: train images of dtype <U",
    ),
    "ragged-list": (
        lambda x, y: ([x[0], x[1][:20]], y[:2]),
        None,
        r"`train` images are ragged.*Received: train images as a list of 2 images",
    ),
    "validation-without-labels": (
        lambda x, y: (x, y),
        lambda x, y: (x, None),
        r"`validation` needs labels.*Received: validation=\(x, None\)",
    ),
    "nan-images": (
        lambda x, y: (_nan_images(x), y),
        None,
        r"`train` images hold NaN or infinite values \(first in image 3\).*Received: train",
    ),
}


@pytest.mark.backend_free
@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_refused_by_the_door(photos, case):
    make_train, make_validation, match = BAD_DATA[case]
    x, y = _data(photos)
    model = _one_hot_model(photos) if case == "one-hot-width" else _model(photos)
    validation = None if make_validation is None else make_validation(x, y)
    with pytest.raises(ValueError, match=match):
        kerastl.fine_tune(model, make_train(x, y), validation, epochs=1, verbose=0)


def _streamed(x, y):
    """`(x, y)` batched as the backend's own data: tf.data, a torch DataLoader (or None)."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    if backend == "torch":
        import torch

        pairs = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        return kerastl.data.from_torch_dataset(pairs, batch_size=6, seed=0)
    return None


@pytest.mark.parametrize("cache", ["auto", False])
def test_streamed_labels_out_of_range_are_named_at_their_batch(photos, cache):
    x, y = _data(photos)
    y = y.copy()
    y[9] = 7
    train = _streamed(x, y)
    if train is None:
        pytest.skip("tf.data on TensorFlow, a torch DataLoader on torch")
    match = r"labels the head does not have.*\[7\].*Received: train labels \(batch \d+\)"
    with pytest.raises(ValueError, match=match):
        kerastl.fine_tune(_model(photos), train, epochs=0, cache=cache, verbose=0)


def test_real_images_sanity(photos):
    # The fixture is real: features of the calibrated backbone depend on the image.
    features = kerastl.layers.find_extractor(_model(photos))(tf_mode(real_images(32, 4)))
    assert float(keras.ops.std(features)) > 1e-3


def test_a_plan_gives_epochs_and_explicit_arguments_win(photos):
    x, y = _data(photos)
    with pytest.raises(
        TypeError, match=r"`epochs`.*required unless a `plan`.*Received: epochs=None"
    ):
        kerastl.fine_tune(_model(photos), (x, y), verbose=0)
    # a plan that trains the head alone, to convergence
    plan = dataclasses.replace(kerastl.recommend(5, "similar"), epochs=0, unfreeze=FreezeAll())
    assert plan.epochs == 0 and plan.head_epochs == "auto"
    # head_epochs=1 is the caller's choice over the plan's.
    history = kerastl.fine_tune(
        _model(photos), (x, y), plan=plan, head_epochs=1, batch_size=6, verbose=0
    )
    assert len(history.epoch) == 1 and history.phases == ["head"]
    # Nothing the call passes is dropped: the plan's epochs=0 leaves no phase 2.
    with pytest.raises(ValueError, match=r"`unfreeze` applies to phase 2.*is 0 \(the plan's\)"):
        kerastl.fine_tune(_model(photos), (x, y), plan=plan, unfreeze="none", verbose=0)


def test_tf_data_and_torch_loaders_are_taken(photos):
    """Every source kerastl.data makes: tf.data where TensorFlow is, a DataLoader where torch is."""
    x, y = _data(photos)
    sources = {}
    try:
        import tensorflow as tf

        sources["tf.data"] = kerastl.data.from_tf_dataset(
            tf.data.Dataset.from_tensor_slices((x, y)), batch_size=6, shuffle=0
        )
    except ImportError:
        pass
    try:
        import torch

        pairs = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        sources["DataLoader"] = kerastl.data.from_torch_dataset(pairs, batch_size=6, seed=0)
    except ImportError:
        pass
    if not sources:
        pytest.skip("neither tensorflow nor torch installed next to this backend")
    for source in sources.values():
        history = kerastl.fine_tune(_model(photos), source, source, epochs=1, verbose=0)
        assert len(history.history["val_loss"]) == 2 and history.final is not None


# --- the head phase to convergence ----------------------------------------------------


def _features(model, x):
    """The features the head sees: the model's layers before it, as numpy float64."""
    front = keras.Model(model.inputs, model.get_layer("head").input)
    return keras.ops.convert_to_numpy(front(x, training=False)).astype("float64")


def _objective(features, targets, kernel, bias, l2, binary):
    """The solver's objective at the head's weights, and its gradient's largest entry.

    The head holds `W / std` and `b - mean / std @ W` for the weights `W, b` found
    on the standardised features: they are mapped back first.
    """
    mean, std = features.mean(axis=0), features.std(axis=0)
    std[std == 0] = 1.0
    z = (features - mean) / std
    w = kernel * std[:, None]
    b = bias + mean @ kernel
    logits = z @ w + b
    if binary:
        p = 1 / (1 + np.exp(-logits[:, 0]))
        loss = np.mean(np.logaddexp(0.0, logits[:, 0]) - targets * logits[:, 0])
        error = (p - targets)[:, None] / len(z)
    else:
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        onehot = np.eye(w.shape[1])[targets]
        loss = -np.sum(onehot * log_p) / len(z)
        error = (np.exp(log_p) - onehot) / len(z)
    gradient = np.concatenate([(z.T @ error + l2 * w).ravel(), error.sum(axis=0)])
    return loss + l2 / 2 * np.sum(w * w), float(np.max(np.abs(gradient))), loss


@pytest.mark.parametrize("task", ["multiclass", "binary", "logits"])
def test_the_converged_linear_head_is_the_lbfgs_optimum(photos, task):
    from kerastl.training.converged_head import DEFAULT_L2

    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    head = {
        "multiclass": kerastl.heads.multiclass(3),
        "binary": kerastl.heads.binary(),
        "logits": kerastl.heads.multiclass(3, logits=True),
    }[task]
    model = kerastl.build_model(extractor, head, preprocessing=prep)
    x, y = _data(photos)
    if task == "binary":
        y = (y == 1).astype("int64")
    history = kerastl.fine_tune(model, (x, y), epochs=0, batch_size=6, verbose=0)
    assert history.phases == ["head"] and len(history.epoch) == 1
    features = _features(model, x)
    dense = model.get_layer("head").dense_layers[-1]
    kernel = keras.ops.convert_to_numpy(dense.kernel).astype("float64")
    bias = keras.ops.convert_to_numpy(dense.bias).astype("float64")
    objective, gradient, loss = _objective(features, y, kernel, bias, DEFAULT_L2, task == "binary")
    # The optimum: the gradient of the penalised loss vanishes (up to float32 weights).
    assert gradient < 1e-3, gradient
    # The head's training loss is the solution's (Keras clips probabilities at 1e-7).
    assert history.history["loss"][0] == pytest.approx(loss, rel=1e-3, abs=1e-5)
    # And the model predicts what the assigned weights compute.
    logits = features @ kernel + bias
    if task == "binary":
        expected = 1 / (1 + np.exp(-logits))
    elif task == "logits":
        expected = logits
    else:
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_the_l2_penalty_is_chosen_on_validation(photos):
    from kerastl.training.converged_head import L2_PATH

    x, y = _data(photos)
    model = _model(photos)
    # Validation labels that disagree with the training ones: the strongest penalty
    # (the flattest head) has the lowest validation loss.
    history = kerastl.fine_tune(model, (x, y), (x, (y + 1) % 3), epochs=0, batch_size=6, verbose=0)
    features = _features(model, x)
    dense = model.get_layer("head").dense_layers[-1]
    kernel = keras.ops.convert_to_numpy(dense.kernel).astype("float64")
    bias = keras.ops.convert_to_numpy(dense.bias).astype("float64")
    _, gradient, _ = _objective(features, y, kernel, bias, L2_PATH[0], False)
    assert gradient < 1e-3
    assert "val_loss" in history.history and len(history.history["val_loss"]) == 1


def test_head_epochs_keeps_the_epoch_count(photos):
    x, y = _data(photos)
    history = kerastl.fine_tune(
        _model(photos), (x, y), epochs=1, head_epochs=3, batch_size=6, verbose=0
    )
    # Three head epochs of Adam from a random head: the old behaviour, not the solver's.
    assert history.phase_boundaries == [3] and len(history.epoch) == 4
    assert history.history["loss"][0] > history.history["loss"][2]
    with pytest.raises(ValueError, match=r"head_epochs.*'auto'.*Received: head_epochs='all'"):
        kerastl.fine_tune(_model(photos), (x, y), epochs=1, head_epochs="all", verbose=0)
    with pytest.raises(ValueError, match=r"head_sweep.*head_epochs=N.*head_epochs='auto'"):
        kerastl.fine_tune(_model(photos), (x, y), (x, y), epochs=0, head_sweep=True, verbose=0)


def test_a_head_with_hidden_layers_trains_until_its_loss_stops_improving(photos):
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    head = kerastl.heads.multiclass(3, hidden=(8,))
    model = kerastl.build_model(extractor, head, preprocessing=prep)
    x, y = _data(photos)
    before = float(model.evaluate(x, y, verbose=0, return_dict=True)["loss"])
    history = kerastl.fine_tune(model, (x, y), epochs=0, lr=1e-2, batch_size=6, verbose=0)
    assert len(history.epoch) == 1
    assert history.history["loss"][0] < before


class _Crash(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError("crash")


def test_a_converged_head_phase_resumes_in_phase_two(photos, tmp_path):
    x, y = _data(photos)
    data = kerastl.data.from_arrays(x, y, batch_size=6, shuffle=False)
    args = dict(epochs=2, lr=1e-2, verbose=0)
    with pytest.raises(RuntimeError, match="crash"):
        kerastl.fine_tune(
            _model(photos), data, checkpoint_dir=tmp_path / "run", callbacks=[_Crash(2)], **args
        )
    state, _ = Checkpoints(str(tmp_path / "run")).latest()
    assert state["epochs_done"] == 2 and state["phase"] == 1
    resumed_model = _model(photos)
    resumed = kerastl.fine_tune(
        resumed_model, data, checkpoint_dir=tmp_path / "run", callbacks=[_Crash(-1)], **args
    )
    straight_model = _model(photos)
    straight = kerastl.fine_tune(straight_model, data, callbacks=[_Crash(-1)], **args)
    assert resumed.phase_boundaries == straight.phase_boundaries == [1]
    np.testing.assert_allclose(
        resumed.history["loss"], straight.history["loss"], rtol=1e-4, atol=1e-6
    )
    for a, b in zip(resumed_model.weights, straight_model.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-4, atol=1e-5
        )
