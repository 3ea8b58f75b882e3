import numpy as np
import pytest

from pipelines.export.families import multi_exit as budgeted


def constructed():
    """2 exits, 10 examples (label 0). Exit 0 is confident and right on 6 (conf 0.90-0.95), unsure and
    wrong on 4 (conf 0.51-0.60); exit 1 is right on all. Costs 1 and 2."""
    conf0 = np.array([.95, .94, .93, .92, .91, .90, .60, .55, .52, .51])
    probs = np.zeros((2, 10, 2))
    probs[0, :6, 0], probs[0, :6, 1] = conf0[:6], 1 - conf0[:6]
    probs[0, 6:, 1], probs[0, 6:, 0] = conf0[6:], 1 - conf0[6:]
    probs[1, :, 0], probs[1, :, 1] = 0.8, 0.2
    return probs, np.zeros(10, int), [1.0, 2.0]


def test_search_on_constructed_example_gives_the_known_answer():
    probs, labels, costs = constructed()
    np.testing.assert_allclose(budgeted.anytime_accuracy(probs, labels), [0.6, 1.0])
    # budget 1.4 = at most 4 of 10 examples may go on: send exactly the 4 unsure ones -> 100% at cost 1.4
    found = budgeted.search_thresholds(probs, labels, costs, 1.4)
    assert found["accuracy"] == 1.0 and found["avg_madds"] == pytest.approx(1.4)
    assert 0.60 < found["thresholds"][0] <= 0.90 and found["thresholds"][1] == -np.inf
    # budget 1.3: only 3 may go on; best is keeping the 0.60 one at exit 0 (one mistake) -> 90%
    found = budgeted.search_thresholds(probs, labels, costs, 1.3)
    assert found["accuracy"] == pytest.approx(0.9) and found["avg_madds"] == pytest.approx(1.3)
    assert 0.55 < found["thresholds"][0] <= 0.60
    # among equally accurate vectors the one spending most of the budget wins (conservative thresholds)
    found = budgeted.search_thresholds(probs, labels, costs, 1.6)
    assert found["accuracy"] == 1.0 and found["avg_madds"] == pytest.approx(1.6)
    assert 0.91 < found["thresholds"][0] <= 0.92
    # the first exit's cost: everything leaves at exit 0
    assert budgeted.search_thresholds(probs, labels, costs, 1.0)["accuracy"] == pytest.approx(0.6)


def test_chosen_thresholds_sit_between_the_examples_confidences():
    """The search's thresholds stop the same examples as a candidate, halfway between the lowest confidence
    that stops at each exit and the highest that does not: a float32 wobble of an example's confidence (LiteRT
    against Keras) does not move it to another stage."""
    rng = np.random.RandomState(1)
    probs = rng.dirichlet(np.ones(4) * 0.4, size=(3, 300))
    labels = rng.randint(0, 4, 300)
    confidence = probs.max(-1)
    for budget in (1.3, 1.8, 2.4):
        found = budgeted.search_thresholds(probs, labels, [1.0, 2.0, 3.0], budget)
        t = np.asarray(found["thresholds"])
        accuracy, cost = budgeted.evaluate(probs, labels, t, [1.0, 2.0, 3.0])
        assert accuracy == pytest.approx(found["accuracy"]) and cost == pytest.approx(found["avg_madds"])
        assert cost <= budget + 1e-9
        cands = budgeted.candidate_thresholds(confidence)
        exits = budgeted.exit_points(confidence, t)
        assert any(np.array_equal(budgeted.exit_points(confidence, c), exits) for c in cands), budget  # as a candidate
        for k in range(2):
            if np.isfinite(t[k]) and (confidence[k] < t[k]).any():
                above, below = confidence[k][confidence[k] >= t[k]].min(), confidence[k][confidence[k] < t[k]].max()
                assert t[k] == pytest.approx((above + below) / 2, abs=1e-15), (budget, k)
                gap = (above - below) / 2  # any wobble smaller than this leaves every example where it was
                wobble = confidence.copy()
                wobble[k] += rng.choice([-0.9, 0.9], size=wobble.shape[1]) * gap
                np.testing.assert_array_equal(budgeted.exit_points(wobble, t), budgeted.exit_points(confidence, t))
    np.testing.assert_array_equal(budgeted.with_margin(np.array([[0.9, 0.5], [0.8, 0.7]]), [0.9, -np.inf]),
                                  [0.7, -np.inf])
    np.testing.assert_array_equal(budgeted.with_margin(np.array([[0.9, 0.5], [0.8, 0.7]]), [0.6, -np.inf]),
                                  [0.7, -np.inf])  # a threshold between the confidences: to the middle
    np.testing.assert_array_equal(budgeted.with_margin(np.array([[0.9, 0.5], [0.8, 0.7]]), [0.5, -np.inf]),
                                  [0.5, -np.inf])  # nothing below: every example stops there already
    np.testing.assert_array_equal(budgeted.with_margin(np.array([[0.9, 0.5], [0.8, 0.7]]), [0.95, -np.inf]),
                                  [0.95, -np.inf])  # none stops there
    np.testing.assert_array_equal(budgeted.with_margin(np.array([[0.9], [0.8]]), [np.inf, -np.inf]), [np.inf, -np.inf])


