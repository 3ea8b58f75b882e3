"""Argument checks of every layer and model builder in `keras_layers`.

Each check raises ``ValueError`` in Keras' style, naming the argument, what it must be and the value
received::

    check_int("num_bases", 0)          # ValueError: num_bases must be an int >= 1. Received: num_bases=0
    check_number("dropout", 1.5, 0.0, 0.99)
    kernel_size = check_pair("kernel_size", 3)      # -> (3, 3)
    padding = check_padding("SAME")                 # -> "same"

Checks return the value (normalised where noted), so ``self.x = check_...("x", x)`` reads as one
step. Booleans are never accepted as numbers (``True`` is an int in Python). No TensorFlow here.
"""
from __future__ import annotations

PADDINGS = ("same", "valid")


def fail(name, requirement, value):
    """Raise the one-line ValueError of this module: ``{name} must be {requirement}. Received: {name}=...``."""
    raise ValueError(f"{name} must be {requirement}. Received: {name}={value!r}")


def is_int(value):
    """True for a Python int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    """True for a Python int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range_text(low, high, low_open, high_open):
    if high is None:
        return f"> {low}" if low_open else f">= {low}"
    if low is None:
        return f"< {high}" if high_open else f"<= {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _in_range(value, low, high, low_open, high_open):
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def check_int(name, value, low=1, high=None):
    """`value` is an int in ``[low, high]`` (no upper bound when `high` is None); returns it."""
    if not is_int(value) or not _in_range(value, low, high, False, False):
        fail(name, f"an int {_range_text(low, high, False, False)}", value)
    return value


def check_number(name, value, low=None, high=None, *, low_open=False, high_open=False):
    """`value` is an int or float within the bounds given (`low_open` / `high_open` exclude them); returns it."""
    if not is_number(value) or not _in_range(value, low, high, low_open, high_open):
        fail(name, f"a number {_range_text(low, high, low_open, high_open)}", value)
    return value


def check_positive(name, value):
    """`value` is an int or float > 0; returns it."""
    return check_number(name, value, 0, low_open=True)


def check_bool(name, value):
    """`value` is True or False (not 0 / 1, not a string); returns it."""
    if not isinstance(value, bool):
        fail(name, "True or False", value)
    return value


def check_choice(name, value, choices):
    """`value` is one of `choices`; returns it."""
    if value not in choices:
        fail(name, f"one of {', '.join(repr(c) for c in choices)}", value)
    return value


def check_pair(name, value):
    """`value` is a positive int or a pair of them (kernel size, strides, dilation); returns the pair as a tuple."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(is_int(v) and v >= 1 for v in pair):
        fail(name, "a positive int or a pair of them", value)
    return pair


def check_padding(padding):
    """`padding` is "same" or "valid" (any case); returns it in lower case."""
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        fail("padding", "'same' or 'valid'", padding)
    return padding.lower()
