"""Budgeted batch classification and anytime prediction with a multi-exit network (MSDNet / IMTA protocol).

An example walks through the exits in order and stops at the first exit whose confidence (highest
softmax probability) reaches that exit's threshold; the last exit always answers. Its cost is the
cumulative MAdds of the exit it stopped at (`keras_layers.models.multi_exit_net.exit_madds`).

Given a target *average* MAdds per example, `search_thresholds` picks per-exit thresholds on a
held-out split: it scores a set of candidate threshold vectors at once (NumPy over candidates x
exits x examples, no Python loop over examples) and keeps the most accurate one whose average cost
fits the budget (ties go to the one spending most of the budget). Candidates come from two families:

* MSDNet's: a fraction ``p_k ~ q^k`` of the examples leaves at exit k (q on a grid), thresholds set
  to the matching confidence quantiles of the examples still running;
* one shared threshold for every exit, at each quantile of the confidences.

    curve = budget_curve(val_probs, val_labels, test_probs, test_labels, costs, budgets)
    anytime_accuracy(test_probs, test_labels)     # accuracy of each exit alone
"""
from __future__ import annotations

import numpy as np

from pipelines.export.policy import stops


def exit_probabilities(net, images, batch_size=256):
    """Softmax probabilities of every exit: array (K, N, C), exits in order."""
    from keras_layers.models.multi_exit_net import exit_names
    import tensorflow as tf

    names = exit_names(net)
    chunks = []
    for start in range(0, len(images), batch_size):
        out = net(images[start:start + batch_size], training=False)
        chunks.append(np.stack([tf.nn.softmax(out[n]).numpy() for n in names]))
    return np.concatenate(chunks, axis=1)


def _check_probs(probs, labels=None):
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 3 or probs.shape[0] < 1 or probs.shape[1] < 1:
        raise ValueError(f"probs must be (exits, examples, classes); received shape={probs.shape}")
    if labels is not None and len(labels) != probs.shape[1]:
        raise ValueError(f"labels must have one entry per example ({probs.shape[1]}); received {len(labels)}")
    return probs


def _check_costs(costs, num_exits):
    costs = np.asarray(costs, np.float64)
    if costs.shape != (num_exits,) or np.any(costs <= 0) or np.any(np.diff(costs) < 0):
        raise ValueError(f"exit_costs must be {num_exits} positive non-decreasing numbers; "
                         f"received exit_costs={costs.tolist()}")
    return costs


def anytime_accuracy(probs, labels):
    """Accuracy of each exit on its own (anytime prediction): array (K,)."""
    probs = _check_probs(probs, labels)
    return (probs.argmax(-1) == np.asarray(labels)[None]).mean(axis=1)


def exit_points(confidence, thresholds):
    """Exit index of each example for each threshold vector.

    confidence: (K, N); thresholds: (K,) or (Q, K). Returns (N,) or (Q, N) ints; the last exit
    always accepts.
    """
    thresholds = np.asarray(thresholds, np.float64)
    single = thresholds.ndim == 1
    t = thresholds[None] if single else thresholds
    accept = stops(confidence[None], t[:, :, None])  # (Q, K, N)
    accept[:, -1] = True
    exits = accept.argmax(axis=1)  # first accepting exit
    return exits[0] if single else exits


def evaluate(probs, labels, thresholds, exit_costs):
    """Accuracy and average cost of early exiting with `thresholds` ((K,) or (Q, K)); returns arrays (Q,) or floats."""
    probs = _check_probs(probs, labels)
    costs = _check_costs(exit_costs, probs.shape[0])
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == np.asarray(labels)[None]  # (K, N)
    exits = exit_points(confidence, thresholds)
    taken = correct[exits, np.arange(correct.shape[1])]  # broadcasts over (N,) or (Q, N)
    accuracy = taken.mean(axis=-1)
    avg_cost = costs[exits].mean(axis=-1)
    if exits.ndim == 1:
        return float(accuracy), float(avg_cost)
    return accuracy, avg_cost


