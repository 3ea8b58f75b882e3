"""Tune a family's recipe (regularisation, gate losses) with Ray Tune: Optuna (accuracy up, MAdds down) + ASHA.

    python -m pipelines tune --family baseline --smoke-test                 # seconds-to-minutes, local Ray
    python -m pipelines tune --family basisnet --trials 32 --workers-per-trial 2 --max-concurrent-trials 4
    python -m pipelines tune --resume runs/tune/basisnet-20260101-120000   # continue an interrupted search

Each trial is a Tune *function* trainable (`trial`) that builds a Ray Train `TensorflowTrainer`
(`pipelines.training.distributed`) and fits it; the Trainer's per-epoch reports reach Tune through
`TuneReportCallback` (Ray 2.60, Train V2: `Tuner(trainer)` is not supported). The Trainer's run lives
in the trial's directory under a fixed name, so a trial restarted by `Tuner.restore` resumes from its
last epoch checkpoint. `OptunaSearch` optimises two objectives (`val_accuracy` max, `madds` min) and
`ASHAScheduler` stops weak trials early on `val_accuracy` (time unit: `epoch`). A trial whose loss
becomes NaN/inf fails (`NonFiniteLossError`): it is listed as failed and kept out of the front.

Writes `<storage>/<name>/` (Tune's experiment dir; `storage` defaults to `out`; on a multi-node cluster
a path every node mounts or a bucket URI, `pipelines.training.storage`; a search on a remote cluster
without one is refused before it starts): `results.csv` (one row per trial), `pareto.csv` and `pareto.png` (accuracy vs MAdds of
trials that ran every epoch), `best/` (the best trial's last checkpoint: `model.keras`, weights +
optimizer state) with `best.json`, `trainer_runs/<trial_id>/train/` (each trial's Ray Train run and
epoch checkpoints), `summary.json` (incl. the share of trial-epochs ASHA saved) and
`tune_options.json` (what `--resume` needs) and, when tracked, `mlflow.json` (the parent run, which
trials log into live: `pipelines.tuning.tracking`). Console: one line per trial report (`progress_lines`).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
from pathlib import Path

import pipelines  # noqa: F401

OBJECTIVES = (("val_accuracy", "max"), ("madds", "min"))
OPTIONS_FILE = "tune_options.json"
TPU_FIELDS = {"precision": "bf16", "jit_compile": True}  # every trial's TrainConfig on a TPU


@dataclasses.dataclass
class TuneOptions:
    family: str = "baseline"
    smoke_test: bool = False
    trials: int | None = None  # None: SMOKE's trials with --smoke-test, else 16
    max_concurrent_trials: int = 1
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    cpus_per_trial: float = 0.1  # the trial's own process (it only drives the Trainer)
    use_gpu: bool | None = None  # None: GPUs when the cluster has or can start any
    accelerator: str | None = None  # cpu | gpu | tpu (one trial per single-host TPU VM); use_gpu is its alias
    tpus_per_worker: int = 4
    max_failures: int = 0  # worker-group restarts per trial (a failed trial is a result too)
    grace_period: int = 1
    reduction_factor: int = 4  # Ray's default; 2 stopped fewer trials in our 8-trial searches (docs/results.md)
    seed: int = 0
    out: str = "runs/tune"
    name: str | None = None
    storage: str | None = None  # None: `out`; else a path every node mounts or a bucket URI (see `storage_path`)
    overrides: dict = dataclasses.field(default_factory=dict)  # constant TrainConfig fields (data, data_dir)

    def validate(self):
        import tune_spaces

        tune_spaces.module(self.family)
        for f in ("max_concurrent_trials", "workers_per_trial", "grace_period", "reduction_factor"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be an int >= 1; received {f}={v!r}")
        if self.trials is not None and (isinstance(self.trials, bool) or not isinstance(self.trials, int)
                                        or self.trials < 1):
            raise ValueError(f"trials must be an int >= 1; received trials={self.trials!r}")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2; received reduction_factor={self.reduction_factor!r}")
        if not isinstance(self.cpus_per_trial, (int, float)) or not 0 <= self.cpus_per_trial <= 64:
            raise ValueError(f"cpus_per_trial must be in [0, 64]; received cpus_per_trial={self.cpus_per_trial!r}")
        for f in ("epochs", "limit"):
            v = self.overrides.get(f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{f} must be an int >= 1; received {f}={v!r}")
        self.scaling().validate()
        self.storage_path()
        return self

    def storage_path(self):
        """Tune's `storage_path`: `storage` as Ray takes it (`pipelines.training.storage.validate`), else `out`
        made absolute. The experiment is `<storage_path>/<name>`."""
        from pipelines.training import storage

        return storage.validate(self.storage, default=self.out)

    def scaling(self):
        from pipelines.training.distributed import ScalingOptions

        return ScalingOptions(num_workers=self.workers_per_trial, use_gpu=self.use_gpu, accelerator=self.accelerator,
                              tpus_per_worker=self.tpus_per_worker,
                              cpus_per_worker=self.cpus_per_worker, max_failures=self.max_failures)

    def space(self):
        """The validated search space (SMOKE, the family's settings from the environment, and `overrides`
        merged in); fails before any trial. A family module may define `from_environment(environ)`: space
        entries read from environment variables *now*, when the space is requested (never at import; e.g.
        `tune_spaces.basisnet` and $BASISNET_TEACHER)."""
        import tune_spaces

        from pipelines.tuning import spaces

        space = tune_spaces.get(self.family, smoke=self.smoke_test)
        from_environment = getattr(tune_spaces.module(self.family), "from_environment", None)
        if from_environment is not None:
            space = tune_spaces.merge(space, from_environment(os.environ))
        if self.scaling().resolved_accelerator() == "tpu":  # a TPU runs bf16 XLA steps (overrides may say otherwise)
            space = tune_spaces.merge(space, TPU_FIELDS)
        space = tune_spaces.merge(space, self.overrides)
        spaces.check_space(space, where=f"tune_spaces.{self.family}",
                           smoke_settings=tune_spaces.smoke(self.family))
        if not isinstance(space.get("epochs", 10), int):
            raise ValueError(f"tune_spaces.{self.family}: epochs must be a constant int (ASHA's max_t); "
                             f"received epochs={space['epochs']!r}")
        return space

    def asha(self, epochs):
        """ASHA's settings for a search of `epochs` epochs per trial (its max_t; the grace period at most that):
        what the scheduler is built with and what `summary.json` states."""
        return {"grace_period": min(self.grace_period, epochs), "reduction_factor": self.reduction_factor,
                "max_t": epochs}

    def num_trials(self):
        import tune_spaces

        if self.trials:
            return self.trials
        return tune_spaces.smoke(self.family).get("trials", 2) if self.smoke_test else 16


# ----------------------------------------------------------------------------- the trial

def trial(config, scaling=None, callbacks=(), runs_dir=None, live=None):
    """Tune function trainable: fit one `TensorflowTrainer` on `config` (a TrainConfig dict).

    The Trainer's run (its checkpoints) goes to `runs_dir/<trial_id>/train` in the experiment folder
    (Tune's own trial dir is a per-session staging dir), so `Tuner.restore` finds it again. `live`
    (`pipelines.tuning.tracking.open_parent`): log this trial to MLflow while it trains, when the tracking
    store can be reached from this node; else the driver logs it after the search.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.training import storage as storage_mod
    from pipelines.training.config import TrainConfig
    from pipelines.training.distributed import fit_trainer

    ctx = tune.get_context()
    storage = storage_mod.join(runs_dir or ctx.get_trial_dir(), ctx.get_trial_id())
    cfg = TrainConfig.from_dict({**config, "out": storage, "run_name": "train"}).validate()
    run_callbacks = [TuneReportCallback()]
    if live is not None:  # this trial's nested MLflow run, per-epoch metrics logged as they are reported
        from pipelines.training.ray_mlflow import EpochReportsToMlflow
        from pipelines.tuning.tracking import trial_run

        run_id = trial_run(live, ctx.get_trial_id(), cfg)
        if run_id is not None:
            run_callbacks.append(EpochReportsToMlflow(live["tracking_uri"], run_id))
    # A fixed name per trial: a restored trial's Trainer resumes from its own last checkpoint. The Trainer is
    # the one `pipelines.training.run` fits on Ray (`fit_trainer`: raises NonFiniteLossError on a NaN loss).
    fit_trainer(cfg, scaling, name="train", storage_path=storage, callbacks=callbacks,
                run_callbacks=run_callbacks,
                extra={"trial_id": ctx.get_trial_id(), "trial_name": ctx.get_trial_name(),
                       "experiment": ctx.get_experiment_name()})


def _trainable(opts: TuneOptions, callbacks=(), live=None):
    from ray import tune

    from pipelines.training import storage

    runs_dir = storage.join(opts.storage_path(), opts.name, "trainer_runs")
    fn = tune.with_parameters(trial, scaling=opts.scaling(), callbacks=list(callbacks), runs_dir=runs_dir,
                              live=live)
    return tune.with_resources(fn, {"CPU": opts.cpus_per_trial})


# ----------------------------------------------------------------------------- the search

def _tuner(opts: TuneOptions, space, callbacks=(), points_to_evaluate=None, live=None):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    epochs = space.get("epochs", 10)
    search = OptunaSearch(metric=[m for m, _ in OBJECTIVES], mode=[m for _, m in OBJECTIVES],
                          points_to_evaluate=points_to_evaluate, seed=opts.seed)
    scheduler = ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", **opts.asha(epochs))
    return tune.Tuner(
        _trainable(opts, callbacks, live),
        param_space=space,
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=opts.num_trials(),
                                    max_concurrent_trials=opts.max_concurrent_trials),
        run_config=tune.RunConfig(name=opts.name, storage_path=opts.storage_path(),
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                                  callbacks=[progress_lines()], verbose=0),
    )


