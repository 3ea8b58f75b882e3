"""Distributed mode, tuning reports and job submission without a cluster (the cluster tests are in integration/)."""
import json
import os
import re
import subprocess
import sys

import pytest

import tune_spaces
from pipelines import training
from pipelines.cluster import jobs
from pipelines.training import distributed
from pipelines.training.config import TrainConfig
from pipelines.training.distributed import ScalingOptions, _finite
from pipelines.tuning.tune import TuneOptions, _domain_keys, pareto_front
from tests.conftest import ROOT


@pytest.mark.parametrize("field,value", [("num_workers", -1), ("cpus_per_worker", 0), ("max_failures", -2),
                                         ("use_gpu", "yes")])
def test_scaling_options_name_the_bad_field(field, value):
    name = "workers" if field == "num_workers" else field
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        ScalingOptions(**{field: value}).validate()


def test_asha_settings_cap_the_grace_period_at_the_epochs():
    assert TuneOptions(grace_period=3, reduction_factor=3).asha(8) == {"grace_period": 3, "reduction_factor": 3,
                                                                        "max_t": 8}
    assert TuneOptions(grace_period=3).asha(2) == {"grace_period": 2, "reduction_factor": 4, "max_t": 2}


def test_tune_options_validate():
    TuneOptions().validate()
    with pytest.raises(ValueError, match="reduction_factor=1"):
        TuneOptions(reduction_factor=1).validate()
    with pytest.raises(ValueError, match="family='nosuch'"):
        TuneOptions(family="nosuch").validate()
    with pytest.raises(ValueError, match="limit=0"):
        TuneOptions(overrides={"limit": 0}).validate()


def test_nan_and_inf_losses_are_caught():
    assert _finite({"loss": 1.0, "val_loss": 2.0, "accuracy": float("nan")})  # accuracy is not a loss
    assert not _finite({"loss": float("nan")})
    assert not _finite({"loss": 1.0, "val_loss": float("inf")})
    assert not _finite({"ce": float("nan")})


def test_pareto_front_keeps_only_non_dominated_trials():
    rows = [{"trial_id": "a", "val_accuracy": 0.9, "madds": 100},
            {"trial_id": "b", "val_accuracy": 0.8, "madds": 50},
            {"trial_id": "c", "val_accuracy": 0.7, "madds": 80},   # dominated by b
            {"trial_id": "d", "val_accuracy": 0.9, "madds": 120},  # dominated by a
            {"trial_id": "e", "val_accuracy": 0.95, "madds": 300}]
    assert [r["trial_id"] for r in pareto_front(rows)] == ["b", "a", "e"]
    assert pareto_front([]) == []


def test_runtime_env_for_local_and_remote_clusters():
    local = jobs.runtime_env("http://127.0.0.1:8265")
    remote = jobs.runtime_env("http://10.0.0.5:8265")
    for env in (local, remote):
        assert env["env_vars"]["TF_USE_LEGACY_KERAS"] == "1" and env["working_dir"] == str(ROOT)
        assert ".venv" in env["excludes"]
    assert "pip" not in local  # the local head runs this interpreter, whose venv has the requirements
    assert "pip" not in remote  # a remote cluster runs the project image: nothing installed unless asked
    asked = jobs.runtime_env("http://10.0.0.5:8265", pip=True)["pip"]["packages"]
    assert "tensorflow==2.21.0" in asked and "ray[default,tune,train]==2.60.0" in asked
    assert "pip" not in jobs.runtime_env("http://10.0.0.5:8265", pip=False)
    assert jobs.entrypoint(["tune", "--family", "x y"], "http://localhost:8265") == \
        f"{sys.executable} -m pipelines tune --family 'x y'"
    assert jobs.entrypoint(["tune"], "http://10.0.0.5:8265") == "python -m pipelines tune"


def test_submit_to_unreachable_address_is_one_line_naming_it(cli):
    line = cli("submit", "--address", "http://127.0.0.1:9", "--", "tune", "--family", "baseline",
               "--smoke-test").error_line()
    assert "http://127.0.0.1:9" in line and "cannot reach" in line


@pytest.mark.parametrize("args,bad", [
    (("--", "tune", "--family", "nosuch"), "family='nosuch'"),  # checked before the (unreachable) cluster
    ((), "needs a command"),
    (("--", "submit"), "cannot submit command='submit'"),
    (("--", "train", "--epochs", "0"), "epochs=0"),
])
def test_submit_validates_the_command_before_contacting_the_cluster(cli, args, bad):
    assert bad in cli("submit", "--address", "http://127.0.0.1:9", *args).error_line()


def test_submit_rejects_a_non_url_address(cli):
    assert "address='127.0.0.1:8265'" in cli("submit", "--address", "127.0.0.1:8265", "--", "tune", "--family",
                                             "baseline").error_line()


def test_jobs_unreachable_and_train_bad_workers(cli):
    assert "http://127.0.0.1:9" in cli("jobs", "--address", "http://127.0.0.1:9").error_line()
    assert "workers=-1" in cli("train", "--workers", "-1").error_line()


def test_tune_report_lists_the_searched_keys():
    keys = _domain_keys(tune_spaces.get("baseline"))
    assert "learning_rate" in keys and "recipe_config.label_smoothing" in keys and "model" not in keys


IMPORTS = ("pipelines.training", "pipelines.training.distributed", "pipelines.training.entry",
           "pipelines.training.ray_mlflow", "pipelines.cluster.jobs", "pipelines.tuning.tune",
           "pipelines.tuning.tracking", "pipelines.commands.train", "pipelines.commands.tune", "tune_spaces",
           "tune_spaces.basisnet")
SIDE_EFFECTS = r"""
import importlib, json, os, sys
import ray, ray.train, ray.tune  # Ray's own import-time settings are not ours
before = dict(os.environ)
for name in sys.argv[1:]:
    importlib.import_module(name)
changed = {k: [before.get(k), os.environ.get(k)] for k in set(before) | set(os.environ)
           if before.get(k) != os.environ.get(k)}
from pipelines.training.distributed import use_local_token_auth
from ray._raylet import AuthenticationMode, get_authentication_mode
use_local_token_auth()  # where a connection is made: after Ray was imported, it must still take effect
print("RESULT " + json.dumps({"changed": changed, "mode": os.environ.get("RAY_AUTH_MODE"),
                              "ray_token_auth": get_authentication_mode() == AuthenticationMode.TOKEN}))
"""


def test_importing_modules_leaves_the_environment_alone(tmp_path):
    """With a Ray token at hand (~/.ray/auth_token) and no RAY_AUTH_MODE, importing the training, tuning and
    cluster modules sets nothing; token auth is turned on (and Ray's cached config refreshed) only when a
    Ray connection is made."""
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("0" * 64)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "BASISNET_"))}
    env.update(HOME=str(tmp_path), TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    res = subprocess.run([sys.executable, "-c", SIDE_EFFECTS, *IMPORTS], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    line = next((l for l in res.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, res.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    assert out["changed"] == {}, out
    assert out["mode"] == "token" and out["ray_token_auth"], out


LOOPBACK = """
import json, os, sys
import ray._private.ray_constants as constants  # imported first: its constant is read at import
from pipelines.training.distributed import keep_loopback
out = {}
for address in sys.argv[1:]:
    os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    constants.ENABLE_RAY_CLUSTER = True
    keep_loopback(None if address == "none" else address)
    out[address] = [os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"), constants.ENABLE_RAY_CLUSTER]
print("RESULT " + json.dumps(out))
"""


def test_a_driver_of_a_loopback_head_keeps_the_loopback_address():
    """`RAY_ADDRESS=127.0.0.1:6379 python -m pipelines train --workers 2` hung against the loopback-only head
    (Ray rewrote the driver's node address to the machine's): a loopback address or a new local instance
    now keeps 127.0.0.1, even when Ray was imported first; a cluster on another address is left alone."""
    cases = ["127.0.0.1:6379", "localhost:6379", "ray://127.0.0.1:10001", "none", "10.0.0.5:6379", "auto"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    res = subprocess.run([sys.executable, "-c", LOOPBACK, *cases], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    line = next((l for l in res.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, res.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    for address in cases[:4]:
        assert out[address] == ["0", False], (address, out)
    for address in cases[4:]:
        assert out[address] == [None, True], (address, out)


@pytest.mark.parametrize("kwargs,bad", [
    ({"workers": -1}, "workers=-1"), ({"workers": True}, "workers=True"), ({"workers": "2"}, "workers='2'"),
    ({"workers": ScalingOptions(cpus_per_worker=0)}, "cpus_per_worker=0"),
    ({"tracking": training.TrackingOptions(uri="nonsense")}, "tracking_uri='nonsense'"),
    ({"tracking": training.TrackingOptions(experiment="")}, "experiment=''"),
    ({"tracking": "sqlite:///x.db"}, "tracking='sqlite:///x.db'"),
    ({"workers": 2, "resume_dir": "runs/r"}, "resume_dir='runs/r'"),
])
def test_the_training_entry_validates_before_any_work(tmp_path, kwargs, bad):
    cfg = training.TrainConfig(out=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match=re.escape(bad)):
        training.run(cfg, **kwargs)
    assert not (tmp_path / "runs").exists()


def test_tracking_options_make_local_stores_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    opts = training.TrackingOptions(uri="sqlite:///m.db", tags={"k": 1}).validate()
    assert opts.uri == f"sqlite:///{tmp_path / 'm.db'}" and opts.tags == {"k": "1"}
    assert training.TrackingOptions(uri="sqlite:////abs/m.db").validate().uri == "sqlite:////abs/m.db"
    assert training.TrackingOptions(uri="http://127.0.0.1:5000").validate().uri == "http://127.0.0.1:5000"


def test_a_trainer_waits_longer_for_its_workers_and_gives_up_after_a_few_starts(monkeypatch, tmp_path):
    # Ray's defaults (60 s, retried forever) looped without end on a loaded machine; a user's value still wins.
    monkeypatch.delenv(distributed.START_TIMEOUT_ENV, raising=False)
    cfg = TrainConfig(epochs=1, limit=64, image_size=16).validate()
    trainer = distributed.make_trainer(cfg, ScalingOptions(num_workers=1, use_gpu=False), "t", str(tmp_path))
    assert trainer.run_config.failure_config.controller_failure_limit == distributed.START_RETRIES >= 1
    assert os.environ[distributed.START_TIMEOUT_ENV] == str(distributed.START_TIMEOUT_S)
    monkeypatch.setenv(distributed.START_TIMEOUT_ENV, "17")
    distributed.make_trainer(cfg, ScalingOptions(num_workers=1, use_gpu=False), "t", str(tmp_path))
    assert os.environ[distributed.START_TIMEOUT_ENV] == "17"


LOCAL_INSTANCE = r"""
import json, os
import ray
from ray._private.services import canonicalize_bootstrap_address_or_die
from pipelines.training.distributed import ensure_ray

ensure_ray()  # no address, no RAY_ADDRESS: a new local instance

@ray.remote(num_cpus=0)
def seen():  # what Ray Train's PlacementGroupCleaner does to find its cluster, in a process of the instance
    return os.environ.get("RAY_ADDRESS"), canonicalize_bootstrap_address_or_die(None)

print("RESULT " + json.dumps({"gcs": ray.get_runtime_context().gcs_address, "worker": ray.get(seen.remote()),
                              "driver_env": [os.environ.get("RAY_ADDRESS"), os.environ.get("RAY_GCS_SERVER_PORT")]}))
ray.shutdown()
"""


@pytest.mark.slow
def test_a_new_local_instance_names_its_address_to_its_processes(tmp_path):
    """A local search leaked each trial's placement group, and its third trial timed out waiting for CPUs, when
    another Ray ran on the machine: Ray Train's PlacementGroupCleaner finds its cluster by auto-detection.
    Every process of a local instance started by `ensure_ray` now has its GCS address as RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    res = subprocess.run([sys.executable, "-c", LOCAL_INSTANCE], cwd=ROOT, env={**env, "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    line = next((l for l in res.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, res.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    assert out["gcs"].startswith("127.0.0.1:"), out
    assert out["worker"] == [out["gcs"], out["gcs"]], out
    assert out["driver_env"] == [None, None], out  # the driver's own environment is left as it was
