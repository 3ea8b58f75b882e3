"""The TFLite flavour against a real MLflow server (SQLite and PostgreSQL backends): a registered
Keras version exported to a bundle, registered as `<NAME>.tflite`, and loaded with
`mlflow.pyfunc.load_model("models:/NAME.tflite@champion")` predicts exactly as `run-bundle` does."""
import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipelines import cli, export
from pipelines.mlops import release, tflite_flavor
from pipelines import tracking
from pipelines.export.bundle import Bundle
from tests import bundle_fixtures as bf
from tests.integration.mlflow_backends import mlflow_backend, postgres_server  # noqa: F401
from tests.integration.registry_helpers import digits, register_tiny


def test_pyfunc_on_registered_tflite_matches_run_bundle(mlflow_backend, tmp_path, capsys):
    from PIL import Image

    uri = mlflow_backend.uri
    client = tracking.client(uri)
    name = f"flavor_{mlflow_backend.backend}"
    mv = register_tiny(name, epochs=2, tracking_uri=uri)
    bundle_dir = tmp_path / "bundle"
    assert cli.main(["export", "--model", f"models:/{name}/{mv.version}", "--quantize", "float32",
                     "--out", str(bundle_dir), "--parity-images", "16", "--latency-runs", "3",
                     "--register-tflite", "--tracking-uri", uri]) == 0
    tmv = tflite_flavor.linked_version(client, name, mv.version, mode="float32")

    # linked both ways
    assert tmv.name == f"{name}.tflite"
    assert tmv.tags["keras_model"] == f"models:/{name}/{mv.version}"
    assert client.get_model_version(name, mv.version).tags["tflite_model.float32"] == f"models:/{name}.tflite/{tmv.version}"
    # the alias follows the Keras champion
    client.set_registered_model_alias(name, "champion", mv.version)
    assert tflite_flavor.sync_alias(client, name, "champion") == tmv.version

    model = mlflow.pyfunc.load_model(f"models:/{name}.tflite@champion")
    # exactly the bytes that ship
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}.tflite@champion", dst_path=str(tmp_path / "dl")))
    shipped = (bundle_dir / "model.tflite").read_bytes()
    assert next(local.rglob("model.tflite")).read_bytes() == shipped
    assert tmv.tags["tflite_sha256"] == hashlib.sha256(shipped).hexdigest()

    x, y, _ = digits("validation", limit=12)
    df = model.predict(x)
    ref = Bundle.load(bundle_dir).predict(x)
    assert list(df["index"]) == [p.index for p in ref] and list(df["label"]) == [p.label for p in ref]
    np.testing.assert_array_equal(np.stack(df["logits"].to_list()), np.stack([p.logits for p in ref]))
    assert (df["stopped_at"] == "main").all()

    # run-bundle on image files == pyfunc on the same files preprocessed
    pixels = np.random.RandomState(1).randint(0, 256, (4, 8, 8)).astype(np.uint8)
    paths = []
    for i, px in enumerate(pixels):
        paths.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(px, mode="L").save(paths[-1])
    capsys.readouterr()
    assert cli.main(["run-bundle", str(bundle_dir), *paths, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    bundle = Bundle.load(bundle_dir)
    df_files = model.predict(np.stack([bundle.preprocess(p) for p in paths]))
    assert [r["label"] for r in rows] == list(df_files["label"])
    assert [r["confidence"] for r in rows] == pytest.approx(list(df_files["confidence"]), abs=1e-6)


def test_pyfunc_follows_model_json_for_a_dynamic_bundle(mlflow_backend, tmp_path):
    """A BasisNet bundle logged as a pyfunc: early exits happen inside predict, as on the phone."""
    tracking.configure(mlflow_backend.uri)
    x = bf.images(10, seed=4)
    ref = bf.basisnet(tmp_path, threshold=0.6)(x)
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("tests", mlflow_backend.uri)) as run:
        tflite_flavor.log_bundle_model(tmp_path, artifact_path="tflite_model")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/tflite_model")
    df = model.predict(x)
    want = [p.stages for p in Bundle.load(tmp_path).predict(x)]
    assert list(df["stages"]) == [">".join(s) for s in want]
    sure = np.array([(np.exp(r - r.max()) / np.exp(r - r.max()).sum()).max() >= 0.6 for r in ref["preview"]])
    assert list(df["stopped_at"]) == ["preview" if s else "specialist" for s in sure]


def test_export_report_is_logged_to_the_versions_run(mlflow_backend, tmp_path, capsys):
    uri = mlflow_backend.uri
    client = tracking.client(uri)
    name = f"report_{mlflow_backend.backend}"
    mv = register_tiny(name, epochs=1, tracking_uri=uri)
    release.export_model(f"models:/{name}/{mv.version}", "dynamic", out=tmp_path / "b", parity_images=8,
                        latency_runs=2, tracking_uri=uri, log=lambda *_: None)
    capsys.readouterr()
    assert cli.main(["export-report", str(tmp_path / "b"), "--model", f"models:/{name}/{mv.version}",
                     "--images", "8", "--runs", "2", "--tracking-uri", uri, "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "XNNPACK takes" in out and "parity on 8 images" in out and "1 thread(s) median" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["quantization"] == "dynamic" and report["parity"]["n"] == 8
    logged = {f.path for f in client.list_artifacts(mv.run_id, "export_report")}
    assert {"export_report/report.json", "export_report/summary.txt",
            "export_report/model_tflite_xnnpack_share.png"} <= logged
    assert client.get_run(mv.run_id).data.metrics["export.float_layers"] == 0
