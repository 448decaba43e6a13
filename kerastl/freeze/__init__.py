"""Freeze policies: what trains, and what BatchNorm does.

Policies (`FreezeAll`, `FreezeNone`, `FreezeUpTo`, `TrainTopBlocks`,
`TrainFraction`, `FreezePattern`, `TrainPattern`, composed with `|` / `&` or
`AnyOf` / `AllOf`) say which backbone layers train. They are pure objects:
`FeatureExtractor(freeze=...)` takes one, and `kerastl.set_freeze` applies one
to a built (and compiled) model; `kerastl.explain` shows what trains.

`LoRA` is the policy of low-rank adapters on the backbone's convolutions and
dense layers (`FeatureExtractor(lora=...)`, `FeatureExtractor.set_lora`,
`kerastl.layers.apply_lora`); `kerastl.layers.merge_lora` folds them into the
kernels, `kerastl.saving.save_adapters` / `load_adapters` keep them alone in a
small file.
"""

from kerastl.freeze.lora import LoRA
from kerastl.freeze.policies import (
    BN_MODES,
    AllOf,
    AnyOf,
    FreezeAll,
    FreezeNone,
    FreezePattern,
    FreezePolicy,
    FreezeUpTo,
    TrainFraction,
    TrainPattern,
    TrainTopBlocks,
    get_policy,
    set_trainable,
)

__all__ = [
    "BN_MODES",
    "AllOf",
    "AnyOf",
    "FreezeAll",
    "FreezeNone",
    "FreezePattern",
    "FreezePolicy",
    "FreezeUpTo",
    "LoRA",
    "TrainFraction",
    "TrainPattern",
    "TrainTopBlocks",
    "get_policy",
    "set_trainable",
]
