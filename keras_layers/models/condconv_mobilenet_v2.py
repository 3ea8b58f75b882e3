"""CC-MobileNetV2: MobileNetV2 with CondConv in the last stages (Yang et al., "CondConv: Conditionally
Parameterized Convolutions for Efficient Inference", NeurIPS 2019, Sec. 4.1; papers/condconv.txt).

The backbone is `mobilenet_v2` (same `SPEC`, `stage_plan`, stem, CIFAR-style strides for small
inputs). In the blocks of the last `cond_stages` stages of the spec, the expand 1x1, the depthwise
3x3 and the project 1x1 convolutions become CondConv layers whose routing weights are computed ONCE
from the block input (``GAP -> FC -> sigmoid``, one `CondRouting` per block) and shared by the
three convolutions, as in the paper: such a block is `mobilenet_v2.inverted_residual` given the
output of one `CondRouting` as its coefficients (its convolutions become Basis layers), so no layer
carries an unused router. With ``cond_head=True`` the final 1x1 convolution is a CondConv layer with its
own router, and with ``cond_classifier=True`` the classifier too (a `CondDense`; the paper replaces both);
the layers come from the conv factory of `keras_layers.models.blocks`.

Training (docs/results.md "CondConv on cluttered-digits"): on cluttered-digits this network stayed at chance
(loss ln 10) with routers trained from their first step: the routers scaled some examples' kernels towards 0
(the routed classifier's mean routing weight fell from 0.5 to 0.000 in 80 steps) before the features
carried signal. The routers now start at zero (`CondRouting`: one routing for every example) and the
`condconv` recipe holds them still for its first ``router_warmup`` epochs (project additions); the paper
preset of the recipe has no warm-up.
Placement: ``cond_stages`` (default 3) makes every block of the last stages CondConv; ``cond_blocks=n``
instead counts blocks as the paper does (Sec. 4.1.2: "the last 6 inverted residual blocks" of the 17 of
MobileNetV2 1.0x, i.e. the last 2 of the three 96-channel blocks, the three 160-channel blocks and the
320-channel block). At ``depth_multiplier`` d < 1 a stage has ``ceil(n * d)`` blocks; the paper's
placement is kept by stage and proportion: a stage with k of its n blocks CondConv at full depth gets its
last ``ceil(k * d)`` blocks CondConv (at the registry's d = 0.5: 1 + 2 + 1 = 4 of 11 blocks). The
paper's preset (``preset="paper"``) is ``cond_blocks=6``, ``cond_head=True``, ``cond_classifier=True``,
sigmoid routing, 8 experts. Routing ablations: ``routing_activation`` softmax vs sigmoid (Sec. 4.3.3, Table 6).
Per-channel routing (Sec. 4.3.1) is not implemented: the kernel-mixing primitive every CondConv and
Basis layer shares (`keras_layers.kernel_mixing`) mixes whole kernels with one coefficient per expert,
and its batch-1 export path folds them with one FULLY_CONNECTED; per-channel routing needs
``num_experts * filters`` coefficients per layer, a 2-layer router and a second mixing formula in
training and export, and the paper finds it worse than per-expert routing at 8 or more experts (Fig. 3),
the counts this project uses.

    net = keras_layers.models.build("condconv_mobilenet_v2", num_experts=8)
    net = keras_layers.models.build("condconv_mobilenet_v2", preset="paper")
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.channels import make_divisible
from keras_layers.checks import check_int, fail
from keras_layers.condconv import CondRouting, check_routing_options
from keras_layers.models import register
from keras_layers.models.blocks import classifier, conv_bn
from keras_layers.models.mobilenet_v2 import SPEC, check_config, inverted_residual, stage_plan, stem


def num_cond_blocks(depth_multiplier, cond_stages, spec=SPEC):
    """How many trailing blocks of `stage_plan` belong to the last `cond_stages` stages."""
    return sum(max(1, math.ceil(n * depth_multiplier)) for _, _, n, _ in spec[len(spec) - cond_stages:])


PAPER_COND_BLOCKS = 6  # "the last 6 inverted residual blocks" (Sec. 4.1.2)


def cond_block_flags(depth_multiplier, cond_stages=3, cond_blocks=None, spec=SPEC):
    """One bool per block of `stage_plan` (in order): whether the block is CondConv.

    Without `cond_blocks`: every block of the last `cond_stages` stages. With it: the last `cond_blocks`
    blocks of the full-depth network, kept per stage at `depth_multiplier` (a stage with k of its n
    blocks CondConv gets its last ceil(k * d) of its ceil(n * d) blocks)."""
    full = [n for _, _, n, _ in spec]
    if cond_blocks is None:
        k_full = [n if i >= len(spec) - cond_stages else 0 for i, n in enumerate(full)]
    else:
        k_full, remaining = [0] * len(spec), cond_blocks
        for i in reversed(range(len(spec))):
            k_full[i] = min(full[i], remaining)
            remaining -= k_full[i]
    flags = []
    for n, k in zip(full, k_full):
        scaled = max(1, math.ceil(n * depth_multiplier))
        cond = 0 if k == 0 else (scaled if k == n else min(scaled, max(1, math.ceil(k * depth_multiplier))))
        flags += [False] * (scaled - cond) + [True] * cond
    return flags


@register("condconv_mobilenet_v2", paper={"cond_blocks": PAPER_COND_BLOCKS, "cond_head": True,
                                          "cond_classifier": True, "routing_activation": "sigmoid",
                                          "num_experts": 8})
def build_condconv_mobilenet_v2(input_shape, num_classes, *, num_experts=8, cond_stages=3, cond_head=True,
                                routing_activation="sigmoid", width_multiplier=0.5, depth_multiplier=0.5,
                                dropout=0.2, last_channels=1280, cond_blocks=None, cond_classifier=True):
    check_int("num_experts", num_experts)
    check_int("cond_stages", cond_stages, 0, len(SPEC))
    total = sum(n for _, _, n, _ in SPEC)
    if cond_blocks is not None and (isinstance(cond_blocks, bool) or not isinstance(cond_blocks, int)
                                    or not 0 <= cond_blocks <= total):
        fail("cond_blocks", f"None or an int in [0, {total}] (blocks of the full-depth network)", cond_blocks)
    check_routing_options(routing_activation, cond_head=cond_head, cond_classifier=cond_classifier)
    check_config(width_multiplier, depth_multiplier, dropout, last_channels)

    inputs = keras.Input(shape=input_shape, name="image")
    x = stem(inputs, width_multiplier)
    plan = list(stage_plan(input_shape, width_multiplier, depth_multiplier))
    flags = cond_block_flags(depth_multiplier, cond_stages, cond_blocks)
    for (index, t, filters, s), cond in zip(plan, flags):
        name = f"block{index}"
        routing = None
        if cond:  # one router per block, shared by its three convolutions
            routing = CondRouting(num_experts, routing_activation, name=f"{name}_routing")(x)
        x = inverted_residual(x, t, filters, s, name=name, coefficients=routing)
    x = conv_bn(x, make_divisible(last_channels * max(1.0, width_multiplier)), 1, name="last",  # routes itself
                num_experts=num_experts if cond_head else None, routing_activation=routing_activation)
    logits = classifier(x, num_classes, dropout, num_experts=num_experts if cond_classifier else None,
                        routing_activation=routing_activation)
    return keras.Model(inputs, logits, name="condconv_mobilenet_v2")
