"""The papers' experiments run as `python -m pipelines` commands (smoke sizes: one epoch, a few images).

The two end-to-end runs here are `extended` (`make test-extended`, CI): their pieces (training, early
termination, disturbance, export, the widths table) have their own tests in `make test`, and `make test` runs
one experiment command end to end with measurement and MLflow logging (condconv-eval,
tests/pipelines/test_deployed_experiments.py)."""
import json

import pytest

from keras_layers import models
from pipelines import cli
from pipelines.export.bundle import Bundle

TINY_BASISNET = ["width_multiplier=0.25", "last_channels=64", "head_channels=64", "preview_channels=32",
                 "preview_blocks=2"]


@pytest.mark.slow
@pytest.mark.extended
def test_basisnet_eval_trains_both_models_and_exports_the_run_bundle(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    code = cli.main(["basisnet-eval", "--epochs", "1", "--limit", "96", "--image-size", "16", "--num-bases", "2",
                     "--model-config", *TINY_BASISNET, "--out", str(tmp_path), "--export", str(bundle)])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "basisnet-eval.json").read_text())
    assert {"early_termination", "disturbance"} <= set(report), sorted(report)
    # the exported bundle is the one format `run-bundle` and the app read, with the picked threshold
    b = Bundle.load(bundle)
    assert b.kind == "basisnet" and set(b.spec["stages"]) == {"preview", "specialist"}
    assert b.spec["threshold"] == report["early_termination"]["picked"]["threshold"]
    assert b.spec["checks"]["parity"]["agreement"] == 1.0
    assert "LiteRT latency of the whole policy" in out


@pytest.mark.slow
@pytest.mark.extended
def test_slimmable_eval_widths_writes_its_table(tmp_path, capsys):
    code = cli.main(["slimmable-eval", "widths", "--epochs", "1", "--limit", "64", "--widths", "0.5", "1.0",
                     "--depth-multiplier", "0.1", "--image-size", "16", "--out", str(tmp_path),
                     "--data", "cluttered-digits", "--recipe-config", "rule=all"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads((tmp_path / "widths.json").read_text())
    assert (tmp_path / "widths.md").read_text().strip() in out
    assert result["experiment"] == "widths" and result["data"] == "cluttered-digits", result
    assert result["rule"] == "all" and "rule all" in out  # --recipe-config reached the slimmable recipe


def test_experiment_commands_refuse_bad_values_before_training(capsys):
    assert cli.main(["basisnet-eval", "--num-bases", "0"]) == 2
    assert "num_bases" in capsys.readouterr().err
    assert cli.main(["basisnet-eval", "--max-drop", "101"]) == 2
    assert "max_drop" in capsys.readouterr().err
    for experiment in ("widths", "dsnet"):  # the recipe's fields are checked before any data is read
        assert cli.main(["slimmable-eval", experiment, "--recipe-config", "nosuch=1", "--data", "nosuch"]) == 2
        err = capsys.readouterr().err
        assert "nosuch=1" in err and "data" not in err, err
    assert models.names()  # the registry still imports after the refusals
