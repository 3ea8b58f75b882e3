"""The MLflow model registry: register a tracked run's model as a new version, and read versions back.

    python -m pipelines register --run RUN_ID --name digits_net

`register` logs the run's Keras model (`run/model.keras`, written by `pipelines.tracking`) with the
`mlflow.tensorflow` flavour and a tensor signature into the same run, and registers it as a new
version of NAME. Moving the `champion` alias (gates, lock, history, rollback) is
`pipelines.mlops.promotions.promote`; the alias names are defined here, the lowest module that reads them.

Models are loaded only from the zip `.keras` format, with `safe_mode` (`pipelines.training.saving.load_model`):
tf_keras applies `safe_mode` to nothing else, and an HDF5 file (whatever its name) runs a Lambda layer's code
while it loads. `load_model` refuses any other file with one line naming where it came from (the run's
artifact, the registered version, the user's path) and what it is.

Only MLflow's "no such thing" answers (`tracking.not_found`) read as a missing model, version, alias or
artifact; any other error (an unreachable or failing server, a refused permission) is raised as it is.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import json
import re
import socket
import tempfile
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)
from pipelines import tracking
from pipelines.training.saving import load_model

CHAMPION = "champion"  # the version that ships; moved only by `promotions.promote` / `rollback`
CHALLENGER = "challenger"  # the candidate while the gates evaluate it
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MODEL_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"registered model name must be letters, digits, '_', '.', '-'; received name={name!r}")
    return name


def parse_model_uri(uri):
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> (name, alias, version)."""
    m = MODEL_URI_RE.match(str(uri))
    if not m:
        raise ValueError(f"model={uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


def who():
    """`user@host` of this process, as the registry's tags record it."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def timestamp():
    """Now, UTC, ISO 8601 to the second, as the registry's tags record it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- reading versions

def get_version(client, name, version=None, alias=None):
    """A ModelVersion by number or alias (None when the alias is not set). Only a "not found" answer reads
    as a missing model, version or alias; other MLflow errors are raised."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if not tracking.not_found(err):
            raise
        raise ValueError(f"no registered model name={name!r} in {client.tracking_uri}") from None
    if alias is not None:
        try:
            return client.get_model_version_by_alias(name, alias)
        except MlflowException as err:
            if not tracking.not_found(err):
                raise
            return None
    if version is None:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise ValueError(f"registered model name={name!r} has no versions")
        return max(versions, key=lambda v: int(v.version))
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as err:
        if not tracking.not_found(err):
            raise
        raise ValueError(f"registered model {name!r} has no version={version!r}") from None


def download(client, run_id, artifact, dst, what=None):
    """Download `artifact` of run `run_id` into `dst`; a missing artifact is a one-line ValueError (`what`
    says where it should have come from), any other failure is raised."""
    from mlflow.exceptions import MlflowException

    try:
        return client.download_artifacts(run_id, artifact, dst)
    except MlflowException as err:
        if not tracking.not_found(err):
            raise
    except FileNotFoundError:  # a local artifact store
        pass
    raise ValueError(f"run={run_id!r} has no {artifact} artifact" + (f"; {what}" if what else ""))


def run_context(client, run_id):
    """The training config and dataset info a run logged (`run/config.json`, `run/dataset.json`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        for key in ("config", "dataset"):
            path = download(client, run_id, f"run/{key}.json", tmp,
                            "was it trained with `python -m pipelines train` (tracking on)?")
            out[key] = json.loads(Path(path).read_text())
    return out["config"], out["dataset"]


def load_version_model(client, mv):
    """The Keras model of a ModelVersion: the zip `data/model.keras` of its `mlflow.tensorflow` artifacts,
    through `load_model`. Not `mlflow.tensorflow.load_model`: that follows the version's MLmodel file
    (which may ask for HDF5) and unpickles `data/global_custom_objects.cloudpickle`, so whoever can write
    to the artifact store could run code on the machine that promotes or exports."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=tmp,
                                                    tracking_uri=client.tracking_uri)
        path = Path(local) / "data" / "model.keras"
        if not path.is_file():
            raise ValueError(f"models:/{mv.name}/{mv.version} has no data/model.keras; was it registered with "
                             "`python -m pipelines register`?")
        return load_model(path, f"models:/{mv.name}/{mv.version} (data/model.keras)")


def data_kwargs(config):
    """What `pipelines.data.as_numpy` needs to load the data a run was trained on."""
    return {"name": config["data"], "image_size": config["image_size"], "data_dir": config.get("data_dir")}


# ---------------------------------------------------------------- register

def signature_for(net):
    """A tensor signature: `image` (-1, H, W, C) float32 in; each named output (-1, ...) out."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(t, name):
        return TensorSpec(np.dtype(t.dtype.name), (-1, *[int(d) for d in t.shape[1:]]), name)

    inputs = Schema([spec(t, n) for t, n in zip(net.inputs, net.input_names)])
    outputs = Schema([spec(t, n) for t, n in zip(net.outputs, net.output_names)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements():
    """The model's runtime requirements, pinned to what is installed (MLflow would otherwise infer them by
    loading the model in a subprocess, which costs a TensorFlow start-up per registration)."""
    from importlib import metadata

    return [f"{pkg}=={metadata.version(pkg)}" for pkg in ("tensorflow", "tf-keras", "numpy", "mlflow")]


def register(run_id, name, tracking_uri=None, log=print):
    """Log run `run_id`'s Keras model with the mlflow.tensorflow flavour + signature and register it
    as a new version of `name`. Returns the ModelVersion."""
    import mlflow
    from mlflow.exceptions import MlflowException

    check_name(name)
    client = tracking.client(tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException as err:
        if not (tracking.not_found(err) or err.error_code == "INVALID_PARAMETER_VALUE"):
            raise
        raise ValueError(f"run={run_id!r} not found in {client.tracking_uri}") from None
    config, dataset = run_context(client, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = download(client, run_id, "run/model.keras", tmp)
        net = load_model(path, f"run {run_id} artifact run/model.keras")
    log(f"registering run {run_id} ({config['model']} on {config['data']}) as {name!r}")
    with mlflow.start_run(run_id=run_id):
        info = mlflow.tensorflow.log_model(net, name="model", signature=signature_for(net),
                                           registered_model_name=name, await_registration_for=60,
                                           pip_requirements=pip_requirements())
    version = str(info.registered_model_version)
    tags = {"source_run": run_id, "model": config["model"], "recipe": config.get("recipe") or "",
            "data": config["data"], "image_size": str(config["image_size"]),
            "num_classes": str(dataset.get("num_classes")), "registered_by": who(),
            "registered_at": timestamp()}
    summary = tracking.run_summary(client, run_id)  # the reported epoch's metrics, as model.keras holds
    for k in ("val_accuracy", "madds", "params"):
        if isinstance(summary.get(k), (int, float)):
            tags[k] = _fmt(summary[k])
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    client.update_model_version(name, version, description=(
        f"{config['model']} trained on {config['data']} at {config['image_size']}px (run {run_id})"))
    log(f"registered {name} version {version}")
    return client.get_model_version(name, version)


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else str(v)
