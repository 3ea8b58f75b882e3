"""Slimmable layers and switchable batch norm (Yu et al., "Slimmable Neural Networks", ICLR 2019;
dynamic slicing as in Li et al., "Dynamic Slimmable Network", CVPR 2021).

One weight tensor per layer, stored at full width; a narrower network uses the leading slice
``kernel[..., :c_in, :c_out]`` (contiguous, no masks, no index gathers). Channel counts at width ``w``
are ``min(C, make_divisible(C * w, 8))``, the same rule in every layer, so consecutive layers agree.
`SwitchableBatchNormalization` keeps private statistics *and* affine parameters per width (S-BN);
with ``universal=True`` the affine parameters are shared (sliced from the widest, as US-Nets do)
and only the statistics are private, so widths can be recalibrated after training.

How the width reaches the layers (design decision)
--------------------------------------------------
The width is always explicit, never module-level state:

* every layer accepts it as a call argument, ``layer(x, width=0.5)``;
* inside a functional model the graph is wired once with ``width=None``, which means "this layer's
  *active width*": a plain attribute that `set_width(model, 0.5)` sets on every slimmable layer of
  that one model (each model holds its own; two models never share it).

The attribute is read while a call is *traced*, so channel counts are static Python ints and the
graph contains real slices. A recipe that runs several widths in one training step simply calls
``set_width(net, w); net(x)`` for each width inside the same ``tf.function``: each call is traced
with its own shapes. This works in ``model.fit``, in eager calls, and under every tf.distribute
strategy (each replica traces the same Python). The active width is part of each layer's config, so a
saved model loads at the width it was saved with. Caveat: a function traced earlier keeps the width
it was traced with. `set_width` therefore drops the model's cached ``predict``/``test``/``train``
functions; a ``tf.function`` of your own must be re-traced after changing the width.

DS-Net gating: ``set_width(model, "dynamic")`` makes layers that were wired with a per-example
``choice`` tensor (one-hot over ``width_multipliers``, from `keras_layers.ds_net.DynamicGate`)
use that choice. A batch with mixed widths cannot be sliced in one dense op, so inside Keras the
dynamic path zeroes the channels beyond each example's width (exactly equal to slicing, and
differentiable for the gate); the deployed network runs one sliced narrow model per choice
(`keras_layers.models.ds_mobilenet_v1.export_choice`). Batch norm in the dynamic path always uses
the stored statistics of each example's width (the supernet is frozen while the gate trains).
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_layers.channels import make_divisible
from keras_layers.checks import check_bool, check_int, check_number, check_padding, check_pair, fail
from keras_layers.kernel_mixing import output_size

DYNAMIC = "dynamic"
_TOL = 1e-6


# ------------------------------------------------------------------ width helpers

def check_width_multipliers(width_multipliers):
    """Validate and normalise a width list: non-empty, each in (0, 1], sorted ascending, unique."""
    if isinstance(width_multipliers, (int, float)) and not isinstance(width_multipliers, bool):
        width_multipliers = (width_multipliers,)
    if not isinstance(width_multipliers, (list, tuple)) or not width_multipliers:
        fail("width_multipliers", "a non-empty list of widths in (0, 1]", width_multipliers)
    for w in width_multipliers:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 1:
            fail("width_multipliers", "widths in (0, 1]", tuple(width_multipliers))
    out = tuple(sorted({round(float(w), 6) for w in width_multipliers}))
    if len(out) != len(width_multipliers):
        fail("width_multipliers", "unique", tuple(width_multipliers))
    return out


def width_index(width, width_multipliers):
    """Index of `width` in `width_multipliers` or None."""
    for i, w in enumerate(width_multipliers):
        if abs(w - width) < _TOL:
            return i
    return None


def check_width(width, width_multipliers, universal=False, allow_dynamic=False):
    """Validate a requested width; raise ValueError naming the value."""
    if allow_dynamic and width == DYNAMIC:
        return DYNAMIC
    if isinstance(width, bool) or not isinstance(width, (int, float, np.floating, np.integer)):
        fail("width", f"a number in (0, 1]{' or ' + repr(DYNAMIC) if allow_dynamic else ''}", width)
    width = float(width)
    if not 0 < width <= 1 + _TOL:
        fail("width", "in (0, 1]", width)
    if not universal and width_index(width, width_multipliers) is None:
        raise ValueError(f"width={width!r} is not one of width_multipliers={tuple(width_multipliers)!r} "
                         f"(only universal=True models run other widths)")
    return min(width, 1.0)


def slim_channels(full, width, divisor=8):
    """Channels of a `full`-channel tensor at `width`: make_divisible(full * width, divisor), at most full."""
    return int(min(full, make_divisible(full * width, divisor)))


def _slimmable_layers(model):
    return [l for l in model._flatten_layers(include_self=False, recursive=True) if hasattr(l, "_set_active_width")]


def set_width(model, width):
    """Set the active width of every slimmable layer of `model` (a float or "dynamic"); returns `model`.

    Validates against each layer first (ValueError naming the width), then sets all, then drops the
    model's cached predict/test/train functions so the next call re-traces at the new width.
    """
    layers = _slimmable_layers(model)
    if not layers:
        raise ValueError(f"set_width: model {model.name!r} has no slimmable layers")
    if width == DYNAMIC and not any(getattr(l, "is_gate", False) for l in layers):
        raise ValueError(f"width={width!r} needs a gated model (DS-Net); model {model.name!r} has no DynamicGate")
    resolved = [l._check_active_width(width) for l in layers]
    for layer, w in zip(layers, resolved):
        layer._set_active_width(w)
    for attr in ("predict_function", "test_function", "train_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    return model


def get_width(model):
    """The active width of `model` (the widest active width over its slimmable layers)."""
    widths = {l.width for l in _slimmable_layers(model)}
    if DYNAMIC in widths:
        return DYNAMIC
    return max(w if w is not None else 1.0 for w in widths)


def model_width_multipliers(model):
    """The widths every slimmable layer of `model` supports (their intersection), sorted."""
    sets = [set(l.width_multipliers) for l in _slimmable_layers(model)]
    return tuple(sorted(set.intersection(*sets))) if sets else ()


# ------------------------------------------------------------------ base mixin

class SlimmableMixin:
    """Width bookkeeping shared by the slimmable layers and the DS-Net gate (mixed into keras layers):
    `width_multipliers`, the active `width` that `set_width` sets, channel counts and masks per width."""

    def _init_slimmable(self, width_multipliers, universal, divisor, width):
        self.width_multipliers = check_width_multipliers(width_multipliers)
        self.universal = check_bool("universal", universal)
        self.divisor = check_int("divisor", divisor)
        self.width = None if width is None else self._check_active_width(width)

    def _check_active_width(self, width):
        return check_width(width, self.width_multipliers, self.universal, allow_dynamic=True)

    def _set_active_width(self, width):
        self.width = width

    @property
    def max_width(self):
        return self.width_multipliers[-1]

    def _resolve(self, width):
        """Width for this call: explicit argument, else the active width, else the widest."""
        if width is None:
            width = self.width
        if width is None:
            return self.max_width
        return check_width(width, self.width_multipliers, self.universal, allow_dynamic=True)

    def _channels(self, full, width):
        return slim_channels(full, width, self.divisor)

    def _mask(self, full, choice, slim=True):
        """(batch, full) 0/1 mask: the leading channels of each example's chosen width (differentiable in choice)."""
        if not slim:
            return None
        rows = np.zeros((len(self.width_multipliers), full), np.float32)
        for i, w in enumerate(self.width_multipliers):
            rows[i, :self._channels(full, w)] = 1.0
        return tf.matmul(tf.cast(choice, tf.float32), tf.constant(rows))

    def _slim_config(self):
        return {"width_multipliers": list(self.width_multipliers), "universal": self.universal,
                "divisor": self.divisor, "width": self.width}

    @staticmethod
    def _state_width(layer, state):
        w = state.get("width")
        if w is None:
            return layer.max_width
        if w == DYNAMIC:
            raise ValueError("count_madds needs a fixed width (use expected_madds for a gated model). "
                             "Received: width='dynamic'")
        return check_width(w, layer.width_multipliers, layer.universal)


