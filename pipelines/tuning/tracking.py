"""Log a finished Ray Tune experiment to MLflow: one parent run, one nested run per trial.

    summary = pipelines.tuning.tune.run(opts)
    parent_id, best_run_id = log_experiment(summary, tracking_uri=None)

The parent run (experiment `tune`, named after the Tune experiment) holds the search options, the
ASHA savings, `results.csv`, `pareto.csv` and the Pareto plot. Each trial's nested run holds its full
`TrainConfig` as params, its per-epoch metrics (step = epoch, from Tune's `progress.csv`), final
`val_accuracy` / `madds` / `params` and its status. The best trial's run also gets the `run/`
artifacts (`model.keras`, `config.json`, `dataset.json`, `metrics.json`) so it can be registered
with `python -m pipelines register --run ID` like any training run.

Logging happens on the driver after the search, from what Tune wrote to disk: the workers need no
MLflow access (a cluster's workers often cannot reach the tracking server), and a resumed experiment
is logged once, complete.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pipelines  # noqa: F401

EXPERIMENT = "tune"
SKIP_METRICS = {"epoch", "time_this_iter_s", "time_total_s", "timestamp", "training_iteration",
                "time_since_restore", "iterations_since_restore", "pid", "done"}


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _trials(exp_dir):
    """{trial_id: (config dict, per-epoch DataFrame or None)} from Tune's saved experiment state."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(exp_dir))
    frames = analysis.trial_dataframes  # Ray 2.60 keys them by trial id, not by trial path
    out = {}
    for t in analysis.trials:
        out[t.trial_id] = (t.config or {}, frames.get(t.trial_id, frames.get(t.path)))
    return out


def log_experiment(summary, tracking_uri=None, experiment=EXPERIMENT, log=print):
    """Log `summary` (from `pipelines.tuning.tune.run`/`resume`) to MLflow; returns `(parent_run_id, best_run_id)`."""
    import mlflow
    import pandas as pd

    from pipelines import data, tracking
    from pipelines.training.train import TrainConfig

    exp_dir = Path(summary["experiment"])
    options = json.loads((exp_dir / "tune_options.json").read_text())
    rows = pd.read_csv(exp_dir / "results.csv").to_dict("records") if (exp_dir / "results.csv").exists() else []
    trials = _trials(exp_dir)
    tracking.configure(tracking_uri)
    exp_id = tracking.ensure_experiment(experiment, tracking_uri)
    best_id = (summary.get("best") or {}).get("trial_id")
    best_run_id = None
    with mlflow.start_run(experiment_id=exp_id, run_name=exp_dir.name,
                          tags={"kind": "tune", "family": summary["family"]}) as parent:
        mlflow.log_params({k: v for k, v in tracking.flatten_params(options).items() if v is not None})
        mlflow.log_metrics({k: float(summary[k]) for k in ("trials", "completed", "stopped_early", "failed",
                                                             "asha_saved_share")})
        for f in ("results.csv", "pareto.csv", "pareto.png", "summary.json"):
            if (exp_dir / f).exists():
                mlflow.log_artifact(str(exp_dir / f), "tune")
        for row in rows:
            trial_id = row["trial_id"]
            config, frame = trials.get(trial_id, ({}, None))
            cfg = TrainConfig.from_dict({**config, **options.get("overrides", {})})
            with mlflow.start_run(experiment_id=exp_id, run_name=f"trial-{trial_id}", nested=True,
                                  parent_run_id=parent.info.run_id,
                                  tags={"kind": "tune-trial", "trial_id": trial_id, "status": row["status"],
                                        "model": cfg.model, "recipe": cfg.recipe_name(), "data": cfg.data}) as run:
                mlflow.log_params(tracking.config_params(cfg))
                if frame is not None and len(frame):
                    for _, rec in frame.iterrows():
                        step = int(rec.get("epoch", rec.get("training_iteration", 0)) or 0)
                        mlflow.log_metrics({k: float(v) for k, v in rec.items()
                                            if k not in SKIP_METRICS and _finite(v)}, step=step)
                final = {k: row.get(k) for k in ("val_accuracy", "madds", "params", "epochs_run")}
                mlflow.log_metrics({k: float(v) for k, v in final.items() if _finite(v)})
                if trial_id == best_id and (exp_dir / "best" / "model.keras").exists():
                    best_run_id = run.info.run_id
                    _, info = data.load(cfg.data, "validation", image_size=cfg.image_size, batch_size=1,
                                        data_dir=cfg.data_dir, limit=1)
                    with tempfile.TemporaryDirectory() as tmp:
                        Path(tmp, "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
                        Path(tmp, "dataset.json").write_text(json.dumps(info.to_dict(), indent=2))
                        Path(tmp, "metrics.json").write_text(json.dumps(final, indent=2, default=str))
                        for f in ("config.json", "dataset.json", "metrics.json"):
                            mlflow.log_artifact(str(Path(tmp, f)), "run")
                    mlflow.log_artifact(str(exp_dir / "best" / "model.keras"), "run")
                    mlflow.set_tag("best_trial", "true")
        log(f"logged tune experiment {exp_dir.name} to MLflow: parent run {parent.info.run_id}, "
            f"{len(rows)} trial run(s)" + (f", best trial run {best_run_id}" if best_run_id else ""))
        return parent.info.run_id, best_run_id
