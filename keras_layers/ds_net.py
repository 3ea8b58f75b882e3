"""DS-Net's double-headed dynamic gate (Li et al., "Dynamic Slimmable Network", CVPR 2021, Sec. 3.2).

``DynamicGate`` reduces a feature map with global average pooling, maps it through a shared
``W1 -> ReLU`` to a hidden vector and feeds two heads:

* the *attention head* ``W3`` with ``delta(x) = 1 + tanh(x)`` rescales the channels of the input
  (``W3`` zero-initialised, so the attention starts as the identity; active in both stages);
* the *slimming head* ``W2`` scores the candidate widths ``width_multipliers``; the choice is a
  one-hot vector: gumbel-softmax with a straight-through estimator while the gate trains
  (``hard + soft - stop_gradient(soft)``: the forward pass uses the hard one-hot, the gradient the
  soft one), ``argmax`` at inference.

The gate takes part in `keras_layers.slimmable.set_width` like the slimmable layers: with a fixed
width (Stage I supernet training, BN recalibration, export of one path) the choice is that width's
one-hot for every example; with ``"dynamic"`` it is the slimming head's decision. The call returns
``[attended_features, choice, scores]``; slimmable layers after the gate are wired with
``choice=...``. Gate weights are not named "kernel", so the recipes' L2 leaves them alone (the paper
removes weight decay from the gate).
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers.checks import check_int, check_number
from keras_layers.slimmable import DYNAMIC, SlimmableMixin, width_index


def gumbel_softmax_straight_through(scores, temperature, seed=None):
    """One-hot sample of ``softmax((scores + gumbel noise) / temperature)`` with straight-through gradients."""
    u = tf.random.uniform(tf.shape(scores), minval=1e-6, maxval=1.0 - 1e-6, seed=seed)
    noise = -tf.math.log(-tf.math.log(u))
    soft = tf.nn.softmax((scores + noise) / temperature, axis=-1)
    hard = tf.one_hot(tf.argmax(soft, axis=-1), tf.shape(scores)[-1], dtype=soft.dtype)
    return hard + soft - tf.stop_gradient(soft)


@keras.saving.register_keras_serializable(package="keras_layers")
class DynamicGate(SlimmableMixin, keras.layers.Layer):
    """DS-Net double-headed gate: channel attention (1 + tanh) + one-hot width choice over `width_multipliers`."""

    is_gate = True

    def __init__(self, width_multipliers=(0.25, 0.5, 0.75, 1.0), hidden_units=16, temperature=1.0, attention=True,
                 width=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = check_int("hidden_units", hidden_units)
        self.temperature = float(check_number("temperature", temperature, 0, low_open=True))
        self.attention = bool(attention)
        self._init_slimmable(width_multipliers, False, 8, width)

    def build(self, input_shape):
        c, d, g = int(input_shape[-1]), self.hidden_units, len(self.width_multipliers)
        self.channels_in = c
        self.w1 = self.add_weight("w1", (c, d), initializer="he_normal")
        self.b1 = self.add_weight("b1", (d,), initializer="zeros")
        self.w2 = self.add_weight("w2", (d, g), initializer="glorot_uniform")
        self.b2 = self.add_weight("b2", (g,), initializer="zeros")
        if self.attention:
            self.w3 = self.add_weight("w3", (d, c), initializer="zeros")
            self.b3 = self.add_weight("b3", (c,), initializer="zeros")
        super().build(input_shape)

    def scores_and_attention(self, inputs):
        pooled = tf.reduce_mean(inputs, axis=[1, 2])
        hidden = tf.nn.relu(tf.matmul(pooled, self.w1) + self.b1)
        scores = tf.matmul(hidden, self.w2) + self.b2
        att = 1.0 + tf.tanh(tf.matmul(hidden, self.w3) + self.b3) if self.attention else None
        return scores, att

    def call(self, inputs, width=None, training=None):
        width = self._resolve(width)
        scores, att = self.scores_and_attention(inputs)
        attended = inputs * att[:, None, None, :] if self.attention else tf.identity(inputs)
        g = len(self.width_multipliers)
        if width != DYNAMIC:
            choice = tf.one_hot(tf.fill(tf.shape(scores)[:1], width_index(width, self.width_multipliers)), g)
        elif training and self.trainable:
            choice = gumbel_softmax_straight_through(scores, self.temperature)
        else:
            choice = tf.one_hot(tf.argmax(scores, axis=-1), g)
        return [attended, choice, scores]

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        g = len(self.width_multipliers)
        return [input_shape, tf.TensorShape([input_shape[0], g]), tf.TensorShape([input_shape[0], g])]

    def madds(self, input_shape, output_shape, **state):
        c, d, g = self.channels_in, self.hidden_units, len(self.width_multipliers)
        return c * d + d * g + (d * c if self.attention else 0)

    def get_config(self):
        cfg = {**super().get_config(), "width_multipliers": list(self.width_multipliers),
               "hidden_units": self.hidden_units, "temperature": self.temperature, "attention": self.attention,
               "width": self.width}
        return cfg
