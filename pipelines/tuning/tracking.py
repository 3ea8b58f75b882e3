"""A Ray Tune experiment in MLflow: one parent run, one nested run per trial, logged live where possible.

    live = open_parent(uri, exp_dir, options, family, name)     # the driver, before the first trial
    run_id = trial_run(live, trial_id, cfg)                     # each trial, on its node (None: unreachable)
    parent_id, best_run_id = log_experiment(summary, tracking_uri=uri)   # the driver, after the search

The parent run (experiment `tune`, named after the Tune experiment) holds the search options, the
ASHA savings, `results.csv`, `pareto.csv` and the Pareto plot. Each trial's nested run holds its full
`TrainConfig` as params, its per-epoch metrics (step = epoch, from Tune's `progress.csv`), final
`val_accuracy` / `madds` / `params` and its status. The best trial's run also gets the `run/`
artifacts (`model.keras`, `config.json`, `dataset.json`, `metrics.json`) so it can be registered
with `python -m pipelines register --run ID` like any training run.

Live: the driver opens the parent run before the search (its id in `<experiment>/mlflow.json`, so a
resumed search goes on in the same run); each trial opens its nested run (found again by `trial_id` when
the trial is restored) and logs every epoch as it is reported (`pipelines.training.ray_mlflow`, on the
trial's Train controller), so the runs are in the MLflow UI while the search runs. A trial whose node
cannot reach the tracking store says so in one line and trains on. After the search the driver logs, from
what Tune wrote to the experiment folder, whatever is missing (the trials that could not log, epochs a
restart lost), the final metrics, the status and the best model, and ends the runs: the fallback when no
worker reaches the store is today's complete after-the-search logging.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pipelines  # noqa: F401

EXPERIMENT = "tune"
TRACKING_FILE = "mlflow.json"
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


def _params(mapping):
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in mapping.items() if v is not None]


def _log_params(client, run_id, mapping):
    params = _params(mapping)
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[i:i + 100])


def open_parent(tracking_uri, exp_dir, options, family, name, experiment=EXPERIMENT):
    """The parent run of the search in `exp_dir` (created with the options as params, or the one a previous
    session of this experiment created); returns `live` = {tracking_uri, experiment_id, parent_run_id},
    also written to `<exp_dir>/mlflow.json`."""
    from pipelines import tracking

    path = Path(exp_dir) / TRACKING_FILE
    if path.exists():
        live = json.loads(path.read_text())
        if live.get("tracking_uri") == tracking_uri:
            return live
    client = tracking.client(tracking_uri)
    exp_id = tracking.ensure_experiment(experiment, tracking_uri)
    run = client.create_run(exp_id, run_name=name, tags={"kind": "tune", "family": family})
    _log_params(client, run.info.run_id, tracking.flatten_params(options))
    live = {"tracking_uri": tracking_uri, "experiment_id": exp_id, "parent_run_id": run.info.run_id}
    path.write_text(json.dumps(live, indent=2))
    return live


def find_trial_run(client, live, trial_id):
    """The nested run of `trial_id` under the parent run of `live`, or None."""
    found = client.search_runs([live["experiment_id"]],
                               filter_string=f"tags.trial_id = '{trial_id}' and "
                                             f"tags.mlflow.parentRunId = '{live['parent_run_id']}'",
                               max_results=1)
    return found[0].info.run_id if found else None


def _print(msg):
    print(msg, flush=True)


def trial_run(live, trial_id, cfg, log=_print):
    """On a trial's node: its nested run (created with the `TrainConfig` as params, or found again when the
    trial was restored); None, after one line, when the tracking store cannot be reached from this node."""
    from pipelines import tracking

    uri = live["tracking_uri"]
    try:
        client = tracking.client(uri)
        run_id = find_trial_run(client, live, trial_id)
        if run_id is not None:
            return run_id
        run = client.create_run(live["experiment_id"], run_name=f"trial-{trial_id}",
                                tags={"mlflow.parentRunId": live["parent_run_id"],
                                      "kind": "tune-trial", "trial_id": trial_id, "status": "running",
                                      "logged": "live", "model": cfg.model, "recipe": cfg.recipe_name(),
                                      "data": cfg.data})
        _log_params(client, run.info.run_id, tracking.config_params(cfg))
        return run.info.run_id
    except Exception as err:  # never fail a trial over tracking: the driver logs it after the search
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        log(f"MLflow: trial {trial_id} cannot log to {uri} from this node ({reason}); "
            "it is logged after the search")
        return None


def log_experiment(summary, tracking_uri=None, experiment=EXPERIMENT, log=print):
    """Complete the MLflow runs of `summary` (from `pipelines.tuning.tune.run`/`resume`): the parent run opened
    before the search (`summary["mlflow"]`) or a new one, one nested run per trial (the live one when the trial
    made it), epochs not yet logged, final metrics, status, the best model. Returns `(parent_run_id, best_run_id)`."""
    import mlflow
    import pandas as pd

    from pipelines import data, tracking
    from pipelines.training.train import TrainConfig

    exp_dir = Path(summary["experiment"])
    options = json.loads((exp_dir / "tune_options.json").read_text())
    rows = pd.read_csv(exp_dir / "results.csv").to_dict("records") if (exp_dir / "results.csv").exists() else []
    trials = _trials(summary.get("storage") or exp_dir)
    tracking.configure(tracking_uri)
    live = summary.get("mlflow")
    exp_id = live["experiment_id"] if live else tracking.ensure_experiment(experiment, tracking_uri)
    client = tracking.current_client()
    best_id = (summary.get("best") or {}).get("trial_id")
    best_run_id = None
    opened = (mlflow.start_run(run_id=live["parent_run_id"]) if live else
              mlflow.start_run(experiment_id=exp_id, run_name=exp_dir.name,
                               tags={"kind": "tune", "family": summary["family"]}))
    with opened as parent:
        if not live:
            mlflow.log_params({k: v for k, v in tracking.flatten_params(options).items() if v is not None})
        mlflow.log_metrics({k: float(summary[k]) for k in ("trials", "completed", "stopped_early", "failed",
                                                             "asha_saved_share")})
        for f in ("results.csv", "pareto.csv", "pareto.png", "summary.json"):
            if (exp_dir / f).exists():
                mlflow.log_artifact(str(exp_dir / f), "tune")
        live_runs = 0
        for row in rows:
            trial_id = row["trial_id"]
            config, frame = trials.get(trial_id, ({}, None))
            cfg = TrainConfig.from_dict({**config, **options.get("overrides", {})})
            existing = find_trial_run(client, {"experiment_id": exp_id, "parent_run_id": parent.info.run_id},
                                      trial_id)
            live_runs += existing is not None
            opened_trial = (mlflow.start_run(run_id=existing, nested=True) if existing else
                            mlflow.start_run(experiment_id=exp_id, run_name=f"trial-{trial_id}", nested=True,
                                             parent_run_id=parent.info.run_id,
                                             tags={"kind": "tune-trial", "trial_id": trial_id, "model": cfg.model,
                                                   "recipe": cfg.recipe_name(), "data": cfg.data,
                                                   "logged": "after the search"}))
            with opened_trial as run:
                mlflow.set_tag("status", row["status"])
                if not existing:
                    mlflow.log_params(tracking.config_params(cfg))
                logged = {m.step for m in client.get_metric_history(run.info.run_id, "loss")} if existing else set()
                if frame is not None and len(frame):
                    for _, rec in frame.iterrows():
                        step = int(rec.get("epoch", rec.get("training_iteration", 0)) or 0)
                        if step in logged:
                            continue
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
            f"{len(rows)} trial run(s) ({live_runs} logged live)"
            + (f", best trial run {best_run_id}" if best_run_id else ""))
        return parent.info.run_id, best_run_id
