"""The measured experiments (issue 15): the deployed policy per difficulty bucket, the CondConv experiment
command end to end at smoke sizes (training, bundles, LiteRT latency, MLflow), the static ladder's reuse."""
import json

import numpy as np
import pytest

from pipelines import cli
from pipelines.experiments import deployed

TINY = ["width_multiplier=0.25", "depth_multiplier=0.25", "last_channels=64"]
TINY_KW = {"width_multiplier": 0.25, "depth_multiplier": 0.25, "last_channels": 64}


def test_summarize_per_bucket_counts_stages_latency_and_accuracy():
    per_image = {"prediction": np.array([0, 1, 1, 0, 2, 2]),
                 "stage": np.array(["preview", "preview", "specialist", "preview", "specialist", "specialist"]),
                 "madds": np.array([10.0, 10, 110, 10, 110, 110]),
                 "latency_ms": np.array([1.0, 1, 5, 1, 5, 7])}
    assert "avg_tflite_ms" not in deployed.summarize(per_image, np.zeros(6))["all"]  # a result measured before it
    per_image["tflite_ms"] = np.array([0.5, 0.5, 4, 0.5, 4, 6])
    labels = np.array([0, 1, 2, 0, 2, 1])
    buckets = np.array(["easy", "easy", "hard", "easy", "hard", "hard"])
    s = deployed.summarize(per_image, labels, buckets, stage_order=["preview", "specialist"])
    two = {k: v[2:4] for k, v in per_image.items()}  # a hard image first: the buckets still come in difficulty order
    assert list(deployed.summarize(two, labels[2:4], buckets[2:4])) == ["all", "easy", "hard"]
    assert s["all"]["accuracy"] == pytest.approx(4 / 6) and s["all"]["avg_latency_ms"] == pytest.approx(20 / 6)
    assert s["all"]["stage_share"] == {"preview": 0.5, "specialist": 0.5}
    assert s["easy"] == {"images": 3, "accuracy": 1.0, "avg_latency_ms": 1.0, "avg_madds": 10.0,
                         "stage_share": {"preview": 1.0, "specialist": 0.0}, "avg_tflite_ms": 0.5}
    assert s["hard"]["avg_tflite_ms"] == pytest.approx(14 / 3)
    assert s["hard"]["accuracy"] == pytest.approx(1 / 3) and s["hard"]["avg_latency_ms"] == pytest.approx(17 / 3)
    assert s["hard"]["stage_share"] == {"preview": 0.0, "specialist": 1.0}
    assert s["hard"]["avg_madds"] == pytest.approx(110.0)
    rows = [{"name": "b x1", "measured": {**s["all"], "buckets": {k: v for k, v in s.items() if k != "all"}}}]
    text = deployed.format_rows(rows)
    assert "b x1" in text and "hard" in text and "specialist 100%" in text
    assert "preview 0%" not in text and "preview 100%" in text  # the easy bucket: a stage at 0% is not printed
    assert deployed.share_text({"front": 0.0, "back_0_35": 0.944, "back_1": 0.056}) == "back_0_35 94% back_1 6%"
    assert deployed.flat_metrics(rows)["b_x1.hard.accuracy"] == pytest.approx(1 / 3)
    assert deployed.flat_metrics(rows)["b_x1.avg_tflite_ms"] == pytest.approx(15.5 / 6)
    assert "in LiteRT" in text and f"{15.5 / 6:.3f}" in text.splitlines()[1]
    old = [{"name": "b x0", "measured": {k: v for k, v in s["all"].items() if k != "avg_tflite_ms"}}]
    assert "nan" in deployed.format_rows(old).splitlines()[1]  # a report measured before the field: printed as nan
    long = [{"name": "multi_exit plain s0 (budget 0.55, 3 stages)", "measured": s["all"]}, *rows]
    head, first, second = deployed.format_rows(long).splitlines()[:3]
    assert first.index(" default") == second.index(" default") == head.index(" recipe")  # the columns line up
    with pytest.raises(ValueError, match="repeats=0"):
        deployed.check_repeats(0)


