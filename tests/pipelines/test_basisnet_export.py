
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import models
from keras_layers.models.basisnet_mobilenet_v3 import stages
from pipelines.export import ExportOptions, export_net, tflite
from pipelines.export.families import basisnet as exporter

SHAPE = (16, 16, 1)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def net():
    net = models.build("basisnet_mobilenet_v3", input_shape=SHAPE, num_classes=4, num_bases=3, width_multiplier=0.25,
                       last_channels=64, head_channels=64, preview_channels=32, preview_blocks=2,
                       synthesized=[3, 5, 6, 7, 8, 9], synthesize_depthwise=True)
    # one training-mode pass moves the BN statistics away from identity so outputs are not all tiny
    x = np.random.RandomState(1).randn(16, *SHAPE).astype("float32")
    for layer in net.layers:
        layer.trainable = True
    for _ in range(3):
        net(x, training=True)
    return net


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randn(5, *SHAPE).astype("float32")


@pytest.fixture(scope="module")
def converted(net):
    return exporter.convert(net)


def test_one_file_two_signatures_builtin_only(converted):
    tflite.assert_builtin_only(converted)
    sigs = tflite.Runner(converted).signatures()
    assert set(sigs) == {"preview", "specialist"}
    assert sorted(sigs["preview"]["inputs"]) == ["image"]
    assert sorted(sigs["preview"]["outputs"]) == ["coefficients", "preview_logits"]
    assert sorted(sigs["specialist"]["inputs"]) == ["coefficients", "image"]
    assert sorted(sigs["specialist"]["outputs"]) == ["logits"]


def test_parity_of_both_signatures(net, images, converted):
    runner = tflite.Runner(converted)
    keras_out = net(images, training=False)
    first = runner.run({"image": images}, signature="preview")
    p = tflite.parity(keras_out["preview_logits"].numpy(), first["preview_logits"])
    assert p["max_abs_error"] < 1e-4 and p["top1_agreement"] == 1.0
    np.testing.assert_allclose(first["coefficients"], keras_out["coefficients"].numpy(), atol=1e-5)
    second = runner.run({"image": images, "coefficients": first["coefficients"]}, signature="specialist")
    p = tflite.parity(keras_out["logits"].numpy(), second["logits"])
    assert p["max_abs_error"] < 1e-4 and p["top1_agreement"] == 1.0
    # any coefficients, not only the preview's: the kernels are synthesized at run time in the app
    rs = np.random.RandomState(2)
    other = _softmax(rs.randn(*first["coefficients"].shape) * 3).astype("float32")
    _, specialist = stages(net)
    ref = specialist([images, other], training=False).numpy()
    got = runner.run({"image": images, "coefficients": other}, signature="specialist")["logits"]
    assert tflite.parity(ref, got)["max_abs_error"] < 1e-4


def test_bad_threshold_and_int8_are_refused_before_conversion(net, images, tmp_path):
    dataset = {"input_shape": list(SHAPE), "num_classes": 4, "normalization": {}}
    with pytest.raises(ValueError, match="threshold=1.5"):
        export_net(net, tmp_path / "b", ExportOptions(threshold=1.5), dataset, validation=(images, np.zeros(5, int)))
    with pytest.raises(tflite.ConversionError, match="quantize='int8'.*Basis"):
        export_net(net, tmp_path / "b", ExportOptions(quantize="int8"), dataset, validation=(images, np.zeros(5, int)))
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="not a BasisNet"):
        exporter.convert(keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(2)]))


def test_coefficient_groups_are_picked_on_xnnpack(net):
    """Each synthesized layer's coefficients are a stride-1 slice of the flattened (groups x bases) vector: XNNPACK
    takes it (a slice that shrinks the group axis stayed with LiteRT's reference kernel, one per group); what is
    left outside is the depthwise convolutions with a run-time filter only."""
    d = tflite.delegation(tflite.convert(net))
    assert set(d["not_delegated"]) <= {"DEPTHWISE_CONV_2D"}, d
