"""Distributed training on Ray Train workers (Ray 2.60, Train V2): `TensorflowTrainer` + `train_func`.

    python -m pipelines train --model mobilenet_v2 --workers 2              # local Ray, 2 CPU workers
    python -m pipelines train --model mobilenet_v2 --workers 4 --use-gpu    # 1 GPU per worker
    RAY_ADDRESS=127.0.0.1:6379 python -m pipelines train --workers 2        # an existing cluster

`train_func(config)` runs on every worker: it builds the registered model and its recipe with
`pipelines.training.train.build_training` inside a `MultiWorkerMirroredStrategy` scope (Ray's TF backend sets
`TF_CONFIG`; a worker on a single-host TPU VM: `TPUStrategy`, see `worker_strategy`), feeds a `tf.data` input that the strategy shards per worker (`AutoShardPolicy.DATA`;
the global batch is `TrainConfig.batch_size`, the same as in-process, so results are comparable),
and fits with one callback that, after every epoch, writes weights + optimizer + epoch (the
`pipelines.training.train.EpochCheckpoint` state) and the plain net (`model.keras`) and calls
`ray.train.report(metrics, checkpoint)`. A restarted worker group (a killed worker, with
`FailureConfig(max_failures)`) or a re-run with the same `name`/`storage_path` (Tune's
`Tuner.restore`) resumes from `ray.train.get_checkpoint()`: no finished epoch is trained twice.

Accelerators (`ScalingOptions.accelerator`, `--accelerator cpu|gpu|tpu`, `--use-gpu` = gpu): a worker that
reserved a GPU checks that TensorFlow sees it before it builds anything (`devices.require_worker_gpu`), a TPU
worker that its host has TPU chips and libtpu; the driver re-raises that worker's one line
(`devices.worker_failure`). Auto (nothing asked): GPUs when the cluster has or its autoscaler can start them.

A loss that becomes NaN/inf stops every worker at the end of that epoch *without reporting it*;
`fit_distributed` then raises `NonFiniteLossError` (a Tune trial fails; nothing is retried).

Extension hooks: `fit_distributed(cfg, callbacks=[factory, ...])` where each
`factory(ctx: WorkerContext) -> keras.callbacks.Callback | None` runs on every worker after the
model is built (`ctx` carries the `TrainConfig`, world rank/size and the initial epoch); and
`run_callbacks=[ray.train.UserCallback, ...]`, called on the driver's node after every report (MLflow
tracking of a Ray run is one: `pipelines.training.entry`, through `pipelines.training.run`).

The same `train_func` runs without a cluster with `num_workers=0` (Ray Train's local mode, in this
process) for debugging. Use `pipelines.training.run(cfg, workers=N, tracking=...)`: the one entry for
in-process and Ray Train runs, tracked or not.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow)
from pipelines.training import code_version
from pipelines.training.train import TrainConfig, WorkerContext  # noqa: F401  (WorkerContext re-exported)
from pipelines.training.train import TENSORBOARD_DIR, TensorBoardOnRankZero

# Environment every Ray worker needs (Keras 2 API; see DESIGN.md "Keras version").
WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}
# Ray Train waits 60 s (its default) for a worker group to start and retries a start that timed out
# without limit (FailureConfig.controller_failure_limit=-1): on a busy 2-core machine, or a cluster that
# must start a node first, TensorFlow workers can take longer, and the run then loops forever. Runs wait
# START_TIMEOUT_S unless $RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S says otherwise, and fail after
# START_RETRIES timed-out starts. (The driver's value reaches Ray Train's controller and workers.)
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
START_TIMEOUT_S = 300
START_RETRIES = 2
STATE_FILE = "state"  # tf.train.Checkpoint prefix inside a Ray checkpoint directory
META_FILE = "meta.json"
MODEL_FILE = "model.keras"


def use_local_token_auth():
    """Ray 2.60 heads (`ray start --head`) use token auth and write the token to ~/.ray/auth_token; its
    clients only send it with RAY_AUTH_MODE=token. Turn it on when a token is at hand and the user chose
    no mode (RAY_AUTH_MODE=disabled opts out). Called where a Ray connection or client is made
    (`ensure_ray`, `pipelines.cluster.jobs.client`), never at import. Ray reads the mode into its cached
    config when it is imported, so when Ray is already imported the config is refreshed, as Ray's own
    `ray.init()` does when it enables token auth for a local cluster."""
    import sys

    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray._raylet" in sys.modules:
            from ray._raylet import Config

            Config.initialize("")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run is stopped and reported as failed."""


