"""The training method of kernel mixing is chosen for the device kind the layer is traced for: on a GPU or
TPU a kxk kernel takes one grouped convolution, on the CPU the measured CPU choices; batch 1 (the phone's
export path) is the same everywhere. Forced here on the CPU with `kernel_mixing.on_device`."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf

from keras_layers import kernel_mixing
from keras_layers.basis import BasisConv2D

from kernel_mixing_reference import data, np_reference  # noqa: E402


@pytest.mark.parametrize("kernel, batch, device, method", [
    ((3, 3), 8, "cpu", "unrolled"), ((3, 3), None, "cpu", "map_fn"), ((3, 3), 128, "cpu", "map_fn"),
    ((3, 3), 8, "gpu", "grouped"), ((3, 3), None, "gpu", "grouped"), ((3, 3), 128, "tpu", "grouped"),
    ((3, 3), 1, "gpu", "im2col"), ((3, 3), 1, "tpu", "im2col"), ((1, 1), 8, "gpu", "einsum"),
])
def test_method_per_device_kind(kernel, batch, device, method):
    assert kernel_mixing.choose_conv_method(kernel, batch, device) == method


def test_device_kind_is_the_listed_devices_unless_forced():
    assert kernel_mixing.device_kind() == ("gpu" if tf.config.list_logical_devices("GPU") else "cpu")
    with kernel_mixing.on_device("tpu"):
        with kernel_mixing.on_device("gpu"):
            assert kernel_mixing.device_kind() == "gpu"
        assert kernel_mixing.device_kind() == "tpu"
    with pytest.raises(ValueError, match="unknown device kind='npu'"):
        kernel_mixing.on_device("npu")
    with pytest.raises(ValueError, match="unknown device kind='npu'"):
        kernel_mixing.choose_conv_method((3, 3), 4, "npu")


def _output_and_grads(layer, x, c, batch_spec):
    """Outputs and gradients (of x, c and the kernel) of a traced step. Under XLA (`jit_compile`): TensorFlow
    has no CPU kernel for the gradient of a grouped convolution (GPUs and XLA have one); XLA is what a TPU
    runs anyway. The batch is static there; `batch_spec` None is the unknown batch of `fit`'s trace."""
    signature = [tf.TensorSpec((batch_spec, *x.shape[1:])), tf.TensorSpec((batch_spec, c.shape[1]))]
    forward = tf.function(lambda a, b: layer(a, b), input_signature=signature)

    @tf.function(jit_compile=True)
    def step(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            y = layer(a, b)
            loss = tf.reduce_sum(y * tf.cos(y))
        return tape.gradient(loss, [a, b, layer.kernel])

    x, c = tf.constant(x), tf.constant(c)
    return forward(x, c).numpy(), [g.numpy() for g in step(x, c)], forward


def test_auto_on_gpu_is_grouped_and_computes_the_same_outputs_and_gradients(monkeypatch):
    batch_spec = None  # the forward pass with an unknown batch as in `fit`; the XLA step's batch is static
    layer = BasisConv2D(5, 3, num_bases=3, strides=2, padding="same")
    x, c = data(4, (7, 6, 3), 3)
    layer(x, c)
    expected_y, expected_grads, _ = _output_and_grads(layer, x, c, batch_spec)  # CPU choice
    chosen = []
    choose = kernel_mixing.choose_conv_method
    monkeypatch.setattr(kernel_mixing, "choose_conv_method",
                        lambda *a: chosen.append(choose(*a)) or chosen[-1])
    with kernel_mixing.on_device("gpu"):
        y, grads, fn = _output_and_grads(layer, x, c, batch_spec)
    assert chosen == ["grouped", "grouped"]  # the forward trace and the XLA step's
    ops = {op.type for op in fn.get_concrete_function().graph.get_operations()}
    assert "Conv2D" in ops and not {"While", "Split", "SplitV"} & ops  # one conv, no per-example loop
    np.testing.assert_allclose(y, np_reference(layer, x, c), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
