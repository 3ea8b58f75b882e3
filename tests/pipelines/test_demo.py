"""The demo end to end (tiny settings) on a fresh SQLite store, twice: the second run adds, never destroys,
and its promotion outcome follows the scores; the demo's promotion is in the history and can be rolled back."""
import json

from pipelines import cli
from pipelines.mlops import promotions, registry
from pipelines.mlops.promotions import PromotionGates
from pipelines import tracking

TINY = ["--model-config", "width_multiplier=0.25", "depth_multiplier=0.25"]


def moves(client, name):
    return [(e["action"], e["from"], e["to"]) for e in promotions.history(client, name)]


def gate_scores(client, name, versions):
    """`val_accuracy` of each version on the validation data the metric gate uses (the candidate's dataset,
    whole validation split), computed here independently of the gate."""
    from pipelines import data, export

    scores = {}
    for v in versions:
        mv = client.get_model_version(name, v)
        config, _ = registry.run_context(client, mv.run_id)
        images, labels, _ = data.as_numpy(split="validation", **registry.data_kwargs(config))
        net = registry.load_version_model(client, mv)
        scores[v] = promotions.evaluate(net, images, labels, "val_accuracy", export.main_output_name(config))
    return scores


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
    # an empty store: the first promotion must promote, and is in the history like any other
    assert " promotion    PROMOTED: val_accuracy " in first and "(first champion)" in first, first
    assert str(c.get_model_version_by_alias("demo_digits", registry.CHAMPION).version) == "1"
    assert moves(c, "demo_digits") == [("promote", None, "1")]
    v1_tags = dict(c.get_model_version("demo_digits", "1").tags)

    assert cli.main(args) == 0
    second = capsys.readouterr().out
    versions = sorted(int(v.version) for v in c.search_model_versions("name='demo_digits'"))
    assert versions == [1, 2]
    runs = c.search_runs([c.get_experiment_by_name("demo").experiment_id])
    assert len(runs) == 2
    # the second run: promoted exactly when v2 beats v1 on the gate's metric (computed here)
    scores = gate_scores(c, "demo_digits", ["1", "2"])
    v2_tags = dict(c.get_model_version("demo_digits", "2").tags)
    assert v2_tags["promotion.metric"] == f"val_accuracy={scores['2']:.4f} vs champion v1 {scores['1']:.4f}"
    champ = str(c.get_model_version_by_alias("demo_digits", registry.CHAMPION).version)
    if PromotionGates().beats(scores["2"], scores["1"]):
        assert champ == "2" and v2_tags["promotion.status"] == "promoted", (scores, v2_tags)
        assert " promotion    PROMOTED: " in second
        assert moves(c, "demo_digits") == [("promote", None, "1"), ("promote", "1", "2")]
    else:  # refused by the metric gate: the old champion is exactly as it was
        assert champ == "1" and v2_tags["promotion.status"] == "refused", (scores, v2_tags)
        assert v2_tags["promotion.reason"].startswith(f"val_accuracy {scores['2']:.4f} does not beat champion v1")
        assert " promotion    not promoted: val_accuracy " in second
        assert dict(c.get_model_version("demo_digits", "1").tags) == v1_tags
        assert moves(c, "demo_digits") == [("promote", None, "1")]
    summary = json.loads(next((tmp_path / "runs").glob("demo*/demo_summary.json")).read_text())
    assert summary["tracking_uri"] == uri


def test_demo_bad_args_fail_before_work(tmp_path, capsys):
    assert cli.main(["demo", "--quantize", "int4", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "quantize='int4'" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_demo_promotion_is_in_history_and_can_be_rolled_back(tmp_path, capsys):
    """The demo's promotion step goes through the one `promote`: recorded in the history, so that
    `promote --rollback` can undo it. Versions of a tiny 8x8 digits net: untrained, then trained."""
    from pipelines.commands import demo
    from tests.integration.registry_helpers import register_tiny

    uri, name = f"sqlite:///{tmp_path / 'm.db'}", "demo_tiny"
    v1 = str(register_tiny(name, epochs=0, tracking_uri=uri).version)
    v2 = str(register_tiny(name, epochs=4, tracking_uri=uri).version)
    first = demo.promote_step(name, v1, uri, log=lambda *_: None)
    second = demo.promote_step(name, v2, uri, log=lambda *_: None)
    assert first.promoted and second.promoted, (first.reason, second.reason)
    c = tracking.client(uri)
    assert moves(c, name) == [("promote", None, v1), ("promote", v1, v2)]

    capsys.readouterr()
    assert cli.main(["promote", "--model", name, "--rollback", "--reason", "demo check", "--tracking-uri", uri]) == 0
    assert str(c.get_model_version_by_alias(name, registry.CHAMPION).version) == v1
    assert moves(c, name) == [("promote", None, v1), ("promote", v1, v2), ("rollback", v2, v1)]
