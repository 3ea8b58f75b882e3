"""MobileNetV3 blocks and a plain baseline (Howard et al., "Searching for MobileNetV3", ICCV 2019).

Spec rows are the paper's Table 2 (MobileNetV3-Small): (kernel, expansion size, out channels,
squeeze-excite, activation, stride). For inputs under 64 pixels the stem keeps stride 1 and the first
stride-2 block is made stride 1 (CIFAR-style) so 32x32 images end at 4x4 or 2x2.

`inverted_residual(..., coefficients=c, num_bases=N)` builds the same block with its three convs as
Basis layers (BasisNet's synthesized layers, `keras_layers.basis`); without coefficients it is the
plain MobileNetV3 block. The registered `mobilenet_v3` is the static network (BasisNet's "static
specialist" baseline).
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers.models import register
from keras_layers.models._common import BN_MOMENTUM, check_fraction, check_positive, make_divisible, stem_stride

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
SPECS = {"small": SMALL, "tiny": TINY}


@keras.saving.register_keras_serializable(package="keras_layers")
class HardSigmoid(L.Layer):
    """MobileNetV3's hard sigmoid: ``relu6(x + 3) / 6``."""

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_layers")
class HardSwish(L.Layer):
    """MobileNetV3's hard swish: ``x * relu6(x + 3) / 6``."""

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def activation(x, kind, name):
    if kind == "hswish":
        return HardSwish(name=name)(x)
    return L.ReLU(name=name)(x)


def check_spec(spec, field="spec"):
    if spec not in SPECS:
        raise ValueError(f"unknown {field}={spec!r}; valid choices: {', '.join(SPECS)}")
    return SPECS[spec]


def block_plan(input_shape, spec, width_multiplier):
    """(kernel, expanded, filters, se, activation, stride) per block, strides adapted to small inputs."""
    drop_first_stride = stem_stride(input_shape) == 1
    for k, exp, c, se, act, s in spec:
        if s == 2 and drop_first_stride:
            s, drop_first_stride = 1, False
        yield k, make_divisible(exp * width_multiplier), make_divisible(c * width_multiplier), se, act, s


def _conv(x, filters, kernel, strides, name, coefficients, num_bases):
    if coefficients is None:
        return L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    from keras_layers.basis import BasisConv2D

    return BasisConv2D(filters, kernel, num_bases, strides=strides, padding="same", use_bias=False,
                       name=name)(x, coefficients)


def _depthwise(x, kernel, strides, name, coefficients, num_bases):
    if coefficients is None:
        return L.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    from keras_layers.basis import BasisDepthwiseConv2D

    return BasisDepthwiseConv2D(kernel, num_bases, strides=strides, padding="same", use_bias=False,
                                name=name)(x, coefficients)


def dense(x, units, name, coefficients=None, num_bases=1):
    if coefficients is None:
        return L.Dense(units, name=name)(x)
    from keras_layers.basis import BasisDense

    return BasisDense(units, num_bases, name=name)(x, coefficients)


def conv_bn_act(x, filters, kernel, strides=1, act="hswish", name=None, coefficients=None, num_bases=1):
    x = _conv(x, filters, kernel, strides, f"{name}_conv", coefficients, num_bases)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return activation(x, act, f"{name}_act") if act else x


def squeeze_excite(x, name, ratio=0.25):
    c = x.shape[-1]
    s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = L.Conv2D(make_divisible(c * ratio), 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = L.Conv2D(c, 1, name=f"{name}_se_expand")(s)
    s = HardSigmoid(name=f"{name}_se_gate")(s)
    return L.Multiply(name=f"{name}_se")([x, s])


def inverted_residual(x, kernel, expanded, filters, se, act, strides, name, coefficients=None, num_bases=1,
                      synthesize_depthwise=True):
    """Expand 1x1 -> depthwise kxk -> (SE) -> linear project 1x1, residual when shapes match.

    With `coefficients` (batch, num_bases) the convs are Basis layers sharing that vector (the
    depthwise one only with `synthesize_depthwise`).
    """
    c_in = x.shape[-1]
    h = x
    if expanded != c_in:
        h = conv_bn_act(h, expanded, 1, act=act, name=f"{name}_expand", coefficients=coefficients,
                        num_bases=num_bases)
    h = _depthwise(h, kernel, strides, f"{name}_dw", coefficients if synthesize_depthwise else None, num_bases)
    h = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dwbn")(h)
    h = activation(h, act, f"{name}_dwact")
    if se:
        h = squeeze_excite(h, name)
    h = conv_bn_act(h, filters, 1, act=None, name=f"{name}_project", coefficients=coefficients,
                    num_bases=num_bases)
    if strides == 1 and c_in == filters:
        h = L.Add(name=f"{name}_add")([x, h])
    return h


def check_common(width_multiplier, dropout, last_channels, head_channels):
    check_positive("width_multiplier", width_multiplier)
    check_fraction("dropout", dropout, 0.0, 0.99)
    check_positive("last_channels", last_channels, allow_float=False)
    check_positive("head_channels", head_channels, allow_float=False)


@register("mobilenet_v3")
def build_mobilenet_v3(input_shape, num_classes, *, width_multiplier=0.5, spec="tiny", dropout=0.2,
                       last_channels=576, head_channels=1024):
    """Static MobileNetV3-Small-style network: stem, blocks, 1x1 last conv, pooled hidden layer, logits."""
    check_common(width_multiplier, dropout, last_channels, head_channels)
    rows = check_spec(spec)
    inputs = keras.Input(shape=input_shape, name="image")
    x = conv_bn_act(inputs, make_divisible(16 * width_multiplier), 3, strides=stem_stride(input_shape),
                    name="stem")
    for i, (k, e, c, se, act, s) in enumerate(block_plan(input_shape, rows, width_multiplier)):
        x = inverted_residual(x, k, e, c, se, act, s, name=f"block{i}")
    x = conv_bn_act(x, make_divisible(last_channels * width_multiplier), 1, name="last")
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    x = HardSwish(name="head_act")(L.Dense(make_divisible(head_channels * width_multiplier), name="head_hidden")(x))
    if dropout:
        x = L.Dropout(dropout, name="head_dropout")(x)
    logits = L.Dense(num_classes, name="head_logits")(x)
    return keras.Model(inputs, logits, name="mobilenet_v3")
