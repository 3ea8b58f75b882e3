"""MobileNetV3 blocks and a plain baseline (Howard et al., "Searching for MobileNetV3", ICCV 2019).

Spec rows are the paper's Table 2 (MobileNetV3-Small; ``spec="large"``: Table 1, MobileNetV3-Large): (kernel, expansion size, out channels,
squeeze-excite, activation, stride). For inputs under 64 pixels the stem keeps stride 1 and the first
stride-2 block is made stride 1 (CIFAR-style) so 32x32 images end at 4x4 or 2x2.

`inverted_residual(..., coefficients=c)` builds the same block with its three convs as
Basis layers (BasisNet's synthesized layers, `keras_layers.basis`); without coefficients it is the
plain MobileNetV3 block. The registered `mobilenet_v3` is the static network (BasisNet's "static
specialist" baseline).
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.activations import HardSigmoid
from keras_layers.channels import make_divisible
from keras_layers.checks import check_choice, check_int, check_number, check_positive
from keras_layers.models import register
from keras_layers.models.blocks import apply_activation, conv_bn, dense, depthwise_bn, stem_stride

L = keras.layers

# (kernel, expansion size, out channels, squeeze-excite, activation, stride): MobileNetV3-Small, Table 2.
SMALL = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)
# A shorter cut of SMALL (one block per resolution stage, plus the last two) that trains in seconds on a CPU.
TINY = (SMALL[0], SMALL[1], SMALL[3], SMALL[6], SMALL[8], SMALL[9])
# MobileNetV3-Large, Table 1 (last conv 960, pooled hidden 1280: pass last_channels / head_channels).
LARGE = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
)
SPECS = {"small": SMALL, "tiny": TINY, "large": LARGE}


def check_spec(spec, field="spec"):
    """The spec rows of `spec` ("small" | "tiny" | "large"); ValueError naming `field` otherwise."""
    return SPECS[check_choice(field, spec, tuple(SPECS))]


def block_plan(input_shape, spec, width_multiplier):
    """(kernel, expanded, filters, se, activation, stride) per block, strides adapted to small inputs."""
    drop_first_stride = stem_stride(input_shape) == 1
    for k, exp, c, se, act, s in spec:
        if s == 2 and drop_first_stride:
            s, drop_first_stride = 1, False
        yield k, make_divisible(exp * width_multiplier), make_divisible(c * width_multiplier), se, act, s


def squeeze_excite(x, name, ratio=0.25):
    c = x.shape[-1]
    s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = L.Conv2D(make_divisible(c * ratio), 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = L.Conv2D(c, 1, name=f"{name}_se_expand")(s)
    s = HardSigmoid(name=f"{name}_se_gate")(s)
    return L.Multiply(name=f"{name}_se")([x, s])


def inverted_residual(x, kernel, expanded, filters, se, act, strides, name, coefficients=None,
                      synthesize_depthwise=True):
    """Expand 1x1 -> depthwise kxk -> (SE) -> linear project 1x1, residual when shapes match.

    With `coefficients` (batch, num_bases) the convs are Basis layers sharing that vector (the
    depthwise one only with `synthesize_depthwise`).
    """
    c_in = x.shape[-1]
    h = x
    if expanded != c_in:
        h = conv_bn(h, expanded, 1, activation=act, name=f"{name}_expand", coefficients=coefficients)
    h = depthwise_bn(h, kernel, strides, activation=act, name=name,
                     coefficients=coefficients if synthesize_depthwise else None)
    if se:
        h = squeeze_excite(h, name)
    h = conv_bn(h, filters, 1, activation=None, name=f"{name}_project", coefficients=coefficients)
    if strides == 1 and c_in == filters:
        h = L.Add(name=f"{name}_add")([x, h])
    return h


def check_common(width_multiplier, dropout, last_channels, head_channels):
    """Validate the fields every MobileNetV3-based builder shares (ValueError naming the field)."""
    check_positive("width_multiplier", width_multiplier)
    check_number("dropout", dropout, 0.0, 0.99)
    check_int("last_channels", last_channels)
    check_int("head_channels", head_channels, 0)


def stem(inputs, width_multiplier):
    """The 3x3 hswish stem (stride 1 for inputs under 64 pixels)."""
    return conv_bn(inputs, make_divisible(16 * width_multiplier), 3, strides=stem_stride(inputs.shape[1:]),
                   activation="hswish", name="stem")


def head(x, num_classes, width_multiplier, last_channels, head_channels, dropout, num_experts=None,
         cond_last=False, cond_classifier=False, routing_activation="sigmoid"):
    """1x1 hswish last conv -> pool -> hidden dense + hswish -> dropout -> logits. With `num_experts`, the last
    conv (`cond_last`) and the classifier (`cond_classifier`) can each route themselves (CondConv); the hidden
    layer stays static. `head_channels` 0: no hidden layer (the classifier reads the pooled last conv, as the
    exits of `multi_exit_net` do)."""
    x = conv_bn(x, make_divisible(last_channels * width_multiplier), 1, activation="hswish", name="last",
                num_experts=num_experts if cond_last else None, routing_activation=routing_activation)
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    if head_channels:
        x = apply_activation(dense(x, make_divisible(head_channels * width_multiplier), "head_hidden"), "hswish",
                             "head_act")
    if dropout:
        x = L.Dropout(dropout, name="head_dropout")(x)
    return dense(x, num_classes, "head_logits", num_experts=num_experts if cond_classifier else None,
                 routing_activation=routing_activation)


@register("mobilenet_v3")
def build_mobilenet_v3(input_shape, num_classes, *, width_multiplier=0.5, spec="tiny", dropout=0.2,
                       last_channels=576, head_channels=1024):
    """Static MobileNetV3-Small-style network: stem, blocks, 1x1 last conv, pooled hidden layer, logits."""
    check_common(width_multiplier, dropout, last_channels, head_channels)
    rows = check_spec(spec)
    inputs = keras.Input(shape=input_shape, name="image")
    x = stem(inputs, width_multiplier)
    for i, (k, e, c, se, act, s) in enumerate(block_plan(input_shape, rows, width_multiplier)):
        x = inverted_residual(x, k, e, c, se, act, s, name=f"block{i}")
    logits = head(x, num_classes, width_multiplier, last_channels, head_channels, dropout)
    return keras.Model(inputs, logits, name="mobilenet_v3")