def test_vectorised_evaluation_matches_a_per_example_walk():
    rng = np.random.RandomState(0)
    k, n, c = 4, 50, 5
    logits = rng.randn(k, n, c) * np.arange(1, k + 1)[:, None, None]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.randint(0, c, n)
    costs = [1.0, 2.5, 3.0, 7.0]
    cands = rng.uniform(0.2, 1.0, (20, k))
    acc, cost = budgeted.evaluate(probs, labels, cands, costs)
    for q, t in enumerate(cands):
        hits, spent = 0, 0.0
        for i in range(n):
            for e in range(k):
                if e == k - 1 or probs[e, i].max() >= t[e]:
                    hits += probs[e, i].argmax() == labels[i]
                    spent += costs[e]
                    break
        assert acc[q] == pytest.approx(hits / n) and cost[q] == pytest.approx(spent / n)
    one_acc, one_cost = budgeted.evaluate(probs, labels, cands[3], costs)
    assert one_acc == pytest.approx(acc[3]) and one_cost == pytest.approx(cost[3])


def test_geometric_thresholds_send_the_requested_shares():
    rng = np.random.RandomState(1)
    conf = rng.uniform(0, 1, (3, 1000))
    t = budgeted.geometric_thresholds(conf, 1.0)  # equal shares: a third leaves at each exit
    shares = np.bincount(budgeted.exit_points(conf, t), minlength=3) / 1000
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.01)


@pytest.mark.parametrize("budget", [0.5, 0.999, -1, "a lot"])
def test_budget_below_first_exit_cost_is_rejected(budget):
    probs, labels, costs = constructed()
    with pytest.raises(ValueError, match=f"budget={budget!r}"):
        budgeted.search_thresholds(probs, labels, costs, budget)


def test_bad_shapes_and_costs():
    probs, labels, _ = constructed()
    with pytest.raises(ValueError, match="exit_costs"):
        budgeted.search_thresholds(probs, labels, [2.0, 1.0], 1.5)
    with pytest.raises(ValueError, match="labels"):
        budgeted.anytime_accuracy(probs, labels[:3])


def test_budget_curve_reports_test_accuracy_and_cost():
    probs, labels, costs = constructed()
    rows = budgeted.budget_curve(probs, labels, probs, labels, costs, [1.0, 1.4])
    assert [r["test_accuracy"] for r in rows] == [pytest.approx(0.6), 1.0]
    assert rows[1]["test_avg_madds"] == pytest.approx(1.4) and rows[1]["exit_share"] == [0.6, 0.4]


def staged():
    """3 exits, costs 1 / 2 / 3 MAdds, 100 examples of label 0. Exit 0 is confident and right on 40 (the rest
    unsure and wrong), exit 1 on 70, exit 2 right on all. Every policy below is 100% accurate; per stage cost s:
    exits {0, 1, 2} (thresholds 0.9) cost 1.9 + 1.9 s, {1, 2} 2.3 + 1.3 s, {0, 2} 2.2 + 1.6 s, {2} 3 + s."""
    probs = np.zeros((3, 100, 2))
    for k, right in enumerate((40, 70, 100)):
        probs[k, :right, 0] = 0.95 if k < 2 else 0.8
        probs[k, right:, 1] = 0.5 + 1e-3
        probs[k, :, 1] = np.where(probs[k, :, 0] > 0, 1 - probs[k, :, 0], probs[k, :, 1])
        probs[k, right:, 0] = 1 - probs[k, right:, 1]
    return probs, np.zeros(100, int), [1.0, 2.0, 3.0]


def test_exit_subsets_are_every_set_of_early_exits_with_the_last():
    assert budgeted.exit_subsets(1) == [(0,)]
    assert budgeted.exit_subsets(3) == [(2,), (0, 2), (1, 2), (0, 1, 2)]
    assert len(budgeted.exit_subsets(5)) == 16 and all(s[-1] == 4 for s in budgeted.exit_subsets(5))


