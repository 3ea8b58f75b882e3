"""`train --resume RUN_DIR` and `train --config runs/NAME/config.json` from the command line (in this process,
through `pipelines.cli.main`), and the TensorBoard event files a run folder holds."""
import json

import pytest

from pipelines import cli
from pipelines.training.train import TrainConfig, train

TINY = {"width_multiplier": 0.25, "depth_multiplier": 0.25}
STEPS = 2  # 64 examples, batch 32


def stop_after_first_epoch(ctx):
    """A callback factory: stops training at the end of the first epoch (an interrupted run)."""
    import tf_keras as keras

    class _Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    return _Stop()


def checkpoint_state(run_dir):
    """(epoch, optimizer iterations) of the run folder's latest checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    names = reader.get_variable_to_shape_map()
    iterations = next(n for n in names if n.startswith("optimizer/") and "iter" in n)
    return int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")), int(reader.get_tensor(iterations))


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A 2-epoch run stopped after its first epoch: its checkpoint is epoch 1 with 2 optimizer steps."""
    tmp = tmp_path_factory.mktemp("resume")
    cfg = TrainConfig(model_config=TINY, image_size=16, epochs=2, batch_size=32, out=str(tmp), run_name="r",
                      limit=64)
    metrics, run_dir, _ = train(cfg, callbacks=[stop_after_first_epoch], verbose=0)
    assert metrics["epochs_run"] == 1 and checkpoint_state(run_dir) == (1, STEPS)
    return cfg, run_dir


def events(folder):
    return sorted(p.name for p in folder.glob("events.out.tfevents.*")) if folder.is_dir() else []


def test_run_folder_has_tensorboard_events(interrupted_run):
    import tensorflow as tf

    _, run_dir = interrupted_run
    train_events = list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert train_events and events(run_dir / "tensorboard" / "validation")
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(train_events[0])) for v in e.summary.value}
    assert {"epoch_loss", "epoch_accuracy"} <= tags, tags


def test_resume_refuses_a_changed_config_in_one_line(interrupted_run, capsys):
    _, run_dir = interrupted_run
    assert cli.main(["train", "--resume", str(run_dir), "--epochs", "5", "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:") and "epochs=5" in err and "epochs=2" in err, err
    assert checkpoint_state(run_dir) == (1, STEPS)  # nothing trained
    assert cli.main(["train", "--resume", str(run_dir.parent / "nosuch"), "--no-tracking"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_resume_continues_at_the_next_epoch_with_the_optimizer_state(interrupted_run, tmp_path, capsys):
    """`train --resume RUN_DIR` (tracked, flags equal to the run's are accepted) trains epoch 2 only, from
    the checkpoint's optimizer state: after it the optimizer has taken 2 epochs of steps, not 1."""
    import mlflow

    cfg, run_dir = interrupted_run
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert cli.main(["train", "--resume", str(run_dir), "--image-size", "16", "--tracking-uri", uri]) == 0, \
        capsys.readouterr().err
    assert checkpoint_state(run_dir) == (2, 2 * STEPS)
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["val_accuracy"]) == 1  # epoch 2 only
    assert json.loads((run_dir / "config.json").read_text()) == cfg.to_dict()
    assert len(events(run_dir / "tensorboard" / "train")) == 2  # one events file per fit, same folder
    runs = mlflow.MlflowClient(uri).search_runs([mlflow.MlflowClient(uri).get_experiment_by_name("pipelines")
                                                 .experiment_id])
    assert [r.data.tags.get("resumed_from") for r in runs] == [str(run_dir.resolve())]


def test_config_round_trip(interrupted_run, tmp_path, capsys, monkeypatch):
    """`--config runs/NAME/config.json` reads every field back; flags given override fields (KEY=VALUE
    options key by key); the command hands that config to the one training entry (stubbed here: the
    training itself is the test above)."""
    from pipelines import training
    from pipelines.commands import parser
    from pipelines.commands.train import config_from_args

    cfg, run_dir = interrupted_run
    path = str(run_dir / "config.json")
    assert config_from_args(parser().parse_args(["train", "--config", path])).to_dict() == cfg.to_dict()
    args = parser().parse_args(["train", "--config", path, "--seed", "3", "--model-config", "depth_multiplier=0.5",
                                "--epochs", "10"])  # 10: the flag's default, given: it overrides
    got = config_from_args(args)
    assert (got.seed, got.epochs, got.model_config) == (3, 10, {**TINY, "depth_multiplier": 0.5})
    assert (got.image_size, got.limit, got.out) == (16, 64, cfg.out)
    seen = {}

    def fake_run(config, workers=0, tracking=None, resume_dir=None, **_):
        seen.update(config=config.to_dict(), workers=workers, resume_dir=resume_dir)
        return training.TrainResult({"val_accuracy": 0.5}, tmp_path / "r", None, None)

    monkeypatch.setattr(training, "run", fake_run)
    assert cli.main(["train", "--config", path, "--epochs", "1", "--out", str(tmp_path), "--no-tracking"]) == 0, \
        capsys.readouterr().err
    assert seen == {"config": {**cfg.to_dict(), "epochs": 1, "out": str(tmp_path)}, "workers": 0, "resume_dir": None}
    assert cli.main(["train", "--config", str(tmp_path / "nosuch.json")]) == 2
    assert "nosuch.json" in capsys.readouterr().err
