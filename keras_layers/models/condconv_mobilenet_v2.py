"""CC-MobileNetV2: MobileNetV2 with CondConv in the last stages (Yang et al., "CondConv: Conditionally
Parameterized Convolutions for Efficient Inference", NeurIPS 2019, Sec. 4.1; papers/condconv.txt).

The backbone is `mobilenet_v2` (same `SPEC`, `stage_plan`, stem, CIFAR-style strides for small
inputs). In the blocks of the last `cond_stages` stages of the spec, the expand 1x1, the depthwise
3x3 and the project 1x1 convolutions become CondConv layers whose routing weights are computed ONCE
from the block input (``GAP -> FC -> sigmoid``, one `CondRouting` per block) and shared by the
three convolutions, as in the paper: such a block is `mobilenet_v2.inverted_residual` given the
output of one `CondRouting` as its coefficients (its convolutions become Basis layers), so no layer
carries an unused router. With ``cond_head=True`` the final 1x1 convolution and the classifier are
CondConv layers with their own routers (the paper replaces them too); the layers come from the conv
factory of `keras_layers.models.blocks`.

    net = keras_layers.models.build("condconv_mobilenet_v2", num_experts=8)
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.channels import make_divisible
from keras_layers.checks import check_bool, check_choice, check_int
from keras_layers.condconv import ROUTING_ACTIVATIONS, CondRouting
from keras_layers.models import register
from keras_layers.models.blocks import classifier, conv_bn
from keras_layers.models.mobilenet_v2 import SPEC, check_config, inverted_residual, stage_plan, stem


def num_cond_blocks(depth_multiplier, cond_stages, spec=SPEC):
    """How many trailing blocks of `stage_plan` belong to the last `cond_stages` stages."""
    return sum(max(1, math.ceil(n * depth_multiplier)) for _, _, n, _ in spec[len(spec) - cond_stages:])


@register("condconv_mobilenet_v2")
def build_condconv_mobilenet_v2(input_shape, num_classes, *, num_experts=8, cond_stages=3, cond_head=True,
                                routing_activation="sigmoid", width_multiplier=0.5, depth_multiplier=0.5,
                                dropout=0.2, last_channels=1280):
    check_int("num_experts", num_experts)
    check_int("cond_stages", cond_stages, 0, len(SPEC))
    check_bool("cond_head", cond_head)
    check_choice("routing_activation", routing_activation, ROUTING_ACTIVATIONS)
    check_config(width_multiplier, depth_multiplier, dropout, last_channels)

    inputs = keras.Input(shape=input_shape, name="image")
    x = stem(inputs, width_multiplier)
    plan = list(stage_plan(input_shape, width_multiplier, depth_multiplier))
    first_cond = len(plan) - num_cond_blocks(depth_multiplier, cond_stages)
    for index, t, filters, s in plan:
        name = f"block{index}"
        routing = None
        if index >= first_cond:  # one router per block, shared by its three convolutions
            routing = CondRouting(num_experts, routing_activation, name=f"{name}_routing")(x)
        x = inverted_residual(x, t, filters, s, name=name, coefficients=routing)
    head_experts = num_experts if cond_head else None  # the last conv and the classifier route themselves
    x = conv_bn(x, make_divisible(last_channels * max(1.0, width_multiplier)), 1, name="last",
                num_experts=head_experts, routing_activation=routing_activation)
    logits = classifier(x, num_classes, dropout, num_experts=head_experts, routing_activation=routing_activation)
    return keras.Model(inputs, logits, name="condconv_mobilenet_v2")
