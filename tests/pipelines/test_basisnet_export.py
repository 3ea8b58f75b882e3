import json

import numpy as np
import pytest

from keras_layers import _env  # noqa: F401
import tf_keras as keras

from keras_layers import models
from keras_layers.models.basisnet_mobilenet_v3 import stages
from pipelines.export import tflite
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
def exported(net, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    return out, exporter.export(net, out, threshold=0.6)


def test_one_file_two_signatures_builtin_only(exported):
    out, manifest = exported
    data = (out / manifest["tflite"]).read_bytes()
    tflite.assert_builtin_only(data)
    sigs = tflite.Runner(data).signatures()
    assert set(sigs) == {"preview", "specialist"}
    assert sorted(sigs["preview"]["inputs"]) == ["image"]
    assert sorted(sigs["preview"]["outputs"]) == ["coefficients", "probabilities"]
    assert sorted(sigs["specialist"]["inputs"]) == ["coefficients", "image"]
    saved = json.loads((out / "basisnet.json").read_text())
    assert saved == manifest and saved["threshold"] == 0.6
    assert saved["madds"]["full"] == saved["madds"]["preview"] + saved["madds"]["specialist"]


def test_parity_of_both_signatures(net, images, exported):
    out, manifest = exported
    runner = tflite.Runner(out / manifest["tflite"])
    keras_out = net(images, training=False)
    first = runner.run({"image": images}, signature="preview")
    p = tflite.parity(_softmax(keras_out["preview_logits"].numpy()), first["probabilities"])
    assert p["max_abs_error"] < 1e-4 and p["top1_agreement"] == 1.0
    np.testing.assert_allclose(first["coefficients"], keras_out["coefficients"].numpy(), atol=1e-5)
    second = runner.run({"image": images, "coefficients": first["coefficients"]}, signature="specialist")
    p = tflite.parity(_softmax(keras_out["logits"].numpy()), second["probabilities"])
    assert p["max_abs_error"] < 1e-4 and p["top1_agreement"] == 1.0
    # any coefficients, not only the preview's: the kernels are synthesized at run time in the app
    rs = np.random.RandomState(2)
    other = _softmax(rs.randn(*first["coefficients"].shape) * 3).astype("float32")
    _, specialist = stages(net)
    ref = _softmax(specialist([images, other], training=False).numpy())
    got = runner.run({"image": images, "coefficients": other}, signature="specialist")["probabilities"]
    assert tflite.parity(ref, got)["max_abs_error"] < 1e-4


def test_bad_threshold_and_int8_are_refused_before_conversion(net, tmp_path):
    with pytest.raises(ValueError, match="threshold=1.5"):
        exporter.export(net, tmp_path, threshold=1.5)
    with pytest.raises(tflite.ConversionError, match="quantize='int8'.*Basis"):
        exporter.export(net, tmp_path, quantize="int8")
    with pytest.raises(ValueError, match="not a BasisNet"):
        exporter.convert(keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(2)]))
