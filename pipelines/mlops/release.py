"""Release a model: export a registered version (or a run folder / .keras file) as an Android bundle and
attach the bundle to its version in the MLflow registry.

    python -m pipelines export --model models:/digits_net@champion --quantize dynamic --out bundle/
    python -m pipelines export --model runs/mobilenet_v2-20261123-1200 --quantize int8 --out bundle/

    from pipelines.mlops import release
    summary = release.export_model("models:/digits_net@champion", "int8", "bundle/")

The model is resolved here (`load_source`); `pipelines.export.export_net` converts it with its family
plugin, writes the bundle and checks it (policy thresholds chosen on the validation split of the data
the run records). For a registered model the bundle is logged to MLflow in the version's run under
``android/<mode>/`` and the version is tagged ``android_bundle.<mode>``.

model.json's ``source`` names the model without saying where it lay on this machine: ``models:/NAME/V``,
or the file's name and SHA-256 (``model.keras sha256:...``); the bundle ships to phones and stores.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)
from pipelines import tracking
from pipelines.export.api import ExportOptions, export_net
from pipelines.export.bundle import bundle_files
from pipelines.export.checks import main_output_name
from pipelines.training.saving import load_model


# ---------------------------------------------------------------- resolve a model reference

@dataclasses.dataclass
class Source:
    net: object
    config: dict | None
    dataset: dict | None
    uri: str
    version: object = None  # MLflow ModelVersion for registered models
    client: object = None
    public: str = ""  # what model.json records as its source (no local path)


def load_source(model, tracking_uri=None, data=None, image_size=32):
    """`models:/NAME@ALIAS`, `models:/NAME/VERSION`, a run folder (with model.keras) or a `.keras` file.

    The dataset info comes from the run (`dataset.json`, `config.json`); for a bare `.keras` file give `data`.
    """
    from pipelines.mlops import registry

    model = str(model)
    if model.startswith("models:/"):
        name, alias, version = registry.parse_model_uri(model)
        client = tracking.client(tracking_uri)
        mv = registry.get_version(client, name, version=version, alias=alias)
        if mv is None:
            raise ValueError(f"model={model!r}: registered model {name!r} has no alias {alias!r}")
        config, dataset = registry.run_context(client, mv.run_id)
        net = registry.load_version_model(client, mv)
        uri = f"models:/{name}/{mv.version}"
        return Source(net, config, dataset, uri, mv, client, public=uri)
    path = Path(model).expanduser()
    if path.is_dir():
        folder, file = path, path / "model.keras"
    else:
        folder, file = path.parent, path
    if not file.exists():
        raise ValueError(f"model={model!r} is not models:/NAME@ALIAS, a run folder with model.keras, or a .keras file")
    net = load_model(file)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else None
    dataset = json.loads((folder / "dataset.json").read_text()) if (folder / "dataset.json").exists() else None
    if dataset is None:
        if data is None:
            raise ValueError(f"model={model!r} has no dataset.json beside it; pass --data NAME (and --image-size)")
        from pipelines import data as data_mod

        _, info = data_mod.load(data, "validation", image_size=image_size, batch_size=1, limit=1)
        dataset = info.to_dict()
        config = {"data": data, "image_size": image_size, "data_dir": None}
    return Source(net, config, dataset, str(file.resolve()), public=f"{file.name} sha256:{sha256(file)}")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_model(model, quantize=None, out="bundle", options=None, *, tracking_uri=None, log_to_mlflow=True,
                 data=None, image_size=32, log=print, **fields):
    """Export `model` (see `load_source`) with `pipelines.export.export_net`; returns a summary dict.

    `options`: an `ExportOptions`; `quantize` and `fields` (its field names: parity_images, threads,
    threshold, exit_thresholds, budget, selection_images, ...) override it. Validated before the model is
    loaded. `data`, `image_size`: the dataset of a bare .keras file."""
    from pipelines.mlops import registry

    options = ExportOptions.build(options, **({"quantize": quantize} if quantize is not None else {}), **fields)
    options.validate()
    src = load_source(model, tracking_uri, data, image_size)
    options = dataclasses.replace(options, data_source=registry.data_kwargs(src.config) if src.config else None,
                                  main_output=main_output_name(src.config))
    result = export_net(src.net, out, options, src.dataset, source=src.public, log=log)
    bundle, size = result["bundle"], result["size_bytes"]
    summary = {"model": src.uri, "quantize": options.quantize, "kind": result["kind"], "bundle": str(bundle.resolve()),
               "size_bytes": size, "float_ops": result["float_ops"], "notes": result["notes"],
               "parity": result["parity"], "latency": result["latency"], "artifact_uri": None}
    if src.version is not None and log_to_mlflow:
        summary["artifact_uri"] = log_bundle(src.client, src.version, bundle, options.quantize)
        log(f"bundle logged to MLflow: {summary['artifact_uri']}")
    log(f"bundle: {bundle}/ ({', '.join(bundle_files(bundle))}), .tflite {size / 1024:.1f} KiB")
    return summary


def log_bundle(client, mv, bundle, mode):
    """Log the bundle into the registered version's run (`android/<mode>/`) and tag the version."""
    path = f"android/{mode}"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / mode
        staged.mkdir()
        for f in bundle_files(bundle):
            shutil.copy2(Path(bundle) / f, staged / f)
        client.log_artifacts(mv.run_id, str(staged), path)
    uri = f"runs:/{mv.run_id}/{path}"
    client.set_model_version_tag(mv.name, mv.version, f"android_bundle.{mode}", uri)
    return uri


