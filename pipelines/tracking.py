"""MLflow tracking for every training run: where runs go, what is logged, and figure helpers.

    from pipelines import tracking
    tracking.log_histogram("width_choice", counts, widths, xlabel="width")   # inside a run
    tracking.log_figure_and_data(fig, "routing", {"matrix": m.tolist()})      # any matplotlib figure

Where runs go (`resolve_tracking_uri`): `--tracking-uri` > `MLFLOW_TRACKING_URI` > a local SQLite
store in the project, `sqlite:///<project>/mlruns.db`, with artifacts under `<project>/mlartifacts/`.
Start a server with `make mlflow-up` (see `platform/mlflow/`) and pass `--tracking-uri http://127.0.0.1:5000`.

What a tracked run logs: params (every `TrainConfig` field, `model_config.*` / `recipe_config.*` flattened,
plus the recipe's resolved fields), per-epoch metrics (`epoch_metrics`, step = epoch), final metrics
(best `val_accuracy`, `madds`, `params`, `train_seconds`), artifacts `run/` (model.keras, config.json,
dataset.json, history.json, metrics.json — what `pipelines.mlops.registry.register` needs) and
`plots/history.png` (+ `history.json`). Figures go through MLflow's own `log_figure` and their numbers
through `log_dict`, beside them (`log_figure_and_data`; `log_histogram` draws a bar chart).

Stores accepted (`URI_SCHEMES`): an MLflow server (`http://`, `https://`), SQLite (`sqlite:///`) and
PostgreSQL (`postgresql://`, read as `postgresql+psycopg2://`: the pinned driver). MLflow 3.17 refuses
the file store (`file:`, a bare path), and no MySQL driver is installed: both are refused up front.

A server that cannot be reached is a one-line `TrackingUnavailable` naming the URI after at most
`CONNECT_TIMEOUT_S` seconds (`configure` asks its `/health` once per process), not minutes of silent
retries; `configure` also bounds MLflow's own retries (`MLFLOW_HTTP_DEFAULTS`) for a server that dies
mid-command. `not_found(err)` tells an MLflow "no such thing" answer from every other error.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlruns.db'}"
DEFAULT_ARTIFACT_ROOT = PROJECT_ROOT / "mlartifacts"
DEFAULT_EXPERIMENT = "pipelines"
URI_SCHEMES = ("http://", "https://", "sqlite:///", "postgresql://", "postgresql+psycopg2://")
POSTGRES_DRIVER = "postgresql+psycopg2://"  # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3 (not installed)
CONNECT_TIMEOUT_S = 5.0  # how long a tracking server may take to answer before a command gives up on it

# MLflow's own warnings (pip inference, git info) and progress bars are noise for a one-screen CLI.
# `configure` sets them (a value the user set wins); importing this module changes nothing.
MLFLOW_ENV_DEFAULTS = {"MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false", "GIT_PYTHON_REFRESH": "quiet",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
# MLflow retries a failed request 7 times with a growing backoff (about 4 minutes) and waits up to 120 s for
# an answer: bound both (about 10 s of retries, 60 s per request) unless the user set them.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


class TrackingUnavailable(ValueError):
    """The tracking server cannot be reached; the one-line message names the URI."""


def resolve_tracking_uri(uri=None):
    """`uri` if given, else `MLFLOW_TRACKING_URI`, else the project's SQLite store; validated."""
    source = "tracking_uri"
    if not uri:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        source = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "tracking_uri"
    uri = str(uri)
    if not uri.startswith(URI_SCHEMES):
        raise ValueError(f"{source}={uri!r} is not a tracking URI; use http://HOST:PORT, sqlite:///PATH.db "
                         "or postgresql://USER@HOST/DB")
    if uri.startswith("postgresql://"):
        uri = POSTGRES_DRIVER + uri[len("postgresql://"):]
    return uri


