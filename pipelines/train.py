"""Kept for scripts written against the first layout: training lives in `pipelines.training`.

    from pipelines.train import TrainConfig, train      # same objects as pipelines.training
"""
from pipelines.training import TrainConfig, train  # noqa: F401
