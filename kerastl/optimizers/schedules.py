"""Learning-rate schedules of a fine-tuning phase: warm-up + cosine, one-cycle, constant.

Each is a `keras.optimizers.schedules.LearningRateSchedule` of the optimizer's
step count, serialisable (a compiled model saves and loads with it) and
computed with `keras.ops`, so it runs inside a compiled train step on every
backend.
"""

import math
import numbers

import keras
from keras import ops

from kerastl._checks import check_positive_int, check_positive_number

SCHEDULES = ("cosine", "one_cycle", "constant")


@keras.saving.register_keras_serializable(package="kerastl")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `peak / warmup_steps` to `peak`, then cosine decay to `peak * final`.

    Args:
        peak: the highest rate, reached at the end of the warm-up.
        total_steps: steps of the whole phase.
        warmup_steps: steps of the warm-up (0: none).
        final: the last rate as a fraction of `peak`.

    Example:

    ```python
    schedule = kerastl.optimizers.WarmupCosine(1e-3, total_steps=100, warmup_steps=10)
    print([round(float(schedule(s)), 6) for s in (0, 9, 10, 99)])
    # [0.0001, 0.001, 0.001, 0.0]
    ```
    """

    def __init__(self, peak, total_steps, warmup_steps=0, final=0.0):
        self.peak = check_positive_number(peak, "peak")
        self.total_steps = check_positive_int(total_steps, "total_steps")
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, numbers.Integral)
            or not 0 <= warmup_steps < self.total_steps
        ):
            raise ValueError(
                f"`warmup_steps` must be an int in [0, total_steps). "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        self.warmup_steps = int(warmup_steps)
        if isinstance(final, bool) or not isinstance(final, numbers.Real) or not 0 <= final <= 1:
            raise ValueError(f"`final` must be a number in [0, 1]. Received: final={final!r}")
        self.final = float(final)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warmup = self.peak * (step + 1.0) / warm
        span = float(max(self.total_steps - self.warmup_steps - 1, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = self.peak * (self.final + (1.0 - self.final) * cosine)
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final": self.final,
        }


@keras.saving.register_keras_serializable(package="kerastl")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle policy (Smith 2018; fastai's `fit_one_cycle`).

    The rate rises from `peak / div` to `peak` over the first `pct_start` of
    the steps and falls to `peak / final_div`, both along half cosines.

    Example:

    ```python
    schedule = kerastl.optimizers.OneCycle(1e-3, total_steps=100)
    print([round(float(schedule(s)), 6) for s in (0, 25, 99)])  # [4e-05, 0.001, 0.0]
    ```
    """

    def __init__(self, peak, total_steps, pct_start=0.25, div=25.0, final_div=1e5):
        self.peak = check_positive_number(peak, "peak")
        self.total_steps = check_positive_int(total_steps, "total_steps")
        if isinstance(pct_start, bool) or not isinstance(pct_start, numbers.Real):
            pct_start = -1
        if not 0 <= pct_start < 1:
            raise ValueError(f"`pct_start` must be in [0, 1). Received: pct_start={pct_start!r}")
        self.pct_start = float(pct_start)
        self.div = check_positive_number(div, "div")
        self.final_div = check_positive_number(final_div, "final_div")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        up = float(max(round(self.pct_start * self.total_steps), 1))
        down = float(max(self.total_steps - up - 1, 1))
        low, high, end = self.peak / self.div, self.peak, self.peak / self.final_div
        rising = ops.clip(step / up, 0.0, 1.0)
        falling = ops.clip((step - up) / down, 0.0, 1.0)
        warm = low + (high - low) * 0.5 * (1.0 - ops.cos(math.pi * rising))
        cool = end + (high - end) * 0.5 * (1.0 + ops.cos(math.pi * falling))
        return ops.where(step < up, warm, cool)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div": self.div,
            "final_div": self.final_div,
        }


def make_schedule(kind, peak, total_steps, warmup=0.1):
    """The schedule `kind` (`SCHEDULES`) of one phase: `peak` rate over `total_steps`."""
    if kind == "constant":
        return float(peak)
    if kind == "cosine":
        warmup_steps = min(int(round(warmup * total_steps)), total_steps - 1)
        return WarmupCosine(peak, total_steps, warmup_steps=warmup_steps)
    if kind == "one_cycle":
        return OneCycle(peak, total_steps, pct_start=warmup if warmup > 0 else 0.25)
    raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={kind!r}")
