"""A 2-node Ray cluster on 127.0.0.1: a head with `--num-cpus 0` (it schedules, it does not train) and a worker
node joined with `ray start --address` (its own temp dir, process group and ports), a real `mlflow server` on
PostgreSQL whose artifacts are served over HTTP, and a folder under tmp_path as the shared volume both nodes
see (on a real cluster: a ReadWriteMany PVC or a bucket).

A smoke tune submitted with `pipelines submit` (MLFLOW_TRACKING_URI set in the submitting shell) runs its trials
on the worker node, its runs are in the server while it searches, the best model is registered from it and
nothing is left in Ray's copy of the working dir; `train --workers 2` on the same cluster is tracked there and
matches the in-process run; a search whose worker node is killed resumes with Tuner.restore and no finished
trial runs again. Each node is stopped by its own process group (never `ray stop`).
"""
import csv
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.mlflow_server import running_server
from tests.integration.ray_cluster import ROOT, alive_nodes, run_cli, start_head, start_worker_node, stop_head

pytestmark = [pytest.mark.slow, pytest.mark.multinode]  # `make test-multinode`; left out of `make test`
SMALL = ["--cpus-per-worker", "0.5", "--limit", "128"]


@pytest.fixture(scope="module")
def cluster(postgres_server):
    head = start_head(num_cpus=0)
    node = None
    try:
        node = start_worker_node(head, num_cpus=2)
        with tempfile.TemporaryDirectory(prefix="mlflow-mn-") as tmp:
            with running_server(tmp, MLFLOW_BACKEND_STORE_URI=postgres_server.new_database()) as uri:
                yield head, node, uri
    finally:
        if node is not None:
            stop_head(node)
        stop_head(head)


def api(head, path):
    req = urllib.request.Request(f"{head.dashboard}{path}", headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def actors(head):
    """Every actor the cluster has seen (dead ones too): class name and node id."""
    data = api(head, "/api/v0/actors?limit=10000&detail=1")["data"]["result"]["result"]
    return [(a.get("class_name") or "", a.get("node_id")) for a in data]


def mlflow_runs(uri):
    from pipelines import tracking

    client = tracking.client(uri)
    exp = client.get_experiment_by_name("tune")
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def copies_of_the_repo(*temp_dirs):
    """Ray's copies of the job's working dir on every node (`runtime_resources/working_dir_files/*`)."""
    return [p for d in temp_dirs for p in Path(d).glob("session_*/runtime_resources/working_dir_files/*")]


def test_submitted_tune_runs_on_the_worker_node_and_logs_live(cluster, tmp_path):
    head, node, uri = cluster
    (worker_id,) = [i for i, r in alive_nodes(head).items() if node.resource in r]
    shared = tmp_path / "shared"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "submit", "--address", head.dashboard, "--", "tune", "--family",
         "baseline", "--smoke-test", *SMALL, "--storage", str(shared), "--name", "smoke"],
        cwd=ROOT, env=head.env(MLFLOW_TRACKING_URI=uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen_live = None  # (parent status, trial runs with per-epoch metrics) seen while the job ran
    copies = set()
    deadline = time.time() + 900
    while proc.poll() is None and time.time() < deadline:
        copies.update(copies_of_the_repo(head.temp_dir, node.temp_dir))
        try:
            client, runs = mlflow_runs(uri)
            parents = [r for r in runs if r.data.tags.get("kind") == "tune"]
            trials = [r for r in runs if r.data.tags.get("kind") == "tune-trial"
                      and client.get_metric_history(r.info.run_id, "val_accuracy")]
            if seen_live is None and parents and trials and proc.poll() is None:  # the first sighting
                seen_live = (parents[0].info.status, len(trials))
        except Exception:
            pass
        time.sleep(2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-4000:]
    assert seen_live is not None and seen_live[0] == "RUNNING", (seen_live, out[-3000:])
    assert "[tune] trial" in out and "+------" not in out  # one line per report, no Ray status tables

    # every trial and every Ray Train worker ran on the worker node (the head has no CPU)
    placed = [(c, n) for c, n in actors(head) if "RayTrainWorker" in c or "ImplicitFunc" in c or "trial" in c]
    assert placed and all(n == worker_id for _, n in placed), placed

    exp = shared / "smoke"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["failed"] == 0 and (exp / "best" / "model.keras").exists()
    assert (exp / "pareto.csv").exists() and list(exp.glob("trainer_runs/*/train/checkpoint_epoch_*"))

    # MLflow: the parent opened before the search, both trials logged live by the trials, the best registered
    client, runs = mlflow_runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "tune"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(r.data.tags["logged"] == "live" and r.info.status == "FINISHED" for r in children), children
    for r in children:
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "loss"))
        assert steps == list(range(1, len(steps) + 1)) and steps, steps  # each epoch once
    (best,) = [r for r in children if r.data.tags.get("best_trial") == "true"]
    from pipelines.mlops import registry

    mv = registry.register(best.info.run_id, "multinode_smoke", tracking_uri=uri, log=lambda *_: None)
    assert str(mv.version) == "1"
    # artifacts went to the server over HTTP (mlflow-artifacts:), not to a path on a node
    assert client.get_run(best.info.run_id).info.artifact_uri.startswith("mlflow-artifacts:")

    # nothing was written into Ray's copies of the repo (results, stores and models are elsewhere)
    assert copies, "no working-dir copy was seen while the job ran"
    written = [p for c in copies if c.exists()
               for p in c.rglob("*") if p.name in ("mlruns.db", "results.csv", "summary.json", "model.keras")
               or "runs" == p.name]
    assert written == [], written


