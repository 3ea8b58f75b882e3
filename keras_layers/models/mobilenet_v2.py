"""MobileNetV2 baseline (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

The spec table is the paper's Table 2 (expansion t, channels c, repeats n, stride s). For inputs under
64 pixels the stem keeps stride 1 (CIFAR-style) so 32x32 images end at 4x4. `depth_multiplier`
scales the repeats (ceil) so the network trains in seconds on a CPU; outputs are logits.

`inverted_residual(..., coefficients=r)` is the one block of this backbone: static convolutions
without coefficients, Basis convolutions mixed by `r` (batch, E) with them (CC-MobileNetV2's blocks,
`keras_layers.models.condconv_mobilenet_v2`, pass the output of the block's router).
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.channels import make_divisible
from keras_layers.checks import check_int, check_number, check_positive
from keras_layers.models import register
from keras_layers.models.blocks import classifier, conv_bn, depthwise_bn, stem_stride

L = keras.layers

# (expansion t, channels c, repeats n, stride s)
SPEC = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def inverted_residual(x, expansion, filters, strides, name, coefficients=None):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1, residual when shapes match.

    With `coefficients` (batch, E) the three convolutions are Basis layers sharing them.
    """
    c_in = x.shape[-1]
    h = x
    if expansion != 1:
        h = conv_bn(h, make_divisible(c_in * expansion), 1, name=f"{name}_expand", coefficients=coefficients)
    h = depthwise_bn(h, 3, strides=strides, name=name, coefficients=coefficients)
    h = conv_bn(h, filters, 1, activation=None, name=f"{name}_project", coefficients=coefficients)
    if strides == 1 and c_in == filters:
        h = L.Add(name=f"{name}_add")([x, h])
    return h


def stage_plan(input_shape, width_multiplier, depth_multiplier, spec=SPEC):
    """Yield (block index, expansion, filters, stride) for every block, strides adapted to the input."""
    # For small inputs, drop the earliest stride-2 so 32x32 ends at 4x4 (as with CIFAR ResNets).
    drop_first_stride = stem_stride(input_shape) == 1
    index = 0
    for t, c, n, s in spec:
        if s == 2 and drop_first_stride:
            s, drop_first_stride = 1, False
        filters = make_divisible(c * width_multiplier)
        for i in range(max(1, math.ceil(n * depth_multiplier))):
            yield index, t, filters, s if i == 0 else 1
            index += 1


def check_config(width_multiplier, depth_multiplier, dropout, last_channels):
    """Validate the fields every MobileNetV2-based builder shares (ValueError naming the field)."""
    check_positive("width_multiplier", width_multiplier)
    check_positive("depth_multiplier", depth_multiplier)
    check_number("dropout", dropout, 0.0, 0.99)
    check_int("last_channels", last_channels)


def stem(inputs, width_multiplier):
    """The 3x3 stem conv (stride 1 for inputs under 64 pixels)."""
    return conv_bn(inputs, make_divisible(32 * width_multiplier), 3, strides=stem_stride(inputs.shape[1:]),
                   name="stem")


@register("mobilenet_v2")
def build_mobilenet_v2(input_shape, num_classes, *, width_multiplier=0.5, depth_multiplier=0.5,
                       dropout=0.2, last_channels=1280):
    check_config(width_multiplier, depth_multiplier, dropout, last_channels)
    inputs = keras.Input(shape=input_shape, name="image")
    x = stem(inputs, width_multiplier)
    for index, t, filters, s in stage_plan(input_shape, width_multiplier, depth_multiplier):
        x = inverted_residual(x, t, filters, s, name=f"block{index}")
    last = make_divisible(last_channels * max(1.0, width_multiplier))
    x = conv_bn(x, last, 1, name="last")
    logits = classifier(x, num_classes, dropout)
    return keras.Model(inputs, logits, name="mobilenet_v2")
