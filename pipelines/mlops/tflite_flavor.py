"""The Android bundle as an MLflow model: a pyfunc whose predict runs the `.tflite` bytes that ship.

    from pipelines.mlops import tflite_flavor
    mv = tflite_flavor.register_bundle("bundle/", keras_version=keras_mv)       # -> NAME.tflite, version N
    tflite_flavor.sync_alias(client, "digits_net", "champion")                  # follow the Keras alias
    model = mlflow.pyfunc.load_model("models:/digits_net.tflite@champion")
    model.predict(images)      # DataFrame: index, label, confidence, stopped_at, stages, madds, time_ms, logits

The bundle folder (model.tflite and any other .tflite it names, labels.txt, model.json) is logged as
the artifacts of a custom `mlflow.pyfunc.PythonModel`; `predict` loads it with
`pipelines.export.bundle.Bundle` (LiteRT via `pipelines.export.tflite.Runner`), the code `run-bundle` uses,
so early exits and width choices follow model.json exactly as on the phone. Input: normalised images
(N, H, W, C) float32 - what the Keras model takes; `Bundle.preprocess` turns image files into that.

Registered beside the Keras model it came from, as `<NAME>.tflite`, logged into the Keras version's
run (as MLflow logged model `tflite_<mode>`). Links, both ways, as version tags: the TFLite version carries
`keras_model` (models:/NAME/V), `quantize`, `kind`, `tflite_sha256`, `tflite_bytes`; the Keras version
carries `tflite_model.<mode>` (models:/NAME.tflite/V). `sync_alias` moves an alias of the TFLite model
to the version linked to the Keras version holding that alias (promotion and rollback call it), so
`models:/NAME.tflite@champion` is always the export of `models:/NAME@champion`.
"""
from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipelines import tracking

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

SUFFIX = ".tflite"
OUTPUT_COLUMNS = ("index", "label", "confidence", "stopped_at", "stages", "madds", "time_ms", "logits")

from mlflow.pyfunc import PythonModel


def tflite_name(name):
    return f"{name}{SUFFIX}"


class TFLiteBundleModel(PythonModel):
    """pyfunc model: the bundle's .tflite run with ai_edge_litert, one image at a time, as model.json says."""

    def __init__(self, num_threads=1):
        self.num_threads = num_threads
        self.bundle = None

    def load_context(self, context):
        from pipelines.export.bundle import Bundle

        self.bundle = Bundle.load(context.artifacts["bundle"], num_threads=self.num_threads)

    def predict(self, context, model_input: np.ndarray, params=None):
        # (np.ndarray hint: MLflow skips its type-hint validation; the tensor signature checks the input)
        import pandas as pd

        if isinstance(model_input, dict):  # the named tensor signature: {"image": array}
            model_input = model_input["image"] if "image" in model_input else next(iter(model_input.values()))
        if isinstance(model_input, pd.DataFrame):  # a column of image arrays, or flattened pixels
            shape = self.bundle.input_shape()
            model_input = np.stack([np.asarray(v, np.float32).reshape(shape) for v in
                                    (model_input.iloc[:, 0] if model_input.shape[1] == 1 else model_input.to_numpy())])
        images = np.asarray(model_input, np.float32)
        if images.ndim == 3:
            images = images[None]
        preds = self.bundle.predict(images)
        rows = []
        for p in preds:
            d = p.to_dict()
            d["stages"] = ">".join(p.stages)
            rows.append(d)
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _signature(bundle):
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    shape = bundle.input_shape()
    inputs = Schema([TensorSpec(np.dtype("float32"), (-1, *shape), "image")]) if shape else None
    outputs = Schema([ColSpec("long", "index"), ColSpec("string", "label"), ColSpec("double", "confidence"),
                      ColSpec("string", "stopped_at"), ColSpec("string", "stages")])
    return ModelSignature(inputs=inputs, outputs=outputs) if inputs else None


def _requirements():
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("ai-edge-litert", "numpy", "pandas", "pillow", "mlflow")]


