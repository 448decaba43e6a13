"""The frozen-feature cache: equal to end-to-end training, never used where invalid, on disk."""

import os
import sys

import keras
import numpy as np
import pytest
from support import calibrate_batchnorm, tf_mode

import kerastl
from kerastl.training import feature_cache, feature_store
from kerastl.training.checkpoints import Checkpoints


def _backbone(photos):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, filters in enumerate((8, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    backbone = keras.Model(inputs, x, name="tiny")
    return calibrate_batchnorm(backbone, tf_mode(photos[:, ::3, ::3]))


def _model(photos, augment="none", seed=3):
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf", augment=augment, seed=0)
    keras.utils.set_random_seed(seed)
    head = kerastl.heads.multiclass(3)
    return kerastl.build_model(extractor, head, preprocessing=prep)


def _data(photos):
    return photos[:, ::3, ::3][:18], np.arange(18) % 3


def test_head_on_the_cache_equals_the_head_trained_end_to_end(photos, tmp_path, monkeypatch):
    x, y = _data(photos)
    runs = {}
    fed = []
    original = sys.modules["kerastl.training.head_phase"].cached_trainer

    def spy(*args, **kwargs):
        trainer, reason = original(*args, **kwargs)
        if trainer is not None:
            fed.append((trainer.fit_arguments["x"], trainer.validation_data))
        return trainer, reason

    monkeypatch.setattr(sys.modules["kerastl.training.fine_tune"], "cached_trainer", spy)
    for where in ("memory", "disk", "none"):
        model = _model(photos)
        data = kerastl.data.from_arrays(x, y, batch_size=6, shuffle=False)
        history = kerastl.fine_tune(
            model,
            data,
            data,
            epochs=0,
            head_epochs=3,
            lr=1e-2,
            cache=where != "none",
            cache_dir=tmp_path if where == "disk" else None,
            verbose=0,
        )
        runs[where] = (model, history)
    # On disk the features are read a batch at a time, not handed to fit whole.
    (in_memory, _), (on_disk, held_out) = fed
    if keras.config.backend() == "jax":
        assert isinstance(in_memory, np.ndarray)  # fit's arrays
    else:  # batches drawn from (seed, epoch), trained without fit (head_loop)
        assert isinstance(in_memory, feature_cache.FeatureBatches)
        assert type(in_memory.features) is np.ndarray
    assert isinstance(on_disk, feature_cache.FeatureBatches)
    assert isinstance(on_disk.features, np.memmap)
    assert isinstance(held_out, feature_cache.FeatureBatches)
    _, h_direct = runs["none"]
    direct = runs["none"][0]
    reference = [keras.ops.convert_to_numpy(w) for w in direct.get_layer("head").weights]
    for where in ("memory", "disk"):
        cached, h_cached = runs[where]
        head_weights = [keras.ops.convert_to_numpy(w) for w in cached.get_layer("head").weights]
        assert any(not np.allclose(w, 0) for w in head_weights)
        for a, b in zip(head_weights, reference, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        for key in ("loss", "val_loss", "accuracy"):
            np.testing.assert_allclose(h_cached.history[key], h_direct.history[key], rtol=1e-4)
        assert h_cached.initial["loss"] == pytest.approx(h_direct.initial["loss"], rel=1e-5)
        # The full model holds the head trained on the cache.
        np.testing.assert_allclose(
            cached.predict(x, verbose=0), direct.predict(x, verbose=0), rtol=1e-4, atol=1e-5
        )


def test_the_cache_is_never_used_where_it_is_invalid(photos, monkeypatch):
    x, y = _data(photos)
    augmented = _model(photos, augment="light")
    with pytest.raises(ValueError, match=r"random numbers.*Received: cache=True"):
        kerastl.fine_tune(augmented, (x, y), epochs=0, head_epochs=1, cache=True, verbose=0)

    def refuse(*args, **kwargs):
        raise AssertionError("the cache was used")

    monkeypatch.setattr(sys.modules["kerastl.training.head_phase"], "features_of", refuse)
    kerastl.fine_tune(augmented, (x, y), epochs=0, head_epochs=1, verbose=0)  # auto: not used
    mixed = kerastl.data.from_arrays(
        x, keras.utils.to_categorical(y, 3), batch_size=6, mix="mixup", seed=0
    )
    one_hot = kerastl.build_model(
        kerastl.FeatureExtractor(_backbone(photos), pooling="avg"),
        kerastl.heads.multiclass(3, sparse_labels=False),
        kerastl.preprocessing.pipeline("mobilenet_v2", resize=32),
    )
    with pytest.raises(ValueError, match=r"mix.*Received: cache=True"):
        kerastl.fine_tune(one_hot, mixed, epochs=0, head_epochs=1, cache=True, verbose=0)
    with pytest.raises(ValueError, match=r"callbacks.*Received: cache=True"):
        kerastl.fine_tune(
            _model(photos),
            (x, y),
            epochs=0,
            head_epochs=1,
            cache=True,
            callbacks=[keras.callbacks.History()],
            verbose=0,
        )
    # A trainable extractor has no fixed features.
    model = _model(photos)
    kerastl.set_freeze(model, "none")
    with pytest.raises(ValueError, match=r"not fully frozen.*Received: model_or_extractor="):
        kerastl.cache_features(model, (x, y), verbose=0)
    # Dropout between the extractor and the head changes the features every step.
    extractor = kerastl.FeatureExtractor(_backbone(photos), pooling="avg")
    images = keras.Input((32, 32, 3))
    features = keras.layers.Dropout(0.5)(extractor(images))
    dropped = keras.Model(images, kerastl.heads.multiclass(3)(features))
    front, head, reason = feature_cache.cacheable(dropped)
    assert front is None and "dropout" in reason


def test_a_disk_cache_is_reused_and_a_corrupt_one_rebuilt(photos, tmp_path):
    x, y = _data(photos)
    model = _model(photos)
    first = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert not first.reused and first.features.shape == (18, 16)
    expected = np.array(first.features)
    again = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert again.reused and again.key == first.key
    np.testing.assert_array_equal(np.asarray(again.features), expected)
    # What the features depend on changes the key: other data, other weights.
    other = kerastl.cache_features(model, (x[:12], y[:12]), cache_dir=tmp_path, verbose=0)
    assert other.key != first.key and not other.reused
    bias = model.get_layer("feature_extractor").backbone.get_layer("conv_1").bias
    bias.assign(bias + 1.0)
    moved = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert moved.key != first.key and not moved.reused
    bias.assign(bias - 1.0)
    # A flipped byte: detected, rebuilt, never used.
    with open(first.path, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\xff" * 8)
    rebuilt = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert not rebuilt.reused
    np.testing.assert_allclose(np.asarray(rebuilt.features), expected, rtol=1e-6)


def test_fine_tune_reuses_its_disk_cache(photos, tmp_path, monkeypatch):
    x, y = _data(photos)
    kerastl.fine_tune(
        _model(photos), (x, y), epochs=0, head_epochs=1, cache_dir=tmp_path, verbose=0
    )
    computed = []
    original = feature_cache._compute

    def spy(*args, **kwargs):
        computed.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(feature_cache, "_compute", spy)
    kerastl.fine_tune(
        _model(photos), (x, y), epochs=0, head_epochs=1, cache_dir=tmp_path, verbose=0
    )
    assert computed == []  # same model, same data: read from disk


def test_bad_input(photos, tmp_path):
    x, y = _data(photos)
    model = _model(photos)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"Received: cache_dir="):
        kerastl.cache_features(model, (x, y), cache_dir=a_file, verbose=0)
    with pytest.raises(OSError, match=r"cannot be created.*Received: cache_dir="):
        kerastl.cache_features(model, (x, y), cache_dir=a_file / "below", verbose=0)
    with pytest.raises(ValueError, match=r"holds no images"):
        kerastl.cache_features(model, (x[:0], y[:0]), verbose=0)
    with pytest.raises(TypeError, match=r"Received: model_or_extractor='model'"):
        kerastl.cache_features("model", (x, y), verbose=0)
    with pytest.raises(TypeError, match=r"Received: data="):
        kerastl.cache_features(model, "images/", verbose=0)
    with pytest.raises(ValueError, match=r"Received: batch_size=0"):
        kerastl.cache_features(model, (x, y), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match=r"Received: cache='yes'"):
        kerastl.fine_tune(model, (x, y), epochs=1, cache="yes", verbose=0)


def test_a_head_phase_on_the_cache_resumes_without_it(photos, tmp_path):
    """Interrupted on the cache, resumed where the cache is off (callbacks given)."""
    x, y = _data(photos)
    args = dict(epochs=0, head_epochs=2, batch_size=6, checkpoint_dir=tmp_path, verbose=0)
    model = _model(photos)
    kerastl.fine_tune(model, (x, y), cache=True, **args)
    checkpoints = Checkpoints(str(tmp_path))
    state, _ = checkpoints.latest()
    assert state["on_cache"]
    # As if killed after the first epoch. The head phase's optimizer holds the head's
    # variables alone, on the cache or not: its state carries over.
    state["epochs_done"] = 1
    state["history"] = {k: v[:1] for k, v in state["history"].items()}
    model.optimizer.build(model.trainable_variables)
    checkpoints.write(model, state, optimizer_of=model)
    history = kerastl.fine_tune(
        _model(photos), (x, y), callbacks=[keras.callbacks.History()], **args
    )
    assert len(history.epoch) == 2


def test_augmented_views_are_cached_and_sampled_per_epoch(photos, tmp_path, monkeypatch):
    x, y = _data(photos)
    model = _model(photos, augment="light")
    cache = kerastl.cache_features(model, (x, y), batch_size=6, views=3, verbose=0)
    assert cache.features.shape == (3, 18, 16) and len(cache) == 18 and cache.views == 3
    copies = np.asarray(cache.features)
    assert np.abs(copies[0] - copies[1]).max() > 1e-4  # each pass draws new augmentations
    front, _, _ = feature_cache.cacheable(model, allow_random=True)
    plain = front.predict(x, verbose=0)  # inference mode: no augmentation
    one = kerastl.cache_features(model, (x, y), views=1, verbose=0)
    assert one.features.shape == (1, 18, 16)
    assert np.abs(np.asarray(one.features[0]) - plain).max() > 1e-4  # augmented
    # Without a random layer the copies are one computation, repeated.
    still = kerastl.cache_features(_model(photos), (x, y), views=4, verbose=0)
    assert still.features.shape == (4, 18, 16) and still.features.strides[0] == 0
    # On disk: keyed with the number of copies, reused.
    first = kerastl.cache_features(model, (x, y), views=2, cache_dir=tmp_path, verbose=0)
    again = kerastl.cache_features(model, (x, y), views=2, cache_dir=tmp_path, verbose=0)
    assert again.reused and again.features.shape == (2, 18, 16)
    np.testing.assert_array_equal(np.asarray(again.features), np.asarray(first.features))
    # Each epoch, one copy per image, drawn from (seed, epoch) only.
    batches = feature_cache.FeatureBatches(
        copies, y, batch_size=6, shuffle=True, views=True, epoch=0
    )
    epoch_0 = np.concatenate([batches[i][0] for i in range(len(batches))])
    batches.on_epoch_end()
    epoch_1 = np.concatenate([batches[i][0] for i in range(len(batches))])
    assert epoch_0.shape == (18, 16) and not np.array_equal(epoch_0, epoch_1)
    replay = feature_cache.FeatureBatches(
        copies, y, batch_size=6, shuffle=True, views=True, epoch=1
    )
    np.testing.assert_array_equal(np.concatenate([replay[i][0] for i in range(3)]), epoch_1)
    rows = {tuple(np.round(row, 5)) for row in copies.reshape(-1, 16)}
    assert all(tuple(np.round(row, 5)) in rows for row in epoch_0)
    # fine_tune trains the head on the views; validation on un-augmented features.
    used = []
    original = feature_cache.features_of

    def spy(front, data, **kwargs):
        used.append(kwargs.get("views"))
        return original(front, data, **kwargs)

    monkeypatch.setattr(sys.modules["kerastl.training.head_phase"], "features_of", spy)
    before = np.array(keras.ops.convert_to_numpy(model.get_layer("head").weights[0]))
    history = kerastl.fine_tune(
        model, (x, y), (x, y), epochs=0, head_epochs=2, views=3, cache=True, verbose=0
    )
    assert used == [3, None] and len(history.history["val_loss"]) == 2
    after = keras.ops.convert_to_numpy(model.get_layer("head").weights[0])
    assert not np.allclose(before, after)
    # The validation figures on the cache are those of the full model.
    evaluated = model.evaluate(x, y, verbose=0, return_dict=True)
    assert history.final["loss"] == pytest.approx(evaluated["loss"], rel=1e-4)
    # What a solved head (head_epochs="auto") fits: every copy beside its own image's label.
    trainers = []
    make_trainer = sys.modules["kerastl.training.head_phase"].cached_trainer

    def keep(*args, **kwargs):
        trainer, reason = make_trainer(*args, **kwargs)
        trainers.append(trainer)
        return trainer, reason

    monkeypatch.setattr(sys.modules["kerastl.training.fine_tune"], "cached_trainer", keep)
    y_shuffled = np.array([2, 0, 1, 1, 2, 0, 0, 0, 1, 2, 2, 1, 0, 1, 2, 0, 1, 2])
    kerastl.fine_tune(model, (x, y_shuffled), epochs=0, views=2, cache=True, verbose=0)
    features, labels = trainers[0].features
    assert features.shape == (36, 16)
    for row in range(36):  # copy v of image i is row v * 18 + i
        assert labels[row] == y_shuffled[row % 18]


def test_a_head_sweep_keeps_the_best_head_of_its_grid(photos):
    x, y = _data(photos)
    model = _model(photos)
    grid = {"lr": [1e-7, 3e-2], "weight_decay": [0.0, 30.0]}
    history = kerastl.fine_tune(
        model, (x, y), (x, y), epochs=0, head_epochs=4, lr=1e-2, head_sweep=grid, verbose=0
    )
    sweep = history.sweep
    assert [(r["lr"], r["weight_decay"]) for r in sweep.results] == [
        (1e-7, 0.0),
        (1e-7, 30.0),
        (3e-2, 0.0),
        (3e-2, 30.0),
    ]
    assert sum(bool(r.get("best")) for r in sweep.results) == 1
    best = max(sweep.results, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert sweep.best == best
    # The kept head is in the model: its validation loss is the grid's figure.
    evaluated = model.evaluate(x, y, verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(sweep.best["val_loss"], rel=1e-4)
    assert history.final["loss"] == pytest.approx(sweep.best["val_loss"], rel=1e-4)
    assert len(history.history["loss"]) == 4 and len(history.history["val_accuracy"]) == 4
    # Every head starts from the model's head; at 1e-7 it barely moves, at 3e-2 it learns.
    tiny, large = sweep.results[0], sweep.results[2]
    assert tiny["val_loss"] == pytest.approx(history.initial["loss"], rel=1e-3)
    assert large["val_loss"] < tiny["val_loss"] - 0.05
    assert "*" in sweep.table() and "weight_decay" in sweep.table()


def test_head_sweep_rates_and_decays_reach_each_head(photos):
    """A check that would fail if the sweep fell back to one plain optimizer."""
    from kerastl.training.head_sweep import train_heads

    x, y = _data(photos)
    model = _model(photos)
    features = kerastl.cache_features(model, (x, y), verbose=0)
    head = model.get_layer("head")
    start = [keras.ops.convert_to_numpy(w) for w in head.weights]

    def sweep(grid):
        for variable, value in zip(head.weights, start, strict=True):
            variable.assign(value)
        return train_heads(
            head,
            (features.features, y),
            (features.features, y),
            grid,
            epochs=3,
            batch_size=6,
            make_optimizer=lambda lr: keras.optimizers.Adam(lr),
            loss=head.default_loss(),
            shuffle=False,
        ).results

    frozen, free, decayed = sweep([(1e-9, 0.0), (5e-2, 0.0), (5e-2, 50.0)])
    assert free["val_loss"] < frozen["val_loss"] - 0.05  # the 1e-9 head did not move
    assert decayed["val_loss"] != pytest.approx(free["val_loss"], rel=1e-3)
    # Each head trains as it would alone with its own rate and decay.
    (alone,) = sweep([(5e-2, 50.0)])
    assert alone["val_loss"] == pytest.approx(decayed["val_loss"], rel=1e-4)
    (alone,) = sweep([(5e-2, 0.0)])
    assert alone["val_loss"] == pytest.approx(free["val_loss"], rel=1e-4)


@pytest.mark.parametrize("kind", ["hidden_batchnorm", "gem_on_a_map"])
def test_every_head_of_a_sweep_trains_as_it_would_alone(photos, kind):
    """Hidden layers and BatchNormalization (one variable per weight, a head axis) and
    GeM on a feature map (one copy per head): each head's weights, rate and decay."""
    from kerastl.training.head_sweep import train_heads

    rng = np.random.default_rng(0)
    if kind == "gem_on_a_map":
        features = rng.uniform(0.1, 2.0, (12, 3, 3, 4)).astype("float32")
        head = kerastl.heads.TaskHead("multiclass", 3, pooling="gem")
    else:
        features = rng.normal(size=(12, 6)).astype("float32")
        head = kerastl.heads.TaskHead("multiclass", 3, hidden=(5,), batchnorm=True)
    y = np.arange(12) % 3
    keras.utils.set_random_seed(0)
    head.build(features.shape)
    start = [keras.ops.convert_to_numpy(w) for w in head.weights]

    def sweep(grid):
        for variable, value in zip(head.weights, start, strict=True):
            variable.assign(value)
        found = train_heads(
            head,
            (features, y),
            (features, y),
            grid,
            epochs=3,
            batch_size=4,
            make_optimizer=lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
            loss=head.default_loss(),
            shuffle=False,
        )
        return found, [keras.ops.convert_to_numpy(w) for w in head.weights]

    grid = [(1e-9, 0.0), (0.1, 0.5), (0.3, 0.0)]
    together, kept = sweep(grid)
    # The 1e-9 head has not moved; the others have.
    assert abs(together.results[0]["val_loss"] - together.results[2]["val_loss"]) > 0.01
    best = together.results.index(together.best)
    for i in sorted({1, best}):  # a head with decay, and the kept one
        alone, weights = sweep([grid[i]])
        result = together.results[i]
        assert alone.results[0]["val_loss"] == pytest.approx(result["val_loss"], rel=1e-4)
        assert alone.results[0]["loss"] == pytest.approx(result["loss"], rel=1e-4)
        if i == best:  # the kept head's weights are those it trained to
            for a, b in zip(kept, weights, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_head_sweep_on_augmented_views(photos):
    x, y = _data(photos)
    model = _model(photos, augment="light")
    history = kerastl.fine_tune(
        model, (x, y), (x, y), epochs=0, head_epochs=1, views=2, verbose=0,
        head_sweep={"lr": [1e-3, 1e-2]},
    )  # fmt: skip
    assert len(history.sweep.results) == 2 and len(history.history["val_loss"]) == 1


def test_views_and_sweep_bad_input(photos):
    x, y = _data(photos)
    model = _model(photos)
    with pytest.raises(ValueError, match=r"Received: views=0"):
        kerastl.cache_features(model, (x, y), views=0, verbose=0)
    with pytest.raises(ValueError, match=r"Received: views=-2"):
        kerastl.fine_tune(model, (x, y), epochs=0, head_epochs=1, views=-2, verbose=0)
    with pytest.raises(ValueError, match=r"cache.*False.*Received: views=2, cache=False"):
        kerastl.fine_tune(model, (x, y), epochs=0, head_epochs=1, views=2, cache=False)
    with pytest.raises(ValueError, match=r"validation.*Received: head_sweep=True, validation="):
        kerastl.fine_tune(model, (x, y), epochs=0, head_epochs=1, head_sweep=True)
    for bad, shown in (
        ("yes", "head_sweep='yes'"),
        ({"lr": [-1.0]}, "lr=-1.0"),
        ({"weight_decay": [float("nan")]}, "weight_decay=nan"),
        ({"momentum": [0.9]}, "head_sweep with keys \\['momentum'\\]"),
        ({"lr": []}, "lr=\\[\\]"),
    ):
        with pytest.raises(ValueError, match=rf"Received: {shown}"):
            kerastl.fine_tune(model, (x, y), (x, y), epochs=0, head_epochs=1, head_sweep=bad)
    with pytest.raises(ValueError, match=r"head_epochs.*Received: head_sweep=True, head_epochs=0"):
        kerastl.fine_tune(model, (x, y), (x, y), epochs=1, head_epochs=0, head_sweep=True)
    callbacks = [keras.callbacks.History()]
    with pytest.raises(ValueError, match=r"callbacks.*Received: head_sweep=True"):
        kerastl.fine_tune(
            model, (x, y), (x, y), epochs=0, head_epochs=1, head_sweep=True, callbacks=callbacks
        )


def test_the_disk_cache_key_runs_nothing_and_sees_a_user_layers_code(photos, tmp_path):
    """Found on disk, the cache costs no call of the model (no trace, no compilation);
    a layer class of the user's own is keyed by its code, which no config shows."""
    x, y = _data(photos)
    model = _model(photos)
    first = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    front, _, _ = feature_cache.cacheable(model)
    calls = []
    original = front.predict_on_batch
    front.predict_on_batch = lambda *a, **k: calls.append(1) or original(*a, **k)
    fingerprint = "data"
    key = feature_store.cache_key
    assert key(front, fingerprint) == key(front, fingerprint)
    assert calls == []
    again = kerastl.cache_features(model, (x, y), batch_size=6, cache_dir=tmp_path, verbose=0)
    assert again.reused and again.key == first.key

    namespace = {"keras": keras, "__name__": "user_layers"}
    source = (
        "class Scale(keras.layers.Layer):\n    def call(self, x):\n        return x * {factor}\n"
    )
    codes = []
    for factor in (1, 2):
        exec(compile(source.format(factor=factor), f"<scale_{factor}>", "exec"), namespace)
        codes.append(feature_store.code_of(namespace["Scale"]))
    assert codes[0] != codes[1]  # no source kept for exec'd code: its bytecode
    assert feature_store.code_of(keras.layers.Dense) == ""
    assert "return x * 2" in feature_store.code_of(_Doubling)


class _Doubling(keras.layers.Layer):
    def call(self, x):
        return x * 2


def test_the_frozen_pass_joins_batches_where_the_backend_gains_and_memory_allows(
    photos, monkeypatch
):
    """TensorFlow joins batches up to its budgets; torch while every layer's outputs for
    the call fit in an eighth of the free memory, and each batch alone where they do not
    or where that is unknown; JAX each batch alone. The features are the same."""
    x, y = _data(photos)
    model = _model(photos)
    front, _, _ = feature_cache.cacheable(model)
    per_image = feature_cache._activation_bytes(front)
    # At least the backbone's conv, BatchNorm and ReLU outputs (16x16x8, 8x8x16), float32.
    assert per_image >= 4 * 3 * (16 * 16 * 8 + 8 * 8 * 16)
    sizes = []
    original = feature_cache._predict
    monkeypatch.setattr(
        feature_cache, "_predict", lambda front, x: sizes.append(len(x)) or original(front, x)
    )
    runs = {}
    for name, free in (("ample", 10**13), ("seven_images", 8 * 7 * per_image), ("unknown", None)):
        monkeypatch.setattr(feature_cache.memory, "available_bytes", lambda free=free: free)
        sizes.clear()
        features = kerastl.cache_features(model, (x, y), batch_size=3, verbose=0).features
        runs[name] = (list(sizes), np.asarray(features))
    alone = [3] * 6
    expected = {
        "tensorflow": {"ample": [18], "seven_images": [18], "unknown": [18]},
        "torch": {"ample": [18], "seven_images": [6, 6, 6], "unknown": alone},
        "jax": {"ample": alone, "seven_images": alone, "unknown": alone},
    }[keras.config.backend()]
    assert {name: calls for name, (calls, _) in runs.items()} == expected
    for _, features in runs.values():
        np.testing.assert_allclose(features, runs["unknown"][1], rtol=1e-5, atol=1e-6)
    # Two processes on the host (torch.distributed): each takes half of that share.
    monkeypatch.setattr(feature_cache.memory, "available_bytes", lambda: 8 * 7 * per_image)
    monkeypatch.setattr(feature_cache.processes, "count", lambda: 2)
    two_processes = {
        "tensorflow": (feature_cache.INFERENCE_VALUES, feature_cache.INFERENCE_IMAGES),
        "torch": (feature_cache.INFERENCE_VALUES, 3),
        "jax": (0, 0),
    }
    assert feature_cache._call_budget(front) == two_processes[keras.config.backend()]


@pytest.mark.skipif(keras.config.backend() != "torch", reason="a torch module in a Keras model")
def test_a_torch_module_inside_leaves_the_activations_unknown_so_torch_joins_nothing():
    import torch

    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.TorchModuleWrapper(torch.nn.Linear(192, 4), output_shape=(4,))(flat)
    front = keras.Model(inputs, outputs)
    assert feature_cache._activation_bytes(front) is None
    assert feature_cache._call_budget(front) == (0, 0)


@pytest.mark.backend_free
def test_the_frozen_pass_joins_batches_up_to_its_value_and_image_budgets():
    batches = [(np.zeros((100, 4, 4, 1)), np.arange(100)) for _ in range(6)]
    # 100-image batches of 16 values: the image budget (256) binds first.
    chunks = list(feature_cache._chunks(batches, values=10**9, images=256))
    assert [len(x) for x, _, _ in chunks] == [200, 200, 200]
    assert [merged for _, _, merged in chunks] == [2, 2, 2]
    assert all(len(ys) == 2 for _, ys, _ in chunks)
    # Then the value budget: 3,200 values is two batches.
    chunks = list(feature_cache._chunks(batches, values=3200, images=10**9))
    assert [len(x) for x, _, _ in chunks] == [200, 200, 200]
    # A batch larger than either budget goes alone.
    assert [len(x) for x, _, _ in feature_cache._chunks(batches[:2], 10, 10)] == [100, 100]
