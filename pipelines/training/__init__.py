"""Training: the config, in-process training, Ray Train workers, the recipes and BN recalibration.

    from pipelines.training import TrainConfig, train
    metrics, run_dir, net = train(TrainConfig(model="multi_exit_net", data="digits", epochs=10))

Modules: `config` (TrainConfig), `train` (in-process `model.fit`, checkpoints, run folder),
`distributed` (the same on Ray Train workers), `recipes/` (each paper's losses and schedules, one train
step for all), `bn_recalibration` (switchable BN statistics after slimmable training).
"""
from pipelines.training.config import TrainConfig  # noqa: F401
from pipelines.training.train import train  # noqa: F401
