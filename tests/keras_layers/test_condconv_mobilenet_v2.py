"""The `condconv_mobilenet_v2` registry model: build, routing, MAdds, training (its `.keras` round trip and
TFLite parity: test_models_registry.py)."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import count_madds, models
from keras_layers.basis import BasisConv2D, BasisDepthwiseConv2D
from keras_layers.condconv import CondConv2D, CondDense, CondRouting

SMALL = {"width_multiplier": 0.25, "depth_multiplier": 0.25, "num_experts": 3, "last_channels": 64}


def test_registered_and_builds():
    assert "condconv_mobilenet_v2" in models.names()
    net = models.build("condconv_mobilenet_v2", num_classes=7, **SMALL)
    x = np.random.RandomState(0).randn(2, 32, 32, 3).astype("float32")
    assert net(x).shape == (2, 7)
    assert net.name == "condconv_mobilenet_v2"


def test_one_router_per_block_shared_by_its_three_convs():
    net = models.build("condconv_mobilenet_v2", **SMALL)
    routers = [l for l in net.layers if isinstance(l, CondRouting)]
    assert routers and len(routers) == 3  # last 3 stages at depth 0.25: one block each
    for router in routers:
        block = router.name[:-len("_routing")]
        consumers = {node.outbound_layer.name for node in router._outbound_nodes}
        assert consumers == {f"{block}_expand_conv", f"{block}_dw", f"{block}_project_conv"}
        assert isinstance(net.get_layer(f"{block}_dw"), BasisDepthwiseConv2D)
        assert net.get_layer(f"{block}_expand_conv").kernel.shape[0] == 3
    assert isinstance(net.get_layer("last_conv"), CondConv2D)
    assert not any(isinstance(l, BasisConv2D) for l in net.layers if l.name.startswith("block0_"))


def test_the_classifier_is_routed_unless_cond_classifier_is_false():
    """The last 1x1 conv (`cond_head`) and the classifier (`cond_classifier`) are routed separately."""
    assert isinstance(models.build("condconv_mobilenet_v2", **SMALL).get_layer("head_logits"), CondDense)
    net = models.build("condconv_mobilenet_v2", **SMALL, cond_classifier=False)
    head = net.get_layer("head_logits")
    assert isinstance(head, keras.layers.Dense) and not isinstance(head, CondDense)
    assert isinstance(net.get_layer("last_conv"), CondConv2D)
    assert models.resolve_config("condconv_mobilenet_v2", {"preset": "paper"})["cond_classifier"] is True
    assert models.resolve_config("condconv_mobilenet_v1", {"preset": "paper"})["cond_classifier"] is True


def test_num_experts_and_stages_are_configurable():
    four = models.build("condconv_mobilenet_v2", **{**SMALL, "num_experts": 4})
    assert four.get_layer("last_conv").kernel.shape[0] == 4
    none = models.build("condconv_mobilenet_v2", **SMALL, cond_stages=0, cond_head=False, cond_classifier=False)
    assert not any(isinstance(l, (CondRouting, BasisConv2D)) for l in none.layers)
    static = models.build("mobilenet_v2", width_multiplier=0.25, depth_multiplier=0.25, last_channels=64)
    assert none.count_params() == static.count_params()


def test_madds_exceed_the_static_baseline_by_mixing_and_routing():
    kw = {"width_multiplier": 0.5, "depth_multiplier": 0.5}
    static = count_madds(models.build("mobilenet_v2", **kw))
    cond = count_madds(models.build("condconv_mobilenet_v2", num_experts=8, **kw))
    assert static < cond < 1.5 * static  # the paper's point: many more parameters, few more MAdds
    more = count_madds(models.build("condconv_mobilenet_v2", num_experts=16, **kw))
    assert more > cond


@pytest.mark.parametrize("field,value", [("num_experts", 0), ("cond_stages", 9), ("routing_activation", "tanh"),
                                         ("cond_head", "yes"), ("cond_classifier", 1), ("dropout", 1.5)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        models.build("condconv_mobilenet_v2", **{field: value})


@pytest.mark.extended  # a learning check, like tests/pipelines/test_every_model_learns.py
def test_trains_far_above_chance_and_its_routers_learn():
    """Colour-coded noise (the class is the channel with the higher mean) is learnable in a few steps: a
    network whose gradients did not reach the CondConv layers and their routers would still be near 1/3."""
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 3, 96)
    images = rng.randn(96, 32, 32, 3).astype("float32")
    images[np.arange(96), :, :, labels] += 1.5
    net = models.build("condconv_mobilenet_v2", num_classes=3, **SMALL)
    routers = [l for l in net.layers if isinstance(l, CondRouting)] + [net.get_layer("last_conv").router]
    before = [l.kernel.numpy().copy() for l in routers]
    net.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    history = net.fit(images, labels, batch_size=32, epochs=5, verbose=0).history
    assert history["accuracy"][-1] >= 0.8 and history["loss"][-1] < 0.5 * history["loss"][0]
    assert all(np.abs(l.kernel.numpy() - b).max() > 1e-4 for l, b in zip(routers, before))