def local_sqlite_path(uri):
    """The database file of a `sqlite:///` URI (None for other stores)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).expanduser()
    return None


def configure(uri=None):
    """Point MLflow (tracking and registry) at `resolve_tracking_uri(uri)` and quieten it
    (`MLFLOW_ENV_DEFAULTS`, unless set); returns the URI. Every path that talks to MLflow calls it first."""
    uri = resolve_tracking_uri(uri)
    for key, value in {**MLFLOW_ENV_DEFAULTS, **MLFLOW_HTTP_DEFAULTS}.items():
        os.environ.setdefault(key, value)
    check_reachable(uri)
    import mlflow

    db = local_sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


_REACHED = set()  # server URIs that answered in this process (asked once)


def check_reachable(uri, timeout=None):
    """For an http(s) tracking URI: raise a one-line `TrackingUnavailable` naming it when its server does not
    answer within `timeout` seconds (default `CONNECT_TIMEOUT_S`). Any HTTP answer counts (401 from an auth
    server too). Other stores pass."""
    if not uri.startswith(("http://", "https://")) or uri in _REACHED:
        return
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    import re

    import requests

    verify = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or \
        os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() not in ("true", "1")
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=(timeout, timeout), verify=verify).close()
    except requests.exceptions.Timeout:
        raise TrackingUnavailable(f"tracking server {uri} did not answer within {timeout:g} s; check that it is up "
                                  "(make mlflow-up) or pass another --tracking-uri") from None
    except requests.exceptions.RequestException as err:
        why = re.search(r"\[Errno -?\d+\] [^'\")]+", str(err))
        raise TrackingUnavailable(f"tracking server {uri} cannot be reached ({why[0] if why else type(err).__name__}); "
                                  "start it (make mlflow-up) or pass another --tracking-uri") from None
    _REACHED.add(uri)


def not_found(err):
    """Whether an MlflowException says that the thing asked for does not exist (a run, a registered model, a
    version, an alias), as opposed to an unreachable store, a refused permission or a server error."""
    code = getattr(err, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in str(err))


def client(uri=None):
    from mlflow import MlflowClient

    uri = configure(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name=DEFAULT_EXPERIMENT, uri=None):
    """Experiment id of `name`, creating it if needed. With a local SQLite store its artifacts go to
    `mlartifacts/<name>/` next to the database (MLflow's own default would be `./mlruns` of the cwd)."""
    import mlflow

    uri = configure(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(f"experiment={name!r} is deleted in {uri}; restore it or pick another name")
        return exp.experiment_id
    db = local_sqlite_path(uri)
    location = (db.parent / "mlartifacts" / name).resolve().as_uri() if db is not None else None
    return mlflow.create_experiment(name, artifact_location=location)


def flatten_params(d, prefix=""):
    """`{"a": 1, "b": {"c": 2}}` -> `{"a": "1", "b.c": "2"}` (MLflow params are flat strings)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v)
    return out


def config_params(cfg):
    """Params of a `TrainConfig`: its fields plus the resolved recipe fields (`recipe_config.*`)."""
    d = cfg.to_dict()
    d["recipe_config"] = {**cfg.recipe_obj().to_dict(), **d.get("recipe_config", {})}
    return flatten_params(d)


# ---------------------------------------------------------------- Keras callback

def _keras():
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    return keras


def current_client():
    """A client on the URI already configured (by `configure` or `mlflow.set_tracking_uri`)."""
    import mlflow
    from mlflow import MlflowClient

    uri = mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def current_learning_rate(model):
    """The optimizer's learning rate now (a schedule evaluated at the current step), or None."""
    optimizer = getattr(model, "optimizer", None)
    lr = getattr(optimizer, "learning_rate", None) if optimizer is not None else None
    if lr is None:
        return None
    value = lr(optimizer.iterations) if callable(lr) else lr
    value = value.numpy() if hasattr(value, "numpy") else value  # a MirroredVariable under a strategy
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def epoch_metrics(run_id=None):
    """A Keras callback that logs every epoch's logs (loss, accuracy, val_*, learning_rate) to `run_id`
    (default: the active run) with step = epoch number."""
    import mlflow

    keras = _keras()
    run_id = run_id or (mlflow.active_run().info.run_id if mlflow.active_run() else None)
    if run_id is None:
        raise ValueError("epoch_metrics needs run_id=... or an active MLflow run")
    mlclient = current_client()

    class _EpochMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            import math
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, epoch + 1) for k, v in (logs or {}).items()
                       if isinstance(v, (int, float)) or hasattr(v, "__float__")]
            metrics = [m for m in metrics if math.isfinite(m.value)]
            lr = current_learning_rate(self.model)
            if lr is not None:
                metrics.append(Metric("learning_rate", lr, now, epoch + 1))
            if metrics:
                mlclient.log_batch(run_id, metrics=metrics)

    cb = _EpochMetrics()
    cb.run_id = run_id
    return cb


# ---------------------------------------------------------------- figures (family-agnostic)

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_figure_and_data(fig, name, data, run_id=None):
    """Log a matplotlib figure as `plots/NAME.png` (or `NAME.png` when `name` has a folder) and `data`, the
    numbers it shows, as the `.json` beside it, through MLflow's own `log_figure` / `log_dict` (no files of
    ours), to `run_id` or the active run. Closes the figure; returns the figure's artifact path."""
    import mlflow

    plt = _pyplot()
    stem = name if "/" in name else f"plots/{name}"
    data = json.loads(json.dumps(data, default=float))  # NumPy scalars -> JSON numbers
    save = {"dpi": 110, "bbox_inches": "tight"}
    try:
        if run_id is None:
            mlflow.log_figure(fig, f"{stem}.png", save_kwargs=save)
            mlflow.log_dict(data, f"{stem}.json")
        else:
            c = current_client()
            c.log_figure(run_id, fig, f"{stem}.png", save_kwargs=save)
            c.log_dict(run_id, data, f"{stem}.json")
    finally:
        plt.close(fig)
    return f"{stem}.png"


