import json
import subprocess
import sys

import numpy as np
import pytest

from pipelines.training import recipes
from pipelines.training.train import TrainConfig, best_index, train
from tests.conftest import ROOT

TINY = {"width_multiplier": 0.25, "depth_multiplier": 0.25}
SPOILED_EPOCH = 2  # 0-based: the last of 3 epochs starts from zeroed weights, so it is not the best


def spoil_weights_at(epoch_to_spoil):
    """A callback factory (as Ray Train workers take them): zeroes every trainable weight of the net when
    epoch `epoch_to_spoil` begins; with zero kernels the net predicts one class, near chance."""
    def factory(ctx):
        from keras_layers import env  # noqa: F401
        import tf_keras as keras

        class _Spoil(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == epoch_to_spoil:
                    for w in self.model.net.trainable_weights:
                        w.assign(w * 0.0)

        return _Spoil()

    return factory


@pytest.fixture(scope="module")
def spoiled_run(tmp_path_factory):
    """3 epochs of a tiny net on digits at 16x16 (the in-process half of the Ray Train integration test:
    > 0.5 val accuracy there), the last one spoiled."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(model="mobilenet_v2", model_config=TINY, image_size=16, epochs=3, batch_size=16,
                      out=str(tmp), run_name="r", limit=512)
    metrics, run_dir, net = train(cfg, callbacks=[spoil_weights_at(SPOILED_EPOCH)], verbose=0)
    return cfg, metrics, run_dir, net


def test_tiny_training_writes_a_run(spoiled_run):
    cfg, metrics, run_dir, net = spoiled_run
    for f in ("model.keras", "history.json", "metrics.json", "config.json", "checkpoints"):
        assert (run_dir / f).exists(), f
    assert metrics["epochs_run"] == 3 and metrics["madds"] > 0 and metrics["params"] == net.count_params()
    assert metrics["val_accuracy"] > 0.5, metrics  # 10 classes: chance is 0.1 (measured 0.81)
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    from pipelines.training import code_version

    assert code_version.stale(run_dir) is None  # code.json: this checkout's code trained it
    # a second run with the same name never overwrites the first
    cfg2 = TrainConfig(model_config=TINY, image_size=16, epochs=1, batch_size=32, out=cfg.out, run_name="r",
                       limit=32)
    _, run_dir2, _ = train(cfg2, verbose=0)
    assert run_dir2 != run_dir and (run_dir / "model.keras").exists()


def validation_accuracy(net, cfg):
    from pipelines import data

    images, labels, _ = data.as_numpy(cfg.data, "validation", image_size=cfg.image_size, limit=cfg.limit)
    return float(np.mean(np.argmax(net.predict(images, verbose=0), -1) == labels.reshape(-1)))


def test_saved_model_is_the_epoch_the_run_reports(spoiled_run):
    """metrics.json reports the best epoch; model.keras (and the returned net) must be that epoch's model,
    not the last epoch's (which is spoiled here)."""
    import tf_keras as keras

    cfg, metrics, run_dir, net = spoiled_run
    val = json.loads((run_dir / "history.json").read_text())["val_accuracy"]
    assert val[SPOILED_EPOCH] < max(val) - 0.2, val  # the spoiled epoch really is worse
    assert metrics["best_epoch"] == best_index(val) + 1 != SPOILED_EPOCH + 1, metrics
    saved = keras.models.load_model(run_dir / "model.keras", compile=False)
    assert validation_accuracy(saved, cfg) == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert validation_accuracy(net, cfg) == pytest.approx(metrics["val_accuracy"], abs=1e-6)


def test_learning_rate_is_read_under_a_strategy():
    """Ray Train workers report the learning rate of an optimizer built in a strategy scope (a
    MirroredVariable, which float() refuses)."""
    import tensorflow as tf

    from pipelines.tracking import current_learning_rate
    from pipelines.training.train import build_training, load_data

    cfg = TrainConfig(model_config=TINY, image_size=16, limit=32, learning_rate=0.004)
    _, info = load_data(cfg, "train")
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = build_training(cfg, info, steps_per_epoch=3)
    assert current_learning_rate(model) == pytest.approx(0.004)


def test_best_index_rule():
    nan = float("nan")
    assert best_index([0.2, 0.5, 0.5, 0.1]) == 1  # first of the highest
    assert best_index([0.9, 0.5, 0.6], first=1) == 2  # from the recipe's last stage on
    assert best_index([0.9, nan], first=1) == 0  # no finite value there: all epochs
    assert best_index([nan, nan]) == 1 and best_index([]) == 0  # nothing to compare: the last epoch


@pytest.mark.parametrize("field,value", [
    ("model", "nosuch"), ("epochs", 0), ("batch_size", -1), ("learning_rate", 0.0), ("optimizer", "lion"),
    ("recipe", "nosuch"), ("early_stopping", -2),
])
def test_bad_config_names_field(field, value):
    cfg = TrainConfig(**{field: value})
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        cfg.validate()


def test_bad_recipe_field():
    with pytest.raises(ValueError, match="label_smoothing=0.9"):
        TrainConfig(recipe_config={"label_smoothing": 0.9}).validate()
    with pytest.raises(ValueError, match="nosuch"):
        TrainConfig(recipe_config={"nosuch": 1}).validate()


def test_default_recipe():
    assert recipes.for_model("mobilenet_v2") == "standard"
    assert "standard" in recipes.names()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args,bad", [(("--data", "nosuch"), "nosuch"), (("--model", "nosuch"), "nosuch")])
def test_cli_bad_value_is_one_line_and_nonzero(cli, args, bad):
    assert bad in cli("train", *args).error_line()


def test_the_process_itself_prints_one_error_line_and_exits_2():
    """The in-process `cli` fixture's errors, seen from outside: no traceback, no TensorFlow log line."""
    res = run_cli("train", "--model", "nosuch")
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: unknown model='nosuch'"), res.stderr


def test_cli_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0 and "train" in res.stdout and "models" in res.stdout
    res = run_cli("train", "--help")
    assert res.returncode == 0 and "--data" in res.stdout


def test_cli_models_lists_registry(cli):
    res = cli("models", "--image-size", "32")
    assert res.returncode == 0 and "mobilenet_v2" in res.stdout, res.stderr


def test_stdlib_platform_not_shadowed():
    res = subprocess.run([sys.executable, "-c", "import platform; print(platform.system())"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "Linux"
    assert not (ROOT / "platform" / "__init__.py").exists()
