"""Multi-exit networks (IMTA / MSDNet): the family plugin, budgeted batch classification, and the
conversion of the exits into one ``.tflite`` of segments.

The bundle (model.json ``kind`` ``multi_exit``): one ``model.tflite`` with a signature per exit.
Signature ``exit_0`` maps the image to ``{"logits", "features"}``; signature ``exit_k`` (k > 0) maps
the previous signature's ``features`` (and its ``logits`` when Inline Subnetwork Collaboration feeds
exit k) to the next ``{"logits", "features"}``. The app runs them in order and never recomputes a layer;
a stage's ``madds`` is the cost of its segment, so stopping at exit k costs the cumulative MAdds
(`keras_layers.models.multi_exit_net.exit_madds`). It stops at the first exit whose confidence (top
softmax probability) is ``>=`` that exit's threshold (`pipelines.export.policy.stops`); the last exit
always answers. When the export picks the thresholds from a budget it also picks which exits the bundle
keeps (`search_policy`, over every subset of the early exits), counting each stage's cost beyond its layers:
a stage costs every image that reaches it a call and the check between stages, about `STAGE_MADDS` (0.6 M)
MAdds of time on the CPU it was measured on (option ``stage_madds``; 0 counts MAdds alone), and an exit few
images leave at saves little. An exit fewer than `MIN_EXIT_SHARE` (1%) of the selection images leave at is
never kept. A left-out exit (``threshold_selection.dropped_exits``) costs nothing: the next exit's segment
starts from the previous kept exit's features, so the phone neither runs that exit's head nor pays a stage
for it, and the stage MAdds count only the heads that run (`exit_madds(..., exits=kept)`); the images that
would have left there go on to the next kept exit. On MobileNetV3 nets, leaving out an exit 0.2% of the test
images took cut the measured time by 16% at the same accuracy, and leaving out exit 1 too (15-33% of the
images) was faster and more accurate (docs/results.md, sessions 11 and 12). The selection's accuracy, MAdds
and cost are those of the bundle as exported.

Budgeted batch classification (the thresholds; the IMTA paper's protocol): given a target *average*
cost per example, `search_thresholds` picks per-exit thresholds on a held-out split: it scores a set
of candidate threshold vectors at once (NumPy over candidates x exits x examples, no Python loop over
examples) and keeps the most accurate one whose average cost fits the budget (ties go to the one
spending most of the budget). Candidates come from two families:

* MSDNet's: a fraction ``p_k ~ q^k`` of the examples leaves at exit k (q on a grid), thresholds set
  to the matching confidence quantiles of the examples still running;
* one shared threshold for every exit, at each quantile of the confidences.

    curve = budget_curve(val_probs, val_labels, test_probs, test_labels, costs, budgets)
    anytime_accuracy(test_probs, test_labels)     # accuracy of each exit alone
"""
from __future__ import annotations

import itertools

import numpy as np

from pipelines.export.families import Family, register
from pipelines.export.policy import midpoint, need, need_probability, need_stage, softmax, stops, top_probability


# ---------------------------------------------------------------- budgeted batch classification

def exit_probabilities(net, images, batch_size=256):
    """Softmax probabilities of every exit: array (K, N, C), exits in order."""
    from keras_layers.models.multi_exit_net import exit_names
    from pipelines.export.checks import keras_outputs

    out = keras_outputs(net, images, batch_size)
    return np.stack([softmax(out[n]) for n in exit_names(net)])  # the runner's softmax (float64)


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


