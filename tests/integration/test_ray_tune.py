"""Ray Tune on a real local head: a smoke search submitted over HTTP, Tuner.restore after an interrupt, a NaN trial."""
import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.ray_cluster import ROOT, PoisonWeights, ray_head, run_cli, validation_accuracy  # noqa: F401

pytestmark = pytest.mark.slow
SMALL = ["--cpus-per-worker", "0.5", "--limit", "192"]


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_submit_smoke_tuning_job_over_http(ray_head, tmp_path):
    res = run_cli(ray_head, "submit", "--address", ray_head.dashboard, "--", "tune", "--family", "baseline",
                  "--smoke-test", *SMALL, "--out", str(tmp_path), "--name", "smoke",
                  "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", timeout=600)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-2000:])
    job_line = next(l for l in res.stdout.splitlines() if l.startswith("submitted job "))
    job_id = job_line.split()[2]
    assert f"job {job_id} SUCCEEDED" in res.stdout
    exp = tmp_path / "smoke"
    trials = rows(exp / "results.csv")
    assert len(trials) == 2 and all(t["status"] in ("completed", "stopped early (ASHA)") for t in trials), trials
    assert all(int(t["madds"]) > 0 for t in trials)
    front = rows(exp / "pareto.csv")
    assert 1 <= len(front) <= 2 and (exp / "pareto.png").stat().st_size > 0
    best = json.loads((exp / "best" / "best.json").read_text())
    assert best["trial_id"] in {t["trial_id"] for t in trials} and (exp / "best" / "model.keras").exists()
    assert best["val_accuracy"] == max(float(t["val_accuracy"]) for t in trials)
    # best/ is the checkpoint of the epoch the trial reported (one worker per trial: the same validation)
    saved = validation_accuracy(exp / "best" / "model.keras", image_size=32, limit=192)
    assert saved == pytest.approx(best["val_accuracy"], abs=1e-6), (saved, best)
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["failed"] == 0 and not summary["interrupted"]
    import tune_spaces

    smoke_epochs = tune_spaces.smoke("baseline")["epochs"]  # ASHA's max_t: the smoke search's epochs
    assert summary["asha"] == {"grace_period": 1, "reduction_factor": 4, "max_t": smoke_epochs}, summary["asha"]
    # MLflow: one parent run, one nested run per trial; the best trial's run can be registered.
    from pipelines import tracking

    client = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tune").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "tune"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.data.metrics["trials"] == 2
    assert all("learning_rate" in r.data.params for r in children)
    # every space turns precise BN statistics on (tune_spaces.COMMON); the trials ran with it
    assert all(r.data.params.get("precise_bn_batches") == "8" for r in children), [r.data.params for r in children]
    by_id = {t["trial_id"]: t for t in trials}
    for r in children:  # the trial's last epoch, as logged per epoch, is what results.csv reports
        row = by_id[r.data.tags["trial_id"]]
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy"))
        assert steps == [0, *range(1, int(row["epochs_run"]) + 1)], (steps, row)
        assert r.data.metrics["val_accuracy"] == pytest.approx(float(row["val_accuracy"])), (r.data.metrics, row)
    (best_run,) = [r for r in children if r.data.tags.get("best_trial") == "true"]
    assert {"model.keras", "config.json", "dataset.json"} <= {
        Path(a.path).name for a in client.list_artifacts(best_run.info.run_id, "run")}
    listed = run_cli(ray_head, "jobs", "--address", ray_head.dashboard)
    assert listed.returncode == 0 and any(job_id in l and "SUCCEEDED" in l for l in listed.stdout.splitlines())


@pytest.mark.extended
def test_interrupted_experiment_resumes_with_tuner_restore(ray_head, tmp_path):
    args = ["tune", "--family", "baseline", "--smoke-test", "--trials", "1", "--epochs", "3", *SMALL,
            "--out", str(tmp_path), "--name", "r", "--no-tracking"]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", *args], cwd=ROOT, env=ray_head.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exp = tmp_path / "r"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(exp.glob("trainer_runs/*/train/checkpoint_epoch_0001")):
            proc.send_signal(signal.SIGINT)  # Ctrl+C: Tune saves the experiment state and returns
            break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "continue with: python -m pipelines tune --resume" in out, out[-3000:]
    res = run_cli(ray_head, "tune", "--resume", str(exp), "--no-tracking", timeout=400)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    (trial,) = rows(exp / "results.csv")
    # The restored trial's Trainer found its own checkpoints: it went on from epoch >= 1 to the end.
    assert trial["status"] == "completed" and int(trial["epochs_run"]) == 3, trial
    assert 1 <= int(trial["resumed_from_epoch"]) < 3, trial
    assert not json.loads((exp / "summary.json").read_text())["interrupted"]


NAN_DRIVER = """
import json, sys
from pipelines.tuning import tune
from tests.integration.ray_cluster import PoisonWeights
opts = tune.TuneOptions(family="baseline", smoke_test=True, trials=1, cpus_per_worker=0.5, out=sys.argv[1],
                        name="nan", overrides={"epochs": 2, "limit": 192})
print("SUMMARY " + json.dumps(tune.run(opts, callbacks=[PoisonWeights(epoch=1)]), default=str))
"""


@pytest.mark.extended
def test_nan_trial_is_stopped_and_marked_failed(ray_head, tmp_path):
    # A driver process with a callback that turns a kernel to NaN at the start of epoch 2.
    res = subprocess.run([sys.executable, "-c", NAN_DRIVER, str(tmp_path)], cwd=ROOT, env=ray_head.env(),
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    summary = json.loads(next(l for l in res.stdout.splitlines() if l.startswith("SUMMARY "))[8:])
    (trial,) = rows(tmp_path / "nan" / "results.csv")
    assert trial["status"] == "failed: non-finite loss", trial
    assert int(trial["epochs_run"]) == 1  # epoch 1 was reported; the NaN epoch 2 never was
    assert summary["failed"] == 1 and summary["best"] is None and summary["pareto"] == []
    assert not (tmp_path / "nan" / "best").exists()
