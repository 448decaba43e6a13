"""Freeze policies: what trains, and what BatchNorm does."""

from kerastl.freeze.policies import (
    BN_MODES,
    FreezeAll,
    FreezeNone,
    FreezePolicy,
    get_policy,
    set_trainable,
)

__all__ = ["BN_MODES", "FreezeAll", "FreezeNone", "FreezePolicy", "get_policy", "set_trainable"]
