"""Argument checks shared across parts: the number rules every public argument follows."""

import math
import numbers


def is_finite_number(value, minimum=-math.inf):
    """A real number (not a bool), finite and >= `minimum`."""
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and minimum <= value < math.inf
    )
