"""`condconv_mobilenet_v1` (CC-MobileNetV1, CondConv Sec. 4.1.1): placement, one router per separable block
shared by its depthwise and pointwise convolutions, the CondConv classifier, the static peer, bad config
(its `.keras` round trip and TFLite parity: test_models_registry.py)."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import count_madds, models
from keras_layers.basis import BasisConv2D, BasisDepthwiseConv2D
from keras_layers.condconv import CondDense, CondRouting
from keras_layers.models.condconv_mobilenet_v1 import block_flags
from keras_layers.models.slimmable_mobilenet_v1 import build_mobilenet_v1

SHAPE = (16, 16, 1)


def test_the_papers_placement_is_the_last_8_of_13_blocks_kept_per_stage_at_lower_depth():
    assert block_flags(1.0, 8) == [False] * 5 + [True] * 8
    assert block_flags(0.2, 8) == [False] * 5 + [True] * 4  # 512 s2, one of the 512 x5, both 1024
    assert block_flags(1.0, 3) == [False] * 10 + [True] * 3
    assert block_flags(0.2, 0) == [False] * 9
    assert models.resolve_config("condconv_mobilenet_v1", {"preset": "paper"})["num_experts"] == 8


def test_one_router_per_block_feeds_both_convolutions_and_the_classifier_routes_itself():
    net = models.build("condconv_mobilenet_v1", SHAPE, 10, preset="paper", depth_multiplier=0.1)
    routers = [l.name for l in net.layers if isinstance(l, CondRouting)]
    assert routers == [f"block{i}_routing" for i in range(5, 9)]
    for name in routers:
        block = name[:-len("_routing")]
        dw, pw = net.get_layer(f"{block}_dw"), net.get_layer(f"{block}_pw_conv")
        assert isinstance(dw, BasisDepthwiseConv2D) and isinstance(pw, BasisConv2D)
        assert dw.num_bases == pw.num_bases == 8
        consumers = {node.outbound_layer.name for node in net.get_layer(name)._outbound_nodes}
        assert consumers == {f"{block}_dw", f"{block}_pw_conv"}  # one router, both convolutions
    assert not isinstance(net.get_layer("block4_dw"), BasisDepthwiseConv2D)
    assert isinstance(net.get_layer("head_logits"), CondDense)
    out = net(np.random.RandomState(0).randn(2, *SHAPE).astype("float32"))
    assert out.shape == (2, 10) and np.isfinite(out.numpy()).all()


def test_without_condconv_it_is_the_plain_mobilenet_v1_and_routing_costs_few_madds():
    static = models.build("condconv_mobilenet_v1", SHAPE, 10, cond_blocks=0, cond_classifier=False)
    plain = build_mobilenet_v1(SHAPE, 10, width=1.0)
    assert static.count_params() == plain.count_params()
    assert count_madds(static, SHAPE) == count_madds(plain, SHAPE)
    two, four = (models.build("condconv_mobilenet_v1", SHAPE, 10, num_experts=e) for e in (2, 4))
    assert four.get_layer("block8_pw_conv").kernel.shape[0] == 4
    assert four.count_params() > 1.5 * two.count_params() > 1.5 * static.count_params()  # experts add parameters


@pytest.mark.parametrize("field, value", [("cond_blocks", 14), ("cond_blocks", True), ("num_experts", 0),
                                          ("routing_activation", "relu"), ("cond_classifier", "yes")])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        models.build("condconv_mobilenet_v1", SHAPE, 10, **{field: value})
