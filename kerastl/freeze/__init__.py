"""Freeze policies: what trains, and what BatchNorm does.

Policies (`FreezeAll`, `FreezeNone`, `FreezeUpTo`, `TrainTopBlocks`,
`TrainFraction`, `FreezePattern`, `TrainPattern`, composed with `|` / `&` or
`AnyOf` / `AllOf`) say which backbone layers train; `apply` changes them on a
compiled model and recompiles it; `explain` prints what trains.
"""

from kerastl.freeze.apply import RecompileWarning, apply, find_extractor, recompile_model
from kerastl.freeze.explain import explain
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
    "RecompileWarning",
    "TrainFraction",
    "TrainPattern",
    "TrainTopBlocks",
    "apply",
    "explain",
    "find_extractor",
    "get_policy",
    "recompile_model",
    "set_trainable",
]
