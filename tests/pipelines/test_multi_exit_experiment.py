import subprocess
import sys

import pytest

from pipelines.experiments import multi_exit as exp
from tests.conftest import ROOT

TINY = {"num_exits": 3, "width_multiplier": 0.25, "depth_multiplier": 0.25, "last_channels": 32}


def test_experiment_smoke_reports_per_exit_table_and_budget_curve(tmp_path):
    result = exp.run(epochs=1, seeds=(0,), image_size=16, model_config=TINY, limit=48, out=str(tmp_path),
                     budget_fractions=(0.5, 1.0), log=lambda s: None)
    table = result["per_exit_test_accuracy"]
    assert set(table) == {"plain", "imta"} and all(len(v) == 3 for v in table.values())
    costs = result["exit_madds"]
    assert costs == sorted(costs) and len(result["budgeted"]) >= 1
    for row in result["budgeted"]:
        assert costs[0] <= row["test_avg_madds"] <= costs[-1] and 0 <= row["test_accuracy"] <= 1
        assert sum(row["exit_share"]) == pytest.approx(1.0)
    text = exp.format_report(result)
    assert "| imta - plain |" in text and "cumulative MAdds" in text
    assert exp.to_json(result)


def test_experiment_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variants="):
        exp.run(variants=("nosuch",))


def test_cli_help():
    res = subprocess.run([sys.executable, "-m", "pipelines", "multi-exit-eval", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--variants" in res.stdout and "--seeds" in res.stdout