def progress_lines():
    """Tune's console progress in one line per report (trial, epoch, val_accuracy, MAdds) instead of Ray's
    full-width status tables (`RunConfig(verbose=0)`); every trial's full results stay in the experiment folder
    (`progress.csv` and `result.json` per trial, `results.csv`). A `ray.tune.Callback`."""
    from ray import tune

    class ProgressLines(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            acc = result.get("val_accuracy")
            acc = f"{acc:.4f}" if isinstance(acc, (int, float)) else "-"
            running = sum(t.status == "RUNNING" for t in trials)
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
            print(f"[tune] trial {trial.trial_id} epoch {result.get('epoch', '?')} val_accuracy={acc} "
                  f"madds={result.get('madds', '-')} ({running} running, {done} done of {len(trials)})", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            print(f"[tune] trial {trial.trial_id} finished after {last.get('epoch', 0)} epoch(s)", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"[tune] trial {trial.trial_id} failed (see results.csv)", flush=True)

    return ProgressLines()


def check_cluster(opts: TuneOptions, address=None):
    """A search on a remote Ray cluster needs a storage every node reaches; ValueError naming --storage."""
    from pipelines.training import storage
    from pipelines.training.distributed import is_remote

    address = address or os.environ.get("RAY_ADDRESS")
    if is_remote(address):
        problem = storage.cluster_problem(opts.storage_path() if opts.storage else None, opts.storage)
        if problem:
            raise ValueError(f"a search on the remote Ray cluster {address} needs a shared --storage "
                             f"(s3://..., gs://... or a path every node mounts): {problem}")


def experiment_dirs(opts: TuneOptions):
    """`(experiment path as Ray has it, local folder the reports are written to)`: the same folder for a path
    storage; for a bucket URI a local staging folder, copied to the bucket after the search."""
    from pipelines.training import storage

    exp_path = storage.join(opts.storage_path(), opts.name)
    return exp_path, Path(storage.staging(exp_path, exp_path))


def run(opts: TuneOptions, callbacks=(), points_to_evaluate=None, address=None, tracking_uri=None):
    """Validate, search, write the reports; returns the summary dict (see module docstring). With
    `tracking_uri`, the parent MLflow run is opened before the first trial and trials log themselves live
    (`pipelines.tuning.tracking`); `search` completes the runs after the search."""
    from pipelines.training import storage

    opts.validate()
    space = opts.space()  # an invalid space fails here, before Ray is touched
    check_cluster(opts, address)
    opts.name = opts.name or f"{opts.family}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    opts.out = os.path.abspath(opts.out)
    opts.storage = opts.storage_path() if opts.storage else None
    exp_path, exp_dir = experiment_dirs(opts)
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / OPTIONS_FILE).write_text(json.dumps(dataclasses.asdict(opts), indent=2))
    from pipelines.training.distributed import ensure_ray

    ensure_ray(address)
    live = _open_parent(tracking_uri, exp_dir, opts)
    storage.upload(exp_dir, exp_path, remove=False)
    print(f"tune {opts.family}: {opts.num_trials()} trial(s), {opts.max_concurrent_trials} at a time, "
          f"{opts.workers_per_trial} worker(s) each -> {exp_path}", flush=True)
    grid = _tuner(opts, space, callbacks, points_to_evaluate, live).fit()
    return _report_and_upload(grid, opts, exp_path, exp_dir, space, live)


def _open_parent(tracking_uri, exp_dir, opts):
    if tracking_uri is None:
        return None
    from pipelines.tuning.tracking import open_parent

    return open_parent(tracking_uri, exp_dir, dataclasses.asdict(opts), opts.family, opts.name)


def _report_and_upload(grid, opts, exp_path, exp_dir, space, live):
    from pipelines.training import storage

    summary = report(grid, opts, exp_dir, space, exp_path)
    summary["mlflow"] = live
    storage.upload(exp_dir, exp_path, remove=False)
    return summary


def resume(path, callbacks=(), address=None, tracking_uri=None):
    """Continue an interrupted experiment with `Tuner.restore` (unfinished trials resume from checkpoints).
    `path`: the experiment folder (a path, or its bucket URI)."""
    from ray import tune

    from pipelines.training import storage

    given = str(path)
    exp_path = storage.validate(given, field="resume")
    exp_dir = Path(storage.staging(exp_path, exp_path))
    if storage.is_uri(exp_path):
        from pipelines.tuning.tracking import TRACKING_FILE

        for name in (OPTIONS_FILE, TRACKING_FILE):
            storage.fetch_file(storage.join(exp_path, name), exp_dir / name)
    if not (exp_dir / OPTIONS_FILE).exists():
        raise ValueError(f"resume={given!r} is not a tune experiment folder (no {OPTIONS_FILE})")
    opts = TuneOptions(**json.loads((exp_dir / OPTIONS_FILE).read_text()))
    space = opts.space()
    check_cluster(opts, address)
    from pipelines.training.distributed import ensure_ray

    ensure_ray(address)
    if not tune.Tuner.can_restore(exp_path):
        raise ValueError(f"resume={given!r}: Tune has no saved experiment state there")
    live = _open_parent(tracking_uri, exp_dir, opts)
    print(f"resuming tune experiment {exp_path}", flush=True)
    # Errored trials too (a node that died took its trials with it): each goes on from its Trainer's last
    # checkpoint; a trial that failed on a NaN loss fails again at that epoch. Finished trials are not run again.
    tuner = tune.Tuner.restore(exp_path, trainable=_trainable(opts, callbacks, live), resume_unfinished=True,
                               resume_errored=True)
    return _report_and_upload(tuner.fit(), opts, exp_path, exp_dir, space, live)


def search(opts: TuneOptions | None = None, resume_dir=None, tracking_uri=None, track=True, callbacks=(),
           address=None, log=print):
    """A search (`run(opts)`) or the rest of an interrupted one (`resume(resume_dir)`), then, when `track`,
    its MLflow runs (`pipelines.tuning.tracking.log_experiment`: the trials logged themselves live where
    they could reach the store; the rest, the final metrics and the best model are logged here; skipped
    for an interrupted search, whose parent run stays open for the resume).
    The tracking URI is checked before Ray is touched. Returns `(summary, parent_run_id, best_run_id)`."""
    from pipelines import tracking
    from pipelines.tuning.tracking import log_experiment

    if (opts is None) == (resume_dir is None):
        raise ValueError(f"search needs opts or resume_dir (not both); received resume_dir={resume_dir!r}")
    uri = tracking.resolve_tracking_uri(tracking_uri) if track else None
    if uri is not None:
        from pipelines.training.tracked import absolute_store_uri

        uri = absolute_store_uri(uri)
        tracking.check_reachable(uri)
    summary = (resume(resume_dir, callbacks, address, uri) if resume_dir
               else run(opts, callbacks, address=address, tracking_uri=uri))
    if uri is None or summary["interrupted"]:
        return summary, None, None
    parent_id, best_id = log_experiment(summary, tracking_uri=uri, log=log)
    return summary, parent_id, best_id



# ----------------------------------------------------------------------------- reports

def pareto_front(rows):
    """Rows not dominated on (val_accuracy max, madds min), sorted by MAdds."""
    front = []
    for r in rows:
        dominated = any(o["val_accuracy"] >= r["val_accuracy"] and o["madds"] <= r["madds"]
                        and (o["val_accuracy"] > r["val_accuracy"] or o["madds"] < r["madds"]) for o in rows)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r["madds"], -r["val_accuracy"]))


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _domain_keys(space):
    import tune_spaces

    return [".".join(p) for p, _ in tune_spaces.domains(space)]


