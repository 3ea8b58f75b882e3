import json

import pytest

from pipelines.experiments import multi_exit as exp

TINY = {"num_exits": 3, "width_multiplier": 0.25, "depth_multiplier": 0.25, "last_channels": 32}


@pytest.mark.extended  # a learning check, like tests/pipelines/test_every_model_learns.py
def test_experiment_smoke_reports_per_exit_table_and_budget_curve(tmp_path):
    # 3 epochs of 32 steps: enough for BatchNorm's moving statistics, so the exits beat chance (0.1) clearly
    result = exp.run(epochs=3, seeds=(0,), image_size=16, model_config=TINY, limit=512, batch_size=16,
                     out=str(tmp_path), budget_fractions=(0.5, 1.0), log=lambda s: None)
    print(json.dumps({k: result[k] for k in ("per_exit_test_accuracy", "budgeted")}))  # measured (pytest -s)
    table = result["per_exit_test_accuracy"]
    assert set(table) == {"plain", "imta"} and all(len(v) == 3 for v in table.values())
    assert min(table["plain"][-1], table["imta"][-1]) > 0.6, table  # last exit; measured 0.86 / 0.92
    costs = result["exit_madds"]
    assert costs == sorted(costs) and len(result["budgeted"]) == 2
    for row in result["budgeted"]:  # measured 0.38 at half the last exit's MAdds, 0.92 at all of them
        assert costs[0] <= row["test_avg_madds"] <= costs[-1] and row["test_accuracy"] > 0.25, row
        assert sum(row["exit_share"]) == pytest.approx(1.0)
    assert result["budgeted"][-1]["test_accuracy"] > 0.6, result["budgeted"]
    text = exp.format_report(result)
    assert "| imta - plain |" in text and "cumulative MAdds" in text
    assert exp.to_json(result)


def test_experiment_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variants="):
        exp.run(variants=("nosuch",))


def test_cli_help(cli):
    res = cli("multi-exit-eval", "--help")
    assert res.returncode == 0 and "--variants" in res.stdout and "--seeds" in res.stdout