@dataclasses.dataclass(frozen=True)
class ScalingOptions:
    """Workers and resources of one Trainer run; validated before Ray is touched.

    `accelerator`: "cpu", "gpu" (one GPU per worker), "tpu" (each worker on one single-host TPU VM with
    `tpus_per_worker` chips: Ray's "TPU" resource) or None; `use_gpu` is its older spelling (True = "gpu",
    False = "cpu"). Neither given: GPUs when the cluster has or its autoscaler can start some."""

    num_workers: int = 2
    use_gpu: bool | None = None  # None: use GPUs when the cluster has any
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    accelerator: str | None = None  # cpu | gpu | tpu | None (auto)
    tpus_per_worker: int = 4  # TPU chips of one TPU VM host (v4-8, v5p-8: 4; v5e / v6e hosts: 4 or 8)

    def validate(self):
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"workers must be an int >= 0; received workers={self.num_workers!r}")
        if not isinstance(self.cpus_per_worker, (int, float)) or not 0 < self.cpus_per_worker <= 256:
            raise ValueError(f"cpus_per_worker must be in (0, 256]; received cpus_per_worker={self.cpus_per_worker!r}")
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ValueError(f"max_failures must be an int >= -1 (-1 = forever); received max_failures={self.max_failures!r}")
        if self.use_gpu not in (None, True, False):
            raise ValueError(f"use_gpu must be True, False or None (auto); received use_gpu={self.use_gpu!r}")
        if isinstance(self.tpus_per_worker, bool) or not isinstance(self.tpus_per_worker, int) or \
                not 1 <= self.tpus_per_worker <= 8:
            raise ValueError(f"tpus_per_worker must be an int in [1, 8] (the chips of one TPU VM host); "
                             f"received tpus_per_worker={self.tpus_per_worker!r}")
        if self.resolved_accelerator() == "tpu" and self.num_workers > 1:
            raise ValueError(f"accelerator='tpu' runs one Ray Train worker per single-host TPU VM (its TPUStrategy "
                             f"spans the host's chips): workers must be 1; received workers={self.num_workers}")
        return self

    def resolved_accelerator(self):
        """"cpu", "gpu", "tpu", or None (auto) from `accelerator` and `use_gpu` (which must agree)."""
        from pipelines.training import devices

        return devices.resolve_accelerator(self.accelerator, self.use_gpu)


# ----------------------------------------------------------------------------- on each worker

def _finite(logs):
    return all(math.isfinite(float(v)) for k, v in logs.items() if "loss" in k or k in ("ce",))


def _restore(state, checkpoint):
    """Load a Ray checkpoint written by `_report_callback` into `state`; returns epochs already done."""
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as d:
        state.ckpt.read(os.path.join(d, STATE_FILE)).expect_partial()
        meta = json.loads(Path(d, META_FILE).read_text())
    done = int(state.epoch.numpy())
    if done != meta["epoch"]:
        raise RuntimeError(f"checkpoint epoch mismatch: state says {done}, {META_FILE} says {meta['epoch']}")
    return done


