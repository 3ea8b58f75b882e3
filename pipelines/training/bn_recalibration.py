"""Batch-norm recalibration for slimmable networks (Yu & Huang, US-Nets; used by DS-Net after Stage I).

The running statistics a network collected while its weights changed are stale, and a width that was
never trained (a universally slimmable width, or a width the sandwich rule skipped) has none at all.
`recalibrate_bn(net, batches, width, num_batches)` resets the statistics of that one width of every
`SwitchableBatchNormalization` and recomputes them as the exact average of the batch statistics of
`num_batches` training batches (cumulative average: momentum ``i / (i + 1)`` at batch ``i``). Weights,
other widths' statistics and plain BatchNormalization layers (a DS-Net's fixed-width front) are
untouched.

    recalibrate_bn(net, train_ds, width=0.5, num_batches=20)

`precise_bn(net, batches, num_batches)` does the same for the plain `BatchNormalization` layers of any
network ("precise BN": Wu & Johnson, *Rethinking "Batch" in BatchNorm*, 2021, Sec. 3). Keras' moving
averages (momentum 0.99) lag the weights by about a hundred steps, so a run of a few dozen steps per epoch
validates with statistics that are mostly their initial values: its first epochs score chance whatever the
weights. `PreciseBN` (the `precise_bn_batches` field of `TrainConfig`) recomputes them before each
validation during `fit`; the weights, and so training itself, are unchanged.
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.checks import check_int
from keras_layers.slimmable import SwitchableBatchNormalization, check_width, get_width, set_width


def switchable_bn_layers(net):
    return [l for l in net._flatten_layers(include_self=False, recursive=True)
            if isinstance(l, SwitchableBatchNormalization)]


def recalibrate_bn(net, batches, width, num_batches=20, verbose=False):
    """Recompute the statistics of `width` from up to `num_batches` batches of `batches` (images or (x, y))."""
    check_int("num_batches", num_batches)
    bns = switchable_bn_layers(net)
    if not bns:
        raise ValueError(f"recalibrate_bn: model {net.name!r} has no SwitchableBatchNormalization layers")
    for layer in bns:
        check_width(width, layer.width_multipliers, False)
        layer.slot_variables(width)  # raises ValueError naming the width if it has no statistics
    previous = get_width(net)
    plain_bns = plain_bn_layers(net)
    for layer in plain_bns:
        layer.trainable = False  # inference mode: their statistics are not ours to change
    set_width(net, width)
    for layer in bns:
        i = layer.width_multipliers.index(min(layer.width_multipliers, key=lambda w: abs(w - width)))
        layer.moving_means[i].assign(0.0 * layer.moving_means[i])
        layer.moving_variances[i].assign(0.0 * layer.moving_variances[i] + 1.0)

    def call(x, momentum):  # eager: the layers read momentum_override on every call
        for layer in bns:
            layer.momentum_override = momentum
        net(x, training=True)

    try:
        seen = _cumulative_average(call, batches, num_batches,
                                   lambda seen: print(f"recalibrate width={width}: batch {seen}/{num_batches}",
                                                      flush=True) if verbose else None)
    finally:
        for layer in bns:
            layer.momentum_override = None
        for layer in plain_bns:
            layer.trainable = True
        set_width(net, previous)
    if seen == 0:
        raise ValueError("recalibrate_bn: batches is empty")
    return seen


def _cumulative_average(call, batches, num_batches, progress=None):
    """`call(x, momentum)` (the net in training mode with that momentum) on up to `num_batches` of `batches`
    with momentum ``i / (i + 1)`` at batch ``i``: the statistics end as the exact average of those batches'
    statistics. Returns the number of batches seen."""
    seen = 0
    for batch in batches:
        if seen >= num_batches:
            break
        call(batch[0] if isinstance(batch, (tuple, list)) else batch, seen / (seen + 1.0))
        seen += 1
        if progress is not None:
            progress(seen)
    return seen


def plain_bn_layers(net):
    """The `BatchNormalization` layers of `net` that training updates (a frozen one runs in inference mode)."""
    return [l for l in net._flatten_layers(include_self=False, recursive=True)
            if isinstance(l, keras.layers.BatchNormalization) and l.trainable]


class BatchStatistics:
    """`net(x, training=True)` as one traced function in which every trainable plain `BatchNormalization`
    reads its momentum from one variable (Keras reads a float momentum at trace time) and every
    `SwitchableBatchNormalization` keeps its statistics. `stats(x, momentum)` runs it; trace once, call per batch."""

    def __init__(self, net):
        import tensorflow as tf

        self.net, self.layers, self.switchable = net, plain_bn_layers(net), switchable_bn_layers(net)
        self.momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="precise_bn_momentum")
        self._fn = tf.function(lambda x: net(x, training=True), reduce_retracing=True)

    def __call__(self, x, momentum):
        self.momentum.assign(momentum)
        momenta = [l.momentum for l in self.layers]
        for layer in self.layers:
            layer.momentum = self.momentum
        for layer in self.switchable:
            layer.momentum_override = 1.0  # keep each width's statistics (recalibrate_bn is theirs)
        try:
            self._fn(x)
        finally:
            for layer, m in zip(self.layers, momenta):
                layer.momentum = m
            for layer in self.switchable:
                layer.momentum_override = None


def precise_bn(net, batches, num_batches, stats=None):
    """Recompute the moving mean and variance of every trainable plain `BatchNormalization` of `net` as the
    average of the batch statistics of up to `num_batches` batches of `batches` (images or (x, y, ...)).
    `SwitchableBatchNormalization` statistics are kept as they are. `stats`: a `BatchStatistics(net)` to reuse
    (its trace) across calls. Returns the number of batches used (0 when `net` has no plain BatchNormalization)."""
    check_int("num_batches", num_batches)
    stats = stats or BatchStatistics(net)
    if not stats.layers:
        return 0
    seen = _cumulative_average(stats, batches, num_batches)
    if seen == 0:
        raise ValueError("precise_bn: batches is empty")
    return seen


class PreciseBN(keras.callbacks.Callback):
    """During `fit`, before each validation: `precise_bn` on `num_batches` batches of `batches` (the training
    data), so the validation, the best-epoch weights and the checkpoints carry statistics of the current
    weights. `model.evaluate` outside `fit` is left alone."""

    def __init__(self, batches, num_batches):
        super().__init__()
        self.batches, self.num_batches = batches, check_int("num_batches", num_batches)
        self._stats = None  # a BatchStatistics while `fit` runs (traced on its first batch, reused every epoch)

    def on_train_begin(self, logs=None):
        self._stats = BatchStatistics(getattr(self.model, "net", self.model))

    def on_train_end(self, logs=None):
        self._stats = None

    def on_test_begin(self, logs=None):
        if self._stats is not None:
            precise_bn(self._stats.net, self.batches, self.num_batches, stats=self._stats)
