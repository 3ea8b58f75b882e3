import json

import pytest

from pipelines.experiments import multi_exit as exp

TINY = {"num_exits": 3, "width_multiplier": 0.25, "depth_multiplier": 0.25, "last_channels": 32}


@pytest.mark.extended  # a learning check, like tests/pipelines/test_every_model_learns.py
def test_experiment_smoke_reports_per_exit_table_and_budget_curve(tmp_path):
    # 3 epochs of 32 steps: enough for BatchNorm's moving statistics, so the exits beat chance (0.1) clearly
    result = exp.run(epochs=3, seeds=(0,), image_size=16, model_config=TINY, limit=512, batch_size=16,
                     out=str(tmp_path), budget_fractions=(0.5, 1.0), stage_madds=0, log=lambda s: None)
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


@pytest.mark.slow
def test_measure_exports_the_budgeted_bundle_and_every_variant_without_early_exits(tmp_path):
    result = exp.run(epochs=1, seeds=(0,), image_size=16, model_config=TINY, limit=64, batch_size=16,
                     out=str(tmp_path), budget_fractions=(0.5, 1.0), measure=True, test_images=16, repeats=1,
                     data="cluttered-digits", deploy_budgets=(1.0,), log=lambda s: None)
    (budgeted,) = [r for r in result["deployed"] if "policy" not in r]
    (fixed,) = [r for r in result["deployed"] if r.get("policy") == "budget 1.00"]
    assert fixed["variant"] == "imta" and fixed["budget_fraction"] == 1.0 and fixed["measured"]["kind"] == "multi_exit"
    costs = result["exit_madds"]
    assert costs[0] <= fixed["measured"]["avg_madds"] <= costs[-1] * 1.0001
    model = json.loads((tmp_path / "imta-seed0" / "bundle-budget1.00" / "model.json").read_text())
    # exits no validation image leaves at are left out of the bundle; the last one always answers
    assert model["exits"][-1] == f"exit_{len(costs) - 1}" and set(model["exits"]) <= {f"exit_{k}" for k in range(len(costs))}
    assert len(model["threshold"]) == len(model["exits"]) - 1 and all(0 <= t <= 1 for t in model["threshold"])
    alone = [r for r in result["deployed"] if r.get("policy") == "last exit alone"]
    assert "imta s0 (budget" in budgeted["name"]
    m = budgeted["measured"]
    assert m["kind"] == "multi_exit" and m["test_images"] == 16 and sum(m["stage_share"].values()) == pytest.approx(1)
    assert [r["variant"] for r in alone] == ["plain", "imta"] and all(r["policy"] == "last exit alone" for r in alone)
    last = result["exit_madds"][-1]
    for r in alone:
        a = r["measured"]
        assert a["kind"] == "plain" and a["avg_latency_ms"] > 0 and a["test_images"] == 16, a
        assert (tmp_path / f"{r['variant']}-seed0" / "bundle-last-exit" / "model.tflite").exists()
        # the plain network to the last exit: the backbone and the last classifier (with ISC, the earlier
        # classifiers feeding it too), never more than the whole multi-exit net, and at least the last exit's path
        assert a["avg_madds"] <= sum(result["exit_madds"]) and a["avg_madds"] >= 0.5 * last, (a["avg_madds"], last)
    assert 0 <= budgeted["measured"]["avg_madds"] <= last * 1.0001
    assert "last exit alone" in exp.format_report(result)


def test_last_exit_alone_matches_the_multi_exit_nets_last_output():
    import numpy as np
    from keras_layers import models

    net = models.build("multi_exit_net", (16, 16, 1), 10, **TINY)
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype("float32")
    plain = exp.last_exit_alone(net)
    assert not isinstance(plain.output_shape, dict) and plain.output_shape == (None, 10)
    np.testing.assert_allclose(plain(x).numpy(), net(x)["exit_2"].numpy(), rtol=1e-5, atol=1e-6)


def test_experiment_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variants="):
        exp.run(variants=("nosuch",))


def test_budgeted_variant_is_one_that_trains_its_exits():
    assert exp.choose_budgeted(("plain", "imta")) == "imta"
    assert exp.choose_budgeted(("plain", "last")) == "plain"
    assert exp.choose_budgeted(("ge", "plain", "last")) == "plain"
    assert exp.choose_budgeted(("plain", "imta", "last"), "plain") == "plain"
    for variants, budgeted, match in ((("last",), None, "variants="), (("plain", "last"), "last", "budgeted='last'"),
                                      (("plain",), "imta", "budgeted='imta'")):
        with pytest.raises(ValueError, match=match):
            exp.choose_budgeted(variants, budgeted)