def conv_spatial(input_shape, kernel_size, strides, padding):
    """Output (height, width) of a convolution on `input_shape` (batch, H, W, C); None where unknown."""
    return [None if d is None else output_size(d, k, st, padding)
            for d, k, st in zip(tuple(input_shape)[1:3], kernel_size, strides)]


class _SlicedWeights(SlimmableMixin):
    """The weight layers (conv, depthwise, dense) in one mechanism: at a fixed width the layer's op runs
    on the leading ``c_in(w)`` input / ``c_out(w)`` output channels of its weights; at width='dynamic'
    it runs on all of them and the output is masked per example by the gate's choice (DS-Net).

    A subclass gives `_sliced(c_in, c_out)` -> (kernel, bias or None), `_op(x, kernel, bias)`, `_full_out`
    (output channels at full width), `slim_input` and `_slims_out` (whether its input / output is sliced)."""

    def _init_weights(self, use_bias, initializers, slim_input=None, slim_output=None):
        """`use_bias`, the initializers ({attribute: identifier}) and, for a layer whose input and output
        are sliced independently (conv, dense), `slim_input` / `slim_output`."""
        self.use_bias = bool(use_bias)
        if slim_input is not None:
            self.slim_input, self.slim_output = bool(slim_input), bool(slim_output)
        self._initializer_fields = tuple(initializers)
        for attr, identifier in initializers.items():
            setattr(self, attr, keras.initializers.get(identifier))

    def _weights_config(self):
        """The `_init_weights` fields and `_init_slimmable` fields of `get_config`."""
        config = {"use_bias": self.use_bias, **self._slim_config()}
        if "slim_input" in vars(self):
            config.update(slim_input=self.slim_input, slim_output=self.slim_output)
        return {**config, **{a: keras.initializers.serialize(getattr(self, a)) for a in self._initializer_fields}}

    def channels(self, width):
        """(c_in, c_out) at `width`."""
        c_in = self._channels(self.in_channels, width) if self.slim_input else self.in_channels
        c_out = self._channels(self._full_out, width) if self._slims_out else self._full_out
        return c_in, c_out

    def call(self, inputs, width=None, choice=None):
        width = self._resolve(width)
        if width == DYNAMIC:
            if choice is None:
                raise ValueError(f"{self.name}: width='dynamic' needs the gate's choice tensor")
            y = self._op(inputs, *self._sliced(self.in_channels, self._full_out))
            mask = self._mask(self._full_out, choice, self._slims_out)
            if mask is None:
                return y
            return y * tf.cast(tf.reshape(mask, [-1] + [1] * (y.shape.rank - 2) + [self._full_out]), y.dtype)
        c_in, c_out = self.channels(width)
        if inputs.shape[-1] is not None and int(inputs.shape[-1]) != c_in:
            raise ValueError(f"{self.name}: input has {inputs.shape[-1]} channels but width={width} needs {c_in}")
        return self._op(inputs, *self._sliced(c_in, c_out))

    def _plain_weights(self, width):
        """`width` checked, and the sliced weights of the plain layer that `export_plain` builds."""
        width = check_width(width, self.width_multipliers, self.universal)
        kernel, bias = self._sliced(*self.channels(width))
        return width, [kernel.numpy()] + ([] if bias is None else [bias.numpy()])