@pytest.mark.slow
def test_machine_names_the_cpu_and_the_vector_extensions_latency_depends_on(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse4_2 avx2 fma avx512f\n\n"
                    "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n\n")
    got = deployed.machine(info)
    assert got["cpu"] == "Some CPU 9000" and got["vector"] == "avx512f avx2 fma sse4_2" and got["cores"] >= 1
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n\n")
    assert deployed.machine(arm)["vector"] == "asimd sve"
    missing = deployed.machine(tmp_path / "absent")  # no /proc/cpuinfo (macOS): what platform knows
    assert missing["vector"] == "unknown" and isinstance(missing["cpu"], str)


def test_condconv_eval_command_measures_each_model_per_bucket_and_logs_to_mlflow(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    argv = ["condconv-eval", "--epochs", "1", "--limit", "48", "--image-size", "16", "--experts", "2",
            "--test-images", "24", "--repeats", "1", "--model-config", *TINY, "--out", str(tmp_path),
            "--tracking-uri", uri, "--learning-rate", "0.002"]
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
        assert m["machine"] == deployed.machine()  # the host the latency belongs to
        assert r["name"] in out
    static, cond = report["rows"]
    assert static["madds"] < cond["madds"]  # routing and mixing the experts are the extra MAdds
    assert "vs static" in out and "hard" in out

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("experiments").experiment_id])[0]
    assert run.data.params["experts"] == "[2]" and run.data.params["learning_rate"] == "0.002"
    assert run.data.params["machine.cpu"] == deployed.machine()["cpu"] and "machine.vector" in run.data.params
    assert report["learning_rate"] == 0.002 and all("-lr0.002-" in r["run"] for r in report["rows"])
    assert any(k.endswith(".hard.accuracy") or k.endswith(".easy.accuracy") for k in run.data.metrics)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "condconv_accuracy_latency.png"} <= names, names


def test_condconv_eval_learning_rate_goes_to_every_model_and_its_run_names(cli):
    from pipelines.experiments import condconv

    plain = condconv.configs(experts=(1, 8), seed=0)
    slow = condconv.configs(experts=(1, 8), seed=0, learning_rate=1e-3)
    assert {c.learning_rate for c in plain.values()} == {3e-3} and not any("lr" in c.run_name for c in plain.values())
    assert {c.learning_rate for c in slow.values()} == {1e-3}  # the static peer too
    assert [c.run_name for c in slow.values()] == ["condconv-static-lr0.001-s0", "condconv-e1-lr0.001-s0",
                                                   "condconv-e8-lr0.001-s0"]
    line = cli("condconv-eval", "--learning-rate", "0", "--data", "nosuch").error_line()
    assert "learning_rate=0.0" in line and "nosuch" not in line, line
    with pytest.raises(ValueError, match="learning_rate='fast'"):  # checked before it names a run
        condconv.configs(experts=(1,), learning_rate="fast")