def _report_callback(state, net, info, rank, initial_epoch, madds, outcome):
    import ray.train
    import tf_keras as keras
    from ray.train import Checkpoint

    from pipelines.tracking import current_learning_rate

    class _ReportEpoch(keras.callbacks.Callback):
        """After every epoch: checkpoint on all workers (collectives), report (rank 0's checkpoint kept)."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            if not _finite(logs):
                # Same aggregated logs on every worker: all stop here together, nothing is reported.
                outcome["nonfinite_epoch"] = epoch + 1
                outcome["logs"] = {k: float(v) for k, v in logs.items()}
                self.model.stop_training = True
                return
            state.epoch.assign(epoch + 1)
            tmp = tempfile.mkdtemp(prefix=f"ckpt-e{epoch + 1}-r{rank}-")
            try:
                state.ckpt.write(os.path.join(tmp, STATE_FILE))
                # Every worker saves (BN statistics are all-reduced on read). "keras_v3": tf_keras falls back
                # to HDF5 for `.keras` paths after the first save in a non-main thread (Ray's worker thread).
                keras.saving.save_model(net, os.path.join(tmp, MODEL_FILE), save_format="keras_v3")
                Path(tmp, META_FILE).write_text(json.dumps({"epoch": epoch + 1, "dataset": info.to_dict()}))
                metrics = {k: float(v) for k, v in logs.items()}
                lr = current_learning_rate(self.model)
                if lr is not None:
                    metrics["learning_rate"] = lr
                metrics.update(epoch=epoch + 1, madds=madds, params=int(net.count_params()),
                               resumed_from_epoch=initial_epoch, epoch_seconds=round(time.time() - self._start, 3))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp) if rank == 0 else None,
                                 checkpoint_dir_name=f"checkpoint_epoch_{epoch + 1:04d}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    return _ReportEpoch()


def worker_strategy(accelerator):
    """The strategy of one Ray Train worker, after checking the accelerator it reserved: "gpu" means
    TensorFlow sees the GPU Ray gave this worker (`devices.require_worker_gpu`, one line naming the cause
    otherwise), "tpu" a `TPUStrategy` over this TPU VM's chips (`devices.require_tpu` first); every other
    worker group trains under `MultiWorkerMirroredStrategy` (Ray's TF backend sets `TF_CONFIG`)."""
    import tensorflow as tf

    from pipelines.training import devices

    if accelerator == "tpu":
        devices.require_tpu()
        return devices.tpu_strategy()
    if accelerator == "gpu":
        devices.require_worker_gpu()
    return tf.distribute.MultiWorkerMirroredStrategy()


def train_func(config: dict):
    """The per-worker training loop (see the module docstring). `config`: {"train": TrainConfig dict,
    "callbacks": [factory, ...], "extra": {...}, "accelerator": "cpu" | "gpu" | "tpu"}. Returns
    `{"nonfinite_epoch": k, ...}` or `{}`."""
    from keras_layers import env  # noqa: F401
    import ray.train
    import tensorflow as tf
    import tf_keras as keras

    from keras_layers import count_madds
    from pipelines.training.train import (EpochCheckpoint, build_training, load_data, planned_steps,
                                          recipe_callbacks, resolve_callbacks)

    cfg = TrainConfig.from_dict(config["train"]).validate()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    tf.get_logger().setLevel("ERROR")  # the strategy logs every collective at INFO
    strategy = worker_strategy(config.get("accelerator"))  # a GPU / TPU asked for is checked before any work
    keras.utils.set_random_seed(cfg.seed)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_ds, info = load_data(cfg, "train")  # global batch; the strategy splits it per worker
    val_ds, _ = load_data(cfg, "validation", shuffle=False)
    train_ds, val_ds = train_ds.with_options(options), val_ds.with_options(options)
    steps = planned_steps(cfg, info)  # as in-process: the same learning-rate / epsilon schedules

    with strategy.scope():
        model = build_training(cfg, info, steps)
        # The (weights, optimizer, epoch) state of `pipelines.training.train`; its own manager directory is never
        # written here: each epoch goes to a Ray checkpoint (`_report_callback`).
        state = EpochCheckpoint(model, os.path.join(tempfile.gettempdir(), f"ray-train-state-{os.getpid()}"))
    initial_epoch = _restore(state, ray.train.get_checkpoint())
    if initial_epoch:
        print(f"[rank {rank}] resumed from checkpoint at epoch {initial_epoch}", flush=True)
    outcome = {}
    if initial_epoch >= cfg.epochs:
        return outcome
    madds = int(count_madds(model.net, info.input_shape))

    wctx = WorkerContext(cfg, rank, world, initial_epoch, dict(config.get("extra") or {}))
    cbs = recipe_callbacks(cfg, model, steps, train_ds)
    if cfg.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping("val_accuracy", patience=cfg.early_stopping, mode="max"))
    cbs.append(_report_callback(state, model.net, info, rank, initial_epoch, madds, outcome))
    cbs.extend(resolve_callbacks(config.get("callbacks") or (), wctx))
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=cbs,
              verbose=2 if rank == 0 else 0)
    return outcome


# ----------------------------------------------------------------------------- on the driver

def has_gpus():
    """Whether the connected cluster has GPUs or its autoscaler can start GPU nodes (`devices.cluster_capacity`):
    the shipped clusters' GPU worker groups start at 0 nodes."""
    from pipelines.training import devices

    return devices.cluster_capacity("GPU") > 0


def run_accelerator(scaling: ScalingOptions):
    """The accelerator a Trainer run reserves: the one asked for, else "gpu" when the cluster has or can start
    GPUs (`has_gpus`), else "cpu"."""
    return scaling.resolved_accelerator() or ("gpu" if has_gpus() else "cpu")


def check_tpu_config(cfg: TrainConfig, accelerator):
    """A TPU compiles every step with XLA on static shapes: `accelerator="tpu"` needs `jit_compile` (whole
    batches). One line naming the field otherwise (`train --accelerator tpu` turns it on by default)."""
    if accelerator == "tpu" and not cfg.jit_compile:
        raise ValueError("accelerator='tpu' compiles the train step with XLA on whole batches: jit_compile must be "
                         "True; received jit_compile=False")


