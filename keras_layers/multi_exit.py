"""Multi-exit layers of IMTA (Li et al., "Improved Techniques for Training Adaptive Deep Networks", ICCV 2019).

* `GradientEquilibrium(scale)`: identity in the forward pass, gradient multiplied by `scale` in the
  backward pass (the paper's re-scaling op ``R(x; s)``, Eq. 4). Where the backbone branches after
  stage i (0-based) of a K-exit network, the branch into exit i gets ``1 / (K - i)`` and the branch
  into the next stage gets ``(K - i - 1) / (K - i)`` (`GradientEquilibrium.branch_scales`), so every
  exit j >= i contributes ``1 / (K - i)`` of its gradient to the features of stage i (Eq. 5).
* `ExitHead(num_classes, ...)`: global average pooling -> optional hidden Dense+ReLU -> dropout ->
  Dense logits. With ``inline_collaboration=True`` it is called on ``[features, previous_logits]`` and
  adds the previous exit's logits, detached (no gradient flows back into the earlier exit), to its
  own: Inline Subnetwork Collaboration with the identity transfer path (Sec. 3.2), so each exit
  learns a residual over its predecessor.
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers.checks import check_bool, check_int, check_number


@keras.saving.register_keras_serializable(package="keras_layers")
class GradientEquilibrium(keras.layers.Layer):
    """Identity forward; the gradient flowing back through it is multiplied by `scale` (IMTA Eq. 4)."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(check_number("scale", scale, 0.0, 1.0))

    @staticmethod
    def branch_scales(exit_index, num_exits):
        """(scale into exit `exit_index`, scale into the next stage) for a `num_exits`-exit network."""
        check_int("num_exits", num_exits)
        check_int("exit_index", exit_index, 0, num_exits - 1)
        remaining = num_exits - exit_index  # this exit and the ones after it
        return 1.0 / remaining, (remaining - 1) / remaining

    def build(self, input_shape):
        super().build(input_shape)

    def call(self, inputs):
        scale = self.scale
        if scale == 1.0:
            return tf.identity(inputs)

        @tf.custom_gradient
        def rescale(x):
            def grad(upstream):
                return upstream * tf.cast(scale, upstream.dtype)

            return tf.identity(x), grad

        return rescale(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def madds(self, input_shape, output_shape, **state):
        return 0

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="keras_layers")
class ExitHead(keras.layers.Layer):
    """Classifier of one exit: GAP -> [Dense(hidden_units) + ReLU] -> dropout -> Dense(num_classes).

    With ``inline_collaboration=True`` call it on ``[features, previous_logits]``: the output is
    ``own_logits + stop_gradient(previous_logits)`` (IMTA's Inline Subnetwork Collaboration).
    """

    def __init__(self, num_classes, hidden_units=0, dropout=0.0, inline_collaboration=False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.hidden_units = check_int("hidden_units", hidden_units, 0)
        self.dropout = float(check_number("dropout", dropout, 0.0, 0.99))
        self.inline_collaboration = check_bool("inline_collaboration", inline_collaboration)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _split(self, inputs):
        if self.inline_collaboration:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                raise ValueError(f"{self.name}: inline_collaboration=True needs inputs=[features, previous_logits]. "
                                 f"Received: {type(inputs).__name__}")
            return inputs[0], inputs[1]
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 1:
                raise ValueError(f"{self.name}: inline_collaboration=False takes one input. Received: {len(inputs)}")
            return inputs[0], None
        return inputs, None

    def build(self, input_shape):
        if self.inline_collaboration:
            if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or \
                    not isinstance(input_shape[0], (list, tuple, tf.TensorShape)):
                raise ValueError(f"{self.name}: inline_collaboration=True needs inputs=[features, previous_logits]. "
                                 f"Received: input_shape={input_shape!r}")
            feat_shape, prev_shape = input_shape
            if prev_shape[-1] is not None and int(prev_shape[-1]) != self.num_classes:
                raise ValueError(f"{self.name}: previous_logits must have num_classes={self.num_classes} "
                                 f"channels. Received: shape={tuple(prev_shape)}")
        else:
            feat_shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and \
                isinstance(input_shape[0], (list, tuple, tf.TensorShape)) else input_shape
        feat_shape = tf.TensorShape(feat_shape)
        if feat_shape.rank != 4 or feat_shape[-1] is None:
            raise ValueError(f"{self.name}: features must be (batch, H, W, C) with known C. "
                             f"Received: shape={tuple(feat_shape)}")
        channels = int(feat_shape[-1])
        width = channels
        if self.hidden_units:
            self.hidden_kernel = self.add_weight("hidden_kernel", (channels, self.hidden_units),
                                                 initializer=self.kernel_initializer)
            self.hidden_bias = self.add_weight("hidden_bias", (self.hidden_units,), initializer="zeros")
            width = self.hidden_units
        self.kernel = self.add_weight("kernel", (width, self.num_classes), initializer=self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.num_classes,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, training=None):
        features, previous = self._split(inputs)
        h = tf.reduce_mean(features, axis=[1, 2])
        if self.hidden_units:
            h = tf.nn.relu(tf.matmul(h, self.hidden_kernel) + self.hidden_bias)
        if self.dropout and training:
            h = tf.nn.dropout(h, rate=self.dropout)
        logits = tf.matmul(h, self.kernel) + self.bias
        if previous is not None:
            logits = logits + tf.stop_gradient(tf.cast(previous, logits.dtype))
        return logits

    def compute_output_shape(self, input_shape):
        feat_shape = input_shape[0] if self.inline_collaboration else input_shape
        return tf.TensorShape([tf.TensorShape(feat_shape)[0], self.num_classes])

    def madds(self, input_shape, output_shape, **state):
        """Per-example MAdds of the Dense layers (pooling and the logits add count 0, as in the papers)."""
        channels = int(input_shape[-1])
        if self.hidden_units:
            return channels * self.hidden_units + self.hidden_units * self.num_classes
        return channels * self.num_classes

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "hidden_units": self.hidden_units,
                "dropout": self.dropout, "inline_collaboration": self.inline_collaboration,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
