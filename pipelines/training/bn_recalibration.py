"""Batch-norm recalibration for slimmable networks (Yu & Huang, US-Nets; used by DS-Net after Stage I).

The running statistics a network collected while its weights changed are stale, and a width that was
never trained (a universally slimmable width, or a width the sandwich rule skipped) has none at all.
`recalibrate_bn(net, batches, width, num_batches)` resets the statistics of that one width of every
`SwitchableBatchNormalization` and recomputes them as the exact average of the batch statistics of
`num_batches` training batches (cumulative average: momentum ``i / (i + 1)`` at batch ``i``). Weights,
other widths' statistics and plain BatchNormalization layers (a DS-Net's fixed-width front) are
untouched.

    recalibrate_bn(net, train_ds, width=0.5, num_batches=20)
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.slimmable import SwitchableBatchNormalization, check_width, get_width, set_width


def switchable_bn_layers(net):
    return [l for l in net._flatten_layers(include_self=False, recursive=True)
            if isinstance(l, SwitchableBatchNormalization)]


def recalibrate_bn(net, batches, width, num_batches=20, verbose=False):
    """Recompute the statistics of `width` from up to `num_batches` batches of `batches` (images or (x, y))."""
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be an int >= 1; received num_batches={num_batches!r}")
    bns = switchable_bn_layers(net)
    if not bns:
        raise ValueError(f"recalibrate_bn: model {net.name!r} has no SwitchableBatchNormalization layers")
    for layer in bns:
        check_width(width, layer.width_multipliers, False)
        layer.slot_variables(width)  # raises ValueError naming the width if it has no statistics
    previous = get_width(net)
    plain_bns = [l for l in net._flatten_layers(include_self=False, recursive=True)
                 if isinstance(l, keras.layers.BatchNormalization) and l.trainable]
    for layer in plain_bns:
        layer.trainable = False  # inference mode: their statistics are not ours to change
    set_width(net, width)
    for layer in bns:
        i = layer.width_multipliers.index(min(layer.width_multipliers, key=lambda w: abs(w - width)))
        layer.moving_means[i].assign(0.0 * layer.moving_means[i])
        layer.moving_variances[i].assign(0.0 * layer.moving_variances[i] + 1.0)
    seen = 0
    try:
        for batch in batches:
            if seen >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in bns:
                layer.momentum_override = seen / (seen + 1.0)
            net(x, training=True)
            seen += 1
            if verbose:
                print(f"recalibrate width={width}: batch {seen}/{num_batches}", flush=True)
    finally:
        for layer in bns:
            layer.momentum_override = None
        for layer in plain_bns:
            layer.trainable = True
        set_width(net, previous)
    if seen == 0:
        raise ValueError("recalibrate_bn: batches is empty")
    return seen
