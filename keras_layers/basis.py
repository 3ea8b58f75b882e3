"""Basis layers: convolutions whose kernel is synthesized per example from a set of bases.

BasisNet (Zhang et al., "BasisNet: Two-stage Model Synthesis for Efficient Inference", CVPR-W 2021)
synthesizes the specialist's layer kernels as ``W~ = sum_n alpha_n W_n`` with coefficients predicted
by a lightweight model; CondConv (Yang et al., NeurIPS 2019) is the same op with the coefficients
computed by a router inside the layer (`keras_layers.condconv` subclasses these layers).

    y = BasisConv2D(64, 3, num_bases=8)(x, coefficients)          # coefficients: (batch, 8)
    y = BasisDepthwiseConv2D(3, num_bases=8, strides=2)(x, coefficients)
    y = BasisDense(10, num_bases=8)(features, coefficients)
    alpha = BasisCoefficients(groups=5, num_bases=8)(features)   # (batch, 5, 8): BasisNet's predictor
    coefficients = CoefficientGroup(2)(alpha)                    # (batch, 8): the coefficients of layer 2

Output for example ``b`` is exactly the static op (``Conv2D``, ``DepthwiseConv2D``, ``Dense``) with
kernel ``sum_n coefficients[b, n] * kernel[n]``, plus the (shared) bias. Weights: ``kernel`` of shape
``(num_bases, *single_kernel_shape)`` -- conv ``(E, kh, kw, in, out)``, depthwise ``(E, kh, kw, in, 1)``,
dense ``(E, in, out)`` -- and ``bias`` ``(out,)``. Each basis is initialised by its own initializer
call on the single kernel shape, i.e. as if it were a normal kernel (fans are those of one kernel;
a seeded initializer gets seed + n for basis n so the bases differ).

Implementation: `keras_layers.kernel_mixing` chooses the per-example method per layer and situation
(1x1 einsum, depthwise with the batch folded into channels, kxk unrolled / map_fn, and at batch 1 the
TFLite-friendly paths); pass ``method=`` to force one. See that module for the measured numbers.

MAdds (the CondConv paper's accounting, per example): the static op's count plus one multiply-add
per basis parameter for the kernel combination (``num_bases * kernel size``).

TFLite: a model of these layers converts at batch 1 with builtin ops only (tested with parity in
tests/keras_layers/test_condconv_tflite.py). ``quantization_modes`` is ``("float32", "float16",
"dynamic")``:

* float32: max abs error vs Keras < 1e-4.
* float16: bases stored fp16 (dequantized at load), relative error ~1e-3.
* dynamic (dynamic-range): the mixing is a FULLY_CONNECTED whose constant weights are the bases laid
  out (kernel size, E), so the converter stores them int8 (tensors of >= 1024 elements) with one
  scale per kernel element; activations and the mixed kernel stay float. Relative error ~1%. The
  file shrinks only for E >= 8 (a scale and zero point per E values).
* int8 (full integer) converts but fails at run time on LiteRT (its conv kernels reject a run-time
  int8 filter: zero-point check in conv.cc), so `pipelines.export.tflite` refuses it at conversion, naming
  the layer. Quantize the rest of a model selectively and keep these layers float.
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers import kernel_mixing
from keras_layers.checks import check_bool, check_choice, check_int, check_padding, check_pair

QUANTIZATION_MODES = ("float32", "float16", "dynamic")
COEFFICIENT_ACTIVATIONS = ("softmax", "sigmoid")


class PerBasisInitializer(keras.initializers.Initializer):
    """Initialises a stacked ``(E, *shape)`` weight with one call of `initializer` per basis."""

    def __init__(self, initializer):
        self.initializer = keras.initializers.get(initializer)

    def __call__(self, shape, dtype=None, **kwargs):
        # A fresh instance per basis: Keras initializers return the same values when one instance is
        # called twice, seeded or not.
        config = self.initializer.get_config()
        parts = []
        for n in range(shape[0]):
            init = self.initializer
            if hasattr(init, "get_config") and hasattr(type(init), "from_config"):
                seed = config.get("seed")
                init = type(init).from_config({**config, "seed": None if seed is None else seed + n}
                                              if "seed" in config else config)
            parts.append(init(tuple(shape[1:]), dtype=dtype))
        return tf.stack(parts)

    def get_config(self):
        return {"initializer": keras.initializers.serialize(self.initializer)}


class _BasisLayer(keras.layers.Layer):
    """Shared machinery: basis count, kernel/bias weights, coefficient checks, MAdds of the mixing."""

    _count_name = "num_bases"  # the argument name in error messages (CondConv says num_experts)
    quantization_modes = QUANTIZATION_MODES

    def __init__(self, num_bases, use_bias=True, activation=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, method="auto",
                 **kwargs):
        super().__init__(**kwargs)
        self.num_bases = check_int(self._count_name, num_bases)
        self.use_bias = check_bool("use_bias", use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.method = check_choice("method", method, self._methods)

    # subclasses set: _methods, _single_kernel_shape(input_shape), _out_channels(input_shape)
    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        self._check_input_shape(input_shape)
        self.kernel = self.add_weight(
            "kernel", shape=(self.num_bases, *self._single_kernel_shape(input_shape)),
            initializer=PerBasisInitializer(self.kernel_initializer), regularizer=self.kernel_regularizer,
            trainable=True, dtype=self.dtype)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight("bias", shape=(self._out_channels(input_shape),),
                                        initializer=self.bias_initializer, regularizer=self.bias_regularizer,
                                        trainable=True, dtype=self.dtype)
        super().build(input_shape)

    def _check_coefficients(self, inputs, coefficients):
        if coefficients is None:
            raise ValueError(f"{type(self).__name__} {self.name!r} needs coefficients of shape "
                             f"(batch, {self._count_name}={self.num_bases}). Received: coefficients=None")
        coefficients = tf.convert_to_tensor(coefficients, dtype=self.compute_dtype)
        shape = coefficients.shape
        if shape.rank != 2 or (shape[1] is not None and shape[1] != self.num_bases) or (
                shape[0] is not None and inputs.shape[0] is not None and shape[0] != inputs.shape[0]):
            raise ValueError(f"coefficients must have shape (batch={inputs.shape[0]}, "
                             f"{self._count_name}={self.num_bases}) in {self.name!r}. "
                             f"Received: coefficients shape={tuple(shape)}")
        return coefficients

    def _finish(self, outputs):
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def mixing_madds(self):
        """Multiply-adds of combining the bases into one kernel (one per basis parameter)."""
        return int(self.kernel.shape.num_elements()) if self.built else 0

    def get_config(self):
        config = super().get_config()
        config.update({
            self._count_name: self.num_bases,
            "use_bias": self.use_bias,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "method": self.method,
        })
        return config


class _SpatialBasisLayer(_BasisLayer):
    """Convolution-shaped arguments shared by the 2-D layers."""

    def __init__(self, kernel_size, num_bases, strides=1, padding="same", dilation_rate=1, **kwargs):
        super().__init__(num_bases, **kwargs)
        self.kernel_size = check_pair("kernel_size", kernel_size)
        self.strides = check_pair("strides", strides)
        self.dilation_rate = check_pair("dilation_rate", dilation_rate)
        self.padding = check_padding(padding)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"strides > 1 cannot be combined with dilation_rate > 1. "
                             f"Received: strides={strides!r}, dilation_rate={dilation_rate!r}")

    def _check_input_shape(self, input_shape):
        if input_shape.rank != 4 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects inputs (batch, H, W, C) with known C. "
                             f"Received: input shape={tuple(input_shape)}")

    def _spatial_out(self, input_shape):
        dims = []
        for i in range(2):
            size = input_shape[1 + i]
            dims.append(None if size is None else kernel_mixing.output_size(
                size, self.kernel_size[i], self.strides[i], self.padding, self.dilation_rate[i]))
        return dims

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        return tf.TensorShape([input_shape[0], *self._spatial_out(input_shape), self._out_channels(input_shape)])

    def _conv_madds(self, output_shape):
        oh, ow = tuple(output_shape)[1:3]
        per_position = self.kernel.shape.num_elements() // self.num_bases  # kh*kw*C_in*C_out (depthwise: kh*kw*C)
        return int(oh) * int(ow) * int(per_position)

    def madds(self, input_shape, output_shape, **state):
        """Per example: the static conv at the output size + the kernel combination."""
        return self._conv_madds(output_shape) + self.mixing_madds()

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "strides": self.strides, "padding": self.padding,
                       "dilation_rate": self.dilation_rate})
        return config


@keras.saving.register_keras_serializable(package="keras_layers")
class BasisConv2D(_SpatialBasisLayer):
    """2-D convolution with per-example kernel ``sum_n coefficients[b, n] * kernel[n]``.

    Args: filters, kernel_size, num_bases, strides=1, padding="same"|"valid", dilation_rate=1,
    use_bias=True, activation=None, kernel_initializer (called once per basis), bias_initializer,
    kernel_regularizer, bias_regularizer, method="auto" (see `keras_layers.kernel_mixing`).
    Call: ``layer(inputs, coefficients)`` with inputs (B, H, W, C_in), coefficients (B, num_bases).
    """

    _methods = kernel_mixing.CONV_METHODS

    def __init__(self, filters, kernel_size, num_bases, strides=1, padding="same", use_bias=True, **kwargs):
        check_int("filters", filters)
        super().__init__(kernel_size, num_bases, strides=strides, padding=padding, use_bias=use_bias, **kwargs)
        self.filters = filters

    def _single_kernel_shape(self, input_shape):
        return (*self.kernel_size, int(input_shape[-1]), self.filters)

    def _out_channels(self, input_shape):
        return self.filters

    def call(self, inputs, coefficients=None):
        coefficients = self._check_coefficients(inputs, coefficients)
        y = kernel_mixing.conv2d(inputs, coefficients, self.kernel, self.strides, self.padding,
                                 self.dilation_rate, method=self.method)
        return self._finish(y)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="keras_layers")
class BasisDepthwiseConv2D(_SpatialBasisLayer):
    """Depthwise convolution (depth multiplier 1) with per-example kernel; kernel (E, kh, kw, C, 1).

    Args as `BasisConv2D` without ``filters``; ``method`` from `kernel_mixing.DEPTHWISE_METHODS`.
    """

    _methods = kernel_mixing.DEPTHWISE_METHODS

    def _single_kernel_shape(self, input_shape):
        return (*self.kernel_size, int(input_shape[-1]), 1)

    def _out_channels(self, input_shape):
        return int(input_shape[-1]) if input_shape[-1] is not None else None

    def call(self, inputs, coefficients=None):
        coefficients = self._check_coefficients(inputs, coefficients)
        y = kernel_mixing.depthwise_conv2d(inputs, coefficients, self.kernel, self.strides, self.padding,
                                           self.dilation_rate, method=self.method)
        return self._finish(y)


@keras.saving.register_keras_serializable(package="keras_layers")
class BasisDense(_BasisLayer):
    """Fully connected layer with per-example kernel; inputs (B, C_in), kernel (E, C_in, units)."""

    _methods = kernel_mixing.DENSE_METHODS

    def __init__(self, units, num_bases, use_bias=True, **kwargs):
        check_int("units", units)
        super().__init__(num_bases, use_bias=use_bias, **kwargs)
        self.units = units

    def _check_input_shape(self, input_shape):
        if input_shape.rank != 2 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects inputs (batch, features) with known features. "
                             f"Received: input shape={tuple(input_shape)}")

    def _single_kernel_shape(self, input_shape):
        return (int(input_shape[-1]), self.units)

    def _out_channels(self, input_shape):
        return self.units

    def call(self, inputs, coefficients=None):
        coefficients = self._check_coefficients(inputs, coefficients)
        return self._finish(kernel_mixing.dense(inputs, coefficients, self.kernel, method=self.method))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def madds(self, input_shape, output_shape, **state):
        """Per example: C_in * units for the matmul + the kernel combination."""
        return int(self.kernel.shape.num_elements()) // self.num_bases + self.mixing_madds()

    def get_config(self):
        return {**super().get_config(), "units": self.units}


# ---------------------------------------------------------------- BasisNet's coefficient layers

@keras.saving.register_keras_serializable(package="keras_layers")
class BasisCoefficients(keras.layers.Layer):
    """Predicts combination coefficients (batch, groups, num_bases) from features (batch, C).

    BasisNet's lightweight model ends in this layer: one dense layer for the coefficients of every
    synthesized layer at once, ``softmax`` over the bases (convex combinations, the paper's default)
    or ``sigmoid``; with ``one_hot`` the output is the one-hot argmax (model selection), with a
    straight-through gradient in training.
    """

    def __init__(self, groups, num_bases, activation="softmax", one_hot=False, **kwargs):
        super().__init__(**kwargs)
        self.groups = check_int("groups", groups)
        self.num_bases = check_int("num_bases", num_bases)
        self.activation = check_choice("activation", activation, COEFFICIENT_ACTIVATIONS)
        self.one_hot = bool(one_hot)

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", (c, self.groups * self.num_bases),
                                      initializer=keras.initializers.GlorotUniform())
        self.bias = self.add_weight("bias", (self.groups * self.num_bases,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, training=None):
        z = tf.reshape(tf.matmul(inputs, self.kernel) + self.bias, [-1, self.groups, self.num_bases])
        alpha = tf.nn.softmax(z, axis=-1) if self.activation == "softmax" else tf.sigmoid(z)
        if self.one_hot:
            hard = tf.one_hot(tf.argmax(alpha, axis=-1), self.num_bases, dtype=alpha.dtype)
            # training: straight-through (forward one-hot, gradient of the soft coefficients); inference: one-hot
            alpha = alpha + tf.stop_gradient(hard - alpha) if training else hard
        return alpha

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.groups, self.num_bases])

    def madds(self, input_shape, output_shape, **state):
        return int(input_shape[-1]) * self.groups * self.num_bases

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "num_bases": self.num_bases,
                "activation": self.activation, "one_hot": self.one_hot}


@keras.saving.register_keras_serializable(package="keras_layers")
class CoefficientGroup(keras.layers.Layer):
    """Picks one synthesized layer's coefficients (batch, num_bases) from (batch, groups, num_bases)."""

    def __init__(self, index, **kwargs):
        super().__init__(**kwargs)
        self.index = check_int("index", index, low=0)

    def call(self, inputs):
        # flattened, then a stride-1 slice without a shrunk axis: XNNPACK delegates that STRIDED_SLICE
        # (``inputs[:, index, :]`` shrinks an axis, which it leaves to LiteRT's reference kernel)
        n = inputs.shape[2]
        flat = tf.reshape(inputs, (-1, inputs.shape[1] * n))
        return flat[:, self.index * n:(self.index + 1) * n]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], input_shape[2]])

    def get_config(self):
        return {**super().get_config(), "index": self.index}
