"""The demo end to end (tiny settings) on a fresh SQLite store, twice: the second run adds, never destroys."""
import json

from pipelines import cli
from pipelines.mlops import registry
from pipelines import tracking

TINY = ["--model-config", "width_multiplier=0.25", "depth_multiplier=0.25"]


def test_demo_twice_adds_and_never_destroys(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["demo", "--search", "train", "--epochs", "1", "--limit", "128", "--quantize", "float32", "--tracking-uri", uri,
            "--out", str(tmp_path / "runs"), "--bundle", str(tmp_path / "bundle"), *TINY]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert "== 4/4 export" in first and "MLflow UI" in first and "TFLite       float32" in first
    for f in ("model.tflite", "labels.txt", "model.json"):
        assert (tmp_path / "bundle" / f).exists()
    c = tracking.client(uri)
    assert str(c.get_model_version_by_alias("demo_digits", registry.CHAMPION).version) == "1"
    v1_tags = dict(c.get_model_version("demo_digits", "1").tags)

    assert cli.main(args) == 0
    second = capsys.readouterr().out
    versions = sorted(int(v.version) for v in c.search_model_versions("name='demo_digits'"))
    assert versions == [1, 2]
    runs = c.search_runs([c.get_experiment_by_name("demo").experiment_id])
    assert len(runs) == 2
    champ = str(c.get_model_version_by_alias("demo_digits", registry.CHAMPION).version)
    v2_status = c.get_model_version("demo_digits", "2").tags["promotion.status"]
    assert (champ == "2") == (v2_status == "promoted")
    if champ == "1":  # refused: the old champion is exactly as it was
        assert dict(c.get_model_version("demo_digits", "1").tags) == v1_tags
        assert "not promoted" in second
    summary = json.loads(next((tmp_path / "runs").glob("demo*/demo_summary.json")).read_text())
    assert summary["tracking_uri"] == uri


def test_demo_bad_args_fail_before_work(tmp_path, capsys):
    assert cli.main(["demo", "--quantize", "int4", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "quantize='int4'" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
