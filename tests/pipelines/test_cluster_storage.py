"""Storage (`--storage`), the job plan of `submit` (env forwarding, paths outside Ray's working-dir copy,
refusals for remote clusters) and the live MLflow runs of Tune trials: unit tests, no cluster."""

import pytest

from pipelines.cluster import jobs
from pipelines.training import storage
from pipelines.tuning.tune import TuneOptions, check_cluster

REMOTE = "http://10.0.0.5:8265"
LOCAL = "http://127.0.0.1:8265"


def test_storage_paths_are_made_absolute_and_bucket_uris_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.validate("runs") == str(tmp_path / "runs")
    assert storage.validate(None, default="runs/tune") == str(tmp_path / "runs" / "tune")
    assert storage.validate(None) is None
    assert storage.validate("s3://bucket/dynnets/") == "s3://bucket/dynnets"
    assert storage.validate("gs://b/p") == "gs://b/p"
    assert storage.join("s3://b/p", "exp", "trainer_runs") == "s3://b/p/exp/trainer_runs"
    for bad in ("http://host/x", "sqlite:///x.db", "s3://", "", "  ", 3):
        with pytest.raises(ValueError) as err:
            storage.validate(bad)
        assert f"received storage={bad!r}" in str(err.value)


def test_cluster_problem_names_why_a_storage_cannot_serve_many_nodes():
    assert "no --storage" in storage.cluster_problem(None, None)
    assert "relative" in storage.cluster_problem(storage.validate("runs"), "runs")
    assert "under /tmp" in storage.cluster_problem("/tmp/x", "/tmp/x")
    assert storage.cluster_problem("s3://b/p", "s3://b/p") is None
    assert storage.cluster_problem("/mnt/shared/runs", "/mnt/shared/runs") is None


def test_upload_and_download_through_a_uri(tmp_path):
    src = tmp_path / "src"
    (src / "best").mkdir(parents=True)
    (src / "results.csv").write_text("a\n1\n")
    (src / "best" / "model.keras").write_bytes(b"xyz")
    dest = (tmp_path / "bucket" / "exp").as_uri()  # file:// goes through pyarrow.fs like s3:// and gs://
    storage.upload(src, dest)
    assert not src.exists()  # the staging folder is removed once copied
    assert (tmp_path / "bucket" / "exp" / "results.csv").read_text() == "a\n1\n"
    assert storage.exists(dest, str(tmp_path / "bucket" / "exp" / "best"))
    storage.download(dest, str(tmp_path / "bucket" / "exp" / "best"), tmp_path / "back")
    assert (tmp_path / "back" / "model.keras").read_bytes() == b"xyz"
    assert storage.fetch_file(dest + "/results.csv", tmp_path / "r.csv") and (tmp_path / "r.csv").exists()
    assert not storage.fetch_file(dest + "/missing.json", tmp_path / "m.json")


