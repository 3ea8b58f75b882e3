"""Building blocks shared by the architectures of this package (no registered models here).

The conv factory (`create_conv2d`, `create_dense`; the idea of timm's ``create_conv2d``) is the one
place that decides which layer a block's convolution is:

* neither ``num_bases`` nor ``num_experts``: the static `Conv2D` / `DepthwiseConv2D` / `Dense`;
* ``num_bases=E``: the Basis twin (`BasisConv2D`, `BasisDepthwiseConv2D`, `BasisDense`), called as
  ``layer(x, coefficients)`` with coefficients from outside the layer (BasisNet's predictor, or the
  router a CondConv block shares between its convolutions);
* ``num_experts=E``: the CondConv twin with its own router, called as ``layer(x)``.

`conv_bn`, `depthwise_bn`, `dense` and `classifier` build through the factory and call the layer: with
``coefficients`` (batch, E) the Basis layer, with ``num_experts`` a CondConv layer, else the static
one. The backbones' blocks (`mobilenet_v2.inverted_residual`, `mobilenet_v3.inverted_residual`) are
written once with them, so a static block and a dynamic one differ only in their ``coefficients``.
Layer names do not depend on the kind: ``{name}_conv``, ``{name}_bn``, ``{name}_act``; depthwise
``{name}_dw``, ``{name}_dwbn``, ``{name}_dwact``.
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.activations import HardSwish
from keras_layers.basis import BasisConv2D, BasisDense, BasisDepthwiseConv2D
from keras_layers.condconv import CondConv2D, CondDense, CondDepthwiseConv2D

L = keras.layers

# Short CPU trainings (hundreds of steps) need faster-moving BN statistics than the usual 0.99.
BN_MOMENTUM = 0.9


def stem_stride(input_shape):
    """CIFAR-style adaptation: keep the stem at stride 1 for inputs smaller than 64 pixels."""
    return 1 if min(input_shape[0], input_shape[1]) < 64 else 2


# ------------------------------------------------------------------ the conv factory

def _check_kind(num_bases, num_experts):
    if num_bases is not None and num_experts is not None:
        raise ValueError(f"a layer takes coefficients from outside (num_bases) or from its own router "
                         f"(num_experts), not both. Received: num_bases={num_bases!r}, num_experts={num_experts!r}")


def create_conv2d(filters, kernel_size, *, strides=1, depthwise=False, num_bases=None, num_experts=None,
                  routing_activation="sigmoid", name=None):
    """One convolution layer ('same' padding, no bias: a batch norm follows); `filters` is ignored when
    `depthwise`. Static, Basis (`num_bases`) or CondConv (`num_experts`), as the module docstring says."""
    _check_kind(num_bases, num_experts)
    common = dict(strides=strides, padding="same", use_bias=False, name=name)
    if num_experts is not None:
        if depthwise:
            return CondDepthwiseConv2D(kernel_size, num_experts, routing_activation=routing_activation, **common)
        return CondConv2D(filters, kernel_size, num_experts, routing_activation=routing_activation, **common)
    if num_bases is not None:
        if depthwise:
            return BasisDepthwiseConv2D(kernel_size, num_bases, **common)
        return BasisConv2D(filters, kernel_size, num_bases, **common)
    if depthwise:
        return L.DepthwiseConv2D(kernel_size, **common)
    return L.Conv2D(filters, kernel_size, **common)


def create_dense(units, *, num_bases=None, num_experts=None, routing_activation="sigmoid", name=None):
    """One fully connected layer (with bias): `Dense`, `BasisDense` (`num_bases`) or `CondDense` (`num_experts`)."""
    _check_kind(num_bases, num_experts)
    if num_experts is not None:
        return CondDense(units, num_experts, routing_activation=routing_activation, name=name)
    if num_bases is not None:
        return BasisDense(units, num_bases, name=name)
    return L.Dense(units, name=name)


def _call(layer, x, coefficients):
    return layer(x) if coefficients is None else layer(x, coefficients)


def _num_bases(coefficients):
    return None if coefficients is None else int(coefficients.shape[-1])


# ------------------------------------------------------------------ blocks

def apply_activation(x, kind, name):
    """``"hswish"`` -> `HardSwish`, ``"relu"`` -> `ReLU`, any other Keras activation name -> `Activation`."""
    if kind == "hswish":
        return HardSwish(name=name)(x)
    if kind == "relu":
        return L.ReLU(name=name)(x)
    return L.Activation(kind, name=name)(x)


def conv_bn(x, filters, kernel_size, strides=1, activation="relu6", name=None, coefficients=None, num_experts=None,
            routing_activation="sigmoid"):
    """Conv (through the factory) -> batch norm -> activation (none when `activation` is None)."""
    conv = create_conv2d(filters, kernel_size, strides=strides, num_bases=_num_bases(coefficients),
                         num_experts=num_experts, routing_activation=routing_activation, name=f"{name}_conv")
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(_call(conv, x, coefficients))
    return apply_activation(x, activation, f"{name}_act") if activation else x


def depthwise_bn(x, kernel_size, strides=1, activation="relu6", name=None, coefficients=None):
    """Depthwise conv (through the factory) -> batch norm -> activation (none when `activation` is None)."""
    conv = create_conv2d(None, kernel_size, strides=strides, depthwise=True, num_bases=_num_bases(coefficients),
                         name=f"{name}_dw")
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dwbn")(_call(conv, x, coefficients))
    return apply_activation(x, activation, f"{name}_dwact") if activation else x


def dense(x, units, name, coefficients=None, num_experts=None, routing_activation="sigmoid"):
    """A fully connected layer through the factory, called on `x` (with `coefficients` for a Basis layer)."""
    layer = create_dense(units, num_bases=_num_bases(coefficients), num_experts=num_experts,
                         routing_activation=routing_activation, name=name)
    return _call(layer, x, coefficients)


def classifier(x, num_classes, dropout, name="head", num_experts=None, routing_activation="sigmoid"):
    """Global average pooling -> dropout -> logits (a `CondDense` with its own router given `num_experts`)."""
    x = L.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    if dropout:
        x = L.Dropout(dropout, name=f"{name}_dropout")(x)
    return dense(x, num_classes, f"{name}_logits", num_experts=num_experts, routing_activation=routing_activation)