@pytest.mark.parametrize("stage, budget, exits", [
    (0.0, 1.9, [0, 1, 2]),    # MAdds alone: three stages are cheapest
    (1.0, 3.6, [1, 2]),       # 3.8 / 3.6 / 3.8 / 4.0: only exits {1, 2} fit
    (1.0, 3.8, [1, 2]),       # {0, 1, 2} and {0, 2} fit too, at the same accuracy: the cheaper wins
    (3.0, 6.2, [2]),          # 7.6 / 6.2 / 7.0 / 6.0: the last exit alone is cheapest
])
def test_search_policy_counts_a_cost_per_stage(stage, budget, exits):
    probs, labels, costs = staged()
    found = budgeted.search_policy(probs, labels, costs, budget, stage_madds=stage)
    assert found["exits"] == exits and found["accuracy"] == 1.0, found
    want = {(0, 1, 2): 1.9 + 1.9 * stage, (1, 2): 2.3 + 1.3 * stage, (0, 2): 2.2 + 1.6 * stage, (2,): 3 + stage}
    assert found["avg_cost"] == pytest.approx(want[tuple(exits)]) and found["avg_cost"] <= budget + 1e-9
    madds = {(0, 1, 2): 1.9, (1, 2): 2.3, (0, 2): 2.2, (2,): 3.0}[tuple(exits)]
    assert found["avg_madds"] == pytest.approx(madds) and found["stage_madds"] == stage
    th = np.asarray(found["thresholds"])
    assert np.isinf(th[-1]) and th[-1] < 0 and all(np.isposinf(th[k]) for k in range(2) if k not in exits)
    # the thresholds do what the search says: the same accuracy and MAdds through `evaluate`
    acc, cost = budgeted.evaluate(probs, labels, th, costs)
    assert acc == found["accuracy"] and cost == pytest.approx(madds)


def test_search_policy_skips_a_set_whose_exit_too_few_examples_leave_at():
    """Exit 0 is right and confident on 1 of 200 examples: keeping it is 0.005 MAdds cheaper at the same
    accuracy, but under MIN_EXIT_SHARE (1%), so exits {1, 2} are chosen; with min_share=0 it is kept."""
    probs = np.full((3, 200, 2), 0.5)
    probs[0, 0, 0] = 0.99
    probs[1, :100, 0] = 0.99
    probs[2, :, 0] = 0.8
    probs[:, :, 1] = 1 - probs[:, :, 0]
    probs[:2, :, 0] = np.where(probs[:2, :, 0] == 0.5, 0.499, probs[:2, :, 0])  # unsure ones are wrong
    probs[:, :, 1] = 1 - probs[:, :, 0]
    labels = np.zeros(200, int)
    assert budgeted.search_policy(probs, labels, [1.0, 2.0, 3.0], 2.5)["exits"] == [1, 2]
    assert budgeted.search_policy(probs, labels, [1.0, 2.0, 3.0], 2.5, min_share=0.0)["exits"] == [0, 1, 2]


def test_search_policy_uses_the_cost_of_the_heads_that_run():
    """With a callable the kept exits' own cumulative MAdds count: backbone 1 / 2 / 3 and 1 per head that runs,
    so {0, 1, 2} costs 3.8 on average, {1, 2} 3.6, {0, 2} 3.8 and {2} 4.0 (all 100% accurate)."""
    probs, labels, _ = staged()
    seen = []

    def cost_of(kept):
        seen.append(tuple(kept))
        return [k + 1 + i + 1 for i, k in enumerate(kept)]
    found = budgeted.search_policy(probs, labels, cost_of, 3.7)
    assert sorted(set(seen)) == sorted(budgeted.exit_subsets(3))
    assert found["exits"] == [1, 2] and found["avg_madds"] == pytest.approx(3.6)


def test_search_policy_refuses_bad_input():
    probs, labels, costs = staged()
    with pytest.raises(ValueError, match=r"stage_madds must be a number of MAdds >= 0; received stage_madds=-1"):
        budgeted.search_policy(probs, labels, costs, 3.0, stage_madds=-1)
    with pytest.raises(ValueError, match=r"stage_madds=nan"):
        budgeted.search_policy(probs, labels, costs, 3.0, stage_madds=float("nan"))
    with pytest.raises(ValueError, match=r"budget must be >= the first exit's cost \(2 MAdds with its stage\); "
                                         r"received budget=1.5"):
        budgeted.search_policy(probs, labels, costs, 1.5, stage_madds=1.0)


def test_budget_curve_rows_carry_the_kept_exits_and_the_cost():
    probs, labels, costs = staged()
    (row,) = budgeted.budget_curve(probs, labels, probs, labels, costs, [3.6], stage_madds=1.0)
    assert row["exits"] == [1, 2] and row["val_avg_cost"] == pytest.approx(3.6)
    assert row["test_avg_cost"] == pytest.approx(3.6) and row["test_avg_madds"] == pytest.approx(2.3)
    assert row["exit_share"] == pytest.approx([0.0, 0.7, 0.3]) and row["test_accuracy"] == 1.0
