import json

import bad_input as bad
import keras
import numpy as np
import pytest
from support import calibrate_batchnorm

import kerastl
from kerastl.callbacks import GradualUnfreezing
from kerastl.freeze import FreezeAll, TrainPattern, TrainTopBlocks
from kerastl.optimizers import PerLayerLR

LAYERS = ("conv_a", "bn_a", "conv_b", "conv_c", "head")


def _model():
    """Backbone blocks (one per weighted layer): conv_a, bn_a, conv_b, conv_c."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(4, 3, name="conv_b", activation="relu")(x)
    x = keras.layers.Conv2D(6, 3, name="conv_c", activation="relu")(x)
    backbone = keras.Model(inputs, x, name="tiny")
    calibrate_batchnorm(backbone, np.random.default_rng(0).normal(size=(8, 12, 12, 3)))
    images = keras.Input((12, 12, 3))
    features = kerastl.FeatureExtractor(backbone, pooling="avg", name="fx")(images)
    return keras.Model(images, keras.layers.Dense(3, name="head")(features))


def _layer(model, name):
    return (
        model.get_layer(name) if name == "head" else model.get_layer("fx").backbone.get_layer(name)
    )


class _WhatChanged(keras.callbacks.Callback):
    """Records, per epoch, which layers' weights changed during it."""

    def __init__(self):
        super().__init__()
        self.changed = []

    def _values(self):
        return {
            name: [keras.ops.convert_to_numpy(w).copy() for w in _layer(self.model, name).weights]
            for name in LAYERS
        }

    def on_epoch_begin(self, epoch, logs=None):
        self._before = self._values()

    def on_epoch_end(self, epoch, logs=None):
        after = self._values()
        self.changed.append(
            {
                name
                for name in LAYERS
                if any(
                    not np.array_equal(b, a)
                    for b, a in zip(self._before[name], after[name], strict=True)
                )
            }
        )


def _fit(model, callback, epochs=3, optimizer=None):
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 12, 12, 3)).astype("float32")
    y = np.arange(16) % 3
    watcher = _WhatChanged()
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=8,
        verbose=0,
        validation_data=(x[:8], y[:8]),
        callbacks=[callback, watcher],
    )
    return watcher.changed, history


@pytest.mark.keras_floor
def test_one_more_block_every_epoch():
    model = _model()
    changed, history = _fit(model, GradualUnfreezing(every=1, verbose=0), epochs=4)
    assert changed == [
        {"head"},
        {"head", "conv_c"},
        {"head", "conv_c", "conv_b"},
        {"head", "conv_c", "conv_b", "conv_a"},  # bn_a joins conv_a's block; bn="frozen" fixes it
    ]
    assert len(history.history["val_accuracy"]) == 4  # loss and metrics survive recompiles
    assert np.isfinite(history.history["loss"]).all()


def test_schedule_with_learning_rate_multiplier_for_new_blocks():
    model = _model()
    callback = GradualUnfreezing(
        schedule={0: "all", 2: TrainTopBlocks(2) | TrainPattern("conv_a")},
        lr_multiplier=0.1,
        verbose=0,
    )
    changed, _ = _fit(model, callback, epochs=3, optimizer=keras.optimizers.SGD(0.1))
    assert changed == [{"head"}, {"head"}, {"head", "conv_c", "conv_b", "conv_a"}]
    assert callback.unfrozen == {2: ["conv_a", "conv_b", "conv_c"]}
    optimizer = model.optimizer
    assert isinstance(optimizer, PerLayerLR)
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.SGD)
    assert optimizer.multiplier(_layer(model, "conv_b").kernel) == pytest.approx(0.1)
    assert optimizer.multiplier(_layer(model, "head").kernel) == 1.0


def test_multiplier_zero_keeps_new_blocks_fixed():
    """The multiplier really reaches the update: 0 means the unfrozen block does not move."""
    model = _model()
    callback = GradualUnfreezing(schedule={1: TrainTopBlocks(1)}, lr_multiplier=0.0, verbose=0)
    changed, _ = _fit(model, callback, epochs=2)
    assert changed == [{"head"}, {"head"}]
    assert len(model.trainable_variables) == 4  # conv_c is trainable, its multiplier is 0


@pytest.mark.keras_floor
def test_resumed_fit_starts_in_the_scheduled_state():
    model = _model()
    callback = GradualUnfreezing(schedule={0: "all", 1: TrainTopBlocks(1)}, verbose=0)
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, 12, 12, 3), "float32")
    model.fit(x, np.zeros((4, 3)), epochs=3, initial_epoch=2, verbose=0, callbacks=[callback])
    assert callback.unfrozen == {2: ["conv_c"]}


