"""The measured experiments (issue 15): the deployed policy per difficulty bucket, the CondConv experiment
command end to end at smoke sizes (training, bundles, LiteRT latency, MLflow), the static ladder's reuse."""
import json

import numpy as np
import pytest

from pipelines import cli
from pipelines.experiments import deployed

TINY = ["width_multiplier=0.25", "depth_multiplier=0.25", "last_channels=64"]


def test_summarize_per_bucket_counts_stages_latency_and_accuracy():
    per_image = {"prediction": np.array([0, 1, 1, 0, 2, 2]),
                 "stage": np.array(["preview", "preview", "specialist", "preview", "specialist", "specialist"]),
                 "madds": np.array([10.0, 10, 110, 10, 110, 110]),
                 "latency_ms": np.array([1.0, 1, 5, 1, 5, 7])}
    labels = np.array([0, 1, 2, 0, 2, 1])
    buckets = np.array(["easy", "easy", "hard", "easy", "hard", "hard"])
    s = deployed.summarize(per_image, labels, buckets, stage_order=["preview", "specialist"])
    two = {k: v[2:4] for k, v in per_image.items()}  # a hard image first: the buckets still come in difficulty order
    assert list(deployed.summarize(two, labels[2:4], buckets[2:4])) == ["all", "easy", "hard"]
    assert s["all"]["accuracy"] == pytest.approx(4 / 6) and s["all"]["avg_latency_ms"] == pytest.approx(20 / 6)
    assert s["all"]["stage_share"] == {"preview": 0.5, "specialist": 0.5}
    assert s["easy"] == {"images": 3, "accuracy": 1.0, "avg_latency_ms": 1.0, "avg_madds": 10.0,
                         "stage_share": {"preview": 1.0, "specialist": 0.0}}
    assert s["hard"]["accuracy"] == pytest.approx(1 / 3) and s["hard"]["avg_latency_ms"] == pytest.approx(17 / 3)
    assert s["hard"]["stage_share"] == {"preview": 0.0, "specialist": 1.0}
    assert s["hard"]["avg_madds"] == pytest.approx(110.0)
    rows = [{"name": "b x1", "measured": {**s["all"], "buckets": {k: v for k, v in s.items() if k != "all"}}}]
    text = deployed.format_rows(rows)
    assert "b x1" in text and "hard" in text and "specialist 100%" in text
    assert deployed.flat_metrics(rows)["b_x1.hard.accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="repeats=0"):
        deployed.check_repeats(0)


@pytest.mark.slow
def test_condconv_eval_command_measures_each_model_per_bucket_and_logs_to_mlflow(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    argv = ["condconv-eval", "--epochs", "1", "--limit", "48", "--image-size", "16", "--experts", "2",
            "--test-images", "24", "--repeats", "1", "--model-config", *TINY, "--out", str(tmp_path),
            "--tracking-uri", uri]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "condconv-eval.json").read_text())
    assert [r["experts"] for r in report["rows"]] == [0, 2]
    for r in report["rows"]:
        m = r["measured"]
        assert m["kind"] == "plain" and m["test_images"] == 24 and m["avg_latency_ms"] > 0, m
        assert set(m["buckets"]) <= {"easy", "medium", "hard"} and len(m["buckets"]) >= 2, m["buckets"]
        assert sum(b["images"] for b in m["buckets"].values()) == 24
        assert m["avg_madds"] == pytest.approx(r["madds"])  # a plain bundle's MAdds: the whole net per image
        assert r["name"] in out
    static, cond = report["rows"]
    assert static["madds"] < cond["madds"]  # routing and mixing the experts are the extra MAdds
    assert "vs static" in out and "hard" in out

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("experiments").experiment_id])[0]
    assert run.data.params["experts"] == "[2]"
    assert any(k.endswith(".hard.accuracy") or k.endswith(".easy.accuracy") for k in run.data.metrics)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "condconv_accuracy_latency.png"} <= names, names


def test_a_finished_run_of_the_same_config_is_reused_and_another_is_not(tmp_path):
    from pipelines.experiments import ladder

    cfg = ladder.member_config("mobilenet_v2", 0.5, seed=1, epochs=2, out=str(tmp_path))
    assert cfg.run_name == "ladder-mobilenet_v2-w0.5-s1" and deployed.finished_run(cfg) is None
    folder = tmp_path / cfg.run_name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    (folder / "metrics.json").write_text("{}")
    assert deployed.finished_run(cfg) is None  # no model.keras: an unfinished run
    (folder / "model.keras").write_bytes(b"")
    assert deployed.finished_run(cfg) is None  # no dataset.json: the data it was made from is unknown
    from pipelines import data

    (folder / "dataset.json").write_text(json.dumps({"generator_version": data.generator_version(cfg.data) - 1}))
    assert deployed.finished_run(cfg) is None  # made from an older generator's images (before a data fix)
    (folder / "dataset.json").write_text(json.dumps({"generator_version": data.generator_version(cfg.data)}))
    assert deployed.finished_run(cfg) == folder
    other = ladder.member_config("mobilenet_v2", 0.5, seed=1, epochs=3, out=str(tmp_path))
    assert deployed.finished_run(other) is None  # same folder name, another config


def test_experiment_commands_refuse_bad_measure_values(capsys):
    assert cli.main(["condconv-eval", "--experts", "0"]) == 2
    assert "experts" in capsys.readouterr().err
    assert cli.main(["static-ladder", "--repeats", "0"]) == 2
    assert "repeats=0" in capsys.readouterr().err
    assert cli.main(["static-ladder", "--models", "nosuch"]) == 2
    assert "model='nosuch'" in capsys.readouterr().err
