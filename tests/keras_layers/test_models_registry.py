"""The model registry, and every registered model: builds at 32x32, runs, counts MAdds, saves, converts."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers import count_madds, models

from random_weights import randomize


def test_names_contains_baseline():
    assert "mobilenet_v2" in models.names()
    assert models.names() == sorted(models.names())


def test_unknown_name_lists_valid_choices():
    with pytest.raises(ValueError, match=r"name='nosuch'.*mobilenet_v2"):
        models.build("nosuch")


@pytest.mark.parametrize("field,value", [("width_multiplier", 0), ("depth_multiplier", -1.0), ("dropout", 1.5)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        models.build("mobilenet_v2", **{field: value})


def test_unknown_config_field():
    with pytest.raises(ValueError, match="colour"):
        models.build("mobilenet_v2", colour="red")


def test_bad_input_shape_and_classes():
    with pytest.raises(ValueError, match="input_shape"):
        models.build("mobilenet_v2", input_shape=(32, 32))
    with pytest.raises(ValueError, match="num_classes=1"):
        models.build("mobilenet_v2", num_classes=1)


@pytest.mark.parametrize("shape", [(32, 32, 3), (32, 32, 1), (64, 48, 3)])
def test_baseline_builds_and_runs(shape):
    net = models.build("mobilenet_v2", input_shape=shape, num_classes=7, width_multiplier=0.35)
    out = net(np.zeros((2, *shape), np.float32))
    assert out.shape == (2, 7)


def test_width_multiplier_changes_channels():
    small = models.build("mobilenet_v2", width_multiplier=0.25)
    big = models.build("mobilenet_v2", width_multiplier=1.0)
    assert small.count_params() < big.count_params()


def test_config_fields():
    fields = models.config_fields("mobilenet_v2")
    assert fields["width_multiplier"] == 0.5 and "dropout" in fields


# ---------------------------------------------------------------- every registered model

# Smaller settings of the registered models, so that all of them build, save and convert in seconds;
# a model missing here is tested with its defaults.
SMALL = {
    "basisnet_mobilenet_v3": dict(width_multiplier=0.25, last_channels=64, head_channels=64, preview_channels=32,
                                  preview_blocks=2),
    "condconv_mobilenet_v1": dict(depth_multiplier=0.1, num_experts=2, cond_blocks=2),
    "condconv_mobilenet_v2": dict(width_multiplier=0.25, depth_multiplier=0.25, num_experts=4, last_channels=64),
    "condconv_mobilenet_v3": dict(width_multiplier=0.25, num_experts=4, last_channels=64, head_channels=64),
    "ds_mobilenet_v1": dict(width_multipliers=(0.5, 1.0), depth_multiplier=0.1, gate_after=3, gate_hidden=8),
    "mobilenet_v2": dict(width_multiplier=0.25, depth_multiplier=0.25, last_channels=64),
    "mobilenet_v3": dict(width_multiplier=0.25, last_channels=64, head_channels=64),
    "multi_exit_net": dict(num_exits=3, width_multiplier=0.25, depth_multiplier=0.25, last_channels=32),
    "slimmable_mobilenet_v1": dict(depth_multiplier=0.1),
}
SHAPE = (32, 32, 3)
IMAGES = np.random.RandomState(0).randn(2, *SHAPE).astype("float32")


def outputs_dict(outputs):
    return {k: v.numpy() for k, v in outputs.items()} if isinstance(outputs, dict) else {"output": outputs.numpy()}


def to_tflite(net):
    """float32 TFLite bytes at batch 1, builtin ops only (the phone's case; as `pipelines` converts)."""
    specs = [tf.TensorSpec((1, *t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in net.inputs]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        out = net(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return out if isinstance(out, dict) else {"output": out}

    # The converter saves the function with this object in a temporary SavedModel: the variables alone,
    # not the Keras model, whose SavedModel serialization re-traces every layer (2/3 of the time).
    variables = tf.Module()
    variables.weights = list(net.weights)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], variables)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert(), [s.name for s in specs]


def run_tflite(blob, input_name, images):
    """Run the converted model one image at a time; {output name: stacked outputs}."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=blob).get_signature_runner()
    outs = [runner(**{input_name: images[i:i + 1]}) for i in range(len(images))]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


@pytest.mark.parametrize("name", models.names())
def test_every_model_runs_counts_saves_and_converts(name, tmp_path):
    net = randomize(models.build(name, input_shape=SHAPE, num_classes=10, **SMALL.get(name, {})))
    reference = outputs_dict(net(IMAGES, training=False))
    assert all(np.isfinite(v).all() for v in reference.values()), name
    assert max(np.abs(v).max() for v in reference.values()) > 1e-2  # a meaningful scale for the checks below
    madds = count_madds(net, SHAPE)
    assert madds > 0

    net.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    again = outputs_dict(loaded(IMAGES, training=False))
    assert again.keys() == reference.keys()
    for k in reference:
        np.testing.assert_allclose(again[k], reference[k], rtol=1e-5, atol=1e-5 * np.abs(reference[k]).max())
    assert count_madds(loaded, SHAPE) == madds and loaded.count_params() == net.count_params()

    blob, (input_name,) = to_tflite(net)
    lite = run_tflite(blob, input_name, IMAGES)
    assert lite.keys() == reference.keys()
    for k in reference:
        error = np.abs(lite[k] - reference[k]).max()
        assert error <= 1e-4 * max(1.0, np.abs(reference[k]).max()), (name, k, error)