ROOT = Path(__file__).resolve().parents[2]
# What never travels to the cluster with the code (the repo is the job's / driver's working_dir).
EXCLUDES = [".venv", ".git/", "runs/", "mlruns/", "mlartifacts/", "data/", "bundle/", "__pycache__/",
            ".pytest_cache/", "*.keras", "*.tflite"]


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def keep_loopback(address):
    """A driver of a loopback head (`platform/ray/start-head.sh`, the tests' heads) or of a new local
    instance (`address` None) keeps 127.0.0.1 as its node address: Ray otherwise rewrites a loopback
    address to the machine's, and then neither finds the head's raylet nor keeps a new instance off the
    network. Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 into a constant when imported, so an already
    imported Ray gets the constant too. A choice the user made (the variable set) is kept."""
    import sys

    if address == "auto" or is_remote(address):  # "auto": whichever cluster Ray finds, not ours to decide
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() in ("0", "false"):
        constants.ENABLE_RAY_CLUSTER = False


def is_remote(address):
    """Whether a Ray address (GCS `HOST:PORT`, `ray://`, or a job API URL) is on another machine."""
    if not address or address in ("local", "auto"):
        return False
    rest = str(address).split("://", 1)[-1].split("/", 1)[0]
    host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest.strip("[]").rsplit("]:", 1)[0]
    return host not in LOOPBACK_HOSTS and not host.startswith("127.")


def ensure_ray(address=None):
    """Connect to Ray: `address`, else $RAY_ADDRESS, else a new local instance.

    Outside a submitted job the repo is shipped as the workers' `working_dir` (so `pipelines` imports
    on every node) with `TF_USE_LEGACY_KERAS=1`; inside a job (`python -m pipelines submit`) the job's
    runtime env already carries both.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    keep_loopback(address)
    import ray

    if ray.is_initialized():
        return
    use_local_token_auth()
    kwargs, env_vars, gcs_port = {}, dict(WORKER_ENV), None
    if not address or address == "local":
        # A new local instance. Its processes are told its address: Ray Train's PlacementGroupCleaner
        # otherwise finds "its" cluster by auto-detection, which fails as soon as another Ray runs on the
        # machine; the trial's placement group then outlives the trial and the next trial of a search
        # waits for CPUs until its worker group times out.
        gcs_port = free_port()
        env_vars["RAY_ADDRESS"] = f"127.0.0.1:{gcs_port}"
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        kwargs["runtime_env"] = {"env_vars": env_vars, "working_dir": str(ROOT), "excludes": EXCLUDES}
    with _env(RAY_GCS_SERVER_PORT=gcs_port and str(gcs_port)):  # the port Ray's own start reads
        ray.init(address=address, logging_level="WARNING", **kwargs)


def free_port():
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _env(**values):
    """Environment variables set for a `with` block (a value None: left alone), then restored."""
    values = {k: v for k, v in values.items() if v is not None}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_trainer(cfg: TrainConfig, scaling: ScalingOptions, name: str, storage_path: str, callbacks=(),
                 run_callbacks=(), extra=None):
    """The `TensorflowTrainer` of one run (no Ray work until `.fit()`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    accelerator = run_accelerator(scaling)
    check_tpu_config(cfg, accelerator)
    resources = {"CPU": scaling.cpus_per_worker}  # + 1 GPU per worker when use_gpu
    if accelerator == "tpu":
        resources["TPU"] = scaling.tpus_per_worker  # the chips of one single-host TPU VM
    use_gpu = accelerator == "gpu"
    env_vars = dict(WORKER_ENV)
    if accelerator in ("gpu", "tpu"):  # the device runtime's warnings and errors stay visible on the workers
        env_vars["TF_CPP_MIN_LOG_LEVEL"] = "1"
    os.environ.setdefault(START_TIMEOUT_ENV, str(START_TIMEOUT_S))
    return TensorflowTrainer(
        train_func,
        train_loop_config={"train": cfg.to_dict(), "callbacks": list(callbacks), "extra": dict(extra or {}),
                           "accelerator": accelerator},
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=use_gpu,
                                     use_tpu=accelerator == "tpu", resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=scaling.max_failures,
                                                          controller_failure_limit=START_RETRIES),
                             checkpoint_config=CheckpointConfig(num_to_keep=None),
                             callbacks=list(run_callbacks), worker_runtime_env={"env_vars": env_vars}),
    )


def reports(result):
    """Every epoch's report of a Trainer `Result`, by epoch (rank 0 checkpoints every epoch; all are kept)."""
    return [m for _, m in sorted(result.best_checkpoints or [], key=lambda cm: cm[1]["epoch"])]


