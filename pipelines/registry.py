"""The MLflow model registry: register a tracked run's model, and promote it through gates.

    python -m pipelines register --run RUN_ID --name digits_net
    python -m pipelines promote  --model digits_net [--metric val_accuracy] [--latency-budget-ms 5]

`register` logs the run's Keras model (`run/model.keras`, written by `pipelines.tracking`) with the
`mlflow.tensorflow` flavour and a tensor signature into the same run, and registers it as a new
version of NAME. `promote` moves the `champion` alias to a candidate version (default: the newest)
only when every gate passes, in this order:

1. TFLite parity: the candidate's TFLite export (`--quantize`, default float32) agrees with the Keras
   model on N validation images (top-1 agreement and, where set, max abs error of the logits);
2. metric: on the same validation data (the candidate's dataset, the whole validation split unless
   `limit`), the candidate beats the current champion (`val_accuracy` higher, `val_loss` lower);
3. latency (optional): the TFLite model's measured latency is within `--latency-budget-ms`.

The candidate carries the `challenger` alias while it is evaluated; on success `champion` moves to it
and `challenger` is removed. Either way the outcome is written as version tags (`promotion.status`,
`.by`, `.at`, `.reason`, `.metric`, `.parity`, `.latency_ms`, `.previous_champion`). A refusal, or any
error during the gates, leaves `champion` where it was. Aliases only: the deprecated stages are never used.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import getpass
import json
import math
import re
import socket
import tempfile
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)
from pipelines import tracking

CHAMPION = "champion"
CHALLENGER = "challenger"
METRICS = {"val_accuracy": "max", "val_loss": "min"}
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


def _keras():
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    import keras_layers  # noqa: F401  (registers the custom layers)
    from keras_layers import models

    models.names()  # import every family module so their layers are registered for loading
    return keras


# ---------------------------------------------------------------- reading versions

def get_version(client, name, version=None, alias=None):
    """A ModelVersion by number or alias (None when the alias is not set)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise ValueError(f"no registered model name={name!r} in {client.tracking_uri}") from None
    if alias is not None:
        try:
            return client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None
    if version is None:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise ValueError(f"registered model name={name!r} has no versions")
        return max(versions, key=lambda v: int(v.version))
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise ValueError(f"registered model {name!r} has no version={version!r}") from None