def outcome(probs, labels, thresholds, madds, cost):
    """What one threshold vector ((K,)) does on (`probs`, `labels`), given `policy_costs`' per-exit `madds` and
    `cost`: {"accuracy", "avg_madds", "avg_cost", "shares" (the examples each exit answers, (K,))}."""
    probs = _check_probs(probs, labels)
    exits = exit_points(probs.max(-1), thresholds)
    correct = probs.argmax(-1)[exits, np.arange(probs.shape[1])] == np.asarray(labels)
    return {"accuracy": float(correct.mean()), "avg_madds": float(np.asarray(madds, np.float64)[exits].mean()),
            "avg_cost": float(np.asarray(cost, np.float64)[exits].mean()),
            "shares": np.bincount(exits, minlength=probs.shape[0]) / probs.shape[1]}


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
    if k == 1:  # the last exit alone always answers
        return np.full((1, 1), -np.inf)
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
    confidence = probs.max(-1)
    cands = candidate_thresholds(confidence)
    accuracy, avg_cost = evaluate(probs, labels, cands, costs)
    feasible = avg_cost <= budget + 1e-9
    if not feasible.any():  # cannot happen: the all-first-exit vector costs costs[0]
        raise ValueError(f"no thresholds meet budget={budget!r}")
    # best accuracy; among equals, the one that spends most of the budget (more conservative thresholds
    # generalise better from a small held-out split than the cheapest vector that happens to tie)
    order = np.lexsort((-avg_cost, -accuracy))
    best = next(i for i in order if feasible[i])
    return {"thresholds": with_margin(confidence, cands[best]).tolist(), "accuracy": float(accuracy[best]),
            "avg_madds": float(avg_cost[best])}


def with_margin(confidence, thresholds):
    """`thresholds` ((K,)) with each early exit's moved to the `midpoint` of the examples' confidences there
    (`confidence` (K, N)): the same examples stop at each exit, none on a threshold."""
    out = np.asarray(thresholds, np.float64).copy()
    for k in range(len(out) - 1):
        out[k] = midpoint(confidence[k], out[k])
    return out


MIN_EXIT_SHARE = 0.01  # an early exit fewer of the selection images leave at is left out of a budgeted bundle


def keeps_exit(share, min_share=MIN_EXIT_SHARE):
    """Whether an early exit that this share of the examples leaves at stays in a budgeted bundle: at least
    one example and at least `min_share` of them (the one rule of the export and of `multi-exit-eval`)."""
    return share > 0 and share >= min_share


def exit_subsets(num_exits):
    """Every set of exits a bundle can keep, as increasing index tuples: each subset of the early exits, with
    the last exit (which always answers); 2^(K-1) of them, the last exit alone first."""
    early = range(num_exits - 1)
    return [tuple(s) + (num_exits - 1,) for r in range(num_exits) for s in itertools.combinations(early, r)]


def subset_costs(exit_costs, num_exits):
    """`exit_costs` as a function of the kept exits -> their cumulative MAdds (an array, one per kept exit).
    A callable is used as it is (`exit_madds(net, shape, exits=kept)`: a left-out exit's head is not run);
    a list (one cumulative cost per exit) is indexed, which still counts the left-out heads."""
    if callable(exit_costs):
        return lambda kept: _check_costs(exit_costs(kept), len(kept))
    costs = _check_costs(exit_costs, num_exits)
    return lambda kept: costs[list(kept)]


def kept_exit_madds(net, input_shape):
    """kept exits -> their cumulative MAdds on `net` (`exit_madds(net, input_shape, exits=kept)`), each set
    counted once: the search asks for every set at every budget."""
    from keras_layers.models.multi_exit_net import exit_madds

    counted = {}

    def cost_of(kept):
        kept = tuple(int(k) for k in kept)
        if kept not in counted:
            counted[kept] = [int(c) for c in exit_madds(net, input_shape, exits=list(kept))]
        return counted[kept]
    return cost_of


