"""Freeze policies: what trains, and what BatchNorm does.

Policies (`FreezeAll`, `FreezeNone`, `FreezeUpTo`, `TrainTopBlocks`,
`TrainFraction`, `FreezePattern`, `TrainPattern`, composed with `|` / `&` or
`AnyOf` / `AllOf`) say which backbone layers train. They are pure objects:
`FeatureExtractor(freeze=...)` takes one, and `kerastl.set_freeze` applies one
to a built (and compiled) model; `kerastl.explain` shows what trains.

`LoRA` puts low-rank adapters on the backbone's convolutions and dense layers
(`FeatureExtractor(lora=...)`, `FeatureExtractor.set_lora`, `apply_lora`);
`merge_lora` folds them into the kernels, `save_adapters` / `load_adapters`
keep them alone in a small file.
"""

from kerastl.freeze.lora import (
    LoRA,
    LoRAWrapper,
    apply_lora,
    load_adapters,
    merge_lora,
    save_adapters,
)
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
    "LoRAWrapper",
    "TrainFraction",
    "TrainPattern",
    "TrainTopBlocks",
    "apply_lora",
    "get_policy",
    "load_adapters",
    "merge_lora",
    "save_adapters",
    "set_trainable",
]
