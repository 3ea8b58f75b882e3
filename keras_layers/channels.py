"""Channel-count rounding shared by the layers (slimmable widths) and the model builders."""
from __future__ import annotations


def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to a multiple of `divisor`, never going more than 10% below `value`."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)
