"""How a training run is tracked in MLflow, the same for in-process and Ray Train runs.

    options = TrackingOptions(uri="sqlite:///mlruns.db", experiment="digits").validate()
    with tracked_run(cfg, options) as run_id:       # the run opens on the driver: params + tags
        ...                                         # per-epoch metrics, step = epoch (each runner its own way)
        finish(run_id, run_dir, metrics, net, after_train)   # final metrics + run/ artifacts + history plot

What a run holds (`pipelines.tracking`): every `TrainConfig` field as a param, per-epoch metrics (the Keras
logs and `learning_rate`, step = epoch number), the final metrics of `metrics.json` and the run folder under
`run/` (model.keras, config.json, dataset.json, history.json, metrics.json): what
`pipelines.mlops.registry.register` needs. `pipelines.training.run` is the entry that uses this.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pipelines  # noqa: F401


@dataclasses.dataclass(frozen=True)
class TrackingOptions:
    """Where and how a training run is logged to MLflow; validated before any work."""

    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the project's SQLite store
    experiment: str = "pipelines"
    parent_run_id: str | None = None  # nest the run under this one (tune trials, experiments)
    tags: dict | None = None

    def validate(self):
        """A copy with the URI resolved (a relative SQLite / file store made absolute, so that processes
        with another working directory, such as Ray Train's controller, write to the same store);
        ValueError naming the field and the value."""
        from pipelines import tracking

        uri = tracking.resolve_tracking_uri(self.uri)
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise ValueError(f"experiment must be a non-empty name; received experiment={self.experiment!r}")
        if self.parent_run_id is not None and (not isinstance(self.parent_run_id, str) or not self.parent_run_id):
            raise ValueError(f"parent_run_id must be a run id; received parent_run_id={self.parent_run_id!r}")
        if self.tags is not None and not isinstance(self.tags, dict):
            raise ValueError(f"tags must be a dict of str; received tags={self.tags!r}")
        return dataclasses.replace(self, uri=absolute_store_uri(uri),
                                   tags={str(k): str(v) for k, v in (self.tags or {}).items()})


def absolute_store_uri(uri):
    """`sqlite:///rel.db` -> `sqlite:////abs/rel.db`, `file:rel` -> `file:///abs/rel`; other URIs unchanged."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{Path(path).expanduser().resolve()}"
        return uri
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return Path(uri[len("file:"):]).expanduser().resolve().as_uri()
    return uri


@contextlib.contextmanager
def tracked_run(cfg, options: TrackingOptions, tags=None):
    """Open (and end) the MLflow run of training `cfg` on this process: params and tags up front; yields
    the run id. `options` must be validated."""
    from pipelines import tracking

    with tracking.start_run(cfg, options.uri, options.experiment, options.parent_run_id,
                            {**(options.tags or {}), **(tags or {})}) as run:
        yield run.info.run_id


def finish(run_id, run_dir, metrics, net=None, after_train=None):
    """Inside the run: the final metrics, the `run/` artifacts and the history plot; then
    `after_train(net, run_dir, run_id)` (families log their figures there)."""
    from pipelines import tracking

    tracking.log_training_result(run_id, run_dir, metrics)
    if after_train is not None:
        after_train(net, run_dir, run_id)
