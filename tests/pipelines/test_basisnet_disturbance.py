"""BasisNet's disturbance analysis (Zhang et al., Sec. 4.9): coefficients shuffled within a layer, per example,
and the per-layer table (one layer disturbed at a time)."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from pipelines.experiments import basisnet as ev
from tests.pipelines.basisnet_toys import SHAPE, toy_basisnet


def test_shuffle_within_layer_permutes_each_examples_vector_of_the_chosen_layers_only():
    rs = np.random.RandomState(0)
    alpha = rs.random_sample((200, 3, 4)).astype("float32")
    out = ev.shuffle_within_layer(alpha, [1], seed=3)
    np.testing.assert_array_equal(out[:, [0, 2]], alpha[:, [0, 2]])  # other layers untouched
    # each example's vector of layer 1 holds the same entries, in another order for most examples
    np.testing.assert_array_equal(np.sort(out[:, 1], -1), np.sort(alpha[:, 1], -1))
    moved = (out[:, 1] != alpha[:, 1]).any(-1).mean()
    assert moved > 0.9, moved  # 1/24 of uniform permutations of 4 entries are the identity
    # the permutations are per example: the example-wise orders differ
    orders = {tuple(np.argsort(np.argsort(o)) - np.argsort(np.argsort(a))) for o, a in zip(out[:, 1], alpha[:, 1])}
    assert len(orders) > 10
    np.testing.assert_array_equal(out, ev.shuffle_within_layer(alpha, [1], seed=3))  # seeded
    every = ev.disturbed_coefficients(alpha, "shuffled_within", seed=3)
    np.testing.assert_array_equal(np.sort(every, -1), np.sort(alpha, -1))
    assert (every[:, 0] != alpha[:, 0]).any() and (every[:, 2] != alpha[:, 2]).any()


@pytest.mark.parametrize("groups", [[3], [-1], [True]])
def test_shuffle_within_layer_refuses_a_bad_group(groups):
    with pytest.raises(ValueError, match="groups="):
        ev.shuffle_within_layer(np.zeros((2, 3, 4)), groups)
    with pytest.raises(ValueError, match="shape="):
        ev.shuffle_within_layer(np.zeros((2, 4)), None)


def test_per_layer_table_disturbs_one_layer_at_a_time():
    keras.utils.set_random_seed(0)
    net = toy_basisnet(read_group=0)
    rs = np.random.RandomState(1)
    x, y = rs.randn(64, *SHAPE).astype("float32"), rs.randint(0, 3, 64)
    preview, specialist = net.get_layer("preview"), net.get_layer("specialist")
    alpha = np.asarray(preview(x)["coefficients"])
    table = ev.per_layer_disturbance(net, x, y, seed=5, batch_size=16)

    def acc(c):
        return float((np.asarray(specialist([x, c])).argmax(-1) == y).mean())

    assert table["reference_accuracy"] == pytest.approx(acc(alpha))
    g0, g1 = table["rows"]
    assert g0["accuracy"] == pytest.approx(acc(ev.shuffle_within_layer(alpha, [0], seed=5)))
    assert g1["drop"] == 0.0 and g1["accuracy"] == table["reference_accuracy"]  # group 1 feeds nothing
    assert g0["layers"] == ["amplify"] and g1["layers"] == []
    assert ev.disturbance(net, x, y, kinds=("shuffled_within",), seed=5)["shuffled_within"] == pytest.approx(
        acc(ev.shuffle_within_layer(alpha, None, seed=5)))
