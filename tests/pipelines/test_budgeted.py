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
