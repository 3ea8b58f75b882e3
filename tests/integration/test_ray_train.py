"""Ray Train on a real local head: 2 workers vs in-process accuracy, tracked in MLflow like an in-process run
and registrable; a killed worker resumes from its checkpoint and no epoch is logged twice."""
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.training.train import TrainConfig, train
from tests.integration.ray_cluster import ROOT, ray_head, run_cli, validation_accuracy  # noqa: F401

pytestmark = pytest.mark.slow

TINY = {"width_multiplier": 0.25, "depth_multiplier": 0.25}
COMMON = ["--model-config", "width_multiplier=0.25", "depth_multiplier=0.25", "--image-size", "16",
          "--batch-size", "16", "--limit", "512", "--cpus-per-worker", "0.5"]


def run_id_of(stdout):
    m = re.search(r"^MLflow run (\w+) ", stdout, re.M)
    assert m, stdout[-3000:]
    return m.group(1)


def test_two_workers_match_in_process_accuracy_and_are_tracked(ray_head, tmp_path):
    from pipelines import tracking
    from pipelines.mlops import registry

    local, _, _ = train(TrainConfig(model_config=TINY, image_size=16, batch_size=16, limit=512, epochs=3,
                                    out=str(tmp_path), run_name="local"), verbose=0)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_cli(ray_head, "train", *COMMON, "--epochs", "3", "--workers", "2", "--out", str(tmp_path),
                  "--run-name", "dist", "--tracking-uri", uri, "--experiment", "it", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "dist"
    dist = json.loads((run_dir / "metrics.json").read_text())
    assert dist["epochs_run"] == 3 and dist["madds"] == local["madds"] and dist["params"] == local["params"]
    # Same global batch, schedule and data: the runs differ only by all-reduce order and shuffling per worker.
    assert local["val_accuracy"] > 0.5, local
    assert abs(dist["val_accuracy"] - local["val_accuracy"]) <= 0.1, (dist, local)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["workers"] == 2
    # TensorBoard: rank 0 wrote Keras' event files into the run folder, as an in-process run does
    assert list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((run_dir / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    # model.keras is the reported epoch's model (each worker validated on its shard with its own BN
    # statistics; the saved net has their mean: measured difference 0.0-0.01)
    assert validation_accuracy(run_dir / "model.keras", image_size=16, limit=512) == pytest.approx(
        dist["val_accuracy"], abs=0.02)

    # MLflow: the run the driver opened, per-epoch metrics logged live from the workers' reports
    run_id = run_id_of(res.stdout)
    client = tracking.client(uri)
    run = client.get_run(run_id)
    assert run.data.params["model"] == "mobilenet_v2" and run.data.params["model_config.width_multiplier"] == "0.25"
    assert run.data.tags["workers"] == "2" and "epoch_metrics_logged_after_run" not in run.data.tags
    for key in ("loss", "accuracy", "val_loss", "learning_rate"):  # step 0: a final metric (the best epoch's)
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert [step for step in steps if step] == [1, 2, 3], (key, steps)
    per_epoch = {m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy") if m.step}
    assert per_epoch[dist["best_epoch"]] == pytest.approx(dist["val_accuracy"])
    assert run.data.metrics["madds"] == dist["madds"]
    artifacts = {Path(a.path).name for a in client.list_artifacts(run_id, "run")}
    assert {"model.keras", "config.json", "dataset.json", "metrics.json", "history.json"} <= artifacts
    mv = registry.register(run_id, "ray_train_digits", tracking_uri=uri, log=lambda *_: None)
    assert str(mv.version) == "1" and mv.tags["model"] == "mobilenet_v2" and mv.tags["source_run"] == run_id


@pytest.mark.extended
def test_killed_worker_resumes_from_last_checkpoint(ray_head, tmp_path):
    epochs = 3
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "train", *COMMON, "--epochs", str(epochs),
                             "--workers", "2", "--max-failures", "2", "--out", str(tmp_path), "--run-name", "k",
                             "--tracking-uri", uri],
                            cwd=ROOT, env=ray_head.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    snapshot = tmp_path / "ray" / "k" / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 400
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        try:  # a checkpoint counts once Ray Train has committed it (all workers reported the epoch)
            latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["epoch"]
        except (OSError, ValueError, KeyError, TypeError):
            latest = None
        workers = ray_head.processes("RayTrainWorker") if latest else []
        if workers:
            killed_after = latest
            workers[-1].send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=500)
    assert killed_after is not None and killed_after < epochs, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    metrics = json.loads((tmp_path / "k" / "metrics.json").read_text())
    history = json.loads((tmp_path / "k" / "history.json").read_text())
    # Every epoch reported exactly once; the restarted group began at (or after) the last checkpoint at the kill.
    assert history["epoch"] == list(range(1, epochs + 1)), history["epoch"]
    assert metrics["epochs_run"] == epochs
    assert killed_after <= metrics["resumed_from_epoch"] < epochs, (killed_after, metrics)
    assert f"resumed from checkpoint at epoch {metrics['resumed_from_epoch']}" in out
    # MLflow has each epoch once, also across the worker group's restart
    from pipelines import tracking

    client = tracking.client(uri)
    run_id = run_id_of(out)
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == list(range(1, epochs + 1))