@pytest.mark.keras_floor
def test_config_round_trip_through_json():
    callback = GradualUnfreezing(
        schedule={0: "all", 3: TrainTopBlocks(2) | TrainPattern("^conv_a$")},
        lr_multiplier=0.5,
        verbose=0,
    )
    text = json.dumps(keras.saving.serialize_keras_object(callback))
    clone = keras.saving.deserialize_keras_object(json.loads(text))
    assert type(clone) is GradualUnfreezing
    assert clone.schedule == callback.schedule
    assert (clone.lr_multiplier, clone.every, clone.verbose) == (0.5, None, 0)
    assert clone.get_config() == callback.get_config()
    every = GradualUnfreezing(every=2)
    every_clone = GradualUnfreezing.from_config(json.loads(json.dumps(every.get_config())))
    assert (every_clone.every, every_clone.schedule) == (2, None)
    # The clone schedules the same policies: equal, not merely present.
    assert [p for _, p in clone.schedule] == [
        FreezeAll(),
        TrainTopBlocks(2) | TrainPattern("^conv_a$"),
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"schedule": {3: "all", 1: "none"}},
            r"increasing order.*Received: schedule=\{3: 'all', 1: 'none'\}",
        ),
        ({"schedule": {-1: "all"}}, r"-1 is not.*Received: schedule=\{-1: 'all'\}"),
        ({"schedule": {1: "some"}}, r"Received: freeze='some'"),
        ({"schedule": {}}, r"Received: schedule=\{\}"),
        ({}, r"exactly one"),
        ({"schedule": {0: "all"}, "every": 2}, r"exactly one"),
        ({"every": 0}, r"Received: every=0"),
        ({"every": 1, "lr_multiplier": -0.5}, r"Received: lr_multiplier=-0.5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradualUnfreezing(**kwargs)


# --- bad input: one wrong argument, one clear error (tests/bad_input.py) -----------

BAD_INPUT = [
    # === kerastl.callbacks.GradualUnfreezing ===
    bad.case(
        "gu-schedule-empty",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={}),
        ValueError,
        r"Received: schedule=\{\}",
    ),
    bad.case(
        "gu-schedule-list",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule=[(0, "all")]),
        ValueError,
        r"Received: schedule=\[\(0, 'all'\)\]",
    ),
    bad.case(
        "gu-schedule-negative",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={-1: "all"}),
        ValueError,
        r"Received: schedule=\{-1: 'all'\}",
    ),
    bad.case(
        "gu-schedule-string-epoch",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={"1": "all"}),
        ValueError,
        r"Received: schedule=\{'1': 'all'\}",
    ),
    bad.case(
        "gu-schedule-float-epoch",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={1.5: "all"}),
        ValueError,
        r"Received: schedule=\{1.5: 'all'\}",
    ),
    bad.case(
        "gu-schedule-bool-epoch",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={True: "all"}),
        ValueError,
        r"Received: schedule=\{True: 'all'\}",
    ),
    bad.case(
        "gu-schedule-unordered",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={2: "none", 0: "all"}),
        ValueError,
        r"increasing.*Received: schedule=\{2: 'none', 0: 'all'\}",
    ),
    bad.case(
        "gu-schedule-bad-policy",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={0: "most"}),
        ValueError,
        r"Received: schedule=\{0: 'most'\}",
    ),
    bad.case(
        "gu-every-zero",
        lambda: kerastl.callbacks.GradualUnfreezing(every=0),
        ValueError,
        r"Received: every=0",
    ),
    bad.case(
        "gu-every-float",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1.5),
        ValueError,
        r"Received: every=1.5",
    ),
    bad.case(
        "gu-every-bool",
        lambda: kerastl.callbacks.GradualUnfreezing(every=True),
        ValueError,
        r"Received: every=True",
    ),
    bad.case(
        "gu-both",
        lambda: kerastl.callbacks.GradualUnfreezing(schedule={0: "all"}, every=1),
        ValueError,
        r"Received: schedule=\{0: 'all'\}, every=1",
    ),
    bad.case(
        "gu-neither",
        lambda: kerastl.callbacks.GradualUnfreezing(),
        ValueError,
        r"Received: schedule=None, every=None",
    ),
    bad.case(
        "gu-lr-negative",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=-1),
        ValueError,
        r"Received: lr_multiplier=-1",
    ),
    bad.case(
        "gu-lr-string",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier="x"),
        ValueError,
        r"Received: lr_multiplier='x'",
    ),
    bad.case(
        "gu-lr-nan",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=bad.NAN),
        ValueError,
        r"Received: lr_multiplier=nan",
    ),
    bad.case(
        "gu-lr-inf",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=bad.INF),
        ValueError,
        r"Received: lr_multiplier=inf",
    ),
    bad.case(
        "gu-lr-bool",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, lr_multiplier=True),
        ValueError,
        r"Received: lr_multiplier=True",
    ),
    bad.case(
        "gu-verbose-string",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, verbose="no"),
        TypeError,
        r"Received: verbose='no'",
    ),
    bad.case(
        "gu-verbose-negative",
        lambda: kerastl.callbacks.GradualUnfreezing(every=1, verbose=-1),
        ValueError,
        r"Received: verbose=-1",
    ),
    bad.case(
        "gu-scheduled-policy-too-many-blocks",
        lambda: bad.callback_fit(
            kerastl.callbacks.GradualUnfreezing(
                schedule={0: kerastl.freeze.TrainTopBlocks(7)}, verbose=0
            )
        ),
        ValueError,
        r"Received: n=7",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUT)
def test_bad_input_is_refused_clearly(call, error, match, bad_input_objects):
    bad.check_refused(call, error, match)