def history_figure(history):
    """Loss and accuracy per epoch, train and validation, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    epochs = None
    for ax, kind in zip(axes, ("loss", "accuracy")):
        for k, vs in sorted(history.items()):
            if k.endswith(kind):
                epochs = range(1, len(vs) + 1)
                ax.plot(epochs, vs, marker="o", ms=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_title(kind)
        if ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def log_history_plot(history, run_id=None):
    return log_figure_and_data(history_figure(history), "history", history, run_id)


def log_histogram(name, counts, labels, xlabel="", title=None, run_id=None):
    """Log a bar chart of `counts` per label (e.g. how often a DS-Net gate chose each width)."""
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    if counts.shape != (len(labels),):
        raise ValueError(f"log_histogram: {len(labels)} labels but counts has shape={counts.shape}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar([str(l) for l in labels], counts)
    ax.set_xlabel(xlabel)
    ax.set_title(title or name)
    data = {"labels": [str(l) for l in labels], "counts": counts.tolist()}
    return log_figure_and_data(fig, name, data, run_id)


# ---------------------------------------------------------------- a tracked training run

def log_training_result(run_id, run_dir, metrics, history=None):
    """Final metrics, the run folder (minus checkpoints) under `run/`, and the history plot."""
    c = current_client()
    from mlflow.entities import Metric
    import time

    now = int(time.time() * 1000)
    c.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                                 if isinstance(v, (int, float))])
    run_dir = Path(run_dir)
    for f in ("model.keras", "config.json", "dataset.json", "history.json", "metrics.json"):
        if (run_dir / f).exists():
            c.log_artifact(run_id, str(run_dir / f), "run")
    if history is None and (run_dir / "history.json").exists():
        history = json.loads((run_dir / "history.json").read_text())
    if history:
        log_history_plot(history, run_id=run_id)
    c.set_tag(run_id, "run_dir", str(run_dir.resolve()))


def run_summary(client, run_id):
    """The final metrics a training run reports (`run/metrics.json`: the best epoch's, the one its
    `model.keras` holds). Not `run.data.metrics`: MLflow shows a metric's value at its highest step, which
    for per-epoch metrics is the last epoch, not the reported one. Runs without the file: their metrics."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "run/metrics.json", tmp)
        except Exception:  # no such artifact (a run not written by pipelines.training)
            return dict(client.get_run(run_id).data.metrics)
        return json.loads(Path(path).read_text())


@contextlib.contextmanager
def start_run(cfg, uri=None, experiment=None, parent_run_id=None, tags=None):
    """Start (and end) an MLflow run for training `cfg`: params and tags logged up front."""
    import mlflow

    configure(uri)
    exp_id = ensure_experiment(experiment or DEFAULT_EXPERIMENT, uri)
    run_tags = {"model": cfg.model, "recipe": cfg.recipe_name(), "data": cfg.data, **(tags or {})}
    with mlflow.start_run(experiment_id=exp_id, run_name=cfg.run_name or cfg.model, nested=parent_run_id is not None,
                          parent_run_id=parent_run_id, tags=run_tags) as run:
        mlflow.log_params(config_params(cfg))
        yield run


# ---------------------------------------------------------------- an experiment's run (not a training run)

def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (for figures logged with `log_figure`)."""
    return _pyplot()


@contextlib.contextmanager
def experiment_run(name, experiment=DEFAULT_EXPERIMENT, uri=None, tags=None):
    """Start (and end) an MLflow run `name` in `experiment` for an experiment's results; yields its run id."""
    import mlflow

    configure(uri)
    exp_id = ensure_experiment(experiment, uri)
    with mlflow.start_run(experiment_id=exp_id, run_name=name, tags=tags or {}) as run:
        yield run.info.run_id


def log_params_dict(params):
    """Log a (nested) dict as params of the active run (`flatten_params`; MLflow keeps 6000 chars a value)."""
    import mlflow

    mlflow.log_params({k: v[:6000] for k, v in flatten_params(params).items()})


def log_metrics_dict(metrics):
    """Log `{name: number}` as metrics of the active run (non-finite values are skipped: strict JSON)."""
    import math

    import mlflow

    finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if finite:
        mlflow.log_metrics(finite)


def log_dict(data, artifact_file):
    """`mlflow.log_dict` of `data` (JSON-serialisable; NumPy numbers are converted) to the active run."""
    import mlflow

    mlflow.log_dict(json.loads(json.dumps(data, default=_json_default)), artifact_file)


def log_figure(fig, artifact_file):
    """`mlflow.log_figure` of a matplotlib figure to the active run, then close it."""
    import mlflow

    mlflow.log_figure(fig, artifact_file)
    _pyplot().close(fig)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