def log_bundle_model(bundle_dir, artifact_path="tflite_model", run_id=None, registered_model_name=None,
                     num_threads=1):
    """Log `bundle_dir` as a pyfunc model (in run `run_id`, else the active run). Returns ModelInfo."""
    import mlflow

    from pipelines.export.bundle import Bundle

    bundle = Bundle.load(bundle_dir)  # validates model.json and every .tflite before anything is logged
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "bundle"
        shutil.copytree(bundle_dir, staged)
        ctx = mlflow.start_run(run_id=run_id) if run_id else contextlib.nullcontext()
        with ctx:
            return mlflow.pyfunc.log_model(
                name=artifact_path, python_model=TFLiteBundleModel(num_threads=num_threads),
                artifacts={"bundle": str(staged)}, signature=_signature(bundle),
                pip_requirements=_requirements(), registered_model_name=registered_model_name,
                await_registration_for=60)


def register_bundle(bundle_dir, keras_version, client=None, tracking_uri=None, log=print):
    """Register `bundle_dir` as a new version of `<NAME>.tflite`, logged in the Keras version's run and
    linked to `keras_version` (a ModelVersion of NAME) by tags both ways. Returns the TFLite ModelVersion."""
    from pipelines.export.bundle import read_spec

    client = client or tracking.client(tracking_uri)
    spec = read_spec(bundle_dir)
    mode = (spec.get("quantization") or {}).get("mode", "float32")
    name = tflite_name(keras_version.name)
    info = log_bundle_model(bundle_dir, artifact_path=f"tflite_{mode}", run_id=keras_version.run_id,
                            registered_model_name=name)
    version = str(info.registered_model_version)
    main = Path(bundle_dir) / "model.tflite"
    tags = {"keras_model": f"models:/{keras_version.name}/{keras_version.version}", "quantize": mode,
            "kind": spec["kind"], "stages": ",".join(spec["stages"]),
            "tflite_files": ",".join(sorted({s["file"] for s in spec["stages"].values()}))}
    if main.exists():
        tags.update(tflite_sha256=_sha256(main), tflite_bytes=str(main.stat().st_size))
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    client.set_model_version_tag(keras_version.name, keras_version.version, f"tflite_model.{mode}",
                                 f"models:/{name}/{version}")
    client.update_model_version(name, version, description=(
        f"TFLite bundle ({spec['kind']}, {mode}) of models:/{keras_version.name}/{keras_version.version}; "
        "pyfunc predict runs the .tflite with ai_edge_litert as the Android app does"))
    log(f"registered {name} version {version} (TFLite {mode} of {keras_version.name} v{keras_version.version})")
    return client.get_model_version(name, version)


def linked_version(client, keras_name, keras_version, mode=None):
    """The `<NAME>.tflite` version registered from Keras version `keras_version` (newest; of `mode` if given)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{tflite_name(keras_name)}'")
    except MlflowException as err:
        if not tracking.not_found(err):
            raise
        return None
    want = f"models:/{keras_name}/{keras_version}"
    found = [v for v in versions if v.tags.get("keras_model") == want and (mode is None or v.tags.get("quantize") == mode)]
    return max(found, key=lambda v: int(v.version)) if found else None


def sync_alias(client, keras_name, alias):
    """Point `alias` of `<NAME>.tflite` at the export of the Keras version that holds `alias` (or remove it
    when that version has no export). Returns the TFLite version number or None."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(tflite_name(keras_name))
    except MlflowException as err:
        if not tracking.not_found(err):
            raise
        return None
    try:
        keras_mv = client.get_model_version_by_alias(keras_name, alias)
    except MlflowException as err:
        if not tracking.not_found(err):
            raise
        keras_mv = None
    linked = linked_version(client, keras_name, keras_mv.version) if keras_mv is not None else None
    if linked is None:
        try:
            client.delete_registered_model_alias(tflite_name(keras_name), alias)
        except MlflowException as err:
            if not tracking.not_found(err):
                raise
        return None
    client.set_registered_model_alias(tflite_name(keras_name), alias, linked.version)
    return linked.version

