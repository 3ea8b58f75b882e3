import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers import ExitHead, GradientEquilibrium, count_madds
from keras_layers.models import build
from keras_layers.models.multi_exit_net import exit_madds, exit_names, exit_prefix

SHAPE = (16, 16, 1)
SMALL = dict(num_exits=3, width_multiplier=0.25, depth_multiplier=0.25, last_channels=32)


def small_net(**config):
    keras.utils.set_random_seed(1)
    return build("multi_exit_net", input_shape=SHAPE, num_classes=5, **{**SMALL, **config})


def copy_weights(src, dst):
    for layer in dst.layers:
        if layer.weights:
            layer.set_weights(src.get_layer(layer.name).get_weights())


# ---------------------------------------------------------------- GradientEquilibrium

def test_ge_is_identity_forward_and_scales_gradient_exactly():
    x = tf.constant([[1.5, -2.0, 3.0]])
    c = tf.constant([[2.0, -4.0, 8.0]])  # powers of two: every product below is exact in float32
    layer = GradientEquilibrium(0.25)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * c)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), [[0.5, -1.0, 2.0]])


def test_ge_branch_scales_follow_the_paper():
    # K = 4, 0-based exit i: into exit 1/(K-i), into the next stage (K-i-1)/(K-i)
    assert GradientEquilibrium.branch_scales(0, 4) == (0.25, 0.75)
    assert GradientEquilibrium.branch_scales(1, 4) == (1 / 3, 2 / 3)
    assert GradientEquilibrium.branch_scales(3, 4) == (1.0, 0.0)
    with pytest.raises(ValueError, match="exit_index=4"):
        GradientEquilibrium.branch_scales(4, 4)


def test_ge_chain_gives_every_exit_one_over_remaining_hand_computed():
    """Eq. 5: with K = 3 and identity stages, d L_j / d w_0 = 1/3 for every j, d L_j / d w_1 = 1/2."""
    k = 3
    w0 = tf.constant([1.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(w0)
        feats, exits, stage_feats = w0, [], []
        for i in range(k):
            stage_feats.append(feats)
            if i < k - 1:
                s_exit, s_next = GradientEquilibrium.branch_scales(i, k)
                exits.append(GradientEquilibrium(s_exit)(feats))
                feats = GradientEquilibrium(s_next)(feats)
                feats = tf.identity(feats)  # "stage i+1"
            else:
                exits.append(feats)
        losses = [tf.reduce_sum(e) for e in exits]
        total = tf.add_n(losses)
    for j in range(k):
        np.testing.assert_allclose(tape.gradient(losses[j], w0).numpy(), [1.0 / 3.0], rtol=1e-6)
    for j in range(1, k):
        np.testing.assert_allclose(tape.gradient(losses[j], stage_feats[1]).numpy(), [0.5], rtol=1e-6)
    # the total gradient at w_0 is the average, not the sum, of the exits' gradients
    np.testing.assert_allclose(tape.gradient(total, w0).numpy(), [1.0], rtol=1e-6)


def test_ge_in_the_network_scales_backbone_gradients():
    """Same weights with and without GE: stem gradients of exit j's loss are 1/K of the plain ones."""
    plain = small_net(gradient_equilibrium=False, inline_collaboration=False)
    ge = small_net(gradient_equilibrium=True, inline_collaboration=False)
    copy_weights(plain, ge)
    x = tf.random.stateless_normal((4, *SHAPE), seed=(1, 2))
    for j in range(3):
        grads = []
        for net in (plain, ge):
            stem = net.get_layer("stem_conv").kernel
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(net(x, training=False)[f"exit_{j}"] ** 2)
            grads.append(tape.gradient(loss, stem).numpy())
        np.testing.assert_allclose(grads[1], grads[0] / 3.0, rtol=1e-4, atol=1e-7)
        assert np.abs(grads[0]).max() > 0


def test_ge_bad_scale():
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match=f"scale={bad!r}"):
            GradientEquilibrium(bad)


# ---------------------------------------------------------------- ExitHead

@pytest.mark.parametrize("hidden", [0, 6])
def test_exit_head_madds(hidden):
    """(Outputs against NumPy with and without inline collaboration, config, saving: test_layer_harness.py.)"""
    head = ExitHead(5, hidden_units=hidden)
    head.build((None, 4, 4, 8))
    assert head.madds((None, 4, 4, 8), (None, 5)) == (8 * 6 + 6 * 5 if hidden else 8 * 5)


def test_isc_detaches_previous_logits():
    rng = np.random.RandomState(1)
    feats = tf.constant(rng.randn(2, 3, 3, 4).astype("float32"))
    prev = tf.constant(rng.randn(2, 5).astype("float32"))
    head = ExitHead(5, inline_collaboration=True)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([feats, prev])
        loss = tf.reduce_sum(head([feats, prev]) ** 2)
    assert tape.gradient(loss, prev) is None
    assert np.abs(tape.gradient(loss, feats).numpy()).max() > 0
    # in the network: exit 1's loss does not reach exit 0's head, but exit 0's logits do reach exit 1
    net = small_net(inline_collaboration=True)
    x = tf.random.stateless_normal((2, *SHAPE), seed=(3, 4))
    with tf.GradientTape() as tape:
        out = net(x, training=False)
        loss = tf.reduce_sum(out["exit_1"] ** 2)
    head0 = net.get_layer("exit_0")
    assert all(g is None for g in tape.gradient(loss, [head0.kernel, head0.bias]))
    no_isc = small_net(inline_collaboration=False)
    copy_weights(net, no_isc)
    outs_isc, outs_plain = net(x), no_isc(x)
    np.testing.assert_allclose(outs_isc["exit_1"].numpy(),
                               outs_plain["exit_1"].numpy() + outs_isc["exit_0"].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,field", [
    ({"num_classes": 1}, "num_classes=1"), ({"num_classes": 5, "hidden_units": -1}, "hidden_units=-1"),
    ({"num_classes": 5, "dropout": 1.5}, "dropout=1.5"),
    ({"num_classes": 5, "inline_collaboration": "yes"}, "inline_collaboration='yes'"),
])
def test_exit_head_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ExitHead(**kwargs)


