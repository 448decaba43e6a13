"""Training callbacks: gradual unfreezing (`kerastl.training.GradualUnfreezing`)."""

from kerastl.training.gradual_unfreezing import GradualUnfreezing

__all__ = ["GradualUnfreezing"]
