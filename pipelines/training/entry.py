"""The one training entry: in-process or on Ray Train workers, tracked in MLflow the same way or not at all.

    from pipelines.training import TrackingOptions, TrainConfig, run

    cfg = TrainConfig(model="mobilenet_v2", data="digits", epochs=10)
    r = run(cfg)                                                      # in-process, untracked
    r = run(cfg, workers=2, tracking=TrackingOptions(experiment="digits"))   # 2 Ray Train workers, tracked
    r = run(cfg, use_gpu=True)                                        # in-process on the GPU(s), or one line why not
    r = run(dataclasses.replace(cfg, jit_compile=True, precision="bf16"), workers=1, accelerator="tpu")  # a TPU VM
    r.metrics, r.run_dir, r.net, r.run_id                             # also unpacks as a tuple

`accelerator` ("cpu" | "gpu" | "tpu" | None = auto) or its older spelling `use_gpu` (True = "gpu", False =
"cpu") means the same in-process and on Ray: in-process the device is checked before any data is read
(`devices.select_in_process`: the GPUs, a TPU, or one line naming why not); on Ray every worker checks the
device it reserved (`pipelines.training.distributed`).

Everything is validated first (config, workers, accelerator, tracking URI, dataset): a bad value is a one-line
ValueError naming it, raised before a model is built, Ray is started or MLflow is written to.

With tracking, the MLflow run is opened here, on the driver, with the config as params
(`pipelines.training.tracked`); each epoch's metrics are logged with step = epoch: in-process by the
Keras callback `pipelines.tracking.epoch_metrics`, on Ray Train from the workers' per-epoch reports by a
Ray Train callback on the controller (`pipelines.training.ray_mlflow`; the driver logs any epoch the
controller could not). At the end the final metrics and the run folder (`run/model.keras`,
`config.json`, `dataset.json`, ...) are logged, so `python -m pipelines register --run RUN_ID` works for
both. `model.keras` holds the weights of the epoch `metrics.json` reports (the best validation epoch).

Callers: `python -m pipelines train` (and `--workers N`), the demo's `--search train`, the experiments.
Tune trials build their Trainer with the same `pipelines.training.distributed.fit_trainer`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, NamedTuple

import pipelines  # noqa: F401
from pipelines.training.config import TrainConfig
from pipelines.training import storage as storage_mod
from pipelines.training.distributed import ScalingOptions, ensure_ray, fit_distributed, is_remote  # noqa: F401
from pipelines.training.tracked import TrackingOptions, finish, tracked_run
from pipelines.training.train import check_resumable, train, train_tracked


class TrainResult(NamedTuple):
    metrics: dict  # metrics.json: the best epoch's val_accuracy / val_loss / accuracy, madds, params, ...
    run_dir: Any  # pathlib.Path of the run folder
    net: Any  # the trained keras.Model (best epoch); None for a Ray run without `after_train`
    run_id: str | None  # the MLflow run, None untracked


def scaling_options(workers, accelerator=None):
    """`workers` as `ScalingOptions` (validated), or None for in-process training. 0 = in-process, N = N Ray
    Train workers (defaults of `ScalingOptions`), or a `ScalingOptions` (num_workers=0: Ray's local mode).
    `accelerator` (resolved, or None) is set on them; one the `ScalingOptions` already name must agree."""
    if isinstance(workers, ScalingOptions):
        own = workers.validate().resolved_accelerator()
        if accelerator is not None and own is not None and own != accelerator:
            raise ValueError(f"accelerator={accelerator!r} contradicts the ScalingOptions' accelerator={own!r}")
        if accelerator is None or own is not None:
            return workers
        return dataclasses.replace(workers, accelerator=accelerator, use_gpu=None).validate()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 or ScalingOptions; received workers={workers!r}")
    return ScalingOptions(num_workers=workers, accelerator=accelerator).validate() if workers else None


def check_data(cfg: TrainConfig):
    """Fail on a dataset that cannot be loaded before anything is built (one example is read)."""
    from pipelines import data

    data.load(cfg.data, "train", image_size=cfg.image_size, batch_size=cfg.batch_size, data_dir=cfg.data_dir,
              limit=1)


def validate(cfg: TrainConfig, workers=0, tracking: TrackingOptions | None = None, resume_dir=None, storage=None,
             address=None, use_gpu=None, accelerator=None):
    """All the checks of `run`, in its order; returns `(scaling or None, validated tracking or None, storage,
    accelerator)`. In-process, the accelerator asked for is checked here, before the dataset is read."""
    from pipelines.training import devices
    from pipelines.training.distributed import check_tpu_config

    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig; received cfg={cfg!r}")
    cfg.validate()
    accelerator = devices.resolve_accelerator(accelerator, use_gpu)
    scaling = scaling_options(workers, accelerator)
    if scaling is not None:
        accelerator = scaling.resolved_accelerator()
    check_tpu_config(cfg, accelerator)
    if tracking is not None and not isinstance(tracking, TrackingOptions):
        raise ValueError(f"tracking must be TrackingOptions or None; received tracking={tracking!r}")
    tracking = tracking.validate() if tracking is not None else None
    if resume_dir is not None and scaling is not None:
        raise ValueError(f"resume_dir is for in-process runs (a Ray run resumes from its checkpoints by name); "
                         f"received resume_dir={str(resume_dir)!r} with workers={scaling.num_workers}")
    given, storage = storage, storage_mod.validate(storage)
    address = address or os.environ.get("RAY_ADDRESS")
    if scaling is not None and is_remote(address):
        problem = storage_mod.cluster_problem(storage, given)
        if problem:
            raise ValueError(f"a run on the remote Ray cluster {address} needs a shared --storage (s3://..., gs://... "
                             f"or a path every node mounts): {problem}")
    if resume_dir is not None and storage is not None:
        raise ValueError(f"resume_dir continues a run folder of its own; received storage={given!r} with it")
    if resume_dir is not None:
        check_resumable(resume_dir, cfg)  # a changed config or a folder without checkpoints: refused here
    if scaling is None:  # the GPU / TPU asked for, or one line naming why not, before any data is read
        devices.select_in_process(accelerator)
    check_data(cfg)
    return scaling, tracking, storage, accelerator


def run(cfg: TrainConfig, workers=0, tracking: TrackingOptions | None = None, callbacks=(), verbose="auto",
        resume_dir=None, after_train=None, name=None, address=None, storage=None, use_gpu=None,
        accelerator=None) -> TrainResult:
    """Train `cfg` in-process (`workers=0`) or on Ray Train workers; tracked when `tracking` is given.

    `callbacks`: Keras callbacks (in-process only) or factories `factory(ctx) -> Callback | None` (both;
    on Ray Train they run on every worker, see `pipelines.training.distributed`). `after_train(net, run_dir,
    run_id)` runs inside the MLflow run at the end (tracked runs only). `resume_dir` continues an
    in-process run folder; `name` / `address` are the Ray run's name (re-using one resumes it) and cluster.
    `storage` (`pipelines.training.storage`): where the run folder (`<storage>/<run name>`) and Ray's
    checkpoints (`<storage>/ray/<run name>`) go, instead of `cfg.out`: a path every node sees or a bucket URI
    (the run folder is then written to a local staging folder, returned, and copied to the bucket). A run on
    a remote Ray cluster is refused without one.
    `accelerator` "cpu" | "gpu" | "tpu" (or `use_gpu` True / False), None = auto: see the module docstring;
    "tpu" needs `cfg.jit_compile` and at most one Ray Train worker (one single-host TPU VM).
    """
    scaling, tracking, storage, accelerator = validate(cfg, workers, tracking, resume_dir, storage, address,
                                                       use_gpu, accelerator)
    if storage is not None:
        cfg = dataclasses.replace(cfg, out=storage_mod.staging(storage, storage))
    result = _run(cfg, scaling, tracking, callbacks, verbose, resume_dir, after_train, name, address, storage,
                  accelerator)
    if storage_mod.is_uri(storage):
        storage_mod.upload(result.run_dir, storage_mod.join(storage, result.run_dir.name), remove=False)
    return result


def _run(cfg, scaling, tracking, callbacks, verbose, resume_dir, after_train, name, address, storage, accelerator):
    if scaling is None:
        if tracking is None:
            metrics, run_dir, net = train(cfg, callbacks=callbacks, verbose=verbose, resume_dir=resume_dir,
                                          accelerator=accelerator)
            return TrainResult(metrics, run_dir, net, None)
        metrics, run_dir, net, run_id = train_tracked(
            cfg, tracking.uri, tracking.experiment, tracking.parent_run_id, tracking.tags, callbacks=callbacks,
            verbose=verbose, after_train=after_train, resume_dir=resume_dir, accelerator=accelerator)
        return TrainResult(metrics, run_dir, net, run_id)
    ray_storage = storage_mod.join(storage, "ray") if storage is not None else None
    return _run_on_ray(cfg, scaling, tracking, callbacks, verbose, after_train, name, address, ray_storage)


def _run_on_ray(cfg, scaling, tracking, callbacks, verbose, after_train, name, address, storage_path):
    if any(hasattr(cb, "set_model") for cb in callbacks):  # a Keras callback object
        raise ValueError("callbacks: Ray Train workers take factories ctx -> keras callback, not callback objects; "
                         f"received callbacks={list(callbacks)!r}")
    ensure_ray(address)  # before the MLflow run: a cluster that cannot be reached leaves no empty run behind
    opened = (tracked_run(cfg, tracking, tags={"workers": str(scaling.num_workers)}) if tracking is not None
              else contextlib.nullcontext(None))
    with opened as run_id:
        run_callbacks = []
        if run_id is not None:
            from pipelines.training.ray_mlflow import EpochReportsToMlflow

            run_callbacks.append(EpochReportsToMlflow(tracking.uri, run_id))
        metrics, run_dir, result = fit_distributed(cfg, scaling, callbacks=list(callbacks), name=name,
                                                   storage_path=storage_path, address=address, run_callbacks=run_callbacks,
                                                   verbose=verbose != 0)
        net = _load_net(run_dir) if after_train is not None else None
        if run_id is not None:
            _log_missing_epochs(tracking.uri, run_id, result)
            finish(run_id, run_dir, metrics, net, after_train)
    return TrainResult(metrics, run_dir, net, run_id)


def _log_missing_epochs(uri, run_id, result):
    from pipelines import tracking
    from pipelines.training.distributed import reports
    from pipelines.training.ray_mlflow import log_missing_epochs

    client = tracking.client(uri)
    missing = log_missing_epochs(client, run_id, reports(result))
    if missing:
        client.set_tag(run_id, "epoch_metrics_logged_after_run", str(missing))


def _load_net(run_dir):
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    from keras_layers import models

    models.names()  # registers every family's layers for loading
    return keras.models.load_model(run_dir / "model.keras", compile=False)