# ------------------------------------------------------------------ convolutions and dense

@keras.saving.register_keras_serializable(package="keras_layers")
class SlimmableConv2D(_SlicedWeights, keras.layers.Layer):
    """2-D convolution whose active width uses ``kernel[:, :, :c_in(w), :c_out(w)]``.

    `slim_input=False` for a layer fed by a fixed-width tensor (the image, a gate's features);
    `slim_output=False` for a layer whose output width is fixed.
    """

    def __init__(self, filters, kernel_size, width_multipliers=(0.25, 0.5, 0.75, 1.0), strides=1,
                 padding="same", use_bias=True, slim_input=True, slim_output=True, universal=False, divisor=8,
                 width=None, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.kernel_size = check_pair("kernel_size", kernel_size)
        self.strides = check_pair("strides", strides)
        self.padding = check_padding(padding)
        self._init_weights(use_bias, {"kernel_initializer": kernel_initializer, "bias_initializer": bias_initializer},
                           slim_input, slim_output)
        self._init_slimmable(width_multipliers, universal, divisor, width)

    def build(self, input_shape):
        self.in_channels = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", (*self.kernel_size, self.in_channels, self.filters),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.filters,), initializer=self.bias_initializer) if self.use_bias else None
        super().build(input_shape)

    _full_out = property(lambda self: self.filters)
    _slims_out = property(lambda self: self.slim_output)

    def _sliced(self, c_in, c_out):
        return self.kernel[:, :, :c_in, :c_out], (self.bias[:c_out] if self.use_bias else None)

    def _op(self, x, kernel, bias):
        y = tf.nn.conv2d(x, kernel, strides=(1, *self.strides, 1), padding=self.padding.upper())
        return tf.nn.bias_add(y, bias) if bias is not None else y

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        w = self.width if self.width not in (None, DYNAMIC) else self.max_width
        c_out = self._channels(self.filters, w) if self.slim_output else self.filters
        if self.width == DYNAMIC:
            c_out = self.filters
        spatial = conv_spatial(input_shape, self.kernel_size, self.strides, self.padding)
        return tf.TensorShape([input_shape[0], *spatial, c_out])

    def madds(self, input_shape, output_shape, **state):
        w = self._state_width(self, state)
        c_in, c_out = self.channels(w)
        oh, ow = int(output_shape[1]), int(output_shape[2])
        return oh * ow * self.kernel_size[0] * self.kernel_size[1] * c_in * c_out

    def export_plain(self, width):
        """An ordinary `keras.layers.Conv2D` for `width` and its sliced weights."""
        width, weights = self._plain_weights(width)
        layer = keras.layers.Conv2D(self.channels(width)[1], self.kernel_size, strides=self.strides,
                                    padding=self.padding, use_bias=self.use_bias, name=self.name)
        return layer, weights

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, **self._weights_config()}


