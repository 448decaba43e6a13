"""Training callbacks: gradual unfreezing of a backbone during `fit`."""

from kerastl.callbacks.gradual_unfreezing import GradualUnfreezing

__all__ = ["GradualUnfreezing"]
