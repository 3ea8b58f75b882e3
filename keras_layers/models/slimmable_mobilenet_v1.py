"""Slimmable MobileNetV1 (Yu et al., "Slimmable Neural Networks", ICLR 2019; MobileNetV1 spec from
Howard et al., "MobileNets", 2017, Table 1).

Every convolution, depthwise convolution and the classifier's input are slimmable; every batch norm
is switchable (private per width). Spec: stem 3x3 conv 32 (stride 2, or 1 under 64 pixels, as
CIFAR-style MobileNets do), then 13 depthwise-separable blocks ``(filters, stride)``; the five
repeated 512 blocks are scaled by ``depth_multiplier`` (ceil) and every channel count by
``base_width`` so the network trains in seconds on a CPU at 32x32. Widths per
`keras_layers.slimmable`; ``set_width(model, 0.5)`` picks one, `export_width` turns it into an
ordinary narrow Keras model with sliced weights.

    net = build("slimmable_mobilenet_v1", width_multipliers=(0.25, 0.5, 0.75, 1.0))
    set_width(net, 0.5); logits = net(images)
    small = export_width(net, 0.5)        # plain Conv2D/DepthwiseConv2D/BatchNormalization/Dense
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.channels import make_divisible
from keras_layers.checks import check_number, check_positive
from keras_layers.models import register
from keras_layers.models.blocks import BN_MOMENTUM, stem_stride
from keras_layers.slimmable import (SlimmableConv2D, SlimmableDense, SlimmableDepthwiseConv2D,
                                    SwitchableBatchNormalization, check_width, check_width_multipliers,
                                    set_width, slim_channels)

L = keras.layers

STEM = 32
# (filters, stride, repeats) of the 13 depthwise-separable blocks; the 512 x5 group scales with depth.
SPEC = ((64, 1, 1), (128, 2, 1), (128, 1, 1), (256, 2, 1), (256, 1, 1), (512, 2, 1), (512, 1, 5),
        (1024, 2, 1), (1024, 1, 1))


def plan(input_shape, base_width, depth_multiplier):
    """Stem channels and the list of (filters, stride) blocks at full (1.0x) width."""
    blocks = []
    for filters, stride, repeats in SPEC:
        n = max(1, math.ceil(repeats * depth_multiplier)) if repeats > 1 else 1
        for i in range(n):
            blocks.append((make_divisible(filters * base_width), stride if i == 0 else 1))
    return make_divisible(STEM * base_width), stem_stride(input_shape), blocks


def check_config(base_width, depth_multiplier, dropout):
    check_positive("base_width", base_width)
    check_positive("depth_multiplier", depth_multiplier)
    check_number("dropout", dropout, 0.0, 0.99)


def _sbn(name, widths, universal):
    return SwitchableBatchNormalization(widths, momentum=BN_MOMENTUM, universal=universal, name=name)


@register("slimmable_mobilenet_v1")
def build_slimmable_mobilenet_v1(input_shape, num_classes, *, width_multipliers=(0.25, 0.5, 0.75, 1.0),
                                 base_width=0.25, depth_multiplier=0.2, dropout=0.0, universal=False):
    widths = check_width_multipliers(width_multipliers)
    check_config(base_width, depth_multiplier, dropout)
    stem, stride, blocks = plan(input_shape, base_width, depth_multiplier)
    kw = dict(width_multipliers=widths, universal=universal)
    inputs = keras.Input(shape=input_shape, name="image")
    x = SlimmableConv2D(stem, 3, strides=stride, use_bias=False, slim_input=False, name="stem_conv", **kw)(inputs)
    x = _sbn("stem_bn", widths, universal)(x)
    x = L.Activation("relu6", name="stem_act")(x)
    for i, (filters, s) in enumerate(blocks):
        x = SlimmableDepthwiseConv2D(3, strides=s, use_bias=False, name=f"block{i}_dw", **kw)(x)
        x = _sbn(f"block{i}_dwbn", widths, universal)(x)
        x = L.Activation("relu6", name=f"block{i}_dwact")(x)
        x = SlimmableConv2D(filters, 1, use_bias=False, name=f"block{i}_pw", **kw)(x)
        x = _sbn(f"block{i}_pwbn", widths, universal)(x)
        x = L.Activation("relu6", name=f"block{i}_pwact")(x)
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    if dropout:
        x = L.Dropout(dropout, name="head_dropout")(x)
    logits = SlimmableDense(num_classes, slim_output=False, name="head_logits", **kw)(x)
    return keras.Model(inputs, logits, name="slimmable_mobilenet_v1")


def plain_blocks(inputs, stem, stride, blocks, width):
    """Plain MobileNetV1 layers at `width`: the stem, then the depthwise-separable `blocks` (from
    `plan`), named as in the slimmable model (``stem_conv``, ``block{i}_dw``, ...)."""
    x = L.Conv2D(slim_channels(stem, width), 3, strides=stride, padding="same", use_bias=False,
                 name="stem_conv")(inputs)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = L.Activation("relu6", name="stem_act")(x)
    for i, (filters, s) in enumerate(blocks):
        x = L.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False, name=f"block{i}_dw")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_dwbn")(x)
        x = L.Activation("relu6", name=f"block{i}_dwact")(x)
        x = L.Conv2D(slim_channels(filters, width), 1, use_bias=False, name=f"block{i}_pw")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_pwbn")(x)
        x = L.Activation("relu6", name=f"block{i}_pwact")(x)
    return x


def build_mobilenet_v1(input_shape, num_classes, *, width=1.0, base_width=0.25, depth_multiplier=0.2, dropout=0.0):
    """An independently built plain MobileNetV1 with the channel counts of the slimmable one at `width`
    (the "same-width model trained alone" baseline, and the reference of the export benchmark)."""
    check_width(width, (width,), False)
    check_config(base_width, depth_multiplier, dropout)
    stem, stride, blocks = plan(input_shape, base_width, depth_multiplier)
    inputs = keras.Input(shape=input_shape, name="image")
    x = plain_blocks(inputs, stem, stride, blocks, width)
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    if dropout:
        x = L.Dropout(dropout, name="head_dropout")(x)
    logits = L.Dense(num_classes, name="head_logits")(x)
    return keras.Model(inputs, logits, name=f"mobilenet_v1_{width:g}x")


# ------------------------------------------------------------------ export

def plain_layer(layer, width):
    """An ordinary Keras layer equal to `layer` at `width`, with its weights (slices for slimmable layers)."""
    if hasattr(layer, "export_plain"):
        return layer.export_plain(width)
    clone = layer.__class__.from_config(layer.get_config())
    return clone, layer.get_weights()


def _main_input_layer(layer):
    node = layer._inbound_nodes[0]
    return node.call_args[0]._keras_history.layer


def export_chain(layers, inputs, width):
    """Apply the plain version of each layer of a chain (each fed by the previous one) to `inputs`."""
    x, previous, pending = inputs, None, []
    for layer in layers:
        if previous is not None and _main_input_layer(layer) is not previous:
            raise ValueError(f"export: layer {layer.name!r} is not fed by {previous.name!r}; "
                             f"only chains of layers can be exported this way")
        new, weights = plain_layer(layer, width)
        x = new(x)
        pending.append((new, weights))
        previous = layer
    for new, weights in pending:
        new.set_weights(weights)
    return x


def export_width(net, width):
    """An ordinary narrow Keras model equal to the slimmable `net` at `width` (sliced weights, no masks)."""
    width = check_width(width, _widths(net), _universal(net))
    layers = [l for l in net.layers if not isinstance(l, L.InputLayer)]
    inputs = keras.Input(shape=net.input_shape[1:], name="image")
    outputs = export_chain(layers, inputs, width)
    return keras.Model(inputs, outputs, name=f"{net.name}_{width:g}x")


def _slim_layers(net):
    return [l for l in net.layers if hasattr(l, "width_multipliers")]


def _widths(net):
    return _slim_layers(net)[0].width_multipliers


def _universal(net):
    return any(getattr(l, "universal", False) for l in _slim_layers(net))


__all__ = ["build_slimmable_mobilenet_v1", "build_mobilenet_v1", "export_width", "export_chain", "plan",
           "plain_blocks", "set_width"]
