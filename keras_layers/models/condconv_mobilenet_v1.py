"""CC-MobileNetV1: MobileNetV1 with CondConv in its last separable blocks and classifier (Yang et al.,
"CondConv: Conditionally Parameterized Convolutions for Efficient Inference", NeurIPS 2019, Sec. 4.1.1,
Table 1 and Fig. 2, the paper's headline models; papers/condconv.txt).

The backbone is the MobileNetV1 of `slimmable_mobilenet_v1` (Howard et al. 2017, Table 1: its `SPEC` and
`plan`: stem 3x3 conv, 13 depthwise-separable blocks, the five repeated 512 blocks scaled by
``depth_multiplier``, every channel count by ``base_width``; stem stride 1 under 64 pixels). In the
CondConv blocks the depthwise 3x3 and the pointwise 1x1 convolution are mixed-kernel layers sharing ONE
routing function computed from the block input (``GAP -> FC -> sigmoid``, one `CondRouting` per block,
passed as the coefficients of the Basis twins the conv factory of `keras_layers.models.blocks` builds),
as the paper does: "a single routing function ... for both the depth-wise and point-wise CondConv layers
within a separable convolutional block from the input to the block". With ``cond_classifier=True`` the
final classification layer is a CondConv layer with its own router (the paper's "1x1 CondConv block" on
the pooled features: a `CondDense`; `condconv_mobilenet_v2` describes how it can close for good).

Placement: ``cond_blocks=n`` makes the last n of the 13 blocks of the full-depth network CondConv (the
paper: "the final 8 separable convolutional blocks", i.e. the stride-2 512 block, the five 512 blocks,
and the two 1024 blocks). At ``depth_multiplier`` d < 1 the repeated 512 group has ceil(5 d) blocks and
keeps its share (`condconv_mobilenet_v2.cond_block_flags`, the same rule as CC-MobileNetV2): at the
registry's d = 0.2, 4 of the 9 blocks. ``cond_blocks=0, cond_classifier=False`` is the plain MobileNetV1 of the
same widths (the static peer). ``preset="paper"``: 8 blocks, CondConv classifier, sigmoid routing, 8
experts (Table 1 scales 1-32 experts; 8 is the paper's CC-MobileNetV2 and CC-SSD count); widths and input
size stay the registry's (CPU-sized; the paper's headline is the 0.5x model at 224x224).

    net = keras_layers.models.build("condconv_mobilenet_v1", preset="paper")
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.checks import check_int, fail
from keras_layers.condconv import CondRouting, check_routing_options
from keras_layers.models import register
from keras_layers.models.blocks import classifier, conv_bn, depthwise_bn
from keras_layers.models.condconv_mobilenet_v2 import cond_block_flags
from keras_layers.models.slimmable_mobilenet_v1 import SPEC, check_config, plan

PAPER_COND_BLOCKS = 8  # "the final 8 separable convolutional blocks" (Sec. 4.1.1)
NUM_BLOCKS = sum(n for _, _, n in SPEC)  # 13 at full depth
_STAGES = tuple((None, None, n, None) for _, _, n in SPEC)  # `cond_block_flags` reads the repeats


def block_flags(depth_multiplier, cond_blocks):
    """One bool per block of `plan` (in order): whether the block is CondConv."""
    return cond_block_flags(depth_multiplier, cond_stages=0, cond_blocks=cond_blocks, spec=_STAGES)


@register("condconv_mobilenet_v1", paper={"cond_blocks": PAPER_COND_BLOCKS, "cond_classifier": True,
                                          "routing_activation": "sigmoid", "num_experts": 8})
def build_condconv_mobilenet_v1(input_shape, num_classes, *, num_experts=4, cond_blocks=PAPER_COND_BLOCKS,
                                cond_classifier=True, routing_activation="sigmoid", base_width=0.25,
                                depth_multiplier=0.2, dropout=0.0):
    """CC-MobileNetV1 with `num_experts` experts in the last `cond_blocks` blocks (and the classifier with
    `cond_classifier`)."""
    check_int("num_experts", num_experts)
    if isinstance(cond_blocks, bool) or not isinstance(cond_blocks, int) or not 0 <= cond_blocks <= NUM_BLOCKS:
        fail("cond_blocks", f"an int in [0, {NUM_BLOCKS}] (blocks of the full-depth network)", cond_blocks)
    check_routing_options(routing_activation, cond_classifier=cond_classifier)
    check_config(base_width, depth_multiplier, dropout)

    stem_channels, stride, blocks = plan(input_shape, base_width, depth_multiplier)
    flags = block_flags(depth_multiplier, cond_blocks)
    inputs = keras.Input(shape=input_shape, name="image")
    x = conv_bn(inputs, stem_channels, 3, strides=stride, name="stem")
    for i, ((filters, s), cond) in enumerate(zip(blocks, flags)):
        name = f"block{i}"
        routing = CondRouting(num_experts, routing_activation, name=f"{name}_routing")(x) if cond else None
        x = depthwise_bn(x, 3, s, name=name, coefficients=routing)  # the router is shared by both convs
        x = conv_bn(x, filters, 1, name=f"{name}_pw", coefficients=routing)
    logits = classifier(x, num_classes, dropout, num_experts=num_experts if cond_classifier else None,
                        routing_activation=routing_activation)
    return keras.Model(inputs, logits, name="condconv_mobilenet_v1")
