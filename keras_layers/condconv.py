"""CondConv: conditionally parameterized convolutions (Yang et al., NeurIPS 2019, papers/condconv.txt).

A CondConv layer is a Basis layer (`keras_layers.basis`) whose coefficients are computed from its own
input by a router, ``r(x) = sigmoid(GAP(x) R)`` (or softmax, the paper's ablation), so the op is
``(sum_i r_i(x) W_i) * x``: one convolution whatever the number of experts.

    y = CondConv2D(64, 3, num_experts=8)(x)                      # own router
    r = CondRouting(8)(block_input)                              # one router per block, as in the paper
    y = CondConv2D(64, 1, num_experts=8)(x, routing_weights=r)   # (then its own router is not used)
    CondConv2D(...).routing(x)                                   # (batch, num_experts) weights

The paper's CC-MobileNetV2 computes the routing weights once from the block input and shares them by
the block's three convolutions; `keras_layers.models.condconv_mobilenet_v2` does that with one
`CondRouting` layer feeding Basis layers (no unused router weights).

MAdds per example (the paper's accounting): the static conv + one multiply-add per expert parameter
for the kernel combination + the router's fully connected layer (``C_in * num_experts``) when the
layer's own router is used. Quantization: ``quantization_modes = ("float32", "float16", "dynamic")``
(see `keras_layers.basis`; full-integer int8 fails at run time for a run-time filter).
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers.basis import BasisConv2D, BasisDense, BasisDepthwiseConv2D
from keras_layers.checks import check_bool, check_choice, check_int

ROUTING_ACTIVATIONS = ("sigmoid", "softmax")


def check_routing_options(routing_activation, **switches):
    """The options every CondConv architecture shares, checked in order (ValueError naming the field): its
    on/off switches (``cond_head=...``, ``cond_classifier=...``: bools), then the routing activation."""
    for name, value in switches.items():
        check_bool(name, value)
    check_choice("routing_activation", routing_activation, ROUTING_ACTIVATIONS)


@tf.custom_gradient
def spatial_mean(inputs):
    """``reduce_mean(inputs, axis=(1, 2))`` (B, H, W, C) -> (B, C), with a cheaper gradient.

    TF's own gradient of a mean tiles the incoming (B, C) gradient to the input's shape and then divides
    that full-size tensor; here the (B, C) gradient is divided first and broadcast once: the same values,
    one pass less over a (B, H, W, C) tensor in every CondConv layer's backward step.
    """
    pooled = tf.reduce_mean(inputs, axis=(1, 2))

    def grad(upstream):
        shape = tf.shape(inputs)
        count = tf.cast(shape[1] * shape[2], upstream.dtype)
        return tf.broadcast_to((upstream / count)[:, None, None, :], shape)

    return pooled, grad


@keras.saving.register_keras_serializable(package="keras_layers")
class CondRouting(keras.layers.Layer):
    """The CondConv router: global average pooling -> Dense(num_experts) -> sigmoid | softmax.

    Inputs (B, H, W, C) are pooled over H, W; inputs (B, C) are used as they are.

    The kernel starts at zero (the paper does not say how it starts): every example then gets the same
    routing weights (0.5 each with sigmoid, 1/E with softmax) until the router has trained, and the
    network starts as its static self with the experts averaged. A random start (glorot) gives each
    example its own random scale of every routed kernel; on cluttered-digits that kept the CondConv
    MobileNetV2 at chance even with the routers frozen (docs/results.md).
    """

    def __init__(self, num_experts, routing_activation="sigmoid", kernel_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = check_int("num_experts", num_experts)
        self.routing_activation = check_choice("routing_activation", routing_activation, ROUTING_ACTIVATIONS)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank not in (2, 4) or input_shape[-1] is None:
            raise ValueError(f"CondRouting expects inputs (batch, H, W, C) or (batch, C). "
                             f"Received: input shape={tuple(input_shape)}")
        self.kernel = self.add_weight("kernel", shape=(int(input_shape[-1]), self.num_experts),
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = self.add_weight("bias", shape=(self.num_experts,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        pooled = spatial_mean(inputs) if inputs.shape.rank == 4 else inputs
        logits = tf.matmul(pooled, self.kernel) + self.bias
        return tf.sigmoid(logits) if self.routing_activation == "sigmoid" else tf.nn.softmax(logits)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.num_experts])

    def madds(self, input_shape, output_shape, **state):
        """The fully connected layer, C_in * num_experts (pooling counts 0, as in the paper)."""
        return int(tuple(input_shape)[-1]) * self.num_experts

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts,
                "routing_activation": self.routing_activation,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}


class _Routed:
    """Mixin turning a Basis layer into a CondConv layer: own router, optional shared routing weights."""

    _count_name = "num_experts"

    def _init_router(self, routing_activation):
        self.routing_activation = check_choice("routing_activation", routing_activation, ROUTING_ACTIVATIONS)
        self.router = CondRouting(self.num_bases, routing_activation, kernel_regularizer=self.kernel_regularizer,
                                  dtype=self.dtype_policy, name="router")
        self._uses_own_router = True  # updated on each call (MAdds count the router only when used)

    @property
    def num_experts(self):
        return self.num_bases

    def build(self, input_shape):
        super().build(input_shape)
        self.router.build(input_shape)

    def routing(self, inputs):
        """Routing weights (batch, num_experts) of `inputs` from this layer's router."""
        return self.router(inputs)

    def call(self, inputs, routing_weights=None):
        self._uses_own_router = routing_weights is None
        if routing_weights is None:
            routing_weights = self.router(inputs)
        return super().call(inputs, routing_weights)

    def madds(self, input_shape, output_shape, **state):
        own = self.router.madds(input_shape, None) if self._uses_own_router else 0
        return super().madds(input_shape, output_shape, **state) + own

    def get_config(self):
        return {**super().get_config(), "routing_activation": self.routing_activation}


@keras.saving.register_keras_serializable(package="keras_layers")
class CondConv2D(_Routed, BasisConv2D):
    """CondConv 2-D convolution: `BasisConv2D` with coefficients from its router (or shared ones).

    Args: filters, kernel_size, num_experts, strides=1, padding="same", routing_activation="sigmoid"
    | "softmax", then the `BasisConv2D` options (dilation_rate, use_bias, activation, initializers,
    regularizers, method). Call: ``layer(inputs, routing_weights=None)``.
    """

    def __init__(self, filters, kernel_size, num_experts, strides=1, padding="same",
                 routing_activation="sigmoid", **kwargs):
        super().__init__(filters, kernel_size, num_bases=num_experts, strides=strides, padding=padding, **kwargs)
        self._init_router(routing_activation)


@keras.saving.register_keras_serializable(package="keras_layers")
class CondDepthwiseConv2D(_Routed, BasisDepthwiseConv2D):
    """CondConv depthwise convolution (depth multiplier 1); kernel (num_experts, kh, kw, C, 1)."""

    def __init__(self, kernel_size, num_experts, strides=1, padding="same", routing_activation="sigmoid",
                 **kwargs):
        super().__init__(kernel_size, num_bases=num_experts, strides=strides, padding=padding, **kwargs)
        self._init_router(routing_activation)


@keras.saving.register_keras_serializable(package="keras_layers")
class CondDense(_Routed, BasisDense):
    """CondConv fully connected layer (the paper's CondConv classifier); kernel (num_experts, in, units)."""

    def __init__(self, units, num_experts, routing_activation="sigmoid", **kwargs):
        super().__init__(units, num_bases=num_experts, **kwargs)
        self._init_router(routing_activation)