def test_condconv_eval_on_the_mobilenet_v3_backbone_pairs_it_with_its_own_static_peer(cli):
    from pipelines.experiments import condconv

    cfgs = condconv.configs(experts=(1, 2), seed=3, backbone="mobilenet_v3",
                            model_config={"width_multiplier": 0.75, "cond_blocks": 2, "head_channels": 512})
    assert [(c.model, c.run_name) for c in cfgs.values()] == [
        ("mobilenet_v3", "condconv-v3-static-s3"), ("condconv_mobilenet_v3", "condconv-v3-e1-s3"),
        ("condconv_mobilenet_v3", "condconv-v3-e2-s3")]
    assert cfgs["static"].model_config == {"width_multiplier": 0.75, "head_channels": 512}  # not cond_blocks
    assert cfgs[2].model_config == {"width_multiplier": 0.75, "cond_blocks": 2, "head_channels": 512, "num_experts": 2}
    assert condconv.configs(experts=(1,))["static"].run_name == "condconv-static-s0"  # mobilenet_v2: names kept
    with pytest.raises(ValueError, match="backbone='mobilenet_v1'"):
        condconv.configs(experts=(1,), backbone="mobilenet_v1")
    r = cli("condconv-eval", "--backbone", "resnet")  # argparse's choice error (usage, then one error line)
    assert r.returncode == 2 and "argument --backbone: invalid choice: 'resnet'" in r.stderr.splitlines()[-1]


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
    from keras_layers import models
    from pipelines.training import code_version

    models.build("mobilenet_v2", input_shape=(16, 16, 1), num_classes=10, **TINY_KW).save(folder / "model.keras")
    lines = []
    metrics, reused, net = deployed.train_or_reuse(cfg, log=lines.append)
    assert reused == folder and metrics == {} and net.input_shape == (None, 16, 16, 1)
    assert lines[0] == f"reusing {folder}" and "before runs recorded their code" in lines[1]  # no code.json
    code_version.write(folder)
    lines.clear()
    deployed.train_or_reuse(cfg, log=lines.append)
    assert lines == [f"reusing {folder}"]  # trained by this code: nothing to say


def test_ladder_members_with_a_model_config_get_their_own_runs_and_mobilenet_v3_can_drop_its_hidden_layer(cli):
    from keras_layers import count_madds, models
    from pipelines.experiments import ladder

    cfg = ladder.member_config("mobilenet_v3", 0.5, seed=2, model_config={"head_channels": 0, "dropout": 0.0})
    assert cfg.run_name == "ladder-mobilenet_v3-dropout0.0-head_channels0-w0.5-s2"  # not the default's folder
    assert cfg.model_config == {"head_channels": 0, "dropout": 0.0, "width_multiplier": 0.5}
    plain, full = (models.build("mobilenet_v3", (32, 32, 3), 10, width_multiplier=0.5, **kw)
                   for kw in ({"head_channels": 0, "dropout": 0.0}, {}))
    names = {layer.name for layer in plain.layers}
    assert "head_hidden" not in names and "head_dropout" not in names and "head_hidden" in {l.name for l in full.layers}
    last = plain.get_layer("head_pool").output_shape[-1]  # the classifier reads the pooled last conv
    assert plain.get_layer("head_logits").get_weights()[0].shape == (last, 10)
    hidden = full.get_layer("head_hidden").get_weights()[0].shape
    assert count_madds(full, (32, 32, 3)) - count_madds(plain, (32, 32, 3)) == hidden[0] * hidden[1] + hidden[1] * 10 - last * 10
    with pytest.raises(ValueError, match="head_channels"):  # BasisNet synthesizes its hidden layer: it needs one
        models.build("basisnet_mobilenet_v3", (32, 32, 3), 10, head_channels=0)
    with pytest.raises(ValueError, match="width_multiplier=0.5"):
        ladder.run_ladder(models=("mobilenet_v3",), model_config={"width_multiplier": 0.5})
    line = cli("static-ladder", "--models", "mobilenet_v3", "--model-config", "nosuch=1", "--data", "nosuch").error_line()
    assert "nosuch=1" in line and "model_config" in line


def test_static_ladder_command_with_a_model_config_trains_measures_and_logs_its_own_rows(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    argv = ["static-ladder", "--models", "mobilenet_v3", "--widths", "0.35", "--epochs", "1", "--limit", "48",
            "--image-size", "16", "--test-images", "12", "--repeats", "1", "--model-config", "head_channels=0",
            "dropout=0", "last_channels=32", "--out", str(tmp_path), "--tracking-uri", uri]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "static-ladder.json").read_text())
    assert report["model_config"] == {"head_channels": 0, "dropout": 0, "last_channels": 32}
    (row,) = report["rows"]
    assert row["name"] == "mobilenet_v3 (dropout=0, head_channels=0, last_channels=32) x0.35 s0" and row["name"] in out
    assert row["run"] == str(tmp_path / "ladder-mobilenet_v3-dropout0-head_channels0-last_channels32-w0.35-s0")
    assert row["measured"]["test_images"] == 12 and row["measured"]["avg_latency_ms"] > 0
    assert "recipe default, dropout=0, head_channels=0, last_channels=32 (test split" in out  # the table's title
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("experiments").experiment_id])
    assert run.data.params["model_config.head_channels"] == "0" and run.data.params["model_config.dropout"] == "0"


