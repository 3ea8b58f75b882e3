"""The `condconv_mobilenet_v3` registry model: routing placement, the static network with nothing routed, and
the batch-1 export of one expert (its `.keras` round trip and TFLite parity: test_models_registry.py)."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import count_madds, models
from keras_layers.basis import BasisConv2D, BasisDepthwiseConv2D
from keras_layers.condconv import CondConv2D, CondDense, CondRouting

SMALL = {"width_multiplier": 0.25, "num_experts": 3, "last_channels": 64, "head_channels": 64}


def test_one_router_per_block_of_the_second_half_shared_by_its_three_convs():
    net = models.build("condconv_mobilenet_v3", num_classes=7, **SMALL)
    assert net(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 7)
    routers = [l for l in net.layers if isinstance(l, CondRouting)]
    assert [r.name for r in routers] == ["block3_routing", "block4_routing", "block5_routing"]  # 6 `tiny` blocks
    for router in routers:
        block = router.name[:-len("_routing")]
        consumers = {node.outbound_layer.name for node in router._outbound_nodes}
        assert {f"{block}_dw", f"{block}_project_conv"} <= consumers <= {f"{block}_expand_conv", f"{block}_dw",
                                                                           f"{block}_project_conv"}
        assert isinstance(net.get_layer(f"{block}_dw"), BasisDepthwiseConv2D)
        assert net.get_layer(f"{block}_project_conv").kernel.shape[0] == 3
    assert not any(isinstance(l, BasisConv2D) for l in net.layers if l.name.startswith(("block0_", "block2_")))
    assert isinstance(net.get_layer("last_conv"), CondConv2D) and isinstance(net.get_layer("head_logits"), CondDense)
    assert not isinstance(net.get_layer("head_hidden"), CondDense)  # the pooled hidden layer stays static


def test_the_last_conv_and_the_classifier_route_separately():
    only_classifier = models.build("condconv_mobilenet_v3", **SMALL, cond_head=False)
    assert isinstance(only_classifier.get_layer("head_logits"), CondDense)
    assert not isinstance(only_classifier.get_layer("last_conv"), CondConv2D)
    only_last = models.build("condconv_mobilenet_v3", **SMALL, cond_classifier=False)
    assert isinstance(only_last.get_layer("last_conv"), CondConv2D)
    assert not isinstance(only_last.get_layer("head_logits"), CondDense)


def test_nothing_routed_is_the_static_mobilenet_v3():
    none = models.build("condconv_mobilenet_v3", **SMALL, cond_blocks=0, cond_head=False, cond_classifier=False)
    assert not any(isinstance(l, (CondRouting, BasisConv2D, CondDense)) for l in none.layers)
    static = models.build("mobilenet_v3", width_multiplier=0.25, last_channels=64, head_channels=64)
    assert none.count_params() == static.count_params() and count_madds(none) == count_madds(static)
    assert count_madds(models.build("condconv_mobilenet_v3", **SMALL)) > count_madds(static)  # routing + mixing


@pytest.mark.parametrize("field,value", [("cond_blocks", 7), ("cond_blocks", -1), ("num_experts", 0),
                                         ("spec", "huge"), ("cond_head", "yes")])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        models.build("condconv_mobilenet_v3", **{**SMALL, field: value})


def test_one_expert_exports_as_static_ops_on_xnnpack():
    """E = 1: every routed conv is the static op and a MUL at batch 1 - all of it on XNNPACK, parity kept."""
    from pipelines.export import tflite
    from random_weights import randomize

    net = randomize(models.build("condconv_mobilenet_v3", **{**SMALL, "num_experts": 1}))
    blob = tflite.convert(net)
    d = tflite.delegation(blob)
    assert d["not_delegated"] == {} and d["share"] == 1.0, d
    images = np.random.RandomState(4).randn(4, 32, 32, 3).astype("float32")
    reference = net(images).numpy()
    p = tflite.parity(reference, tflite.Runner(blob).run(images))
    assert np.abs(reference).max() > 0.1 and p["max_abs_error"] < 1e-4 and p["top1_agreement"] == 1.0

