"""Training callbacks: gradual unfreezing."""

from kerastl.callbacks.gradual_unfreezing import GradualUnfreezing

__all__ = ["GradualUnfreezing"]
