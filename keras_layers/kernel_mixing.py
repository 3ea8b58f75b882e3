"""Kernel mixing: the one primitive behind CondConv and BasisNet's model synthesis.

For every example ``b`` the op applies the kernel ``sum_n c[b, n] * W[n]`` (``W`` has the expert /
basis axis first) with an ordinary convolution / depthwise convolution / matmul. CondConv (Yang et
al., 2019) computes ``c`` with a router inside the layer; BasisNet (Zhang et al., 2021) receives it
from a lightweight model. `keras_layers.basis` and `keras_layers.condconv` are thin layers over the
functions of this module; nothing else implements the per-example kernel.

    y = conv2d(x, c, W, strides=(1, 1), padding="same")          # W: (E, kh, kw, C_in, C_out)
    y = depthwise_conv2d(x, c, W, strides=(2, 2))                # W: (E, kh, kw, C, 1)
    y = dense(x, c, W)                                           # W: (E, C_in, C_out)

`method="auto"` picks the implementation from the op and the *static* batch size (see
`choose_conv_method` / `choose_depthwise_method`); every method computes the same function and can be
forced by name (the tests compare them all against a NumPy loop):

conv2d methods
  ``einsum``    1x1 only: a batched matmul ``(B, HW, C_in) x (B, C_in, C_out)`` with the mixed kernel
                (a strided 1x1 first subsamples); at batch 1 the kernel is mixed as (C_out, C_in)
                (see below).
  ``map_fn``    per-example ``tf.nn.conv2d`` in a ``tf.map_fn`` (dynamic batch).
  ``unrolled``  per-example ``tf.nn.conv2d`` unrolled over a static batch (split / conv / concat).
  ``grouped``   batch folded into channels, one grouped convolution with ``groups=B``.
  ``im2col``    shifted slices + concat, then a (batched) matmul with the mixed kernel.
  ``folded``    batch 1 only: one plain ``tf.nn.conv2d`` with the folded kernel.
  ``experts``   the naive mixture-of-experts formula: E convolutions, then mix the outputs.
depthwise_conv2d methods
  ``batch_channels``  batch folded into channels of one depthwise conv (any batch).
  ``folded``          batch 1 only: one plain depthwise conv with the folded kernel.
  ``experts``         E depthwise convolutions (as one conv with E*C channels), then mix.
dense methods
  ``einsum`` (per-example mixed kernel, ``bi,bio->bo``) and ``experts`` (``x @ W_n`` for all n, then mix).

Choices, measured on this 2-core CPU (TF 2.21 / tf_keras, LiteRT 2.3; numbers from a quiet moment,
ratios to a static layer of the same shape timed in the same run; `python -m benchmarks kernel_mixing`
reproduces them, see `benchmarks/bench_kernel_mixing.py`).

Training, forward+backward, B=32, E=8, 32x32x64 -> 64, traced with an unknown batch as in `fit`:

* 1x1: ``einsum`` 0.8x static (the batched matmul beats the 1x1 conv); ``experts`` 27x.
* depthwise 3x3: ``batch_channels`` 1.45x; ``experts`` 19x.
* 3x3, dynamic batch: ``map_fn`` 1.44x, ``grouped`` 1.61x (and TF has no float64 grouped-conv
  gradient on CPU), ``im2col`` 7.1x (memory: kh*kw copies of the input), ``experts`` 17x.
  Static batch: ``unrolled`` 1.21x. Auto: ``unrolled`` for static batches up to 64, else ``map_fn``.
* On a GPU or TPU (`device_kind`, read when the layer is traced) auto takes ``grouped`` for kxk at any
  batch but 1: one grouped convolution instead of B per-example ones run in sequence (not yet timed on a
  GPU here: `tests/gpu/run_gpu_checks.sh` measures it); 1x1 and depthwise are the CPU choices there too.

Batch 1 (the phone; `pipelines.export.tflite` converts at batch 1), LiteRT + XNNPACK, 1 thread, 4 layers:
XNNPACK does not delegate a ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` whose filter is computed at run
time, but it does delegate ``BATCH_MATMUL`` / ``FULLY_CONNECTED``; it takes a ``STRIDED_SLICE`` only
with strides of 1 and no shrunk axis and a ``CONCATENATION`` of at most 5 inputs, so the batch-1
graphs drop the batch axis by reshape, take strided windows as stride-1 slices of a reshape and
concatenate at most 5 tensors at a time: every operator but the depthwise convs with a run-time filter
runs on XNNPACK
(`pipelines.export.tflite.delegation`). Issue 17's measurements and the variants tried and rejected
are in the docstring of `benchmarks/bench_kernel_mixing.py`.

* 3x3 at 32x32x32: static 0.33 ms; ``im2col`` 0.66-0.70 ms (2x); ``folded`` conv 6.2 ms (19x).
  At 32x32x64: static 4.95, ``im2col`` 7.84 ms (1.6x), 9 accumulated matmuls 30 ms (their
  TRANSPOSE / ADD_N are not delegated). Auto at batch 1: ``im2col``.
* 1x1 at 32x32x32: static 0.048 ms; ``einsum`` (one BATCH_MATMUL) 0.057 ms (1.2x); ``folded`` 0.26 ms.
  It is one BATCH_MATMUL over (1, 1, H*W, C_in) with the kernel mixed as (C_out, C_in) (packed without
  a transpose); (1, H, W, C_in) makes XNNPACK run H small products instead (5-25% slower per layer).
  im2col at batch 1 is one such product per group of <= 5 taps, summed (3x3: ~10% faster than one
  9-input concatenation, which XNNPACK does not take).
* depthwise 3x3 at 32x32x64: static 0.14 ms; ``folded`` 0.44 ms (3x); shifted multiply-adds
  2.0 ms; stacked taps + SUM 2.4 ms. Auto at batch 1: ``folded``.
* Whatever the method, mixing reads E times the kernel's weights per example (one
  FULLY_CONNECTED (1, E) x (E, kernel size)); at small spatial sizes (the 4x4 maps of a 32x32
  MobileNet's last stages, or a wide 1x1 head) that memory traffic, not the convolution, dominates:
  16 MB of float32 bases at `condconv_mobilenet_v2`'s defaults, read at every inference.
* ``experts`` at batch 1 (`mix_expert_outputs`): E static convolutions as one op with E * C_out outputs
  (depthwise: the input concatenated E times), then one broadcast MUL by the coefficients spread over the
  channels and E - 1 ADDs of channel blocks - all on XNNPACK, and no kernel is read per example. It costs E
  times the layer's MAdds: auto takes it for E = 1 only (a CondConv with one expert: a static conv and
  a per-example scale), where a whole `condconv_mobilenet_v2` at 32x32 runs in 0.22-0.24 ms instead of
  0.35-0.37 ms (its static twin: 0.21 ms). At E = 2 every split of the layers between it and the mixed
  kernel measured within noise (0.35-0.39 ms); a 1-expert layer mixed by einsum was as slow as E = 2.

All methods use only builtin TFLite ops at batch 1 (MEAN, FULLY_CONNECTED / BATCH_MATMUL,
STRIDED_SLICE, CONCATENATION, PAD, RESHAPE, ADD, MUL, CONV_2D, DEPTHWISE_CONV_2D).
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import numpy as np
import tensorflow as tf

CONV_METHODS = ("auto", "einsum", "map_fn", "unrolled", "grouped", "im2col", "folded", "experts")
DEPTHWISE_METHODS = ("auto", "batch_channels", "folded", "experts")
DENSE_METHODS = ("auto", "einsum", "experts")
# Unrolling a static batch larger than this makes graphs (and compile times) large; map_fn instead.
MAX_UNROLLED_BATCH = 64


# ---------------------------------------------------------------- helpers

# The branching below is on static shapes and settings only: plain Python, no autograph conversion
# (keeps traced graphs small and tracing fast inside `model.fit` / TFLite conversion).
_static_python = tf.autograph.experimental.do_not_convert


@_static_python
def mix_kernels(coefficients, kernel):
    """Per-example kernels ``(B, *kernel.shape[1:])`` = ``sum_n coefficients[:, n] * kernel[n]``.

    Written as a 2-D matmul so TFLite gets one FULLY_CONNECTED with a constant weight (which
    dynamic-range quantization handles) instead of an einsum.
    """
    single = kernel.shape[1:]
    flat = tf.reshape(kernel, (kernel.shape[0], -1))
    mixed = tf.matmul(coefficients, flat)
    return tf.reshape(mixed, (-1, *single))


@_static_python
def mix_expert_outputs(y, coefficients, experts):
    """``sum_n coefficients[:, n] * y_n`` where `y` (B, ..., E * C) holds expert n's output in channels
    ``n*C .. (n+1)*C - 1`` (the ``experts`` methods' layout).

    At a static batch of 1 (the phone) it is written with ops XNNPACK delegates: the coefficients are spread
    over the channels by one FULLY_CONNECTED with a constant 0/1 matrix, one broadcast MUL scales every
    expert's channels, and the E channel blocks are added (stride-1 slices); with one expert it is a
    single MUL. Otherwise (training) one einsum.
    """
    c = y.shape[-1] // experts
    if static_batch(y) == 1:
        if experts == 1:
            return y * tf.reshape(coefficients, (1,) * y.shape.rank)
        spread = tf.constant(np.kron(np.eye(experts), np.ones((1, c))), dtype=coefficients.dtype)
        scaled = y * tf.reshape(tf.matmul(coefficients, spread), (1,) * (y.shape.rank - 1) + (experts * c,))
        out = scaled[..., :c]
        for n in range(1, experts):
            out = out + scaled[..., n * c:(n + 1) * c]
        return out
    split = tf.reshape(y, (-1, *y.shape[1:-1], experts, c))
    return tf.einsum("b...nc,bn->b...c", split, coefficients)


def static_batch(x):
    """The static batch size of `x`, or None when it is only known at run time."""
    return x.shape[0] if x.shape.rank and x.shape[0] is not None else None


def output_size(size, kernel, stride, padding, dilation=1):
    """Spatial output size of a convolution (Keras conventions)."""
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return math.ceil(size / stride)
    return math.ceil((size - effective + 1) / stride)


def _same_pads(size, kernel, stride, dilation):
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _conv(x, kernel, strides, padding, dilation):
    return tf.nn.conv2d(x, kernel, strides=(1, *strides, 1), padding=padding.upper(),
                        dilations=(1, *dilation, 1))


def _depthwise(x, kernel, strides, padding, dilation):
    return tf.nn.depthwise_conv2d(x, kernel, strides=(1, *strides, 1), padding=padding.upper(),
                                  dilations=dilation)


def _spread_taps(kernel, dilation):
    """`kernel` (kh, kw, ...) with dilation - 1 zeros between its taps: a plain convolution with it
    (same padding rule, same output size) is the dilated convolution with `kernel`."""
    for axis, d in enumerate(dilation):
        if d == 1:
            continue
        size = kernel.shape[axis]
        spread = tf.pad(tf.expand_dims(kernel, axis + 1),
                        [[0, 0]] * (axis + 1) + [[0, d - 1]] + [[0, 0]] * (kernel.shape.rank - axis - 1))
        shape = tf.concat([tf.shape(kernel)[:axis], [size * d], tf.shape(kernel)[axis + 1:]], axis=0)
        kernel = tf.reshape(spread, shape)
        kernel = kernel[:(size - 1) * d + 1] if axis == 0 else kernel[:, :(size - 1) * d + 1]
    return kernel


# ---------------------------------------------------------------- method choice

DEVICE_KINDS = ("cpu", "gpu", "tpu")
_forced_device = []  # the innermost `on_device(kind)` block's kind, if any


def device_kind():
    """The kind of device the layers train on: "tpu" or "gpu" when TensorFlow lists a logical device of that
    kind (those run the replicas of every strategy the platform builds; `--no-gpu` hides the GPUs), else
    "cpu"; inside `on_device(kind)` that kind. Read when a layer is traced, not when it is built."""
    if _forced_device:
        return _forced_device[-1]
    for kind in ("tpu", "gpu"):
        if tf.config.list_logical_devices(kind.upper()):
            return kind
    return "cpu"


class on_device:
    """``with on_device("gpu"): ...`` traces the layers inside as on a device of that kind (the method
    choice only; the ops run wherever TensorFlow places them): benchmarks and CPU tests of the
    accelerator methods."""

    def __init__(self, kind):
        if kind not in DEVICE_KINDS:
            raise ValueError(f"unknown device kind={kind!r}; valid choices: {', '.join(DEVICE_KINDS)}")
        self.kind = kind

    def __enter__(self):
        _forced_device.append(self.kind)
        return self

    def __exit__(self, *exc):
        _forced_device.pop()


def choose_conv_method(kernel_size, batch, device="cpu", experts=None):
    """The measured-best conv2d method for `kernel_size` (kh, kw), static `batch` (None = dynamic) and the
    `device` kind the layer trains on ("cpu", "gpu", "tpu"; `device_kind()`). Batch 1 is the phone's
    path on every device: with one expert (`experts` = E = 1) ``experts`` - a static convolution and one
    MUL, which XNNPACK runs whole (session 8: a CondConv MobileNetV2 with E = 1 at 32x32 in 0.22 ms instead
    of 0.35-0.37 ms; static twin 0.21 ms; at E = 2 the E-wide static path measured the same as the mixed
    kernel, so the mixed kernel stays). On a GPU or TPU a kxk kernel takes ``grouped`` - one grouped
    convolution over the batch, which cuDNN and XLA run as one op, where ``map_fn`` / ``unrolled`` run B
    convolutions one after the other; 1x1 takes ``einsum`` (a batched matmul) everywhere."""
    if device not in DEVICE_KINDS:
        raise ValueError(f"unknown device kind={device!r}; valid choices: {', '.join(DEVICE_KINDS)}")
    if batch == 1 and experts == 1:
        return "experts"
    if tuple(kernel_size) == (1, 1):
        return "einsum"
    if batch == 1:
        return "im2col"
    if device != "cpu":
        return "grouped"
    if batch is not None and batch <= MAX_UNROLLED_BATCH:
        return "unrolled"
    return "map_fn"


def choose_depthwise_method(batch, experts=None):
    """The measured-best depthwise method for static `batch` (None = dynamic) and E = `experts`."""
    if batch == 1:
        return "experts" if experts == 1 else "folded"
    return "batch_channels"


def choose_dense_method(batch, experts=None):
    """``experts`` (one static matmul and one MUL) for one expert at batch 1, else ``einsum``."""
    return "experts" if batch == 1 and experts == 1 else "einsum"


# ---------------------------------------------------------------- conv2d

# XNNPACK (LiteRT's default delegate) takes a STRIDED_SLICE only with strides of 1 and no shrunk axis,
# and a CONCATENATION of at most 5 inputs: the batch-1 graphs below are written within those limits.
MAX_CONCAT_INPUTS = 5


def _concat(tensors, axis=-1):
    """`tf.concat` as a tree of concatenations of at most MAX_CONCAT_INPUTS tensors (same result)."""
    while len(tensors) > MAX_CONCAT_INPUTS:
        tensors = [t[0] if len(t) == 1 else tf.concat(t, axis)
                   for t in (tensors[i:i + MAX_CONCAT_INPUTS] for i in range(0, len(tensors), MAX_CONCAT_INPUTS))]
    return tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis)


def _strided_window(x, start, stride, size):
    """``x[:, r::sh, c::sw, :]`` limited to `size` (oh, ow) rows and columns, with slices of stride 1:
    x is reshaped to (B, H/sh, sh, W/sw, sw*C) (padded at the end to multiples of the strides) and
    the window is one stride-1 slice of that, so XNNPACK delegates it."""
    (r, c), (sh, sw), (oh, ow) = start, stride, size
    if (sh, sw) == (1, 1):
        return x[:, r:r + oh, c:c + ow, :]
    h, w, ch = x.shape[1], x.shape[2], x.shape[3]
    hq, wq = max(math.ceil(h / sh), r // sh + oh), max(math.ceil(w / sw), c // sw + ow)
    if (hq * sh, wq * sw) != (h, w):
        x = tf.pad(x, [[0, 0], [0, hq * sh - h], [0, wq * sw - w], [0, 0]])
    phases = tf.reshape(x, (-1, hq, sh, wq, sw * ch))
    window = phases[:, r // sh:r // sh + oh, r % sh:r % sh + 1, c // sw:c // sw + ow, (c % sw) * ch:(c % sw + 1) * ch]
    return tf.reshape(window, (-1, oh, ow, ch))


def _im2col(x, kernel_size, strides, padding, dilation):
    """Patches ``(B, oh, ow, kh*kw*C)`` (tap-major, channel-minor) from shifted windows."""
    return _concat(_im2col_taps(x, kernel_size, strides, padding, dilation))


def _im2col_taps(x, kernel_size, strides, padding, dilation):
    """The kh*kw shifted windows ``(B, oh, ow, C)`` of `_im2col`, tap-major."""
    kh, kw = kernel_size
    h, w = x.shape[1], x.shape[2]
    if padding == "same":
        (pt, pb), (pl, pr) = _same_pads(h, kh, strides[0], dilation[0]), _same_pads(w, kw, strides[1], dilation[1])
        if pt or pb or pl or pr:
            x = tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    oh = output_size(h, kh, strides[0], padding, dilation[0])
    ow = output_size(w, kw, strides[1], padding, dilation[1])
    return [_strided_window(x, (i * dilation[0], j * dilation[1]), strides, (oh, ow))
            for i in range(kh) for j in range(kw)]


def _product_batch1(rows, coefficients, kernel):
    """``rows`` (1, M, K) times one example's mixed kernel -> (1, M, C_out), for LiteRT + XNNPACK.

    `kernel` (E, ..., C_in, C_out) with K = its middle size (tap-major, channel-minor, as `_im2col`). One
    BATCH_MATMUL ``(1, 1, M, K) x (1, 1, C_out, K)^T``: the kernel is mixed in the (C_out, K) layout (the
    bases transposed once, a constant after conversion) that XNNPACK packs without a transpose, and the
    batch axes are 1 x 1 on purpose: from (1, M, K) - or the einsum's (1, H, W, C_in) - the converter
    folds the reshapes into a BATCH_MATMUL over (1, H) batches of W rows, which XNNPACK runs as H small
    products (4-6% of condconv_mobilenet_v2's time; see bench_kernel_mixing).
    """
    m, k, c_out, rank = rows.shape[1], rows.shape[2], kernel.shape[-1], kernel.shape.rank
    mixed_t = mix_kernels(coefficients, tf.transpose(kernel, (0, rank - 1, *range(1, rank - 1))))  # (1, C_out, ...)
    y = tf.matmul(tf.reshape(rows, (1, 1, m, k)), tf.reshape(mixed_t, (1, 1, c_out, k)), transpose_b=True)
    return tf.reshape(y, (1, m, c_out))


@_static_python
def conv2d(inputs, coefficients, kernel, strides=(1, 1), padding="same", dilation_rate=(1, 1), method="auto"):
    """Per-example convolution with kernels ``sum_n coefficients[b, n] * kernel[n]``.

    inputs (B, H, W, C_in); coefficients (B, E); kernel (E, kh, kw, C_in, C_out) -> (B, oh, ow, C_out).
    """
    strides, dilation = _pair(strides), _pair(dilation_rate)
    kh, kw, c_in, c_out = kernel.shape[1:]
    batch = static_batch(inputs)
    if method == "auto" or (method in ("folded", "unrolled") and batch is None):
        # A batch-dependent method forced on a layer still has to trace with an unknown batch
        # (functional model construction, `model.fit`): there the measured choice is used.
        method = choose_conv_method((kh, kw), batch, device_kind() if batch != 1 else "cpu", kernel.shape[0])
    if method not in CONV_METHODS:
        raise ValueError(f"unknown conv2d method={method!r}; valid choices: {', '.join(CONV_METHODS)}")

    if method == "experts":
        stacked = tf.reshape(tf.transpose(kernel, (1, 2, 3, 0, 4)), (kh, kw, c_in, -1))
        return mix_expert_outputs(_conv(inputs, stacked, strides, padding, dilation), coefficients, kernel.shape[0])

    if method == "einsum":
        if (kh, kw) != (1, 1):
            raise ValueError(f"conv2d method='einsum' needs a 1x1 kernel. Received: kernel_size={(kh, kw)}")
        x = inputs
        if strides != (1, 1):
            oh = output_size(x.shape[1], 1, strides[0], padding)
            ow = output_size(x.shape[2], 1, strides[1], padding)
            x = _strided_window(x, (0, 0), strides, (oh, ow))
        oh, ow = x.shape[1], x.shape[2]
        if batch == 1 and oh is not None and ow is not None:
            y = _product_batch1(tf.reshape(x, (1, oh * ow, c_in)), coefficients, kernel)
            return tf.reshape(y, (1, oh, ow, c_out))
        mixed = mix_kernels(coefficients, kernel)
        if oh is None or ow is None:
            return tf.einsum("bhwi,bio->bhwo", x, tf.reshape(mixed, (-1, c_in, c_out)))
        # a plain batched matmul over the (B, H*W, C_in) rows (instead of TF's Einsum kernel and gradient)
        y = tf.matmul(tf.reshape(x, (-1, oh * ow, c_in)), tf.reshape(mixed, (-1, c_in, c_out)))
        return tf.reshape(y, (-1, oh, ow, c_out))
    if method == "im2col" and batch == 1:
        # One product per group of <= MAX_CONCAT_INPUTS taps, summed: every operator stays on XNNPACK
        # without a second copy of the patches (a tree of concatenations copies them twice).
        taps = _im2col_taps(inputs, (kh, kw), strides, padding, dilation)
        oh, ow = taps[0].shape[1], taps[0].shape[2]
        by_tap = tf.reshape(kernel, (kernel.shape[0], kh * kw, c_in, c_out))
        y = None
        for start in range(0, len(taps), MAX_CONCAT_INPUTS):
            group = taps[start:start + MAX_CONCAT_INPUTS]
            rows = tf.reshape(_concat(group), (1, oh * ow, len(group) * c_in))
            part = _product_batch1(rows, coefficients, by_tap[:, start:start + len(group)])
            y = part if y is None else y + part
        return tf.reshape(y, (1, oh, ow, c_out))
    if method == "im2col":
        patches = _im2col(inputs, (kh, kw), strides, padding, dilation)
        oh, ow = patches.shape[1], patches.shape[2]
        flat = tf.reshape(patches, (-1, oh * ow, kh * kw * c_in))
        y = tf.matmul(flat, tf.reshape(mix_kernels(coefficients, kernel), (-1, kh * kw * c_in, c_out)))
        return tf.reshape(y, (-1, oh, ow, c_out))
    mixed = mix_kernels(coefficients, kernel)  # (B, kh, kw, C_in, C_out)
    if method == "folded":
        if batch != 1:
            raise ValueError(f"conv2d method='folded' needs a static batch of 1. Received: batch={batch}")
        return _conv(inputs, tf.reshape(mixed, kernel.shape[1:]), strides, padding, dilation)
    if method == "unrolled":
        xs = tf.split(inputs, batch, axis=0)
        ks = tf.unstack(mixed, num=batch, axis=0)
        return tf.concat([_conv(xi, ki, strides, padding, dilation) for xi, ki in zip(xs, ks)], axis=0)
    if method == "map_fn":
        oh = output_size(inputs.shape[1], kh, strides[0], padding, dilation[0])
        ow = output_size(inputs.shape[2], kw, strides[1], padding, dilation[1])
        y = tf.map_fn(lambda a: _conv(a[0][None], a[1], strides, padding, dilation)[0], (inputs, mixed),
                      fn_output_signature=tf.TensorSpec((oh, ow, c_out), inputs.dtype))
        return y
    # grouped: (B, H, W, C) -> (1, H, W, B*C); filter (kh, kw, C_in, B*C_out); groups = B.
    h, w = inputs.shape[1], inputs.shape[2]
    x = tf.reshape(tf.transpose(inputs, (1, 2, 0, 3)), (1, h, w, -1))
    k = tf.reshape(tf.transpose(mixed, (1, 2, 3, 0, 4)), (kh, kw, c_in, -1))
    y = _conv(x, k, strides, padding, dilation)
    y = tf.reshape(y, (y.shape[1], y.shape[2], -1, c_out))
    return tf.transpose(y, (2, 0, 1, 3))


# ---------------------------------------------------------------- depthwise

@_static_python
def depthwise_conv2d(inputs, coefficients, kernel, strides=(1, 1), padding="same", dilation_rate=(1, 1),
                     method="auto"):
    """Per-example depthwise convolution; kernel (E, kh, kw, C, 1) (depth multiplier 1)."""
    strides, dilation = _pair(strides), _pair(dilation_rate)
    kh, kw, c = kernel.shape[1:4]
    batch = static_batch(inputs)
    if method == "auto" or (method == "folded" and batch is None):
        method = choose_depthwise_method(batch, kernel.shape[0])
    if method not in DEPTHWISE_METHODS:
        raise ValueError(f"unknown depthwise method={method!r}; valid choices: {', '.join(DEPTHWISE_METHODS)}")
    if method == "experts":
        e = kernel.shape[0]
        # channel n*C + c sees expert n (at batch 1 a CONCATENATION, which XNNPACK takes and TILE it does not)
        x = tf.tile(inputs, (1, 1, 1, e)) if batch != 1 else inputs if e == 1 else _concat([inputs] * e)
        k = tf.reshape(tf.transpose(kernel, (1, 2, 0, 3, 4)), (kh, kw, e * c, 1))
        return mix_expert_outputs(_depthwise(x, k, strides, padding, dilation), coefficients, e)
    mixed = mix_kernels(coefficients, kernel)  # (B, kh, kw, C, 1)
    if method == "folded":
        if batch != 1:
            raise ValueError(f"depthwise method='folded' needs a static batch of 1. Received: batch={batch}")
        return _depthwise(inputs, tf.reshape(mixed, kernel.shape[1:]), strides, padding, dilation)
    h, w = inputs.shape[1], inputs.shape[2]
    x = tf.reshape(tf.transpose(inputs, (1, 2, 0, 3)), (1, h, w, -1))
    k = tf.reshape(tf.transpose(mixed, (1, 2, 0, 3, 4)), (kh, kw, -1, 1))
    if max(dilation) > 1:  # TF's dilated depthwise needs a static channel count, which B*C is not in `fit`
        k, dilation = _spread_taps(k, dilation), (1, 1)
    y = _depthwise(x, k, strides, padding, dilation)
    y = tf.reshape(y, (y.shape[1], y.shape[2], -1, c))
    return tf.transpose(y, (2, 0, 1, 3))


# ---------------------------------------------------------------- dense

@_static_python
def dense(inputs, coefficients, kernel, method="auto"):
    """Per-example matmul; inputs (B, C_in), kernel (E, C_in, C_out) -> (B, C_out)."""
    if method == "auto":
        method = choose_dense_method(static_batch(inputs), kernel.shape[0])
    if method not in DENSE_METHODS:
        raise ValueError(f"unknown dense method={method!r}; valid choices: {', '.join(DENSE_METHODS)}")
    e, c_in, c_out = kernel.shape
    if method == "experts":
        y = tf.matmul(inputs, tf.reshape(tf.transpose(kernel, (1, 0, 2)), (c_in, e * c_out)))
        return mix_expert_outputs(y, coefficients, e)
    mixed = mix_kernels(coefficients, kernel)  # (B, C_in, C_out)
    return tf.squeeze(tf.matmul(inputs[:, None, :], mixed), axis=1)
