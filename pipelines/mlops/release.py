"""Release a model: export a registered version (or a run folder / .keras file) as an Android bundle and
attach the bundle to its version in the MLflow registry.

    python -m pipelines export --model models:/digits_net@champion --quantize dynamic --out bundle/
    python -m pipelines export --model runs/mobilenet_v2-20261123-1200 --quantize int8 --out bundle/

    from pipelines.mlops import release
    summary = release.export_model("models:/digits_net@champion", "int8", "bundle/")

The model is resolved (`load_source`), converted and checked by `pipelines.export` (modes, parity,
latency, the bundle's model.json), and a dynamic family gets the staged bundle of its plugin in
`pipelines.export.families` (policy thresholds chosen on the validation split). For a registered model
the bundle is logged to MLflow in the version's run under ``android/<mode>/`` and the version is tagged
``android_bundle.<mode>``.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)
from pipelines.export.bundle import bundle_files, write_bundle
from pipelines.export.checks import latency, main_output_name, parity
from pipelines.export.convert import check_mode, convert
from pipelines.export.families import DEFAULT_BUDGET, check_family_mode, export_family, family


# ---------------------------------------------------------------- resolve a model reference

@dataclasses.dataclass
class Source:
    net: object
    config: dict | None
    dataset: dict | None
    uri: str
    version: object = None  # MLflow ModelVersion for registered models
    client: object = None


def load_source(model, tracking_uri=None, data=None, image_size=32):
    """`models:/NAME@ALIAS`, `models:/NAME/VERSION`, a run folder (with model.keras) or a `.keras` file.

    The dataset info comes from the run (`dataset.json`, `config.json`); for a bare `.keras` file give `data`.
    """
    from pipelines.mlops import registry

    model = str(model)
    if model.startswith("models:/"):
        name, alias, version = registry.parse_model_uri(model)
        client = registry.tracking.client(tracking_uri)
        mv = registry.get_version(client, name, version=version, alias=alias)
        if mv is None:
            raise ValueError(f"model={model!r}: registered model {name!r} has no alias {alias!r}")
        config, dataset = registry.run_context(client, mv.run_id)
        net = registry.load_version_model(client, mv)
        return Source(net, config, dataset, f"models:/{name}/{mv.version}", mv, client)
    path = Path(model).expanduser()
    if path.is_dir():
        folder, file = path, path / "model.keras"
    else:
        folder, file = path.parent, path
    if not file.exists():
        raise ValueError(f"model={model!r} is not models:/NAME@ALIAS, a run folder with model.keras, or a .keras file")
    registry._keras()
    import tf_keras as keras

    net = keras.models.load_model(file, compile=False)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else None
    dataset = json.loads((folder / "dataset.json").read_text()) if (folder / "dataset.json").exists() else None
    if dataset is None:
        if data is None:
            raise ValueError(f"model={model!r} has no dataset.json beside it; pass --data NAME (and --image-size)")
        from pipelines import data as data_mod

        _, info = data_mod.load(data, "validation", image_size=image_size, batch_size=1, limit=1)
        dataset = info.to_dict()
        config = {"data": data, "image_size": image_size, "data_dir": None}
    return Source(net, config, dataset, str(file.resolve()))


def export_model(model, quantize="float32", out="bundle", parity_images=64, threads=1, latency_runs=50,
                 exit_thresholds=None, tracking_uri=None, log_to_mlflow=True, data=None, image_size=32,
                 calibration_images=200, qat_epochs=1, qat_limit=512, threshold=None, budget=DEFAULT_BUDGET,
                 selection_images=1000, log=print):
    """Convert, check and bundle `model` (see `load_source`); returns a summary dict.

    A dynamic-family model (see `family`) gets its staged bundle: `threshold` (basisnet; default: picked
    on up to `selection_images` validation images), `exit_thresholds` or `budget` (multi_exit: fraction of
    the last exit's MAdds, thresholds chosen on the same images). Parity and latency are checked on the
    first `parity_images` of them."""
    from pipelines import data as data_mod
    from pipelines.mlops import registry

    check_mode(quantize)
    for name, value, low in (("parity_images", parity_images, 1), ("threads", threads, 1),
                             ("latency_runs", latency_runs, 1), ("calibration_images", calibration_images, 1),
                             ("qat_epochs", qat_epochs, 1), ("selection_images", selection_images, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; received {name}={value!r}")
    if threshold is not None:
        from pipelines.export.families.basisnet import check_threshold

        check_threshold(threshold)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ValueError(f"budget must be a fraction in (0, 1]; received budget={budget!r}")
    src = load_source(model, tracking_uri, data, image_size)
    kwargs = registry.data_kwargs(src.config) if src.config else None
    main = main_output_name(src.config)
    kind = family(src.net)
    log(f"export {src.uri} -> {out} ({quantize}, {kind} bundle)")
    if kind != "plain":
        check_family_mode(src.net, kind, quantize)  # before reading any data
        images, labels, _ = data_mod.as_numpy(split="validation", limit=max(parity_images, selection_images),
                                              **kwargs)
        bundle, conv, par, lat, size = export_family(src, kind, quantize, out, images[:parity_images],
                                                     labels[:parity_images], threads=threads,
                                                     latency_runs=latency_runs, threshold=threshold,
                                                     exit_thresholds=exit_thresholds, budget=budget,
                                                     selection=(images[:selection_images],
                                                                labels[:selection_images]), log=log)
        return _finish(src, kind, quantize, bundle, conv, par, lat, size, log_to_mlflow, log)
    conv = convert(src.net, quantize, data=kwargs, calibration_images=calibration_images, qat_epochs=qat_epochs,
                   qat_limit=qat_limit, main_output=main, log=log)
    images, labels, _ = data_mod.as_numpy(split="validation", limit=parity_images, **kwargs)
    par = parity(src.net, conv.tflite, images, labels, main_output=main, threads=threads)
    log(f"parity on {par['images']} validation images: top-1 agreement {par['agreement']:.4f}, "
        f"max abs error {par['max_abs_error']:.3g}; accuracy keras {par['keras_accuracy']:.4f} "
        f"tflite {par['tflite_accuracy']:.4f}")
    lat = latency(conv.tflite, threads=threads, runs=latency_runs, example=images[:1])
    log(f"latency: median {lat['median_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({threads} thread(s), XNNPACK)")
    checks = {"parity": par, "latency": lat}
    bundle = write_bundle(out, src.net, conv, src.dataset, src.uri, checks, exit_thresholds)
    return _finish(src, kind, quantize, bundle, conv, par, lat, len(conv.tflite), log_to_mlflow, log)


def _finish(src, kind, quantize, bundle, conv, par, lat, size, log_to_mlflow, log):
    summary = {"model": src.uri, "quantize": quantize, "kind": kind, "bundle": str(bundle.resolve()),
               "size_bytes": size, "float_ops": conv.float_ops, "notes": conv.notes,
               "parity": par, "latency": lat, "artifact_uri": None}
    if src.version is not None and log_to_mlflow:
        summary["artifact_uri"] = log_bundle(src.client, src.version, bundle, quantize)
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