def test_deploy_budgets_are_curve_budgets_and_need_measure():
    assert exp.check_deploy_budgets([0.6, 0.7], exp.BUDGET_FRACTIONS, True) == (0.6, 0.7)
    assert exp.check_deploy_budgets(None, exp.BUDGET_FRACTIONS, False) == ()
    with pytest.raises(ValueError, match=r"deploy_budgets=\[0.62\]"):
        exp.check_deploy_budgets([0.62], exp.BUDGET_FRACTIONS, True)
    with pytest.raises(ValueError, match="measure=False"):
        exp.check_deploy_budgets([0.6], exp.BUDGET_FRACTIONS, False)
    with pytest.raises(ValueError, match=r"deploy_budgets=\[0.62\]"):  # before any training
        exp.run(seeds=(0,), deploy_budgets=(0.62,), measure=True, out="/nonexistent/never-made")
    for bad in (-1.0, float("nan"), "1e6", True):
        with pytest.raises(ValueError, match=r"stage_madds must be a number of MAdds >= 0; received stage_madds="):
            exp.run(seeds=(0,), stage_madds=bad, out="/nonexistent/never-made")


def test_row_thresholds_clip_to_probabilities_and_drop_the_last_exit():
    row = {"exits": [0, 1, 2, 3], "thresholds": [float("inf"), 0.7, -0.2, float("-inf")]}
    assert exp.row_thresholds(row) == [1.0, 0.7, 0.0]


def test_row_thresholds_leave_out_the_exits_the_row_does_not_keep():
    """An exit outside the row's ``exits`` gets None: the export leaves it out of the bundle. In the rows of
    `budget_curve` those are the exits `search_policy` did not keep, and every kept early exit answers at
    least MIN_EXIT_SHARE of the validation images whenever some set keeps that rule."""
    row = {"exits": [2, 3], "thresholds": [float("inf"), float("inf"), 0.7, float("-inf")]}
    assert exp.row_thresholds(row) == [None, None, 0.7]
    row = {"exits": [1, 2, 3], "thresholds": [0.9, 0.8, 0.7, float("-inf")]}  # exit 0's threshold is not used
    assert exp.row_thresholds(row) == [None, 0.8, 0.7]
    with pytest.raises(KeyError, match="exits"):  # a row says which exits it keeps
        exp.row_thresholds({"thresholds": [0.5, float("-inf")]})
    import numpy as np
    from pipelines.export.families import multi_exit as family

    rng = np.random.RandomState(0)
    probs = rng.dirichlet(np.ones(3) * 0.3, size=(4, 200))  # (exits, examples, classes)
    labels = rng.randint(0, 3, 200)
    rows = family.budget_curve(probs, labels, probs, labels, [1.0, 2.0, 3.0, 4.0], [2.0, 3.0])
    for r in rows:  # the validation shares are those of the thresholds on the validation probabilities
        exits = family.exit_points(probs.max(-1), np.asarray(r["thresholds"]))
        assert r["val_exit_share"] == pytest.approx(np.bincount(exits, minlength=4) / 200)
        got = exp.row_thresholds(r)
        assert [t is None for t in got] == [k not in r["exits"] for k in range(3)]
        assert all(np.mean(exits == k) >= family.MIN_EXIT_SHARE for k in r["exits"][:-1]), (r, exits)


def test_last_variant_trains_the_last_exit_alone():
    cfg = exp.variant_config("last", 0, 1, "digits", 16, {}, {}, None, 64, "adam", 3e-3, 16)
    assert cfg.recipe_config == {"distill": False, "last_exit_only": True}
    assert cfg.model_config == {"gradient_equilibrium": False, "inline_collaboration": False}
    assert cfg.run_name == "last-seed0"


def test_cli_refuses_a_budgeted_variant_before_training(cli, tmp_path):
    res = cli("multi-exit-eval", "--variants", "plain", "last", "--budgeted", "last", "--out", str(tmp_path))
    assert res.returncode != 0 and "budgeted='last'" in res.stderr
    assert not any(tmp_path.iterdir())


def test_cli_help(cli):
    res = cli("multi-exit-eval", "--help")
    assert res.returncode == 0 and "--variants" in res.stdout and "--seeds" in res.stdout and "--budgeted" in res.stdout
