"""MobileNetV3's hard activations (Howard et al., "Searching for MobileNetV3", ICCV 2019, Sec. 5.2).

Piecewise-linear stand-ins for sigmoid and swish that quantize well and convert to TFLite builtins
(``RELU6``, ``ADD``, ``MUL``)::

    HardSigmoid()(x)   # relu6(x + 3) / 6
    HardSwish()(x)     # x * relu6(x + 3) / 6

No weights, no arguments beyond the Keras layer's own; MAdds count 0, as in the papers.
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras


@keras.saving.register_keras_serializable(package="keras_layers")
class HardSigmoid(keras.layers.Layer):
    """MobileNetV3's hard sigmoid: ``relu6(x + 3) / 6``."""

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_layers")
class HardSwish(keras.layers.Layer):
    """MobileNetV3's hard swish: ``x * relu6(x + 3) / 6``."""

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape
