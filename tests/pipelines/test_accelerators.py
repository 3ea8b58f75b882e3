"""Accelerators on Ray Train workers and in-process, on this CPU machine (issue 19): a worker that reserved a
GPU TensorFlow cannot see fails with one line, the driver re-raises that line, "auto" counts the GPUs the
autoscaler can start, the Ray schedule plans whole batches under jit_compile, `--accelerator cpu|gpu|tpu`
(and `--use-gpu`) is validated, and a TPU asked for on a machine without one is one line."""
import math

import pytest
import yaml

from keras_layers import env
import tensorflow as tf

from pipelines import cli
from pipelines.commands import parser
from pipelines.commands.train import config_from_args
from pipelines.training import TrainConfig, devices, distributed, entry
from pipelines.training.distributed import ScalingOptions
from tests.conftest import ROOT

NO_GPU = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="this machine has a GPU")


# ----------------------------------------------------------------------------- the worker's GPU check

@NO_GPU
def test_a_worker_that_reserved_a_gpu_tensorflow_cannot_see_fails_with_one_line_naming_the_cause():
    # this process's devices and build, and the loader log TensorFlow wrote while it was imported here
    with pytest.raises(devices.GpuUnavailableError) as raised:
        devices.require_worker_gpu(environ={"CUDA_VISIBLE_DEVICES": "0"}, log=env.startup_log())
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("a Ray Train worker reserved a GPU (CUDA_VISIBLE_DEVICES='0') but TensorFlow cannot "
                              "use it: "), message
    assert any(cause in message for cause in ("built without GPU support", "driver", "CUDA libraries",
                                              "none visible")), message


def test_the_worker_check_names_a_gpu_ray_did_not_make_visible():
    with pytest.raises(devices.GpuUnavailableError, match=r"CUDA_VISIBLE_DEVICES=''\) but TensorFlow cannot use "
                                                          r"it: none visible: CUDA_VISIBLE_DEVICES=''"):
        devices.require_worker_gpu(environ={"CUDA_VISIBLE_DEVICES": ""}, gpus=[],
                                   build_info={"is_cuda_build": True}, log="")
    assert devices.require_worker_gpu(environ={"CUDA_VISIBLE_DEVICES": "3"}, gpus=["GPU:0"]) == ["GPU:0"]


def test_the_driver_re_raises_the_line_a_worker_failed_with():
    from ray.train.v2.api.exceptions import WorkerGroupError

    line = ("a Ray Train worker reserved a GPU (CUDA_VISIBLE_DEVICES='1') but TensorFlow cannot use it: "
            "CUDA libraries missing (pip install ...)")
    # as Ray hands it over: the worker's exception by rank, and a text with the worker's traceback
    group = WorkerGroupError("[Rank 1 Error Snippet]:\nTraceback (most recent call last):\n  File \"x.py\"\n"
                             f"pipelines.training.devices.GpuUnavailableError: {line}\n",
                             {1: devices.GpuUnavailableError(line)})
    found = devices.worker_failure(group)
    assert isinstance(found, devices.GpuUnavailableError) and str(found) == line
    text_only = RuntimeError(f"Training failed:\n  File \"y.py\"\npipelines.training.devices.TpuUnavailableError: "
                             f"a TPU was asked for (--accelerator tpu) but ...\nmore")
    found = devices.worker_failure(text_only)
    assert isinstance(found, devices.TpuUnavailableError) and str(found) == "a TPU was asked for (--accelerator tpu) but ..."
    assert devices.worker_failure(WorkerGroupError("OOM", {0: MemoryError("OOM")})) is None
    assert cli.expected(found)  # the CLI prints it as one `error:` line


# ----------------------------------------------------------------------------- Ray's plan under jit_compile

def test_ray_workers_plan_the_schedules_on_whole_batches_under_jit_compile(monkeypatch):
    """100 digits, batch 64, jit_compile: one whole batch an epoch (the partial one is dropped), so the LR /
    epsilon schedules must count 1 step an epoch, as in-process does, not 2."""
    import importlib

    import ray.train

    train_mod = importlib.import_module("pipelines.training.train")  # the module (the package exports `train`)

    class Context:
        def get_world_rank(self):
            return 0

        def get_world_size(self):
            return 1

    class Planned(Exception):
        pass

    seen = {}

    def build_training(cfg, info, steps):
        seen["steps"] = steps
        raise Planned

    monkeypatch.setattr(ray.train, "get_context", lambda: Context())
    monkeypatch.setattr(distributed, "worker_strategy", lambda accelerator: tf.distribute.get_strategy())
    monkeypatch.setattr(train_mod, "build_training", build_training)
    cfg = TrainConfig(model="mobilenet_v2", data="digits", limit=100, batch_size=64, epochs=1, jit_compile=True)
    with pytest.raises(Planned):
        distributed.train_func({"train": cfg.to_dict(), "accelerator": "cpu"})
    train_ds, _ = train_mod.load_data(cfg, "train")
    batches = sum(1 for _ in train_ds)
    assert batches == 1 and seen["steps"] == batches


# ----------------------------------------------------------------------------- "auto": what the autoscaler can start

def test_auto_counts_the_gpus_the_autoscaler_can_start_from_a_node_type_description():
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    for name, resources, max_count in (("head", {"CPU": 0}, 0), ("cpu", {"CPU": 16}, 6),
                                       ("gpu", {"CPU": 4, "GPU": 1}, 2), ("gpu4", {"CPU": 48, "GPU": 4}, 3)):
        group = config.node_group_configs.add(name=name, max_count=max_count)
        group.resources.update(resources)
    types = devices.node_types(config)
    assert [t["name"] for t in types] == ["head", "cpu", "gpu", "gpu4"]
    assert devices.startable(types, "GPU") == 2 * 1 + 3 * 4
    assert devices.startable(types, "TPU") == 0
    assert devices.startable(devices.node_types({"gpu": {"resources": {"GPU": 8}, "max_workers": -1}})) == math.inf
    assert devices.startable(devices.node_types(None)) == 0


def test_the_shipped_autoscaler_yaml_declares_gpus_auto_counts():
    cfg = yaml.safe_load((ROOT / "platform" / "ray" / "cluster.yaml").read_text())
    assert devices.startable(devices.node_types(cfg["available_node_types"]), "GPU") == 2  # 0 running at start
    tpu = yaml.safe_load((ROOT / "platform" / "ray" / "cluster-tpu.yaml").read_text())
    assert devices.startable(devices.node_types(tpu["available_node_types"]), "TPU") >= 4


def test_without_a_gcs_cluster_config_the_head_s_autoscaler_yaml_is_read(tmp_path):
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text((ROOT / "platform" / "ray" / "cluster.yaml").read_text())
    types = devices.autoscaler_node_types(bootstrap=str(bootstrap))  # no Ray connected: no GCS config
    assert devices.startable(types, "GPU") == 2
    assert devices.autoscaler_node_types(bootstrap=str(tmp_path / "absent.yaml")) == []


def test_auto_picks_gpus_when_the_cluster_can_start_them(monkeypatch):
    monkeypatch.setattr(devices, "cluster_capacity", lambda resource="GPU": 2 if resource == "GPU" else 0)
    assert distributed.run_accelerator(ScalingOptions(num_workers=2)) == "gpu"
    assert distributed.run_accelerator(ScalingOptions(num_workers=2, use_gpu=False)) == "cpu"
    monkeypatch.setattr(devices, "cluster_capacity", lambda resource="GPU": 0)
    assert distributed.run_accelerator(ScalingOptions(num_workers=2)) == "cpu"


# ----------------------------------------------------------------------------- --accelerator cpu|gpu|tpu

@pytest.mark.parametrize("kwargs, match", [
    ({"accelerator": "npu"}, "unknown accelerator='npu'; valid choices: cpu, gpu, tpu"),
    ({"accelerator": "tpu", "use_gpu": True}, "accelerator='tpu' contradicts use_gpu=True"),
    ({"accelerator": "tpu", "num_workers": 2}, "workers must be 1; received workers=2"),
    ({"accelerator": "tpu", "num_workers": 1, "tpus_per_worker": 0}, "tpus_per_worker=0"),
])
def test_accelerator_options_name_the_bad_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScalingOptions(**kwargs).validate()


