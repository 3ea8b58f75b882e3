import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import models


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


def test_saved_model_round_trip(tmp_path):
    net = models.build("mobilenet_v2", width_multiplier=0.25)
    x = np.random.RandomState(0).randn(2, 32, 32, 3).astype("float32")
    net.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(net(x).numpy(), back(x).numpy(), atol=1e-6)
