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


def check_bool(value, arg):
    """Refuses anything but True or False: `"no"` must not mean True."""
    if not isinstance(value, bool):
        raise TypeError(f"`{arg}` must be True or False. Received: {arg}={value!r}")
    return value


def check_positive_int(value, arg):
    """Refuses anything but an int >= 1 (numpy ints included; bools and floats not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{arg}` must be a positive int. Received: {arg}={value!r}")
    return int(value)


def check_positive_number(value, arg):
    """Refuses anything but a finite real number > 0 (bools not)."""
    if not is_finite_number(value) or value <= 0:
        raise ValueError(f"`{arg}` must be a positive number. Received: {arg}={value!r}")
    return float(value)


def check_class_names(class_names):
    """An ordered sequence of distinct, non-empty strings, as a list.

    Not a set (no order), not one string (a list of letters), not NaN or None
    from a half-empty label column.
    """
    ordered = isinstance(class_names, (list, tuple)) or (
        getattr(class_names, "ndim", None) == 1 and hasattr(class_names, "tolist")
    )
    if not ordered or not all(isinstance(name, str) for name in class_names):
        raise TypeError(
            f"`class_names` must be a list of strings. Received: class_names={class_names!r}"
        )
    names = list(class_names)
    if not all(names):
        raise ValueError(f"`class_names` has an empty name. Received: class_names={names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"`class_names` has duplicates. Received: class_names={names!r}")
    return names
