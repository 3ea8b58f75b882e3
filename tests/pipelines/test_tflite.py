import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from pipelines.export import tflite

L = keras.layers


def tiny(shape=(8, 8, 3)):
    inp = keras.Input(shape, name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3)(x))


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).rand(6, 8, 8, 3).astype("float32")


@pytest.mark.parametrize("mode,tol", [("float32", 1e-5), ("float16", 1e-2), ("dynamic", 5e-2)])
def test_convert_and_parity(mode, tol, images):
    model = tiny()
    data = tflite.convert(model, mode)
    tflite.assert_builtin_only(data)
    runner = tflite.Runner(data)
    out = runner.run(images)
    p = tflite.parity(model(images).numpy(), out)
    assert p["n"] == 6 and p["max_abs_error"] < tol


def test_int8_needs_representative_and_runs(images):
    model = tiny()
    with pytest.raises(tflite.ConversionError, match="representative"):
        tflite.convert(model, "int8")
    data = tflite.convert(model, "int8", representative=list(images))
    assert "CONV_2D" in tflite.op_names(data)
    out = tflite.Runner(data).run(images)
    assert next(iter(out.values())).shape == (6, 3)


class FloatOnly(L.Layer):
    quantization_modes = ("float32", "float16", "dynamic")

    def call(self, x):
        return x * 2.0


def test_layer_protocol_refuses_unsupported_mode_before_conversion():
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(FloatOnly(name="dyn")(inp)))
    with pytest.raises(tflite.ConversionError, match=r"quantize='int8'.*'dyn'.*FloatOnly"):
        tflite.convert(model, "int8", representative=[np.zeros(4)])
    assert tflite.float_layers(model, "int8") == ["dyn"]
    tflite.check_quantization(model, "dynamic")
    with pytest.raises(tflite.ConversionError, match="quantize='int4'"):
        tflite.check_quantization(model, "int4")


def test_signatures_and_latency(images):
    model = tiny()

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32, name="image")])
    def probs(image):
        return {"probs": tf.nn.softmax(model(image))}

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32, name="image"),
                                  tf.TensorSpec((1, 3), tf.float32, name="bias")])
    def shifted(image, bias):
        return {"logits": model(image) + bias}

    runner = tflite.Runner(tflite.convert_signatures({"probs": probs, "shifted": shifted}, model))
    assert set(runner.signatures()) == {"probs", "shifted"}
    with pytest.raises(ValueError, match="signature"):
        runner.run_one(images[:1])
    out = runner.run({"image": images, "bias": np.ones((6, 3), np.float32)}, signature="shifted")
    np.testing.assert_allclose(out["logits"], model(images).numpy() + 1, atol=1e-5)
    lat = runner.latency_ms(images[:1], signature="probs", runs=5, warmup=1)
    assert 0 < lat["median_ms"] <= lat["p90_ms"]


def test_parity_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        tflite.parity(np.zeros((2, 3)), np.zeros((2, 4)))