def test_ray_train_on_the_worker_node_is_tracked_and_matches_in_process(cluster, tmp_path):
    head, node, uri = cluster
    from pipelines import tracking
    from pipelines.mlops import registry
    from pipelines.training import TrainConfig, train

    common = ["--model-config", "width_multiplier=0.25", "depth_multiplier=0.25", "--image-size", "16",
              "--batch-size", "16", "--limit", "256", "--epochs", "2"]
    local, _, _ = train(TrainConfig(model_config={"width_multiplier": 0.25, "depth_multiplier": 0.25},
                                    image_size=16, batch_size=16, limit=256, epochs=2, out=str(tmp_path / "local"),
                                    run_name="local"), verbose=0)
    res = run_cli(head, "train", *common, "--workers", "2", "--cpus-per-worker", "0.5", "--storage",
                  str(tmp_path / "shared"), "--run-name", "dist", "--tracking-uri", uri, "--experiment", "mn",
                  timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    dist = json.loads((tmp_path / "shared" / "dist" / "metrics.json").read_text())
    assert list((tmp_path / "shared" / "ray" / "dist").glob("checkpoint_epoch_*"))
    assert dist["madds"] == local["madds"] and dist["epochs_run"] == 2
    assert abs(dist["val_accuracy"] - local["val_accuracy"]) <= 0.15, (dist, local)
    run_id = next(l.split()[2] for l in res.stdout.splitlines() if l.startswith("MLflow run "))
    client = tracking.client(uri)
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2]
    assert client.get_run(run_id).data.params["model_config.width_multiplier"] == "0.25"
    assert str(registry.register(run_id, "multinode_train", tracking_uri=uri, log=lambda *_: None).version) == "1"
    workers = [n for c, n in actors(head) if "RayTrainWorker" in c]
    (worker_id,) = [i for i, r in alive_nodes(head).items() if node.resource in r]
    assert workers and set(workers) == {worker_id}


SNAPSHOTS = "trainer_runs/*/train/checkpoint_manager_snapshot.json"


def committed_epoch(snapshot):
    """The last epoch Ray Train committed (all workers reported it) in a Trainer run, or None."""
    try:
        return json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def test_search_resumes_with_tuner_restore_after_the_worker_node_dies(cluster, tmp_path):
    head, node, uri = cluster
    shared = tmp_path / "shared"
    args = ["tune", "--family", "baseline", "--smoke-test", "--trials", "2", "--epochs", "2", *SMALL,
            "--grace-period", "2", "--storage", str(shared), "--name", "k", "--no-tracking"]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", *args], cwd=ROOT, env=head.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exp = shared / "k"
    finished_before = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        committed = {p.parent.parent.name: committed_epoch(p) for p in exp.glob(SNAPSHOTS)}
        done = [t for t, e in committed.items() if e == 2]
        if done and 1 in committed.values():  # one trial finished, the other one mid-way: the node dies
            finished_before = {t: sorted(p.name for p in (exp / "trainer_runs" / t / "train").iterdir()) for t in done}
            stop_head(node)
            proc.send_signal(signal.SIGINT)  # the driver saves the experiment state (as on a lost driver node)
            break
        time.sleep(0.3)
    out, _ = proc.communicate(timeout=300)
    assert finished_before, out[-3000:]
    new_node = start_worker_node(head, num_cpus=2)
    try:
        assert sum(node.resource in r for r in alive_nodes(head).values()) == 1  # the new node only
        res = run_cli(head, "tune", "--resume", str(exp), "--no-tracking", timeout=900)
    finally:
        stop_head(new_node)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["completed"] == 2 and not summary["interrupted"], summary
    for t, files in finished_before.items():  # a finished trial was not run again
        assert sorted(p.name for p in (exp / "trainer_runs" / t / "train").iterdir()) == files
    with open(exp / "results.csv") as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    (resumed,) = [r for t, r in rows.items() if t not in finished_before]
    assert int(resumed["resumed_from_epoch"]) >= 1, resumed