def test_exit_head_isc_needs_two_inputs():
    with pytest.raises(ValueError, match="previous_logits"):
        ExitHead(5, inline_collaboration=True)(np.zeros((1, 2, 2, 3), "float32"))


# ---------------------------------------------------------------- multi_exit_net

def test_outputs_are_a_dict_of_exits_and_prefix_matches():
    net = small_net()
    assert exit_names(net) == ["exit_0", "exit_1", "exit_2"]
    x = np.random.RandomState(2).randn(3, *SHAPE).astype("float32")
    out = net(x)
    assert sorted(out) == ["exit_0", "exit_1", "exit_2"] and out["exit_2"].shape == (3, 5)
    for k in range(3):
        prefix = exit_prefix(net, k)
        np.testing.assert_allclose(prefix(x)[f"exit_{k}"].numpy(), out[f"exit_{k}"].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exit=3"):
        exit_prefix(net, 3)


def test_cumulative_madds_per_exit():
    for isc in (True, False):
        net = small_net(inline_collaboration=isc)
        costs = exit_madds(net, SHAPE)
        assert costs == sorted(costs) and len(set(costs)) == 3
        assert costs[-1] == count_madds(net, SHAPE)  # the last exit needs the whole network
        # exit k's cost = union of everything exits 0..k need: head 0 counts for exit 1 even without ISC
        head0_madds = net.get_layer("exit_0").input_shape[-1] * 5  # GAP -> Dense(5), no hidden units
        only_exit_1 = count_madds(net, SHAPE, output="exit_1")  # exit 1's own ancestors
        assert costs[1] == (only_exit_1 if isc else only_exit_1 + head0_madds)
    # ISC adds no MAdds: same cumulative costs with and without it
    assert exit_madds(small_net(inline_collaboration=True), SHAPE) == exit_madds(
        small_net(inline_collaboration=False), SHAPE)


def test_cumulative_exit_count_on_hand_model():
    L = keras.layers
    inp = keras.Input((4, 4, 2))
    a = L.Conv2D(3, 1)(inp)  # 16*2*3 = 96
    e0 = L.Dense(2)(L.GlobalAveragePooling2D()(a))  # 6
    b = L.Conv2D(5, 1)(a)  # 240
    e1 = L.Dense(2)(L.GlobalAveragePooling2D()(b))  # 10
    model = keras.Model(inp, {"exit_0": e0, "exit_1": e1})
    assert count_madds(model, (4, 4, 2), exit=1) == 96 + 6 + 240 + 10


@pytest.mark.parametrize("config,field", [
    ({"num_exits": 0}, "num_exits=0"), ({"num_exits": 1}, "num_exits=1"), ({"num_exits": 99}, "num_exits=99"),
    ({"gradient_equilibrium": 1}, "gradient_equilibrium=1"), ({"head_units": -2}, "head_units=-2"),
    ({"backbone": "resnet"}, "backbone='resnet'"), ({"backbone": "mobilenet_v3", "spec": "huge"}, "spec='huge'"),
    ({"backbone": "mobilenet_v3", "num_exits": 7}, r"6 at spec='tiny'\)\. Received: num_exits=7"),
])
def test_builder_bad_config(config, field):
    with pytest.raises(ValueError, match=field):
        build("multi_exit_net", input_shape=SHAPE, num_classes=5, **{**SMALL, **config})


def test_mobilenet_v3_backbone_is_the_static_mobilenet_v3_up_to_the_last_conv():
    net = small_net(backbone="mobilenet_v3", gradient_equilibrium=False)
    keras.utils.set_random_seed(2)
    static = build("mobilenet_v3", input_shape=SHAPE, num_classes=5, width_multiplier=0.25)
    blocks = [layer.name for layer in static.layers if layer.name.startswith(("stem", "block"))]
    copy = [n for n in blocks if static.get_layer(n).weights]
    assert copy and all(net.get_layer(n).__class__ is static.get_layer(n).__class__ for n in blocks)
    for name in copy:
        net.get_layer(name).set_weights(static.get_layer(name).get_weights())
    x = np.random.RandomState(4).randn(2, *SHAPE).astype("float32")
    last_block = blocks[-1]
    ours = keras.Model(net.inputs, net.get_layer(last_block).output)(x)
    theirs = keras.Model(static.inputs, static.get_layer(last_block).output)(x)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert net.get_layer("last_act").__class__ is static.get_layer("last_act").__class__  # hswish last conv
    costs = exit_madds(net, SHAPE)
    assert costs == sorted(costs) and len(set(costs)) == 3 and costs[-1] == count_madds(net, SHAPE)


def test_save_and_load_with_safe_mode(tmp_path):
    net = small_net(head_units=4)
    path = tmp_path / "m.keras"
    net.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.RandomState(3).randn(2, *SHAPE).astype("float32")
    a, b = net(x), loaded(x)
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5, atol=1e-6)
    assert isinstance(loaded.get_layer("ge_exit_0"), GradientEquilibrium)
    assert loaded.get_layer("exit_1").inline_collaboration