def test_job_env_forwards_the_tracking_uri_and_env_items():
    environ = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "HOME": "/root"}
    assert jobs.job_env([], environ) == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert jobs.job_env(["MLFLOW_TRACKING_URI=http://other:5000", "A=b=c"], environ) == {
        "MLFLOW_TRACKING_URI": "http://other:5000", "A": "b=c"}
    for bad in ("NOVALUE", "=x", "1A=x", "A B=x"):
        with pytest.raises(ValueError, match=f"received env={bad!r}"):
            jobs.parse_env([bad])
    env = jobs.runtime_env(REMOTE, env_vars={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and env["env_vars"]["TF_USE_LEGACY_KERAS"] == "1"


def parsed(*argv):
    from pipelines.commands import parser

    return list(argv), parser().parse_args(list(argv))


def test_local_job_writes_outside_rays_copy_of_the_repo(tmp_path, monkeypatch):
    from pipelines import tracking

    monkeypatch.chdir(tmp_path)
    # unset in the submitting shell (mlflow.set_tracking_uri in an earlier test of this process sets it)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv, cmd = parsed("tune", "--family", "baseline", "--smoke-test", "--out", "exp")
    out, env = jobs.job_plan(argv, cmd, LOCAL, {})
    assert out == argv + ["--storage", str(tmp_path / "exp")]
    assert env["MLFLOW_TRACKING_URI"] == tracking.DEFAULT_TRACKING_URI  # this project's store, not the copy's
    argv, cmd = parsed("train", "--epochs", "1", "--tracking-uri", "sqlite:///m.db", "--storage", "s")
    out, env = jobs.job_plan(argv, cmd, LOCAL, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert out == ["train", "--epochs", "1", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                   "--storage", str(tmp_path / "s")]
    assert env == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    argv, cmd = parsed("tune", "--resume=runs/tune/x", "--no-tracking")
    out, env = jobs.job_plan(argv, cmd, LOCAL, {})
    assert out == ["tune", f"--resume={tmp_path / 'runs/tune/x'}", "--no-tracking"] and env == {}


@pytest.mark.parametrize("argv,env,bad", [
    (("tune", "--family", "baseline"), {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "no --storage was given"),
    (("tune", "--family", "baseline", "--storage", "runs"), {"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
     "storage='runs' is relative"),
    (("train", "--storage", "/tmp/runs"), {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "under /tmp"),
    (("tune", "--resume", "runs/tune/x"), {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "resume='runs/tune/x'"),
    (("tune", "--family", "baseline", "--storage", "s3://b/p"), {}, "set MLFLOW_TRACKING_URI=http://HOST:PORT"),
    (("train", "--storage", "s3://b/p", "--tracking-uri", "sqlite:///m.db"), {}, "--tracking-uri='sqlite:///m.db'"),
    (("train", "--storage", "s3://b/p"), {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"},
     "MLFLOW_TRACKING_URI='http://127.0.0.1:5000'"),
])
def test_remote_job_without_shared_storage_or_tracking_server_is_refused(argv, env, bad):
    argv, cmd = parsed(*argv)
    with pytest.raises(ValueError, match="remote cluster") as err:
        jobs.job_plan(argv, cmd, REMOTE, env)
    assert bad in str(err.value) and "\n" not in str(err.value)


def test_remote_job_with_bucket_and_server_goes_as_given():
    argv, cmd = parsed("tune", "--family", "baseline", "--storage", "s3://b/p")
    assert jobs.job_plan(argv, cmd, REMOTE, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}) == (
        argv, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    argv, cmd = parsed("train", "--storage", "/mnt/shared/runs", "--no-tracking")
    assert jobs.job_plan(argv, cmd, REMOTE, {}) == (argv, {})
    argv, cmd = parsed("models")
    assert jobs.job_plan(argv, cmd, REMOTE, {}) == (argv, {})


def test_submit_to_a_remote_cluster_without_storage_fails_before_contacting_it(cli):
    res = cli("submit", "--address", "http://10.255.255.1:8265", "--", "tune", "--family", "baseline", "--smoke-test",
              env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    line = res.error_line()
    assert "set --storage" in line and "cannot reach" not in line


def test_tune_options_check_storage_and_remote_clusters(tmp_path):
    with pytest.raises(ValueError, match=r"received storage='http://x'"):
        TuneOptions(storage="http://x").validate()
    assert TuneOptions(out=str(tmp_path)).storage_path() == str(tmp_path)
    assert TuneOptions(storage="gs://b/p").storage_path() == "gs://b/p"
    with pytest.raises(ValueError, match="needs a shared --storage"):
        check_cluster(TuneOptions(), address="10.0.0.5:6379")
    check_cluster(TuneOptions(storage="s3://b/p"), address="10.0.0.5:6379")
    check_cluster(TuneOptions(), address="127.0.0.1:6379")


def test_trial_runs_are_nested_found_again_and_skipped_when_unreachable(tmp_path):
    from pipelines import tracking
    from pipelines.training import TrainConfig
    from pipelines.tuning import tracking as tune_tracking

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    live = tune_tracking.open_parent(uri, tmp_path, {"family": "baseline", "trials": 2}, "baseline", "exp")
    assert tune_tracking.open_parent(uri, tmp_path, {}, "baseline", "exp") == live  # a resumed search: same run
    cfg = TrainConfig(epochs=2)
    run_id = tune_tracking.trial_run(live, "t1", cfg)
    assert tune_tracking.trial_run(live, "t1", cfg) == run_id  # a restored trial logs into its own run
    run = tracking.client(uri).get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == live["parent_run_id"] and run.data.tags["trial_id"] == "t1"
    assert run.data.params["epochs"] == "2" and run.info.status == "RUNNING"
    said = []
    unreachable = {**live, "tracking_uri": "http://127.0.0.1:9"}
    assert tune_tracking.trial_run(unreachable, "t2", cfg, log=said.append) is None
    assert len(said) == 1 and "logged after the search" in said[0]


def test_training_entry_refuses_a_remote_ray_run_without_storage(tmp_path):
    from pipelines import training

    cfg = training.TrainConfig(out=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="needs a shared --storage"):
        training.run(cfg, workers=2, address="10.0.0.5:6379")
    assert not (tmp_path / "runs").exists()


def test_runtime_env_installs_requirements_only_when_asked():
    assert "pip" not in jobs.runtime_env(REMOTE) and "pip" not in jobs.runtime_env(LOCAL)
    packages = jobs.runtime_env(REMOTE, pip=True)["pip"]["packages"]
    assert "tensorflow==2.21.0" in packages and not any(p.startswith(("pytest", "ruff", "flake8")) for p in packages)
