"""CC-MobileNetV3: MobileNetV3 with CondConv in its last blocks (Yang et al., "CondConv: Conditionally
Parameterized Convolutions for Efficient Inference", NeurIPS 2019; papers/condconv.txt) on the backbone of
`mobilenet_v3` (same spec rows, stem, strides for small inputs, last conv, pooled hidden layer).

The paper applies CondConv to MobileNetV1/V2, MnasNet and EfficientNet, always in the last blocks and the
final layers; this is the same recipe on MobileNetV3, the backbone the static ladder found fastest for its
accuracy on cluttered-digits (docs/results.md). In the last ``cond_blocks`` blocks (default: the second half,
as BasisNet's default synthesizes) the expand 1x1, depthwise kxk and project 1x1 convolutions are CondConv
layers sharing one router computed from the block input (``GAP -> FC -> sigmoid``, one `CondRouting` per block:
`mobilenet_v3.inverted_residual` given the routing as its coefficients); squeeze-excite stays static. With
``cond_head=True`` the last 1x1 conv routes itself, with ``cond_classifier=True`` the classifier too (the pooled
hidden layer stays static). The routers start at zero and the `condconv` recipe holds them still for its first
``router_warmup`` epochs, as for `condconv_mobilenet_v2`.

    net = keras_layers.models.build("condconv_mobilenet_v3", num_experts=1)   # exports as static convs + scales
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.checks import check_int
from keras_layers.condconv import CondRouting, check_routing_options
from keras_layers.models import register
from keras_layers.models.mobilenet_v3 import block_plan, check_common, check_spec, head, inverted_residual, stem


def default_cond_blocks(num_blocks):
    """The second half of the blocks (rounded down): 3 of the 6 `tiny` blocks, 5 of the 11 `small` ones."""
    return num_blocks - math.ceil(num_blocks / 2)


@register("condconv_mobilenet_v3")
def build_condconv_mobilenet_v3(input_shape, num_classes, *, num_experts=8, cond_blocks=None, cond_head=True,
                                cond_classifier=True, routing_activation="sigmoid", width_multiplier=0.5,
                                spec="tiny", dropout=0.2, last_channels=576, head_channels=1024):
    check_int("num_experts", num_experts)
    rows = check_spec(spec)
    cond_blocks = default_cond_blocks(len(rows)) if cond_blocks is None else cond_blocks
    check_int("cond_blocks", cond_blocks, 0, len(rows))
    check_routing_options(routing_activation, cond_head=cond_head, cond_classifier=cond_classifier)
    check_common(width_multiplier, dropout, last_channels, head_channels)

    inputs = keras.Input(shape=input_shape, name="image")
    x = stem(inputs, width_multiplier)
    first_cond = len(rows) - cond_blocks
    for i, (k, e, c, se, act, s) in enumerate(block_plan(input_shape, rows, width_multiplier)):
        routing = None
        if i >= first_cond:  # one router per block, shared by its three convolutions
            routing = CondRouting(num_experts, routing_activation, name=f"block{i}_routing")(x)
        x = inverted_residual(x, k, e, c, se, act, s, name=f"block{i}", coefficients=routing)
    logits = head(x, num_classes, width_multiplier, last_channels, head_channels, dropout,
                  num_experts=num_experts, cond_last=cond_head, cond_classifier=cond_classifier,
                  routing_activation=routing_activation)
    return keras.Model(inputs, logits, name="condconv_mobilenet_v3")