def policy_costs(kept_madds, kept, num_exits, stage_madds=0.0):
    """(madds, cost), each (K,): the cumulative MAdds of stopping at each exit of a bundle that keeps the exits
    `kept` (`kept_madds`: one per kept exit), and its cost, MAdds + `stage_madds` per stage run (the j-th kept
    exit runs j + 1 stages). A left-out exit no example stops at gets the next kept exit's numbers, so both
    stay non-decreasing for `evaluate`."""
    kept_madds = np.asarray(kept_madds, np.float64)
    kept_cost = kept_madds + stage_madds * np.arange(1, len(kept) + 1)
    nxt = [next(i for i, k in enumerate(kept) if k >= e) for e in range(num_exits)]
    return kept_madds[nxt], kept_cost[nxt]


# what a stage's call and check cost beyond its layers, in MAdds: fitted by `compare-bundles` at 0.44-0.47 M on an
# Intel AVX-512 host (session 14), 0.89-1.15 M on an AVX2-only AMD one (session 13), ~0.6 M estimated on an AMD
# AVX-512 one (session 12; docs/results.md); the exits chosen were the same at every value in between
STAGE_MADDS = 0.6e6


def check_stage_madds(stage_madds):
    """`stage_madds` as a float: a finite number of MAdds >= 0, else a one-line ValueError naming it."""
    if isinstance(stage_madds, bool) or not isinstance(stage_madds, (int, float, np.number)) \
            or not 0 <= stage_madds < np.inf:
        raise ValueError(f"stage_madds must be a number of MAdds >= 0; received stage_madds={stage_madds!r}")
    return float(stage_madds)


def search_policy(probs, labels, exit_costs, budget, stage_madds=0.0, min_share=MIN_EXIT_SHARE):
    """Which exits a bundle keeps and their thresholds: the most accurate policy on (`probs`, `labels`) whose
    average *cost* fits `budget`, over every set of kept exits (`exit_subsets`) and, for each, the candidate
    thresholds of `search_thresholds`. Cost = MAdds + `stage_madds` per stage run: a stage costs every image
    that reaches it a call and a check its MAdds do not show, so an exit few images leave at can cost more
    time than it saves. A set in which an early exit gets fewer than `min_share` of the examples is skipped
    (the set without it is searched too), unless no other fits. Ties go to the cheaper policy.

    `exit_costs`: cumulative MAdds per exit (a list) or kept exits -> their cumulative MAdds (`subset_costs`).
    Returns {"exits": kept (increasing, the last among them), "thresholds": one per exit (inf: left out; the
    last -inf), "accuracy", "avg_madds", "avg_cost", "stage_madds"}."""
    probs = _check_probs(probs, labels)
    k = probs.shape[0]
    stage_madds = check_stage_madds(stage_madds)
    cost_of = subset_costs(exit_costs, k)
    found = []
    for kept in exit_subsets(k):
        madds, cost = policy_costs(cost_of(kept), kept, k, stage_madds)
        if isinstance(budget, (int, float, np.number)) and not isinstance(budget, bool) and budget < cost[kept[0]]:
            continue  # not even the first kept exit fits
        pick = search_thresholds(probs[list(kept)], labels, cost[list(kept)], budget)
        thresholds = np.full(k, np.inf)
        thresholds[list(kept)] = pick["thresholds"]
        got = outcome(probs, labels, thresholds, madds, cost)
        found.append({"exits": [int(e) for e in kept], "thresholds": thresholds.tolist(), "accuracy": got["accuracy"],
                      "avg_madds": got["avg_madds"], "avg_cost": got["avg_cost"], "stage_madds": float(stage_madds),
                      "shares_kept": all(keeps_exit(got["shares"][e], min_share) for e in kept[:-1])})
    if not found:
        first = min(float(policy_costs(cost_of(s), s, k, stage_madds)[1][s[0]]) for s in exit_subsets(k))
        raise ValueError(f"budget must be >= the first exit's cost ({first:.0f} MAdds with its stage); "
                         f"received budget={budget!r}")
    pool = [f for f in found if f["shares_kept"]] or found
    best = min(pool, key=lambda f: (-f["accuracy"], f["avg_cost"], len(f["exits"])))
    return {key: v for key, v in best.items() if key != "shares_kept"}


