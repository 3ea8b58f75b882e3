"""Building blocks shared by the architectures of this package (not registered models)."""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tf_keras as keras

L = keras.layers

# Short CPU trainings (hundreds of steps) need faster-moving BN statistics than the usual 0.99.
BN_MOMENTUM = 0.9


def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to a multiple of `divisor`, never going more than 10% below `value`."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def check_positive(name, value, allow_float=True):
    """Raise ValueError naming `name` unless `value` > 0."""
    ok = isinstance(value, (int, float)) if allow_float else isinstance(value, int)
    if isinstance(value, bool) or not ok or value <= 0:
        raise ValueError(f"{name} must be a positive number; received {name}={value!r}")


def check_fraction(name, value, low=0.0, high=1.0):
    """Raise ValueError naming `name` unless low <= value <= high."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; received {name}={value!r}")


def stem_stride(input_shape):
    """CIFAR-style adaptation: keep the stem at stride 1 for inputs smaller than 64 pixels."""
    return 1 if min(input_shape[0], input_shape[1]) < 64 else 2


def conv_bn(x, filters, kernel_size, strides=1, activation="relu6", name=None, groups=1):
    x = L.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, groups=groups,
                 name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return L.Activation(activation, name=f"{name}_act")(x) if activation else x


def depthwise_bn(x, kernel_size, strides=1, activation="relu6", name=None):
    x = L.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dwbn")(x)
    return L.Activation(activation, name=f"{name}_dwact")(x) if activation else x


def classifier(x, num_classes, dropout, name="head"):
    x = L.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    if dropout:
        x = L.Dropout(dropout, name=f"{name}_dropout")(x)
    return L.Dense(num_classes, name=f"{name}_logits")(x)