def geometric_thresholds(confidence, q):
    """MSDNet's rule: a fraction proportional to q^k of the examples leaves at exit k; (K,) thresholds."""
    k, n = confidence.shape
    share = q ** np.arange(k, dtype=np.float64)
    share /= share.sum()
    thresholds = np.full(k, -np.inf)
    running = np.ones(n, bool)
    for i in range(k - 1):
        leave = int(round(share[i] * n))
        conf = confidence[i][running]
        if leave <= 0 or conf.size == 0:
            thresholds[i] = np.inf
            continue
        leave = min(leave, conf.size)
        thresholds[i] = np.sort(conf)[::-1][leave - 1]
        running &= ~stops(confidence[i], thresholds[i])
    return thresholds


def candidate_thresholds(confidence, num_q=40, num_levels=200):
    """Candidate threshold vectors (Q, K): MSDNet's geometric family and shared thresholds."""
    k = confidence.shape[0]
    qs = np.concatenate([np.linspace(0.02, 1.0, num_q // 2, endpoint=False), np.linspace(1.0, 4.0, num_q // 2)])
    geometric = np.stack([geometric_thresholds(confidence, q) for q in qs])
    levels = np.unique(np.quantile(confidence[:-1].ravel(), np.linspace(0.0, 1.0, num_levels)))
    levels = np.unique(np.concatenate([levels, confidence[:-1].ravel()])) if confidence.shape[1] <= num_levels \
        else levels
    shared = np.repeat(levels[:, None], k, axis=1)
    none_early = np.full((1, k), np.inf)  # everything runs to the last exit
    cands = np.concatenate([geometric, shared, none_early])
    cands[:, -1] = -np.inf
    return cands


def search_thresholds(probs, labels, exit_costs, budget):
    """Per-exit thresholds with the best accuracy on (`probs`, `labels`) at average cost <= `budget`.

    Returns {"thresholds": list (last is -inf: always accept), "accuracy", "avg_madds"}.
    """
    probs = _check_probs(probs, labels)
    costs = _check_costs(exit_costs, probs.shape[0])
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.number)) or not budget >= costs[0]:
        raise ValueError(f"budget must be >= the first exit's cost ({costs[0]:.0f} MAdds); received budget={budget!r}")
    cands = candidate_thresholds(probs.max(-1))
    accuracy, avg_cost = evaluate(probs, labels, cands, costs)
    feasible = avg_cost <= budget + 1e-9
    if not feasible.any():  # cannot happen: the all-first-exit vector costs costs[0]
        raise ValueError(f"no thresholds meet budget={budget!r}")
    # best accuracy; among equals, the one that spends most of the budget (more conservative thresholds
    # generalise better from a small held-out split than the cheapest vector that happens to tie)
    order = np.lexsort((-avg_cost, -accuracy))
    best = next(i for i in order if feasible[i])
    return {"thresholds": cands[best].tolist(), "accuracy": float(accuracy[best]), "avg_madds": float(avg_cost[best])}


def budget_curve(val_probs, val_labels, test_probs, test_labels, exit_costs, budgets):
    """For each budget: thresholds chosen on validation, then test accuracy and test average MAdds."""
    rows = []
    for budget in budgets:
        found = search_thresholds(val_probs, val_labels, exit_costs, budget)
        acc, cost = evaluate(test_probs, test_labels, np.asarray(found["thresholds"]), exit_costs)
        exits = exit_points(_check_probs(test_probs).max(-1), np.asarray(found["thresholds"]))
        share = np.bincount(exits, minlength=len(exit_costs)) / len(exits)
        rows.append({"budget": float(budget), "thresholds": found["thresholds"], "val_accuracy": found["accuracy"],
                     "val_avg_madds": found["avg_madds"], "test_accuracy": float(acc), "test_avg_madds": float(cost),
                     "exit_share": share.tolist()})
    return rows
