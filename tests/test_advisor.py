"""`recommend`: the four data regimes, the plan driving `fine_tune`, and bad arguments."""

import dataclasses
import types

import keras
import numpy as np
import pytest

import kerastl
from kerastl.freeze import FreezeAll, FreezeNone
from kerastl.training.advisor import Plan, _earlier_cut, recommend

# The plan and what fine_tune makes of its arguments: any backend (conftest).
pytestmark = pytest.mark.one_backend

# What every plan of a data size shares; each regime below adds or overrides.
LITTLE = dict(
    data="little",
    unfreeze=FreezeNone(),
    head_epochs="auto",
    epochs=10,
    lr=1e-3,
    lr_mult=100.0,
    bn="frozen",
    cut=None,
    head_kwargs={},
)
MUCH = dict(data="much", head_epochs="auto", lr=1e-3, cut=None, head_kwargs={})


def _regime(n, similarity, expected):
    arguments = dict(n_samples_per_class=n, similarity=similarity, backbone="mobilenet_v2")
    return arguments, expected


# regime -> (call arguments, expected plan attributes)
REGIMES = {
    "little-similar": _regime(40, "similar", {**LITTLE, "regime": "little data, similar task"}),
    "little-different": _regime(
        40,
        "different",
        {
            **LITTLE,
            "regime": "little data, different task",
            "cut": "S16",
        },
    ),
    "much-similar": _regime(
        500,
        "similar",
        {
            **MUCH,
            "regime": "much data, similar task",
            "unfreeze": FreezeNone(),
            "epochs": 10,
            "lr_mult": 100.0,
            "bn": "frozen",
        },
    ),
    "much-different": _regime(
        500,
        "different",
        {
            **MUCH,
            "regime": "much data, different task",
            "unfreeze": FreezeNone(),
            "epochs": 10,
            "lr_mult": 100.0,
            "bn": "frozen",
        },
    ),
}


@pytest.mark.parametrize("name", list(REGIMES))
def test_each_regime_gives_its_documented_plan(name):
    arguments, expected = REGIMES[name]
    plan = recommend(**arguments)
    assert isinstance(plan, Plan)
    got = {key: getattr(plan, key) for key in expected}
    assert got == expected
    assert type(plan.unfreeze) is type(expected["unfreeze"])
    assert plan.backbone == "mobilenet_v2" and plan.similarity == arguments["similarity"]
    assert plan.explanation and str(arguments["n_samples_per_class"]) in plan.explanation


def test_threshold_separates_little_from_much():
    assert recommend(99.5).data == "little"
    assert recommend(100).data == "much"
    assert recommend(50, threshold=20).data == "much"
    assert recommend(50, threshold=200.0).data == "little"
    assert recommend(100).threshold == 100


def test_cut_names_a_feature_key_of_the_backbone():
    plan = recommend(10, "different", backbone="MobileNet_V2")  # names are normalised
    assert plan.backbone == "mobilenet_v2" and plan.cut == "S16"
    assert plan.cut in kerastl.backbones.get_backbone("mobilenet_v2").feature_layers
    assert recommend(10, "different", backbone="inception_v3").cut == "S16"
    # Without a backbone no key can be named: the explanation says where to cut.
    plan = recommend(10, "different")
    assert plan.cut is None and "cut='S16'" in plan.explanation
    # Only the little-data, different-task regime cuts.
    assert recommend(10, "similar", backbone="resnet50").cut is None
    assert recommend(1000, "different", backbone="resnet50").cut is None


@pytest.mark.parametrize(
    "keys, cut",
    [
        (["S4", "S8", "S16", "S32"], "S16"),
        (["S8", "S16"], "S8"),  # S16 is the deepest: the key before it
        (["C3", "C4", "C5"], "C4"),
        (["S32"], None),
        ([], None),
    ],
)
def test_earlier_cut_is_before_the_deepest_key(keys, cut):
    spec = types.SimpleNamespace(feature_layers={key: f"layer_{key}" for key in keys})
    assert _earlier_cut(spec) == cut


def test_head_follows_the_plan():
    plan = recommend(30, n_classes=5)
    head = plan.head()
    assert isinstance(head, kerastl.heads.TaskHead)
    assert (head.task, head.num_outputs, head.dropout) == ("multiclass", 5, 0.0)
    head = recommend(300, n_classes=2).head()
    assert (head.task, head.num_outputs, head.dropout) == ("binary", 1, 0.0)
    head = recommend(300).head(4, dropout=0.5, class_names=["a", "b", "c", "d"])
    assert (head.num_outputs, head.dropout, head.class_names) == (4, 0.5, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"Received: n_classes=None"):
        recommend(300).head()
    with pytest.raises(ValueError, match=r"Received: n_classes=1"):
        recommend(300).head(1)