def budget_curve(val_probs, val_labels, test_probs, test_labels, exit_costs, budgets, stage_madds=0.0):
    """For each budget (average cost: MAdds + `stage_madds` per stage run): the exits kept and their thresholds
    chosen on validation (`search_policy`), then test accuracy, average MAdds and cost, and each exit's share."""
    rows = []
    k = _check_probs(val_probs).shape[0]
    cost_of = subset_costs(exit_costs, k)
    for budget in budgets:
        found = search_policy(val_probs, val_labels, cost_of, budget, stage_madds)
        madds, cost = policy_costs(cost_of(found["exits"]), found["exits"], k, stage_madds)
        val = outcome(val_probs, val_labels, found["thresholds"], madds, cost)
        test = outcome(test_probs, test_labels, found["thresholds"], madds, cost)
        rows.append({"budget": float(budget), "exits": found["exits"], "thresholds": found["thresholds"],
                     "stage_madds": float(stage_madds), "val_accuracy": val["accuracy"],
                     "val_avg_madds": val["avg_madds"], "val_avg_cost": val["avg_cost"],
                     "test_accuracy": test["accuracy"], "test_avg_madds": test["avg_madds"],
                     "test_avg_cost": test["avg_cost"], "exit_share": test["shares"].tolist(),
                     "val_exit_share": val["shares"].tolist()})
    return rows


# ---------------------------------------------------------------- the segments

def _replay(feeds, targets):
    """Compute keras tensors `targets` of a functional graph from `feeds` {id(keras tensor): tensor},
    calling each layer once (inference mode); only the layers between the feeds and the targets run."""
    import tensorflow as tf

    def keras_inputs(node):
        return [t for t in tf.nest.flatten((node.call_args, dict(node.call_kwargs))) if hasattr(t, "_keras_history")]

    # the nodes between the feeds and the targets, in an order where each comes after its inputs (an
    # explicit stack: a segment can span a whole backbone, too deep for recursion inside a tf.function)
    order, state, stack = [], {}, [t for t in targets if id(t) not in feeds]
    while stack:
        kt = stack[-1]
        layer, node_index, _ = kt._keras_history
        key = (id(layer), node_index)
        if state.get(key) == "done":
            stack.pop()
            continue
        node = layer._inbound_nodes[node_index]
        if node.is_input:
            raise ValueError(f"segment export: input {kt.name!r} is needed but not fed")
        pending = [t for t in keras_inputs(node) if id(t) not in feeds
                   and state.get((id(t._keras_history[0]), t._keras_history[1])) != "done"]
        if pending:  # a functional graph has no cycles: the inputs are done before this node is met again
            stack.extend(pending)
            continue
        state[key] = "done"
        order.append((key, layer, node))
        stack.pop()

    done = {}

    def value(kt):
        if id(kt) in feeds:
            return feeds[id(kt)]
        layer, node_index, tensor_index = kt._keras_history
        return done[(id(layer), node_index)][tensor_index]

    fill = lambda t: value(t) if hasattr(t, "_keras_history") else t  # noqa: E731
    for key, layer, node in order:
        args = tf.nest.map_structure(fill, node.call_args)
        kwargs = tf.nest.map_structure(fill, dict(node.call_kwargs))
        if getattr(layer, "_expects_training_arg", False):
            kwargs["training"] = False
        done[key] = tf.nest.flatten(layer(*args, **kwargs))
    return [value(t) for t in targets]


