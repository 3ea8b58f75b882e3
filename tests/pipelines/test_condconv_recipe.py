"""The CondConv recipe's router warm-up (project addition, `pipelines/training/recipes/condconv.py`): the
routers start at zero and are not trained for the first epochs, then they are; everything else trains
throughout. Measured reason: docs/results.md "CondConv on cluttered-digits"."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import models
from keras_layers.condconv import CondRouting
from pipelines.training import recipes
from pipelines.training.recipes.base import TrainingModel
from pipelines.training.recipes.condconv import router_variables

TINY = {"num_experts": 2, "width_multiplier": 0.25, "depth_multiplier": 0.25, "last_channels": 32}


def _net():
    keras.utils.set_random_seed(0)
    return models.build("condconv_mobilenet_v2", input_shape=(16, 16, 1), num_classes=10, **TINY)


def test_router_variables_are_every_routers_kernel_and_bias_and_start_at_zero():
    net = _net()
    routers = [m for m in net.submodules if isinstance(m, CondRouting)]
    blocks = [layer for layer in net.layers if isinstance(layer, CondRouting)]
    assert blocks and len(routers) == len(blocks) + 2  # + the last 1x1 conv's and the classifier's own
    found = router_variables(net)
    assert len(found) == 2 * len(routers)
    assert {v.ref() for v in found} == {v.ref() for r in routers for v in (r.kernel, r.bias)}
    assert all(not np.any(v.numpy()) for v in found)  # zero start: one routing for every example
    x = np.random.default_rng(0).random((4, 16, 16, 1), dtype=np.float32)
    probe = keras.Model(net.input, blocks[-1].output)  # a block router's weights for 4 random images
    np.testing.assert_allclose(probe(x).numpy(), 0.5)


def test_routers_stay_still_during_the_warmup_then_train_while_the_rest_trains_throughout():
    net = _net()
    recipe = recipes.get("condconv", router_warmup=0.5, label_smoothing=0.0, augment=0.0)
    model = TrainingModel(net, recipe)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    x = rng.random((64, 16, 16, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    routers = router_variables(net)
    others = [v for v in net.trainable_variables if v.ref() not in {r.ref() for r in routers}]
    snapshots = []

    class Snap(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(([v.numpy().copy() for v in routers], [v.numpy().copy() for v in others]))

    start = [v.numpy().copy() for v in others]
    cbs = recipe.callbacks(model, steps_per_epoch=4, epochs=4)
    assert len(cbs) == 1
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[*cbs, Snap()])
    for epoch in (0, 1):  # round(0.5 * 4) = 2 warm-up epochs: routers exactly as they started
        assert all(not np.any(r) for r in snapshots[epoch][0]), epoch
    assert any(not np.allclose(a, b) for a, b in zip(start, snapshots[0][1]))  # the rest trained in epoch 1
    assert any(np.any(r) for r in snapshots[2][0])  # from epoch 3 on the routers train
    assert any(not np.allclose(a, b) for a, b in zip(snapshots[2][0], snapshots[3][0]))
    assert recipe.routers_frozen is False


def test_no_warmup_in_the_paper_preset_or_at_zero_and_bad_values_name_the_field():
    net = _net()
    for recipe in (recipes.get("condconv", preset="paper"), recipes.get("condconv", router_warmup=0.0)):
        assert recipe.router_warmup == 0.0
        model = TrainingModel(net, recipe)
        assert recipe.callbacks(model, steps_per_epoch=4, epochs=10) == []
        assert len(recipe.trainable_variables(model)) == len(net.trainable_variables)
    assert recipes.get("condconv").warmup_epochs(10) == 2
    for bad in (-0.1, 1.0, "x", float("nan")):
        with pytest.raises(ValueError, match=rf"^router_warmup must be in \[0.0, 0.9\]; received router_warmup="):
            recipes.get("condconv", router_warmup=bad)
