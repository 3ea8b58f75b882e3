"""CC-MobileNetV2: MobileNetV2 with CondConv in the last stages (Yang et al., "CondConv: Conditionally
Parameterized Convolutions for Efficient Inference", NeurIPS 2019, Sec. 4.1; papers/condconv.txt).

The backbone is `mobilenet_v2` (same `SPEC`, `stage_plan`, stem, CIFAR-style strides for small
inputs). In the blocks of the last `cond_stages` stages of the spec, the expand 1x1, the depthwise
3x3 and the project 1x1 convolutions become CondConv layers whose routing weights are computed ONCE
from the block input (``GAP -> FC -> sigmoid``, one `CondRouting` per block) and shared by the
three convolutions, as in the paper: such a block is one `CondRouting` feeding Basis layers, so no
layer carries an unused router. With ``cond_head=True`` the final 1x1 convolution and the classifier
are CondConv layers with their own routers (the paper replaces them too).

    net = keras_layers.models.build("condconv_mobilenet_v2", num_experts=8)
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.basis import BasisConv2D, BasisDepthwiseConv2D
from keras_layers.condconv import ROUTING_ACTIVATIONS, CondConv2D, CondDense, CondRouting
from keras_layers.models import register
from keras_layers.models._common import BN_MOMENTUM, check_positive, conv_bn, make_divisible
from keras_layers.models.mobilenet_v2 import SPEC, check_config, inverted_residual, stage_plan, stem

L = keras.layers


def _bn_act(x, activation, name):
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return L.Activation(activation, name=f"{name}_act")(x) if activation else x


def cond_inverted_residual(x, expansion, filters, strides, num_experts, routing_activation, name):
    """Inverted residual block whose three convolutions share one router computed from the block input."""
    c_in = x.shape[-1]
    routing = CondRouting(num_experts, routing_activation, name=f"{name}_routing")(x)
    h = x
    if expansion != 1:
        h = BasisConv2D(make_divisible(c_in * expansion), 1, num_experts, use_bias=False,
                        name=f"{name}_expand_conv")(h, routing)
        h = _bn_act(h, "relu6", f"{name}_expand")
    h = BasisDepthwiseConv2D(3, num_experts, strides=strides, use_bias=False, name=f"{name}_dw")(h, routing)
    h = _bn_act(h, "relu6", f"{name}_dw")
    h = BasisConv2D(filters, 1, num_experts, use_bias=False, name=f"{name}_project_conv")(h, routing)
    h = _bn_act(h, None, f"{name}_project")
    if strides == 1 and c_in == filters:
        h = L.Add(name=f"{name}_add")([x, h])
    return h


def num_cond_blocks(depth_multiplier, cond_stages, spec=SPEC):
    """How many trailing blocks of `stage_plan` belong to the last `cond_stages` stages."""
    return sum(max(1, math.ceil(n * depth_multiplier)) for _, _, n, _ in spec[len(spec) - cond_stages:])


@register("condconv_mobilenet_v2")
def build_condconv_mobilenet_v2(input_shape, num_classes, *, num_experts=8, cond_stages=3, cond_head=True,
                                routing_activation="sigmoid", width_multiplier=0.5, depth_multiplier=0.5,
                                dropout=0.2, last_channels=1280):
    check_positive("num_experts", num_experts, allow_float=False)
    if isinstance(cond_stages, bool) or not isinstance(cond_stages, int) or not 0 <= cond_stages <= len(SPEC):
        raise ValueError(f"cond_stages must be an int in [0, {len(SPEC)}]; received cond_stages={cond_stages!r}")
    if not isinstance(cond_head, bool):
        raise ValueError(f"cond_head must be True or False; received cond_head={cond_head!r}")
    if routing_activation not in ROUTING_ACTIVATIONS:
        raise ValueError(f"routing_activation must be one of {', '.join(ROUTING_ACTIVATIONS)}; "
                         f"received routing_activation={routing_activation!r}")
    check_config(width_multiplier, depth_multiplier, dropout, last_channels)

    inputs = keras.Input(shape=input_shape, name="image")
    x = stem(inputs, width_multiplier)
    plan = list(stage_plan(input_shape, width_multiplier, depth_multiplier))
    first_cond = len(plan) - num_cond_blocks(depth_multiplier, cond_stages)
    for index, t, filters, s in plan:
        if index >= first_cond:
            x = cond_inverted_residual(x, t, filters, s, num_experts, routing_activation, name=f"block{index}")
        else:
            x = inverted_residual(x, t, filters, s, name=f"block{index}")
    last = make_divisible(last_channels * max(1.0, width_multiplier))
    if cond_head:
        x = CondConv2D(last, 1, num_experts, use_bias=False, routing_activation=routing_activation,
                       name="last_conv")(x)
        x = _bn_act(x, "relu6", "last")
        x = L.GlobalAveragePooling2D(name="head_pool")(x)
        if dropout:
            x = L.Dropout(dropout, name="head_dropout")(x)
        logits = CondDense(num_classes, num_experts, routing_activation=routing_activation, name="head_logits")(x)
    else:
        x = conv_bn(x, last, 1, name="last")
        x = L.GlobalAveragePooling2D(name="head_pool")(x)
        if dropout:
            x = L.Dropout(dropout, name="head_dropout")(x)
        logits = L.Dense(num_classes, name="head_logits")(x)
    return keras.Model(inputs, logits, name="condconv_mobilenet_v2")