def result_summary(result, cfg: TrainConfig | None = None):
    """Final metrics of a Trainer `Result` (the same keys as `pipelines.training.train.summarize`): the
    best epoch is chosen as in-process (`pipelines.training.train.best_index`, from the recipe's final stage)."""
    from pipelines.training.train import best_index

    epochs = reports(result)
    if not epochs:
        raise RuntimeError("the run reported no epoch")
    final_stage = cfg.recipe_obj().final_stage_start(cfg.epochs) if cfg is not None else 0
    first = next((i for i, m in enumerate(epochs) if m["epoch"] > final_stage), 0)
    best = epochs[best_index([m.get("val_accuracy", math.nan) for m in epochs], first)]
    return {
        "val_accuracy": best["val_accuracy"], "val_loss": best.get("val_loss", math.nan),
        "accuracy": best.get("accuracy", math.nan), "best_epoch": best["epoch"], "epochs_run": len(epochs),
        "madds": best["madds"], "params": best["params"],
        "train_seconds": round(sum(m.get("epoch_seconds", 0.0) for m in epochs), 2),
        "resumed_from_epoch": epochs[-1].get("resumed_from_epoch", 0),
    }


def fit_trainer(cfg: TrainConfig, scaling: ScalingOptions, name: str, storage_path: str, callbacks=(),
                run_callbacks=(), extra=None):
    """`make_trainer(...).fit()`: the Trainer `Result`, or `NonFiniteLossError` when the loss became NaN/inf.
    Both `fit_distributed` and each Tune trial (`pipelines.tuning.tune.trial`) train through here."""
    from pipelines.training import devices

    trainer = make_trainer(cfg, scaling, name, storage_path, callbacks, run_callbacks, extra)
    try:
        result = trainer.fit()
    except Exception as err:  # a worker without the GPU / TPU it reserved: that worker's one line
        unavailable = devices.worker_failure(err)
        if unavailable is None:
            raise
        raise unavailable from None
    outcome = result.return_value or {}
    if outcome.get("nonfinite_epoch"):
        raise NonFiniteLossError(f"loss became non-finite at epoch {outcome['nonfinite_epoch']} "
                                 f"(learning_rate={cfg.learning_rate!r}); logs: {outcome.get('logs')}")
    return result


def fit_distributed(cfg: TrainConfig, scaling: ScalingOptions = ScalingOptions(), callbacks=(), name=None,
                    storage_path=None, address=None, run_callbacks=(), extra=None, verbose=True):
    """Train `cfg` on Ray Train workers; returns `(metrics, run_dir, result)`.

    Writes `<cfg.out>/<name>/` like `pipelines.training.train` (`model.keras` of the best epoch,
    `history.json`, `metrics.json`, `config.json`) with Ray's run (checkpoints) under
    `<storage_path or cfg.out/ray>/<name>`. Re-running with the same `name` resumes that run.
    `run_callbacks` are Ray Train `UserCallback`s (on the driver's node: `pipelines.training.entry` logs
    each epoch's report to MLflow with one). The tracked entry point is `pipelines.training.run`.
    """
    import datetime as _dt

    cfg.validate()
    scaling.validate()
    from pipelines.training import storage

    storage_path = storage.validate(storage_path, default=os.path.join(cfg.out, "ray"), field="storage_path")
    name = name or cfg.run_name or f"{cfg.model}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    ensure_ray(address)
    if verbose:
        print(f"Ray Train: {scaling.num_workers} worker(s), run {name!r} under {storage_path}", flush=True)
    # TensorBoard: rank 0 writes the run folder's tensorboard/ (as in-process runs do)
    callbacks = [*callbacks, TensorBoardOnRankZero(Path(cfg.out) / name / TENSORBOARD_DIR)]
    result = fit_trainer(cfg, scaling, name, storage_path, callbacks, run_callbacks, extra)
    metrics = result_summary(result, cfg)
    run_dir = Path(cfg.out) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    history = {}
    for m in reports(result):
        for k, v in m.items():
            if isinstance(v, (int, float)):
                history.setdefault(k, []).append(v)
    best_ckpt = next(c for c, m in result.best_checkpoints if m["epoch"] == metrics["best_epoch"])
    with best_ckpt.as_directory() as d:
        shutil.copy(os.path.join(d, MODEL_FILE), run_dir / MODEL_FILE)
        meta = json.loads(Path(d, META_FILE).read_text())
    (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "workers": scaling.num_workers}, indent=2,
                                                    default=str))
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / "dataset.json").write_text(json.dumps(meta["dataset"], indent=2))
    code_version.write(run_dir)
    return metrics, run_dir, result
