"""Per-epoch MLflow metrics of a Ray Train run, from the workers' per-epoch reports.

`EpochReportsToMlflow` is a Ray Train `UserCallback` (`RunConfig(callbacks=...)`): Ray calls it on the
Train *controller*, an actor that Ray 2.60 pins to the driver's node, after every `ray.train.report`. It
logs rank 0's report as that epoch's metrics (step = epoch), as the in-process Keras callback
(`pipelines.tracking.epoch_metrics`) does: the Keras logs and `learning_rate`, not the bookkeeping keys.
Why there: the metrics appear while the run trains, the workers need no route to the tracking server
(they may be on nodes that have none) and no MLflow credentials. A controller that cannot log (its
process lacks the driver's MLflow credentials on a cluster started elsewhere) warns once and goes on;
the driver then logs every epoch that is missing from the run (`log_missing_epochs`).

Imported only on the Ray path (it imports Ray).
"""
from __future__ import annotations

import math
import time

from ray.train import UserCallback

import pipelines  # noqa: F401

# Keys of a report (`pipelines.training.distributed._report_callback`) that are not per-epoch metrics.
BOOKKEEPING = ("epoch", "madds", "params", "resumed_from_epoch", "epoch_seconds")
MARKER = "loss"  # every report has it (TrainingModel's loss metric): its steps are the epochs logged


def epoch_metrics(report):
    """`{name: value}` of a report that are that epoch's metrics (finite numbers, no bookkeeping)."""
    return {k: float(v) for k, v in report.items()
            if k not in BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def log_epoch(client, run_id, report):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    step = int(report["epoch"])
    metrics = [Metric(k, v, now, step) for k, v in epoch_metrics(report).items()]
    if metrics:
        client.log_batch(run_id, metrics=metrics)


class EpochReportsToMlflow(UserCallback):
    """Logs each epoch's report to MLflow run `run_id` at `tracking_uri` (see the module docstring)."""

    def __init__(self, tracking_uri, run_id):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self._client, self._warned = None, False

    def __getstate__(self):  # the client stays behind: the controller makes its own
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id}

    def __setstate__(self, state):
        self.__init__(state["tracking_uri"], state["run_id"])

    def after_report(self, run_context, metrics, checkpoint):
        if not metrics or "epoch" not in metrics[0]:
            return
        try:
            if self._client is None:
                from pipelines import tracking

                self._client = tracking.client(self.tracking_uri)
            log_epoch(self._client, self.run_id, metrics[0])
        except Exception as err:  # never fail training over tracking; the driver fills the gap
            if not self._warned:
                self._warned = True
                print(f"MLflow: the Ray Train controller cannot log epoch metrics to {self.tracking_uri} "
                      f"({type(err).__name__}: {str(err)[:200]}); the driver logs them after the run", flush=True)


def log_missing_epochs(client, run_id, reports):
    """Log the reports whose epoch the run has no metrics for; returns how many were missing."""
    logged = {m.step for m in client.get_metric_history(run_id, MARKER)}
    missing = [r for r in reports if int(r["epoch"]) not in logged]
    for r in missing:
        log_epoch(client, run_id, r)
    return len(missing)