def segment_functions(net, exits=None):
    """{"exit_k": tf.function} running the network from stage k-1's features to exit k (see module doc).

    `exits` (increasing exit indices, the last exit among them; default all): only those exits get a
    segment, each from the previous listed exit's features, so a left-out exit's head never runs (unless
    the next exit reads its logits: Inline Subnetwork Collaboration, then the segment computes them)."""
    import tensorflow as tf
    from keras_layers.models.multi_exit_net import exit_names, stage_outputs

    names, stages = exit_names(net), stage_outputs(net)
    exits = list(range(len(names))) if exits is None else [int(k) for k in exits]
    if not exits or exits[-1] != len(names) - 1 or any(b <= a for a, b in zip(exits, exits[1:])):
        raise ValueError(f"exits must be increasing exit indices ending at the last ({len(names) - 1}); "
                         f"received exits={exits!r}")
    logits = [net._nested_outputs[n] for n in names]
    functions = {}
    for i, k in enumerate(exits):
        name, prev = names[k], (exits[i - 1] if i else None)
        head = net.get_layer(name)
        fed = [(net.inputs[0], "image")] if prev is None else [(stages[prev], "features")]
        if prev == k - 1 and head.inline_collaboration:
            fed.append((logits[k - 1], "logits"))  # fed from exit k-1's output of that name
        targets = [("logits", logits[k])] + ([("features", stages[k])] if k < len(names) - 1 else [])
        specs = [tf.TensorSpec((1, *t.shape[1:]), tf.float32, name=n) for t, n in fed]

        def make(fed=fed, targets=targets):
            def fn(*inputs):
                outs = _replay({id(t): x for (t, _), x in zip(fed, inputs)}, [t for _, t in targets])
                return {n: o for (n, _), o in zip(targets, outs)}
            return fn

        functions[name] = tf.function(make(), input_signature=specs)
    return functions


# ---------------------------------------------------------------- the family plugin

def given_thresholds(exit_thresholds, names):
    """The early-exit thresholds of exits 0 .. K-2 from `exit_thresholds`: a list (one per exit, the
    last one ignored, or one per exit but the last) or {"exit_0": t0, ...} with the same keys. None (JSON
    null): that exit is left out of the bundle."""
    values = exit_thresholds
    if isinstance(exit_thresholds, dict):
        want = [f"exit_{k}" for k in range(len(exit_thresholds))]
        if sorted(exit_thresholds, key=lambda n: int(str(n).split("_")[-1])) != want:
            raise ValueError(f"exit_thresholds keys must be {', '.join(want)}; received "
                             f"exit_thresholds={exit_thresholds!r}")
        values = [exit_thresholds[k] for k in want]
    if len(values) not in (len(names) - 1, len(names)):
        raise ValueError(f"exit_thresholds needs one value per exit but the last ({len(names) - 1}); "
                         f"received exit_thresholds={exit_thresholds!r}")
    return [None if t is None else float(t) for t in list(values)[:len(names) - 1]]


