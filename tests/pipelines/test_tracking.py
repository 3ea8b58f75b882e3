"""Tracking: URI precedence, a tracked run's params / per-epoch metrics / artifacts, the figure helpers."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipelines import tracking
from pipelines.training.train import TrainConfig, train_tracked
from tests.conftest import ROOT

MLFLOW_DEFAULTS = {"MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false", "GIT_PYTHON_REFRESH": "quiet",
                   "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def test_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri() == tracking.DEFAULT_TRACKING_URI
    assert tracking.DEFAULT_TRACKING_URI == f"sqlite:///{tracking.PROJECT_ROOT / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri() == "http://127.0.0.1:5999"
    assert tracking.resolve_tracking_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"  # --tracking-uri wins


@pytest.mark.parametrize("bad,field", [("nonsense", "tracking_uri"), ("ftp://host", "tracking_uri")])
def test_bad_uri_names_the_field(bad, field, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match=f"{field}={bad!r}"):
        tracking.resolve_tracking_uri(bad)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", bad)
    with pytest.raises(ValueError, match=f"MLFLOW_TRACKING_URI={bad!r}"):
        tracking.resolve_tracking_uri()


def test_importing_tracking_leaves_the_environment_alone():
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_DEFAULTS}
    code = ("import json, os; before = dict(os.environ); import pipelines.tracking; after = dict(os.environ); "
            "print(json.dumps({k: [before.get(k), after.get(k)] for k in before.keys() | after.keys() "
            "if before.get(k) != after.get(k)}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == {}


def test_configure_sets_mlflow_defaults_but_keeps_the_users(tmp_path, monkeypatch):
    for k in MLFLOW_DEFAULTS:
        monkeypatch.setenv(k, "")  # remembered, so that the test's changes are undone
        monkeypatch.delenv(k)
    with pytest.raises(ValueError, match="tracking_uri='nonsense'"):
        tracking.configure("nonsense")
    assert not any(k in os.environ for k in MLFLOW_DEFAULTS)  # a bad URI changes nothing
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    tracking.configure(f"sqlite:///{tmp_path / 'm.db'}")
    assert {k: os.environ.get(k) for k in MLFLOW_DEFAULTS} == {**MLFLOW_DEFAULTS,
                                                               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "true"}


def test_flatten_params():
    assert tracking.flatten_params({"a": 1, "b": {"c": 2, "d": {"e": "x"}}, "f": {}, "g": [1, 2]}) == {
        "a": "1", "b.c": "2", "b.d.e": "x", "f": "{}", "g": "[1, 2]"}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("track")
    uri = f"sqlite:///{tmp / 'm.db'}"
    cfg = TrainConfig(model="mobilenet_v2", model_config={"width_multiplier": 0.25, "depth_multiplier": 0.25},
                      epochs=2, batch_size=32, out=str(tmp / "runs"), run_name="t", limit=64)
    seen = {}

    def after_train(net, run_dir, run_id):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.imshow(np.arange(6).reshape(2, 3))
        seen["figure"] = tracking.log_figure_and_data(fig, "routing", {"matrix": np.arange(6).reshape(2, 3).tolist(),
                                                                       "xlabels": ["e0", "e1", "e2"]})
        seen["hist"] = tracking.log_histogram("width_choice", [3, 5], ["0.5", "1.0"], xlabel="width")

    metrics, run_dir, net, run_id = train_tracked(cfg, tracking_uri=uri, experiment="t", verbose=0,
                                                           after_train=after_train)
    return uri, metrics, run_dir, run_id, seen, tmp


def test_tracked_run_logs_params_metrics_artifacts(tracked):
    uri, metrics, run_dir, run_id, seen, tmp = tracked
    c = tracking.client(uri)
    run = c.get_run(run_id)
    p = run.data.params
    assert p["model"] == "mobilenet_v2" and p["model_config.width_multiplier"] == "0.25"
    assert p["recipe"] == "standard" and p["recipe_config.label_smoothing"] == "0.0" and p["epochs"] == "2"
    assert run.data.tags["model"] == "mobilenet_v2" and run.data.tags["run_dir"] == str(run_dir.resolve())
    # per-epoch metrics, step = epoch
    hist = c.get_metric_history(run_id, "val_accuracy")
    assert sorted(m.step for m in hist) == [0, 1, 2]  # epochs 1, 2 and the final best value at step 0
    assert [m.step for m in c.get_metric_history(run_id, "loss")] == [1, 2]
    assert run.data.metrics["madds"] == metrics["madds"] and run.data.metrics["params"] == metrics["params"]
    files = {f.path for f in c.list_artifacts(run_id, "run")}
    assert {"run/model.keras", "run/config.json", "run/dataset.json", "run/history.json"} <= files
    plots = {f.path for f in c.list_artifacts(run_id, "plots")}
    assert {"plots/history.png", "plots/history.json", "plots/routing.png", "plots/routing.json",
            "plots/width_choice.png", "plots/width_choice.json"} <= plots
    # the numbers are logged beside the figure
    data = json.loads(open(c.download_artifacts(run_id, "plots/routing.json", str(tmp))).read())
    assert data["matrix"] == [[0, 1, 2], [3, 4, 5]] and data["xlabels"] == ["e0", "e1", "e2"]
    assert seen["figure"] == "plots/routing.png"
    assert json.loads(open(c.download_artifacts(run_id, "plots/width_choice.json", str(tmp))).read()) == \
        {"labels": ["0.5", "1.0"], "counts": [3.0, 5.0]}
    # local SQLite store: artifacts land in mlartifacts/ beside the database, not in the cwd
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.artifact_location.startswith((tmp / "mlartifacts").as_uri())


def test_helpers_reject_bad_shapes():
    with pytest.raises(ValueError, match="labels"):
        tracking.log_histogram("h", [1, 2], ["a"])


def test_bad_config_fails_before_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'never.db'}"
    with pytest.raises(ValueError, match="epochs=0"):
        train_tracked(TrainConfig(epochs=0), tracking_uri=uri)
    assert not (tmp_path / "never.db").exists()


def test_train_cli_bad_tracking_uri_is_one_line(cli, tmp_path):
    assert "tracking_uri='nonsense'" in cli("train", "--tracking-uri", "nonsense", "--out", tmp_path).error_line()
    assert not any(tmp_path.iterdir())  # nothing trained