@keras.saving.register_keras_serializable(package="keras_layers")
class SlimmableDepthwiseConv2D(_SlicedWeights, keras.layers.Layer):
    """Depthwise convolution (depth multiplier 1) over the leading ``c(w)`` channels: ``kernel[:, :, :c(w), :]``."""

    def __init__(self, kernel_size, width_multipliers=(0.25, 0.5, 0.75, 1.0), strides=1, padding="same",
                 use_bias=True, universal=False, divisor=8, width=None, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check_pair("kernel_size", kernel_size)
        self.strides = check_pair("strides", strides)
        if self.strides[0] != self.strides[1]:
            fail("strides", "equal in both dims", self.strides)
        self.padding = check_padding(padding)
        self._init_weights(use_bias, {"depthwise_initializer": depthwise_initializer,
                                      "bias_initializer": bias_initializer})
        self._init_slimmable(width_multipliers, universal, divisor, width)

    def build(self, input_shape):
        self.in_channels = int(input_shape[-1])
        self.depthwise_kernel = self.add_weight("depthwise_kernel", (*self.kernel_size, self.in_channels, 1),
                                                initializer=self.depthwise_initializer)
        self.bias = (self.add_weight("bias", (self.in_channels,), initializer=self.bias_initializer)
                     if self.use_bias else None)
        super().build(input_shape)

    _full_out = property(lambda self: self.in_channels)
    slim_input = _slims_out = True  # channel c in, channel c out

    def _sliced(self, c_in, c_out):
        return self.depthwise_kernel[:, :, :c_in, :], (self.bias[:c_in] if self.use_bias else None)

    def _op(self, x, kernel, bias):
        y = tf.nn.depthwise_conv2d(x, kernel, strides=(1, *self.strides, 1), padding=self.padding.upper())
        return tf.nn.bias_add(y, bias) if bias is not None else y

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        spatial = conv_spatial(input_shape, self.kernel_size, self.strides, self.padding)
        return tf.TensorShape([input_shape[0], *spatial, input_shape[-1]])

    def madds(self, input_shape, output_shape, **state):
        c, _ = self.channels(self._state_width(self, state))
        return int(output_shape[1]) * int(output_shape[2]) * self.kernel_size[0] * self.kernel_size[1] * c

    def export_plain(self, width):
        _, weights = self._plain_weights(width)
        layer = keras.layers.DepthwiseConv2D(self.kernel_size, strides=self.strides, padding=self.padding,
                                             use_bias=self.use_bias, name=self.name)
        return layer, weights

    def get_config(self):
        return {**super().get_config(), "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, **self._weights_config()}


@keras.saving.register_keras_serializable(package="keras_layers")
class SlimmableDense(_SlicedWeights, keras.layers.Layer):
    """Dense layer using ``kernel[:c_in(w), :c_out(w)]``; a classifier keeps `slim_output=False`."""

    def __init__(self, units, width_multipliers=(0.25, 0.5, 0.75, 1.0), use_bias=True, slim_input=True,
                 slim_output=True, universal=False, divisor=8, width=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = check_int("units", units)
        self._init_weights(use_bias, {"kernel_initializer": kernel_initializer, "bias_initializer": bias_initializer},
                           slim_input, slim_output)
        self._init_slimmable(width_multipliers, universal, divisor, width)

    def build(self, input_shape):
        self.in_channels = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", (self.in_channels, self.units), initializer=self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.units,), initializer=self.bias_initializer) if self.use_bias else None
        super().build(input_shape)

    _full_out = property(lambda self: self.units)
    _slims_out = property(lambda self: self.slim_output)

    def _sliced(self, c_in, c_out):
        return self.kernel[:c_in, :c_out], (self.bias[:c_out] if self.use_bias else None)

    def _op(self, x, kernel, bias):
        y = tf.matmul(x, kernel)
        return y + bias if bias is not None else y

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        w = self.width if self.width not in (None, DYNAMIC) else self.max_width
        c_out = self.units if (not self.slim_output or self.width == DYNAMIC) else self._channels(self.units, w)
        return input_shape[:-1].concatenate([c_out])

    def madds(self, input_shape, output_shape, **state):
        c_in, c_out = self.channels(self._state_width(self, state))
        lead = math.prod(int(d) for d in tuple(input_shape)[1:-1])
        return lead * c_in * c_out

    def export_plain(self, width):
        width, weights = self._plain_weights(width)
        return keras.layers.Dense(self.channels(width)[1], use_bias=self.use_bias, name=self.name), weights

    def get_config(self):
        return {**super().get_config(), "units": self.units, **self._weights_config()}


# ------------------------------------------------------------------ switchable batch norm

@keras.saving.register_keras_serializable(package="keras_layers")
class SwitchableBatchNormalization(SlimmableMixin, keras.layers.Layer):
    """Batch norm with private statistics and affine parameters per width (S-BN).

    Width ``w_i`` owns ``gamma_i, beta_i, moving_mean_i, moving_variance_i`` of size ``c(w_i)``. With
    ``universal=True`` gamma/beta are shared (one full-size pair, sliced) and only the statistics are
    per width; any width in (0, 1] then trains on batch statistics, and inference needs a width of the
    list (whose statistics `pipelines.training.bn_recalibration.recalibrate_bn` can recompute).
    Normalises the last axis; ``trainable=False`` runs in inference mode, as Keras' BatchNormalization.
    """

    def __init__(self, width_multipliers=(0.25, 0.5, 0.75, 1.0), momentum=0.9, epsilon=1e-3, universal=False,
                 divisor=8, width=None, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(check_number("momentum", momentum, 0, 1, high_open=True))
        self.epsilon = float(check_number("epsilon", epsilon, 0, low_open=True))
        self.momentum_override = None  # set by BN recalibration (cumulative averages); not config
        self._init_slimmable(width_multipliers, universal, divisor, width)

    def build(self, input_shape):
        self.channels_full = int(input_shape[-1])
        self.gammas, self.betas, self.moving_means, self.moving_variances = [], [], [], []
        stat = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.MEAN)
        if self.universal:
            self.gammas = [self.add_weight("gamma", (self.channels_full,), initializer="ones")]
            self.betas = [self.add_weight("beta", (self.channels_full,), initializer="zeros")]
        for i, w in enumerate(self.width_multipliers):
            c = self._channels(self.channels_full, w)
            if not self.universal:
                self.gammas.append(self.add_weight(f"gamma_{i}", (c,), initializer="ones"))
                self.betas.append(self.add_weight(f"beta_{i}", (c,), initializer="zeros"))
            self.moving_means.append(self.add_weight(f"moving_mean_{i}", (c,), initializer="zeros", **stat))
            self.moving_variances.append(self.add_weight(f"moving_variance_{i}", (c,), initializer="ones", **stat))
        super().build(input_shape)

    def _affine(self, index, c):
        if self.universal:
            return self.gammas[0][:c], self.betas[0][:c]
        return self.gammas[index], self.betas[index]

    def slot_variables(self, width):
        """The variables private to `width` (statistics, and affine parameters unless universal)."""
        i = width_index(width, self.width_multipliers)
        if i is None:
            raise ValueError(f"width={width!r} has no statistics in {self.name}; "
                             f"width_multipliers={self.width_multipliers!r}")
        own = [self.moving_means[i], self.moving_variances[i]]
        return own if self.universal else [self.gammas[i], self.betas[i], *own]

    def _normalize(self, x, mean, var, gamma, beta):
        return (x - mean) * tf.math.rsqrt(var + self.epsilon) * gamma + beta

    def call(self, inputs, width=None, choice=None, training=None):
        if self.momentum_override is not None:  # BN recalibration: always accumulate batch statistics
            training = True
        elif not self.trainable:
            training = False
        training = bool(training) if not tf.is_tensor(training) else training
        width = self._resolve(width)
        x = tf.cast(inputs, tf.float32)
        if width == DYNAMIC:
            if choice is None:
                raise ValueError(f"{self.name}: width='dynamic' needs the gate's choice tensor")
            choice = tf.cast(choice, tf.float32)
            out = 0.0
            for i, w in enumerate(self.width_multipliers):
                c = self._channels(self.channels_full, w)
                gamma, beta = self._affine(i, c)
                y = self._normalize(x[..., :c], self.moving_means[i], self.moving_variances[i], gamma, beta)
                y = tf.pad(y, [[0, 0]] * (len(x.shape) - 1) + [[0, self.channels_full - c]])
                out += tf.reshape(choice[:, i], [-1] + [1] * (len(x.shape) - 1)) * y
            return out
        c = self._channels(self.channels_full, width)
        if x.shape[-1] is not None and int(x.shape[-1]) != c:
            raise ValueError(f"{self.name}: input has {x.shape[-1]} channels but width={width} needs {c}")
        i = width_index(width, self.width_multipliers)
        if i is None:  # universal width outside the list: batch statistics only
            if training is False:
                raise ValueError(f"width={width!r} has no batch-norm statistics in {self.name} "
                                 f"(inference needs one of width_multipliers={self.width_multipliers!r}; "
                                 f"add it there and recalibrate)")
            gamma, beta = self.gammas[0][:c], self.betas[0][:c]
            mean, var = tf.nn.moments(x, axes=list(range(len(x.shape) - 1)))
            return self._normalize(x, mean, var, gamma, beta)
        gamma, beta = self._affine(i, c)
        if training is False:
            return self._normalize(x, self.moving_means[i], self.moving_variances[i], gamma, beta)

        def train_branch():
            mean, var = tf.nn.moments(x, axes=list(range(len(x.shape) - 1)))
            m = self.momentum if self.momentum_override is None else self.momentum_override
            self.moving_means[i].assign(m * self.moving_means[i] + (1 - m) * mean)
            self.moving_variances[i].assign(m * self.moving_variances[i] + (1 - m) * var)
            return self._normalize(x, mean, var, gamma, beta)

        if training is True:
            return train_branch()
        return tf.cond(tf.cast(training, tf.bool), train_branch,
                       lambda: self._normalize(x, self.moving_means[i], self.moving_variances[i], gamma, beta))

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if self.width in (None, DYNAMIC):
            return input_shape
        return input_shape[:-1].concatenate([self._channels(self.channels_full, self.width)])

    def madds(self, input_shape, output_shape, **state):
        return 0

    def export_plain(self, width):
        """An ordinary `keras.layers.BatchNormalization` holding this width's parameters and statistics."""
        width = check_width(width, self.width_multipliers, False)
        i = width_index(width, self.width_multipliers)
        c = self._channels(self.channels_full, width)
        gamma, beta = self._affine(i, c)
        layer = keras.layers.BatchNormalization(momentum=self.momentum, epsilon=self.epsilon, name=self.name)
        weights = [tf.convert_to_tensor(gamma).numpy(), tf.convert_to_tensor(beta).numpy(),
                   self.moving_means[i].numpy(), self.moving_variances[i].numpy()]
        return layer, weights

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon, **self._slim_config()}