def test_use_gpu_is_an_alias_of_the_gpu_and_cpu_accelerators():
    assert devices.resolve_accelerator(None, True) == "gpu" == devices.resolve_accelerator("gpu", True)
    assert devices.resolve_accelerator(None, False) == "cpu"
    assert devices.resolve_accelerator(None, None) is None
    assert ScalingOptions(num_workers=1, use_gpu=True).resolved_accelerator() == "gpu"
    assert entry.scaling_options(3, "gpu").resolved_accelerator() == "gpu"
    with pytest.raises(ValueError, match="contradicts the ScalingOptions' accelerator='cpu'"):
        entry.scaling_options(ScalingOptions(num_workers=2, use_gpu=False), "gpu")


def test_a_tpu_trainer_reserves_one_tpu_vm_host_per_worker_and_compiles_with_xla():
    cfg = TrainConfig(model="mobilenet_v2", data="digits", jit_compile=True, precision="bf16")
    trainer = distributed.make_trainer(cfg, ScalingOptions(num_workers=1, accelerator="tpu", tpus_per_worker=8),
                                       "tpu-run", "/tmp/unused-storage")
    scaling = trainer.scaling_config
    assert scaling.num_workers == 1 and not scaling.use_gpu and scaling.use_tpu
    assert scaling.resources_per_worker == {"CPU": 1.0, "TPU": 8}
    assert trainer.train_loop_config["accelerator"] == "tpu"
    with pytest.raises(ValueError, match="jit_compile must be True; received jit_compile=False"):
        distributed.make_trainer(TrainConfig(), ScalingOptions(num_workers=1, accelerator="tpu"), "x", "/tmp/x")


def test_train_accelerator_tpu_defaults_to_bf16_and_xla_unless_given():
    tpu = config_from_args(parser().parse_args(["train", "--accelerator", "tpu"]))
    assert (tpu.precision, tpu.jit_compile) == ("bf16", True)
    given = config_from_args(parser().parse_args(["train", "--accelerator", "tpu", "--precision", "float32"]))
    assert (given.precision, given.jit_compile) == ("float32", True)
    cpu = config_from_args(parser().parse_args(["train"]))
    assert (cpu.precision, cpu.jit_compile) == ("float32", False)


def test_a_tune_search_on_tpus_runs_one_worker_per_trial_in_bf16_under_xla():
    from pipelines.tuning.tune import TuneOptions

    space = TuneOptions(family="condconv", smoke_test=True, accelerator="tpu").validate().space()
    assert space["precision"] == "bf16" and space["jit_compile"] is True
    with pytest.raises(ValueError, match="workers must be 1; received workers=2"):
        TuneOptions(family="condconv", accelerator="tpu", workers_per_trial=2).validate()
    args = parser().parse_args(["tune", "--family", "condconv", "--accelerator", "tpu"])
    from pipelines.commands.tune import options_from_args

    assert options_from_args(args).scaling().resolved_accelerator() == "tpu"


def test_tpu_problem_names_the_missing_piece():
    assert "no TPU chips on this machine" in devices.tpu_problem(device_files=[], has_libtpu=True)
    assert "libtpu is not installed" in devices.tpu_problem(device_files=["/dev/accel0"], has_libtpu=False)
    assert devices.tpu_problem(device_files=["/dev/vfio/0"], has_libtpu=True) is None


@pytest.mark.parametrize("flags, expected", [
    (["--accelerator", "tpu"], "error: a TPU was asked for (--accelerator tpu) but TensorFlow cannot use one: "),
    (["--accelerator", "tpu", "--use-gpu"], "error: accelerator='tpu' contradicts use_gpu=True"),
])
def test_train_accelerator_tpu_in_process_without_a_tpu_is_one_line_before_any_data_is_read(
        tmp_path, capsys, flags, expected):
    if not flags[-1].startswith("--use") and not devices.tpu_problem():
        pytest.skip("this machine has a TPU")
    code = cli.main(["train", *flags, "--no-tracking", "--data", f"folder:{tmp_path / 'no-such-folder'}",
                     "--out", str(tmp_path), "--epochs", "1"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(expected), lines
    assert "no-such-folder" not in lines[0] and not list(tmp_path.iterdir())  # no data read, no run folder