def test_experiment_commands_refuse_bad_measure_values(capsys):
    assert cli.main(["condconv-eval", "--experts", "0"]) == 2
    assert "experts" in capsys.readouterr().err
    assert cli.main(["static-ladder", "--repeats", "0"]) == 2
    assert "repeats=0" in capsys.readouterr().err
    assert cli.main(["static-ladder", "--models", "nosuch"]) == 2
    assert "model='nosuch'" in capsys.readouterr().err


SLIM_TINY = ["--epochs", "1", "--limit", "64", "--widths", "0.5", "1.0", "--depth-multiplier", "0.1", "--image-size",
             "16", "--measure", "--test-images", "20", "--repeats", "1"]


def _slimmable_run(uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("experiments").experiment_id])
    return run, {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_slimmable_eval_widths_measures_every_width_alone_and_slimmable_and_logs_to_mlflow(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert cli.main(["slimmable-eval", "widths", *SLIM_TINY, "--out", str(tmp_path), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "widths.json").read_text())
    assert list(result["rows"]) == ["0.5", "1.0"]
    for w, r in result["rows"].items():
        for kind, madds in (("alone", r["madds"]), ("slimmable", r["slimmable_madds"])):
            m = r[f"{kind}_measured"]
            assert m["kind"] == "plain" and m["test_images"] == 20 and m["avg_latency_ms"] > 0, m
            assert 0.0 <= m["accuracy"] <= 1.0
            assert m["avg_madds"] == pytest.approx(madds)  # one plain network at that width per image
            folder = tmp_path / "bundles" / "widths" / f"{kind}_{float(w):g}x"
            assert m["bundle"] == str(folder) and (folder / "model.tflite").exists()
            assert json.loads((folder / "model.json").read_text())["kind"] == "plain"
    table = (tmp_path / "widths.md").read_text()
    assert "alone bundle: avg ms" in table and "slimmable_mobilenet_v1 0.5x" in table and table.strip() in out

    run, artifacts = _slimmable_run(uri)
    assert run.info.run_name == "slimmable-eval-widths"
    p = run.data.params
    assert (p["experiment"], p["widths"], p["epochs"], p["limit"], p["rule"], p["repeats"]) == (
        "widths", "[0.5, 1.0]", "1", "64", "sandwich", "1")
    metrics = run.data.metrics
    assert metrics["w0.5.alone.val_accuracy"] == pytest.approx(result["rows"]["0.5"]["alone"])
    assert metrics["w1.slimmable_recalibrated.val_accuracy"] == pytest.approx(
        result["rows"]["1.0"]["slimmable_recalibrated"])
    assert metrics["slimmable_mobilenet_v1_1x.avg_latency_ms"] == pytest.approx(
        result["rows"]["1.0"]["slimmable_measured"]["avg_latency_ms"])
    assert metrics["mobilenet_v1_0.5x_alone.accuracy"] == pytest.approx(
        result["rows"]["0.5"]["alone_measured"]["accuracy"])
    assert {"result.json", "slimmable_widths_madds.png", "slimmable_widths_accuracy_latency.png"} <= artifacts


@pytest.mark.slow
@pytest.mark.extended  # the widths command with two more switches: make test runs the command end to end above
def test_slimmable_eval_widths_skip_alone_trains_and_measures_only_the_slimmable_network(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert cli.main(["slimmable-eval", "widths", *SLIM_TINY, "--skip-alone", "--preset", "paper", "--out",
                     str(tmp_path), "--tracking-uri", uri]) == 0
    assert not (tmp_path / "widths.json").exists()  # the paper preset's report is named for it
    result = json.loads((tmp_path / "widths-paper.json").read_text())
    assert result["skip_alone"] is True and result["rule"] == "all" and result["seed"] == 0, result
    for w, r in result["rows"].items():
        assert r["alone"] is None and "alone_measured" not in r and "alone_seconds" not in r, r
        assert r["madds"] == r["slimmable_madds"] > 0
        assert r["slimmable_measured"]["avg_madds"] == pytest.approx(r["madds"])
    assert sorted(p.name for p in (tmp_path / "bundles" / "widths").iterdir()) == ["slimmable_0.5x", "slimmable_1x"]
    lines = [line for line in (tmp_path / "widths-paper.md").read_text().splitlines() if line.startswith("| 0.5x")]
    assert len(lines) == 1 and lines[0].split(" | ")[2] == "-" and "| - | - |" in lines[0], lines
    run, artifacts = _slimmable_run(uri)
    assert not any(".alone." in k for k in run.data.metrics) and "w0.5.slimmable.val_accuracy" in run.data.metrics
    assert {"result.json", "slimmable_widths_madds.png", "slimmable_widths_accuracy_latency.png"} <= artifacts


def test_slimmable_eval_refuses_the_other_experiments_options(cli, tmp_path):
    line = cli("slimmable-eval", "widths", "--supernet", str(tmp_path / "s.weights.h5"), "--data", "nosuch").error_line()
    assert "supernet=" in line and "dsnet" in line and "nosuch" not in line, line
    assert not (tmp_path / "s.weights.h5").exists()
    line = cli("slimmable-eval", "dsnet", "--skip-alone", "--data", "nosuch").error_line()
    assert "skip_alone=True" in line and "nosuch" not in line, line
    line = cli("slimmable-eval", "widths", "--gate-epochs", "0", "--data", "nosuch").error_line()
    assert "nosuch" in line  # a Stage II option the widths experiment does not use is not checked there


@pytest.mark.slow
@pytest.mark.extended
def test_slimmable_eval_dsnet_measures_the_gate_bundle_against_the_static_widths_and_logs_to_mlflow(tmp_path,
                                                                                                   capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    supernet = tmp_path / "weights" / "supernet.weights.h5"  # in a folder that does not exist yet
    assert cli.main(["slimmable-eval", "dsnet", *SLIM_TINY, "--gate-epochs", "1", "--gates", "1.0,0.5,1.0",
                     "--out", str(tmp_path), "--tracking-uri", uri, "--supernet", str(supernet)]) == 0
    out = capsys.readouterr().out
    assert supernet.is_file()  # Stage I saved for the next run
    result = json.loads((tmp_path / "dsnet.json").read_text())
    assert list(result["static"]) == ["0.5", "1.0"] and len(result["gates"]) == 1
    for w, s in result["static"].items():  # each static width: one plain narrow model
        m = s["measured"]
        assert m["kind"] == "plain" and m["test_images"] == 20 and m["avg_latency_ms"] > 0, m
        assert m["bundle"] == str(tmp_path / "bundles" / "dsnet" / f"static_{float(w):g}x")
        assert m["avg_madds"] <= s["madds"]  # the static model leaves the gate's slimming head out
    (gate,) = result["gates"]
    m = gate["measured"]
    assert m["kind"] == "ds_net" and m["test_images"] == 20 and m["avg_latency_ms"] > 0, m
    assert m["bundle"] == str(tmp_path / "bundles" / "dsnet" / "gate_1.0_0.5_1.0")
    spec = json.loads((tmp_path / "bundles" / "dsnet" / "gate_1.0_0.5_1.0" / "model.json").read_text())
    assert spec["widths"] == [[0.5, "back_0_5"], [1.0, "back_1"]]
    shares = m["stage_share"]  # per gate choice: every test image runs the front, then one back
    assert sum(shares[b] for b in ("back_0_5", "back_1")) == pytest.approx(1.0) and shares["front"] == 0.0
    paths = [result["static"][w]["madds"] for w in ("0.5", "1.0")]
    assert paths[0] - 1 <= m["avg_madds"] <= paths[1] + 1  # a mix of the two paths' MAdds
    # the same gate with its widest score offset on validation: its own bundle, the offset in the front's bias
    off = gate["offset"]
    assert off["measured"]["bundle"] == str(tmp_path / "bundles" / "dsnet" / "gate_1.0_0.5_1.0_offset")
    assert off["measured"]["kind"] == "ds_net" and sum(off["choice_fractions"]) == pytest.approx(1.0, abs=2e-3)
    assert set(off["try_best"]) == {"slimmest_target", "needs_widest", "oracle_accuracy"}
    assert off["accuracy"] >= off["target"] or not off["reached"]
    table = (tmp_path / "dsnet.md").read_text()
    assert "bundle: avg ms" in table and "supernet 0.5x static" in table and table.strip() in out
    assert "gate T=1 cplx=0.5 sgs=1 offset" in table and "need the widest" in table

    run, artifacts = _slimmable_run(uri)
    assert run.info.run_name == "slimmable-eval-dsnet"
    p = run.data.params
    assert (p["experiment"], p["gate_epochs"], p["gates"], p["recipe"]) == (
        "dsnet", "1", '["1.0,0.5,1.0"]', "ds_net (default)")
    metrics = run.data.metrics
    assert metrics["gate0.val_accuracy"] == pytest.approx(gate["accuracy"])
    assert metrics["supernet_w0.5.val_accuracy"] == pytest.approx(result["static"]["0.5"]["accuracy"])
    assert metrics["gate_T_1_cplx_0.5_sgs_1.avg_latency_ms"] == pytest.approx(m["avg_latency_ms"])
    assert metrics["gate_T_1_cplx_0.5_sgs_1_offset.avg_latency_ms"] == pytest.approx(
        off["measured"]["avg_latency_ms"])
    assert metrics["gate0.try_best.needs_widest"] == pytest.approx(off["try_best"]["needs_widest"])
    assert metrics["supernet_1x_static.avg_latency_ms"] > 0
    assert {"result.json", "slimmable_dsnet_madds.png", "slimmable_dsnet_accuracy_latency.png"} <= artifacts


@pytest.mark.parametrize("experiment", ["widths", "dsnet"])
def test_slimmable_eval_refuses_bad_measure_values_before_reading_data(cli, experiment):
    for flag, value in (("--repeats", "0"), ("--test-images", "0"), ("--threads", "0")):
        line = cli("slimmable-eval", experiment, "--measure", flag, value, "--data", "nosuch").error_line()
        name = flag[2:].replace("-", "_")
        assert f"{name}={value}" in line and "nosuch" not in line, line


def test_slimmable_eval_dsnet_refuses_a_bad_gate_spec_or_gate_epochs_before_training(cli):
    for spec in ("1.0,0.5", "1.0,x,1.0"):
        line = cli("slimmable-eval", "dsnet", "--gates", "1.0,0.5,1.0", spec, "--data", "nosuch").error_line()
        assert f"gates={spec!r}" in line and "nosuch" not in line, line
    line = cli("slimmable-eval", "dsnet", "--gate-epochs", "0", "--data", "nosuch").error_line()
    assert "gate_epochs=0" in line and "nosuch" not in line, line


def test_slimmable_eval_dsnet_checks_the_supernet_path_and_makes_its_folder_before_training(cli, tmp_path):
    for bad in (str(tmp_path), str(tmp_path / "supernet.ckpt")):  # a folder; a name that is no HDF5 file
        line = cli("slimmable-eval", "dsnet", "--supernet", bad, "--data", "nosuch").error_line()
        assert f"supernet={bad!r}" in line and "nosuch" not in line, line
    target = tmp_path / "new" / "dsnet" / "supernet.weights.h5"
    line = cli("slimmable-eval", "dsnet", "--supernet", str(target), "--data", "nosuch").error_line()
    assert "nosuch" in line  # the path was accepted: the data is the first thing to fail ...
    assert target.parent.is_dir() and not target.exists()  # ... after the folder the save needs was made
