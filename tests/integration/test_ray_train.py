"""Ray Train on a real local head: 2 workers vs in-process accuracy; a killed worker resumes from its checkpoint."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.training.train import TrainConfig, train
from tests.integration.ray_cluster import ROOT, ray_head, run_cli  # noqa: F401

pytestmark = pytest.mark.slow

TINY = {"width_multiplier": 0.25, "depth_multiplier": 0.25}
COMMON = ["--model-config", "width_multiplier=0.25", "depth_multiplier=0.25", "--image-size", "16",
          "--batch-size", "16", "--limit", "512", "--cpus-per-worker", "0.5"]


def test_two_workers_match_in_process_accuracy(ray_head, tmp_path):
    local, _, _ = train(TrainConfig(model_config=TINY, image_size=16, batch_size=16, limit=512, epochs=3,
                                    out=str(tmp_path), run_name="local"), verbose=0)
    res = run_cli(ray_head, "train", *COMMON, "--epochs", "3", "--workers", "2", "--out", str(tmp_path),
                  "--run-name", "dist", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "dist"
    dist = json.loads((run_dir / "metrics.json").read_text())
    assert dist["epochs_run"] == 3 and dist["madds"] == local["madds"] and dist["params"] == local["params"]
    # Same global batch, schedule and data: the runs differ only by all-reduce order and shuffling per worker.
    assert local["val_accuracy"] > 0.5, local
    assert abs(dist["val_accuracy"] - local["val_accuracy"]) <= 0.1, (dist, local)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["workers"] == 2 and (run_dir / "model.keras").stat().st_size > 0


def test_killed_worker_resumes_from_last_checkpoint(ray_head, tmp_path):
    epochs = 3
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "train", *COMMON, "--epochs", str(epochs),
                             "--workers", "2", "--max-failures", "2", "--out", str(tmp_path), "--run-name", "k"],
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
