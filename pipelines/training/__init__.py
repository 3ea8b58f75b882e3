"""Training: the config, the one training entry (in-process or on Ray Train workers, tracked in MLflow or
not), the recipes and BN recalibration.

    from pipelines.training import TrackingOptions, TrainConfig, run
    metrics, run_dir, net, run_id = run(TrainConfig(model="multi_exit_net", data="digits", epochs=10))
    result = run(cfg, workers=2, tracking=TrackingOptions(experiment="digits"))   # Ray Train, MLflow

Modules: `config` (TrainConfig), `entry` (`run`, the entry every caller uses), `train` (in-process
`model.fit`, checkpoints, run folder; `train(cfg)` stays for scripts), `distributed` (the same on Ray Train
workers), `tracked` (how a run is logged to MLflow), `ray_mlflow` (per-epoch metrics of Ray runs),
`recipes/` (each paper's losses and schedules, one train step for all), `bn_recalibration` (switchable BN
statistics after slimmable training).
"""
from pipelines.training.config import TrainConfig  # noqa: F401
from pipelines.training.distributed import ScalingOptions  # noqa: F401
from pipelines.training.entry import TrainResult, run  # noqa: F401
from pipelines.training.tracked import TrackingOptions  # noqa: F401
from pipelines.training.train import train  # noqa: F401