def _trial_statuses(grid, exp_dir):
    """Each trial's status (TERMINATED, ERROR, PENDING...) as saved in the experiment state on disk,
    by trial id and dir name: after an interrupt (Ctrl+C) unfinished trials are saved as PENDING there,
    which is what `Tuner.restore` resumes."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(str(exp_dir)).trials
    except Exception:  # no saved state yet: what this process knows
        trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    out = {}
    for t in trials:
        out[t.trial_id] = t.status
        try:
            out[Path(t.path).name] = t.status
        except Exception:  # a trial that never got a directory
            pass
    return out


def report(grid, opts: TuneOptions, exp_dir: Path, space, exp_path=None):
    """Results table, Pareto CSV + plot, best checkpoint, summary, written to `exp_dir`; returns the summary
    dict. `exp_path`: the experiment as Ray has it (a bucket URI when the storage is one; default `exp_dir`)."""
    import pandas as pd

    from pipelines.training import storage

    exp_path = str(exp_dir) if exp_path is None else exp_path

    epochs = space.get("epochs", 10)
    searched = _domain_keys(space)
    statuses = _trial_statuses(grid, exp_path)
    rows = []
    for res in grid:
        m = res.metrics or {}
        trial_id = m.get("trial_id") or Path(res.path).name
        status_now = statuses.get(trial_id) or statuses.get(Path(res.path).name)
        flat = _flat(res.config or {})
        done = int(m.get("epoch", 0) or 0)
        if res.error is not None:
            err = str(res.error).strip().splitlines()
            msg = next((l for l in err if "NonFiniteLossError" in l), err[-1] if err else "error")
            status = "failed: non-finite loss" if "NonFiniteLoss" in str(res.error) else "failed"
        elif status_now not in (None, "TERMINATED"):
            status, msg = status_now.lower(), ""
        else:
            status, msg = ("completed" if done >= epochs else "stopped early (ASHA)"), ""
        row = {"trial_id": trial_id, "status": status, "epochs_run": done,
               "val_accuracy": m.get("val_accuracy"), "madds": m.get("madds"), "params": m.get("params"),
               "resumed_from_epoch": m.get("resumed_from_epoch"), "checkpoint_path": m.get("checkpoint_path"),
               "error": msg[:200]}
        row.update({k: flat.get(k) for k in searched})
        rows.append(row)
    rows.sort(key=lambda r: r["trial_id"])
    table = pd.DataFrame(rows)
    table.to_csv(exp_dir / "results.csv", index=False)
    interrupted = any(r["status"] in ("running", "pending", "paused") for r in rows) or len(rows) < opts.num_trials()
    ok = [r for r in rows if not r["status"].startswith("failed") and r["val_accuracy"] is not None
          and r["status"] not in ("running", "pending", "paused")]
    complete = [r for r in ok if r["status"] == "completed"]
    front = pareto_front(complete or ok)
    pd.DataFrame(front, columns=table.columns if len(table) else None).to_csv(exp_dir / "pareto.csv", index=False)
    _plot(ok, front, exp_dir / "pareto.png", opts.family)

    best = max(complete or ok, key=lambda r: (r["val_accuracy"], -r["madds"]), default=None)
    root = opts.storage_path()
    if best and best["checkpoint_path"] and storage.exists(root, best["checkpoint_path"]):
        shutil.rmtree(exp_dir / "best", ignore_errors=True)
        storage.download(root, best["checkpoint_path"], exp_dir / "best")
        (exp_dir / "best" / "best.json").write_text(json.dumps(best, indent=2, default=str))
    ran = sum(r["epochs_run"] for r in rows if not r["status"].startswith("failed"))
    budget = epochs * sum(1 for r in rows if not r["status"].startswith("failed"))
    summary = {
        "experiment": str(exp_dir), "storage": exp_path, "family": opts.family, "trials": len(rows),
        "completed": sum(r["status"] == "completed" for r in rows),
        "stopped_early": sum(r["status"].startswith("stopped early") for r in rows),
        "failed": sum(r["status"].startswith("failed") for r in rows),
        "interrupted": interrupted,
        "trial_epochs_run": ran, "trial_epochs_budget": budget,
        "asha_saved_share": round(1 - ran / budget, 4) if budget else 0.0,
        "asha": opts.asha(epochs),
        "best": best, "pareto": front,
    }
    (exp_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    with pd.option_context("display.max_columns", 50, "display.width", 200):
        shown = table.drop(columns=["checkpoint_path", "error"], errors="ignore")
        print(shown.to_string(index=False) if len(shown) else "(no trials)")
    asha = summary["asha"]
    print(f"{summary['completed']} completed, {summary['stopped_early']} stopped early by ASHA "
          f"({summary['asha_saved_share']:.0%} of trial-epochs saved; grace period {asha['grace_period']}, "
          f"reduction factor {asha['reduction_factor']}, max_t {asha['max_t']} epochs), {summary['failed']} failed")
    if best:
        print(f"best: {best['trial_id']} val_accuracy={best['val_accuracy']:.4f} madds={best['madds']} "
              f"-> {exp_dir / 'best'}")
    print(f"results: {exp_dir / 'results.csv'}  pareto: {exp_dir / 'pareto.csv'}, {exp_dir / 'pareto.png'}")
    if interrupted:
        print(f"interrupted; continue with: python -m pipelines tune --resume {exp_path}")
    return summary


def _plot(rows, front, path, family):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if rows:
        ax.scatter([r["madds"] / 1e6 for r in rows], [r["val_accuracy"] for r in rows], c="0.6", label="trials")
    if front:
        ax.plot([r["madds"] / 1e6 for r in front], [r["val_accuracy"] for r in front], "o-", c="C3",
                label="Pareto front")
    ax.set_xlabel("MAdds (millions)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{family}: accuracy vs MAdds")
    if rows or front:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