@register
class MultiExit(Family):
    """model.json: "exits" (stage names in order), "threshold" (one per exit but the last, or one for all)."""

    kind = "multi_exit"
    policy_options = ("exit_thresholds",)

    def detect(self, net):
        outputs = self.output_names(net)
        return bool(outputs) and all(k.startswith("exit_") and k[5:].isdigit() for k in outputs)

    def selects(self, options):
        return not options.exit_thresholds

    def stages(self, net, mode, selection, options, log):
        from keras_layers.models.multi_exit_net import exit_names
        from pipelines.export import tflite
        from pipelines.export.convert import Conversion

        names = exit_names(net)
        cost_of, chosen = kept_exit_madds(net, tuple(net.input_shape[1:])), None
        costs = cost_of(range(len(names)))  # every exit kept; the search reads the same count from cost_of
        if options.exit_thresholds:
            thresholds = given_thresholds(options.exit_thresholds, names)
        else:
            stage = STAGE_MADDS if options.stage_madds is None else float(options.stage_madds)
            budget, first = options.budget * (costs[-1] + stage), costs[0] + stage
            if budget < first:
                raise ValueError(f"budget must be >= the first exit's share of the last exit's cost "
                                 f"({first / (costs[-1] + stage):.3f}) at stage_madds={stage:.0f} (MAdds a stage; "
                                 f"0 counts MAdds alone); received budget={options.budget!r}")
            x, y = selection
            probs = exit_probabilities(net, x)
            found = search_policy(probs, y, cost_of, budget, stage)
            # in model.json: probabilities (inf, "never stop here", becomes 1.0); the selection's numbers
            # are those of the thresholds as written, under the runner's rule
            thresholds = [min(max(t, 0.0), 1.0) if k in found["exits"] else None
                          for k, t in enumerate(found["thresholds"][:-1])]
        # exits with a None threshold are left out: the segments, the stage MAdds and the policy skip them
        kept = [k for k, t in enumerate(thresholds) if t is not None] + [len(names) - 1]
        dropped = [names[k] for k in range(len(names)) if k not in kept]
        costs = cost_of(kept)
        if dropped:
            log(f"multi-exit: {', '.join(dropped)} left out of the bundle (null threshold)" if options.exit_thresholds
                else f"multi-exit: {', '.join(dropped)} left out of the bundle (the selection counts "
                     f"{stage:.0f} MAdds a stage; an exit under {MIN_EXIT_SHARE:.0%} of the images is never kept)")
        thresholds, names = [thresholds[k] for k in kept[:-1]], [names[k] for k in kept]
        if not options.exit_thresholds:
            every = list(range(len(kept)))  # the bundle's own exits, all kept
            got = outcome(probs[kept], y, thresholds + [0.0], *policy_costs(costs, every, len(kept), stage))
            chosen = {"split": "validation", "images": int(len(x)), "budget_fraction": float(options.budget),
                      "stage_madds": stage, "budget_cost": float(budget), "accuracy": got["accuracy"],
                      "avg_madds": got["avg_madds"], "avg_cost": got["avg_cost"], "dropped_exits": dropped}
            log(f"multi-exit: {len(kept)} stages, thresholds {[round(t, 3) for t in thresholds]} for "
                f"{options.budget:g} x the last exit's cost, chosen on {len(x)} validation images")
        data = tflite.convert_signatures(segment_functions(net, kept), net, mode)
        tflite.assert_builtin_only(data)
        spec = {"kind": self.kind, "exits": names, "threshold": thresholds,
                "stages": {n: {"file": "model.tflite", "signature": n, "logits": "logits",
                               "madds": costs[i] - (costs[i - 1] if i else 0)} for i, n in enumerate(names)}}
        if chosen:
            spec["threshold_selection"] = chosen
        return Conversion.of(data, mode), {}, spec

    def validate_spec(self, spec, stages):
        exits = spec.get("exits")
        need(isinstance(exits, list) and exits, f"model.json: exits must be a non-empty list; received exits={exits!r}")
        for i, e in enumerate(exits):
            need_stage(stages, f"exits[{i}]", e)
        th = spec.get("threshold")
        ths = th if isinstance(th, list) else [th] * (len(exits) - 1)
        need(len(ths) == len(exits) - 1,
             f"model.json: threshold needs one value per exit but the last ({len(exits) - 1}); received threshold={th!r}")
        for i, t in enumerate(ths):
            need_probability(f"threshold[{i}]", t)
        spec["thresholds"] = [float(t) for t in ths]

    def run_policy(self, bundle, image):
        exits, thresholds = bundle.spec["exits"], bundle.spec["thresholds"]
        state, ran = {}, []
        for k, name in enumerate(exits):
            ran.append(name)
            logits = bundle.logits(name, image, state)
            if k == len(exits) - 1 or stops(top_probability(logits), thresholds[k]):
                return name, logits, ran

    def keras_policy(self, net, spec, images):
        from pipelines.export.checks import keras_outputs

        out = keras_outputs(net, images)
        names = spec["exits"]
        k = exit_points(np.stack([top_probability(out[n]) for n in names]), list(spec["thresholds"]) + [0.0])
        return np.asarray(names)[k], np.stack([out[names[j]][i] for i, j in enumerate(k)])
