"""slimmable_mobilenet_v1 / ds_mobilenet_v1: export to narrow models, MAdds, save/load.

TFLite parity of exported widths and gate choices: tests/pipelines/test_slimmable_recipes.py (exporter)."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import count_madds
from keras_layers.models import build, names
from keras_layers.models import ds_mobilenet_v1 as ds
from keras_layers.models.slimmable_mobilenet_v1 import build_mobilenet_v1, export_width
from keras_layers.slimmable import get_width, set_width

WIDTHS = (0.25, 0.5, 0.75, 1.0)
SHAPE = (16, 16, 3)
rng = np.random.default_rng(0)


def randomize(model):
    for v in model.weights:
        if "variance" in v.name:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        elif "mean" in v.name or "beta" in v.name or "bias" in v.name or v.name.split("/")[-1].startswith("b"):
            v.assign(rng.normal(0, 0.1, v.shape).astype("float32"))
        else:
            fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 1
            v.assign((rng.normal(0, 1.0, v.shape) / np.sqrt(max(1, fan_in))).astype("float32") + (
                1.0 if "gamma" in v.name else 0.0))
    return model


@pytest.fixture(scope="module")
def slim_net():
    return randomize(build("slimmable_mobilenet_v1", SHAPE, 10))


@pytest.fixture(scope="module")
def ds_net():
    return randomize(build("ds_mobilenet_v1", SHAPE, 10, gate_hidden=8))


@pytest.fixture(scope="module")
def images():
    return rng.normal(size=(4, *SHAPE)).astype("float32")


def test_registered():
    assert {"slimmable_mobilenet_v1", "ds_mobilenet_v1"} <= set(names())


@pytest.mark.parametrize("width", WIDTHS)
def test_exported_width_equals_slimmable(slim_net, images, width):
    set_width(slim_net, width)
    ref = slim_net(images, training=False).numpy()
    narrow = export_width(slim_net, width)
    assert np.abs(narrow(images, training=False).numpy() - ref).max() < 1e-5
    assert np.abs(ref).max() > 1e-2  # a meaningful comparison
    # ordinary layers only, of the narrow size; same MAdds as the slimmable model at that width
    kinds = {type(l).__name__ for l in narrow.layers}
    assert not any(k.startswith(("Slimmable", "Switchable")) for k in kinds)
    assert count_madds(narrow, SHAPE) == count_madds(slim_net, SHAPE, width=width)
    assert narrow.get_layer("block0_pw").kernel.shape[-1] == slim_net.get_layer("block0_pw").channels(width)[1]


def test_independent_plain_model_has_the_same_shapes(slim_net):
    plain = build_mobilenet_v1(SHAPE, 10, width=0.5)
    narrow = export_width(slim_net, 0.5)
    assert [w.shape for w in plain.weights] == [w.shape for w in narrow.weights]


def test_madds_shrink_with_width(slim_net):
    m = [count_madds(slim_net, SHAPE, width=w) for w in WIDTHS]
    assert m == sorted(m) and m[0] < 0.4 * m[-1]


def test_bad_widths(slim_net):
    for bad in (0, 1.5, 0.6):
        with pytest.raises(ValueError, match=f"width={bad}"):
            set_width(slim_net, bad)
        with pytest.raises(ValueError, match=f"width={bad}"):
            export_width(slim_net, bad)
    with pytest.raises(ValueError, match="width_multipliers"):
        build("slimmable_mobilenet_v1", SHAPE, 10, width_multipliers=(0.0, 1.0))
    with pytest.raises(ValueError, match="base_width=0"):
        build("slimmable_mobilenet_v1", SHAPE, 10, base_width=0)
    with pytest.raises(ValueError, match="gate_after=0"):
        build("ds_mobilenet_v1", SHAPE, 10, gate_after=0)


def test_universal_model_runs_any_width_in_training():
    net = build("slimmable_mobilenet_v1", SHAPE, 10, universal=True, width_multipliers=(0.25, 1.0))
    set_width(net, 0.6)
    assert net(np.zeros((2, *SHAPE), "float32"), training=True).shape == (2, 10)


def test_save_load_round_trip_keeps_width(slim_net, images, tmp_path):
    set_width(slim_net, 0.75)
    ref = slim_net(images, training=False).numpy()
    path = tmp_path / "slim.keras"
    slim_net.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert get_width(loaded) == 0.75
    np.testing.assert_allclose(loaded(images, training=False).numpy(), ref, atol=1e-6)
    set_width(loaded, 0.25)
    set_width(slim_net, 0.25)
    np.testing.assert_allclose(loaded(images, training=False).numpy(), slim_net(images, training=False).numpy(),
                               atol=1e-6)


def test_ds_front_and_backs_equal_the_network(ds_net, images):
    front = ds.export_front(ds_net)
    f = front(images, training=False)
    for w in WIDTHS:
        set_width(ds_net, w)
        out = ds_net(images, training=False)
        back = ds.export_choice(ds_net, w)
        assert np.abs(back(f["features"], training=False).numpy() - out["logits"].numpy()).max() < 1e-5
        np.testing.assert_allclose(f["gate_scores"].numpy(), out["gate_scores"].numpy(), atol=1e-5)


def test_ds_export_width_is_the_supernet_at_that_width_as_one_plain_model(ds_net, images):
    gate = ds.gate_layer(ds_net)
    table = ds.choice_madds(ds_net, SHAPE)
    for k, w in enumerate(WIDTHS):
        set_width(ds_net, w)
        static = ds.export_width(ds_net, w)
        assert not any(hasattr(layer, "width_multipliers") for layer in static.layers)  # plain layers only
        np.testing.assert_allclose(static(images, training=False).numpy(),
                                   ds_net(images, training=False)["logits"].numpy(), atol=1e-5)
        # the slimming head's scores are not computed: nothing reads them
        assert count_madds(static, SHAPE) == table[k] - gate.hidden_units * len(WIDTHS)
    set_width(ds_net, "dynamic")
    with pytest.raises(ValueError, match="0.3"):
        ds.export_width(ds_net, 0.3)


def test_ds_dynamic_equals_sliced_path_per_example(ds_net, images):
    gate = ds.gate_layer(ds_net)
    gate.w2.assign(rng.normal(0, 3, gate.w2.shape).astype("float32"))
    gate.b2.assign(np.array([0.0, 0.5, -0.5, 0.0], "float32"))
    set_width(ds_net, "dynamic")
    out = ds_net(images, training=False)
    chosen = out["gate_choice"].numpy().argmax(-1)
    feats = ds.export_front(ds_net)(images, training=False)["features"].numpy()
    for b, k in enumerate(chosen):
        back = ds.export_choice(ds_net, WIDTHS[k])
        np.testing.assert_allclose(back(feats[b:b + 1]).numpy()[0], out["logits"].numpy()[b], atol=1e-5)
    madds, fractions = ds.expected_madds(ds_net, [images])
    table = ds.choice_madds(ds_net, SHAPE)
    assert madds == pytest.approx(np.mean(table[chosen]))
    np.testing.assert_allclose(fractions, np.bincount(chosen, minlength=4) / len(chosen))


def test_ds_madds_table(ds_net):
    table = ds.choice_madds(ds_net, SHAPE)
    assert list(table) == sorted(table) and table[0] < table[-1]
    assert count_madds(ds_net, SHAPE) == table[-1]


def test_ds_save_load_round_trip(ds_net, images, tmp_path):
    set_width(ds_net, "dynamic")
    ref = ds_net(images, training=False)
    ds_net.save(tmp_path / "ds.keras")
    loaded = keras.models.load_model(tmp_path / "ds.keras", safe_mode=True)
    out = loaded(images, training=False)
    for k in ("logits", "gate_scores", "gate_choice"):
        np.testing.assert_allclose(out[k].numpy(), ref[k].numpy(), atol=1e-6)