def test_plan_is_frozen_and_prints_a_summary():
    plan = recommend(500, "similar", n_classes=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.epochs = 3
    text = str(plan)
    assert text.startswith("Plan: much data, similar task (500 images per class")
    assert "FreezeNone()" in text and "10 epochs" in text and "why:" in text
    assert "stays frozen" in str(dataclasses.replace(plan, epochs=0, unfreeze=FreezeAll()))
    assert hash(plan) == hash(recommend(500, "similar", n_classes=3))


# --- the plan drives fine_tune -------------------------------------------------------

CONVS = ("conv_1", "conv_2", "conv_3", "conv_4")


def _model():
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((16, 16, 3))] + [keras.layers.Conv2D(4, 3, name=name) for name in CONVS],
        name="tiny",
    )
    extractor = kerastl.FeatureExtractor(backbone, pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    return kerastl.build_model(extractor, kerastl.heads.multiclass(3), prep)


def _data():
    x = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3)).astype("uint8")
    return x, np.arange(12) % 3


def _trained(model):
    """The backbone layers that train after fine_tune."""
    extractor = kerastl.layers.find_extractor(model)
    return {layer.name for layer in extractor.backbone.layers if layer.trainable_weights}


@pytest.mark.parametrize(
    "name, trained",
    [
        ("little-similar", set(CONVS)),
        ("little-different", set(CONVS)),
        ("much-similar", set(CONVS)),
        ("much-different", set(CONVS)),
    ],
)
def test_plan_drives_fine_tune(name, trained):
    arguments, _ = REGIMES[name]
    plan = recommend(**{**arguments, "backbone": None})
    model = _model()
    history = kerastl.fine_tune(model, _data(), epochs=plan.epochs, plan=plan, verbose=0)
    assert _trained(model) == trained
    assert plan.head_epochs == "auto"  # the head to convergence: one epoch of the history
    assert len(history.epoch) == 1 + plan.epochs
    extractor = kerastl.layers.find_extractor(model)
    if plan.epochs:
        assert history.phases == ["head", "fine-tune"]
        assert extractor.bn == plan.bn
        first = model.optimizer.multiplier_for_path("conv_1/kernel")
        assert first == pytest.approx(1 / plan.lr_mult)
    else:
        assert history.phases == ["head"] and extractor.fully_frozen


def test_explicit_fine_tune_arguments_override_the_plan():
    plan = recommend(500, "similar")
    model = _model()
    history = kerastl.fine_tune(
        model,
        _data(),
        epochs=1,
        head_epochs=2,
        lr_mult=4.0,
        unfreeze=FreezeNone(),
        bn="affine",
        plan=plan,
        verbose=0,
    )
    assert _trained(model) == set(CONVS)
    assert len(history.epoch) == 3 and history.phase_boundaries == [2]
    assert kerastl.layers.find_extractor(model).bn == "affine"
    assert model.optimizer.multiplier_for_path("conv_1/kernel") == pytest.approx(0.25)


def test_a_head_only_plan_refuses_fine_tune_epochs():
    # Why the plan carries `epochs`: its FreezeAll() opens nothing for a phase 2.
    with pytest.raises(ValueError, match=r"opens nothing"):
        plan = dataclasses.replace(recommend(10), epochs=0, unfreeze=FreezeAll())
        kerastl.fine_tune(_model(), _data(), epochs=1, plan=plan, verbose=0)


# --- bad arguments -------------------------------------------------------------------

BAD = [
    (dict(n_samples_per_class="many"), TypeError, r"Received: n_samples_per_class='many'"),
    (dict(n_samples_per_class=True), TypeError, r"Received: n_samples_per_class=True"),
    (dict(n_samples_per_class=None), TypeError, r"Received: n_samples_per_class=None"),
    (dict(n_samples_per_class=0), ValueError, r"Received: n_samples_per_class=0"),
    (dict(n_samples_per_class=-5), ValueError, r"Received: n_samples_per_class=-5"),
    (dict(n_samples_per_class=float("nan")), ValueError, r"Received: n_samples_per_class=nan"),
    (dict(n_samples_per_class=float("inf")), ValueError, r"Received: n_samples_per_class=inf"),
    (dict(similarity="same"), ValueError, r"Received: similarity='same'"),
    (dict(similarity="Similar"), ValueError, r"Received: similarity='Similar'"),
    (dict(n_classes=1), ValueError, r"Received: n_classes=1"),
    (dict(n_classes=0), ValueError, r"Received: n_classes=0"),
    (dict(n_classes=3.0), TypeError, r"Received: n_classes=3.0"),
    (dict(n_classes="3"), TypeError, r"Received: n_classes='3'"),
    (dict(backbone="resnet5000"), ValueError, r"Received: backbone='resnet5000'"),
    (dict(backbone=3), TypeError, r"Received: backbone=3"),
    (dict(threshold=0), ValueError, r"Received: threshold=0"),
    (dict(threshold="100"), TypeError, r"Received: threshold='100'"),
]


@pytest.mark.parametrize(
    "arguments, error, message",
    BAD,
    ids=[f"{next(iter(a))}={a[next(iter(a))]!r}" for a, _, _ in BAD],
)
def test_bad_arguments_are_refused(arguments, error, message):
    arguments = {"n_samples_per_class": 50, **arguments}
    with pytest.raises(error, match=message):
        recommend(**arguments)