def run_context(client, run_id):
    """The training config and dataset info a run logged (`run/config.json`, `run/dataset.json`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        for key in ("config", "dataset"):
            try:
                path = client.download_artifacts(run_id, f"run/{key}.json", tmp)
            except Exception:
                raise ValueError(f"run={run_id!r} has no run/{key}.json artifact; was it trained with "
                                 "`python -m pipelines train` (tracking on)?") from None
            out[key] = json.loads(Path(path).read_text())
    return out["config"], out["dataset"]


def load_version_model(client, mv):
    """The Keras model of a ModelVersion (from its `mlflow.tensorflow` artifacts)."""
    import mlflow

    _keras()
    return mlflow.tensorflow.load_model(f"models:/{mv.name}/{mv.version}")


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
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"run={run_id!r} not found in {client.tracking_uri}") from None
    config, dataset = run_context(client, run_id)
    keras = _keras()
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "run/model.keras", tmp)
        net = keras.models.load_model(path, compile=False)
    log(f"registering run {run_id} ({config['model']} on {config['data']}) as {name!r}")
    with mlflow.start_run(run_id=run_id):
        info = mlflow.tensorflow.log_model(net, name="model", signature=signature_for(net),
                                           registered_model_name=name, await_registration_for=60,
                                           pip_requirements=pip_requirements())
    version = str(info.registered_model_version)
    tags = {"source_run": run_id, "model": config["model"], "recipe": config.get("recipe") or "",
            "data": config["data"], "image_size": str(config["image_size"]),
            "num_classes": str(dataset.get("num_classes")), "registered_by": _who(),
            "registered_at": _now()}
    for k in ("val_accuracy", "madds", "params"):
        if k in run.data.metrics:
            tags[k] = _fmt(run.data.metrics[k])
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    client.update_model_version(name, version, description=(
        f"{config['model']} trained on {config['data']} at {config['image_size']}px (run {run_id})"))
    log(f"registered {name} version {version}")
    return client.get_model_version(name, version)


# ---------------------------------------------------------------- promote

@dataclasses.dataclass
class Promotion:
    name: str
    candidate: str
    previous_champion: str | None
    promoted: bool
    reason: str
    metric: str
    candidate_score: float | None = None
    champion_score: float | None = None
    parity: dict | None = None
    latency_ms: float | None = None

    def summary(self):
        verdict = "PROMOTED" if self.promoted else "NOT PROMOTED"
        return f"{self.name} v{self.candidate}: {verdict} - {self.reason}"


def evaluate(net, images, labels, metric, main_output="logits"):
    """`val_accuracy` (top-1) or `val_loss` (mean cross-entropy) of `net` on NumPy arrays."""
    import numpy as np

    from pipelines import export

    logits = export.main_logits(net.predict(images, batch_size=256, verbose=0), main_output)
    if metric == "val_accuracy":
        return float(np.mean(np.argmax(logits, -1) == labels))
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def _who():
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def check_promote_args(metric, quantize, parity_images, min_agreement, max_error, latency_budget_ms, threads):
    from pipelines import export

    if metric not in METRICS:
        raise ValueError(f"unknown metric={metric!r}; valid choices: {', '.join(METRICS)}")
    export.check_mode(quantize)
    if not isinstance(parity_images, int) or parity_images < 1:
        raise ValueError(f"parity_images must be an int >= 1; received parity_images={parity_images!r}")
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be in [0, 1]; received min_agreement={min_agreement!r}")
    if max_error is not None and not max_error >= 0:
        raise ValueError(f"max_error must be >= 0; received max_error={max_error!r}")
    if latency_budget_ms is not None and not latency_budget_ms > 0:
        raise ValueError(f"latency_budget_ms must be > 0; received latency_budget_ms={latency_budget_ms!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1; received threads={threads!r}")


def promote(name, metric="val_accuracy", version=None, quantize="float32", parity_images=64, min_agreement=0.99,
            max_error=None, latency_budget_ms=None, threads=1, limit=None, min_delta=0.0, tracking_uri=None,
            reason=None, log=print):
    """Move `champion` to `version` (default: the newest) if it passes every gate; see the module doc.

    Returns a `Promotion`; a refusal is a normal outcome (`promoted=False`, `reason` says why).
    `max_error` defaults per mode (`pipelines.export.DEFAULT_MAX_ERROR`); `reason` is a free-text
    note from the person promoting, stored with the tags.
    """
    from pipelines import data as data_mod
    from pipelines import export

    check_name(name)
    check_promote_args(metric, quantize, parity_images, min_agreement, max_error, latency_budget_ms, threads)
    client = tracking.client(tracking_uri)
    cand = get_version(client, name, version=version)
    champ = get_version(client, name, alias=CHAMPION)
    # Versions are strings over REST and ints from a local SQL store: compare them as strings.
    cand_v = str(cand.version)
    prev = str(champ.version) if champ is not None else None

    def finish(promoted, why, **extra):
        result = Promotion(name=name, candidate=cand_v, previous_champion=prev, promoted=promoted,
                           reason=why, metric=metric, **extra)
        tags = {"promotion.status": "promoted" if promoted else "refused", "promotion.by": _who(),
                "promotion.at": _now(), "promotion.reason": why, "promotion.previous_champion": prev or "none"}
        if reason:
            tags["promotion.note"] = reason
        if result.candidate_score is not None:
            tags["promotion.metric"] = (f"{metric}={result.candidate_score:.4f}"
                                        + (f" vs champion v{prev} {result.champion_score:.4f}"
                                           if result.champion_score is not None else " (no champion)"))
        if result.parity:
            tags["promotion.parity"] = json.dumps(result.parity)
        if result.latency_ms is not None:
            tags["promotion.latency_ms"] = f"{result.latency_ms:.3f}"
        if promoted:
            # The only write to `champion`, after every gate passed.
            client.set_registered_model_alias(name, CHAMPION, cand_v)
            try:
                if str(client.get_model_version_by_alias(name, CHALLENGER).version) == cand_v:
                    client.delete_registered_model_alias(name, CHALLENGER)
            except Exception:
                pass
        for k, v in tags.items():
            client.set_model_version_tag(name, cand_v, k, v)
        log(result.summary())
        return result

    if prev == cand_v:  # nothing to do; the champion's tags are not touched
        result = Promotion(name=name, candidate=cand_v, previous_champion=prev, promoted=False,
                           reason=f"version {cand_v} is already the champion", metric=metric)
        log(result.summary())
        return result
    log(f"promote {name}: candidate v{cand_v}, champion {'v' + prev if prev else '(none)'}; "
        f"gates: parity ({quantize}), {metric}" + (f", latency <= {latency_budget_ms} ms" if latency_budget_ms else ""))
    client.set_registered_model_alias(name, CHALLENGER, cand_v)

    config, dataset = run_context(client, cand.run_id)
    kwargs = data_kwargs(config)
    images, labels, info = data_mod.as_numpy(split="validation", limit=limit, **kwargs)
    main_output = export.main_output_name(config)
    net = load_version_model(client, cand)

    # Gate 1: the TFLite export agrees with the Keras model.
    log(f"  gate 1/3 parity: converting v{cand_v} to TFLite ({quantize}) ...")
    try:
        conv = export.convert(net, quantize, data=kwargs, log=lambda m: log("    " + m))
    except ValueError as err:
        return finish(False, f"TFLite export ({quantize}) failed: {err}")
    par = export.parity(net, conv.tflite, images[:parity_images], main_output=main_output)
    tol = export.DEFAULT_MAX_ERROR.get(quantize) if max_error is None else max_error
    par["mode"] = quantize
    log(f"    top-1 agreement {par['agreement']:.4f} on {par['images']} images, max abs error {par['max_abs_error']:.3g}")
    if par["agreement"] < min_agreement:
        return finish(False, f"TFLite parity failed: top-1 agreement {par['agreement']:.4f} < {min_agreement} "
                             f"on {par['images']} validation images ({quantize})", parity=par)
    if tol is not None and par["max_abs_error"] > tol:
        return finish(False, f"TFLite parity failed: max abs error {par['max_abs_error']:.3g} > {tol:.3g} "
                             f"on {par['images']} validation images ({quantize})", parity=par)

    # Gate 2: beats the champion on the same validation data.
    score = evaluate(net, images, labels, metric, main_output)
    log(f"  gate 2/3 {metric}: candidate v{cand_v} {score:.4f} on {len(labels)} validation images of "
        f"{config['data']}")
    champ_score = None
    if champ is not None:
        champ_config, _ = run_context(client, champ.run_id)
        if data_kwargs(champ_config) != kwargs:
            return finish(False, f"champion v{prev} was trained on {data_kwargs(champ_config)}, the candidate on "
                                 f"{kwargs}: not comparable on the same validation data",
                          candidate_score=score, parity=par)
        champ_net = load_version_model(client, champ)
        champ_score = evaluate(champ_net, images, labels, metric, export.main_output_name(champ_config))
        log(f"    champion v{prev} {champ_score:.4f}")
        better = score > champ_score + min_delta if METRICS[metric] == "max" else score < champ_score - min_delta
        if not better:
            word = "higher" if METRICS[metric] == "max" else "lower"
            return finish(False, f"{metric} {score:.4f} does not beat champion v{prev} {champ_score:.4f} "
                                 f"({word} is better, min_delta={min_delta}) on {len(labels)} validation images",
                          candidate_score=score, champion_score=champ_score, parity=par)

    # Gate 3 (optional): measured TFLite latency within the budget.
    lat = None
    if latency_budget_ms is not None:
        lat = export.latency(conv.tflite, threads=threads, example=images[:1])["median_ms"]
        log(f"  gate 3/3 latency: median {lat:.3f} ms per image ({threads} thread(s)), budget {latency_budget_ms} ms")
        if not math.isfinite(lat) or lat > latency_budget_ms:
            return finish(False, f"TFLite latency {lat:.3f} ms exceeds the budget {latency_budget_ms} ms",
                          candidate_score=score, champion_score=champ_score, parity=par, latency_ms=lat)
    why = (f"{metric} {score:.4f}" + (f" beats champion v{prev} {champ_score:.4f}" if champ is not None
                                      else " (first champion)")
           + f"; TFLite {quantize} parity {par['agreement']:.3f}" + (f"; latency {lat:.3f} ms" if lat else ""))
    return finish(True, why, candidate_score=score, champion_score=champ_score, parity=par, latency_ms=lat)
