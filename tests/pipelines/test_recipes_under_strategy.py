"""Every family's recipe (custom train step) trains under a multi-replica strategy.

(CondConv uses the `standard` recipe, whose train step the Ray Train integration tests already run
under MultiWorkerMirroredStrategy.)

Ray Train runs `pipelines.training.train.build_training` inside `MultiWorkerMirroredStrategy`; the cross-replica
code paths of a recipe's `train_step` (loss scaling, gradient all-reduce, EMA / schedule hooks in
replica context) are the same under `MirroredStrategy` over two logical CPU devices, which one process
can host. Runs in a subprocess: logical devices must be set before TensorFlow initialises its runtime.
"""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = r"""
import json, math, sys
from keras_layers import env
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipelines.training.train import TrainConfig, build_training, load_data, steps_per_epoch
cases = json.loads(sys.argv[1])
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
for name, (model, model_config, epochs) in cases.items():
    cfg = TrainConfig(model=model, model_config=model_config, epochs=epochs, batch_size=32, limit=64).validate()
    train_ds, info = load_data(cfg, "train")
    val_ds, _ = load_data(cfg, "validation", shuffle=False)
    with strategy.scope():
        m = build_training(cfg, info, steps_per_epoch(info, cfg.batch_size))
    cbs = m.recipe.callbacks(m, 2, epochs)
    h = m.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, callbacks=cbs).history
    out[name] = {"replicas": strategy.num_replicas_in_sync, "recipe": m.recipe.name,
                 "loss": h["loss"][-1], "val_accuracy": h["val_accuracy"][-1]}
print("RESULT " + json.dumps(out))
"""

CASES = {
    "basisnet": ("basisnet_mobilenet_v3", {"width_multiplier": 0.25, "last_channels": 64, "head_channels": 64,
                                           "preview_channels": 32, "preview_blocks": 2}, 1),
    # two widths: the sandwich's smallest + largest passes are all the cross-replica paths there are
    "slimmable": ("slimmable_mobilenet_v1", {"width_multipliers": [0.5, 1.0], "depth_multiplier": 0.1}, 1),
    "ds_net": ("ds_mobilenet_v1", {"width_multipliers": [0.5, 1.0], "depth_multiplier": 0.1, "gate_after": 3}, 2),
    "multi_exit": ("multi_exit_net", {"num_exits": 3, "width_multiplier": 0.25, "depth_multiplier": 0.25,
                                      "last_channels": 32}, 2),
}


@pytest.mark.slow
def test_every_family_recipe_trains_under_a_two_replica_strategy():
    res = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    line = next((l for l in res.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, res.stderr[-4000:]
    out = json.loads(line[len("RESULT "):])
    assert set(out) == set(CASES)
    for name, r in out.items():
        assert r["replicas"] == 2, name
        assert r["recipe"] != "standard", (name, r)
        assert r["loss"] == r["loss"] and r["loss"] < 1e6, (name, r)  # finite
        assert 0.0 <= r["val_accuracy"] <= 1.0, (name, r)
