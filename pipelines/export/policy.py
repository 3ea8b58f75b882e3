"""The pieces every bundle policy shares (NumPy only, no TensorFlow): the one early-exit rule, the
softmax the runner takes, and the one-line errors of a bad bundle.

The early-exit rule, everywhere (threshold selection, the Keras reference policy, the bundle runner,
the Android code in docs/android.md): a stage answers when its confidence, the top softmax probability
of its logits, is ``>= threshold``.
"""
from __future__ import annotations

import numpy as np

RULE = "stop when the top softmax probability >= the threshold"


def stops(confidence, threshold):
    """Whether a stage with `confidence` (top softmax probability) answers at `threshold`; NumPy
    broadcasting, so selection (many thresholds x examples) and the runner (one image) share it."""
    return np.asarray(confidence) >= np.asarray(threshold)


def midpoint(confidence, threshold):
    """`threshold` moved halfway between the lowest of the examples' `confidence`s that stops at it and the
    highest that does not: the same examples stop, and none sits on the threshold. A threshold picked among
    the examples' own confidences equals one of them, and the last bit of float rounding (float32 logits in
    LiteRT, Keras' own) then decides which stage that example's image takes. A threshold that every example,
    or none, passes (or one that is not finite) stays as it is."""
    conf = np.asarray(confidence, np.float64)
    if not np.isfinite(threshold):
        return threshold
    stop = stops(conf, threshold)
    if not stop.any() or stop.all():
        return threshold
    return float((conf[stop].min() + conf[~stop].max()) / 2)


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def top_probability(z):
    """The top softmax probability of logits `z` (last axis): ``softmax(z).max(-1)``, bit for bit (the top
    entry of the exponentials is exp(0) = 1), without the division and the max over the probabilities; the
    confidence every early-exit check reads."""
    z = np.asarray(z, np.float64)
    return 1.0 / np.exp(z - z.max(-1, keepdims=True)).sum(-1)


class BundleError(ValueError):
    """A bundle that cannot be run, with a one-line message naming the field and value."""


def need(cond, msg):
    if not cond:
        raise BundleError(msg)


def need_stage(stages, field, value):
    """`value` (model.json's `field`) names one of `stages`."""
    need(value in stages, f"model.json: {field}={value!r} is not one of the stages {sorted(stages)}")


def need_probability(field, value):
    need(not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1,
         f"model.json: {field} must be a probability in [0, 1]; received {field}={value!r}")
