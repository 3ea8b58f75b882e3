"""The multi-exit bundle (one model.tflite, a signature per exit segment) against the Keras model:
each segment's parity, the thresholds and MAdds in model.json, and the runner's early exit against the
budgeted-inference reference (`exit_points`)."""
import json

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.models import build
from keras_layers import count_madds
from keras_layers.models.multi_exit_net import exit_madds
from pipelines import export
from pipelines.export import tflite
from pipelines.export.bundle import Bundle
from pipelines.export.families import multi_exit

SHAPE = (16, 16, 1)
DATASET = {"name": "noise", "input_shape": list(SHAPE), "num_classes": 4}


def quiet(*_):
    pass


def export_options(**fields):
    return export.ExportOptions(parity_images=12, selection_images=12, latency_runs=2, **fields)


@pytest.fixture(scope="module", params=["mobilenet_v2", "mobilenet_v3"])
def exported(tmp_path_factory, request):
    keras.utils.set_random_seed(0)
    net = build("multi_exit_net", input_shape=SHAPE, num_classes=4, num_exits=3, width_multiplier=0.25,
                depth_multiplier=0.25, last_channels=32, backbone=request.param)
    out = tmp_path_factory.mktemp("export") / "bundle"
    x = np.random.RandomState(0).randn(12, *SHAPE).astype("float32") * 3
    conf = multi_exit.exit_probabilities(net, x).max(-1)
    thresholds = [float(np.median(conf[0])), float(np.median(conf[1]))]  # some exit at each exit
    export.export_net(net, out, export_options(exit_thresholds=thresholds), DATASET,
                      validation=(x, np.zeros(len(x), int)), log=quiet)
    return net, out, x, json.loads((out / "model.json").read_text()), thresholds


def test_exported_segments_match_keras(exported):
    net, out, x, doc, _ = exported
    data = (out / "model.tflite").read_bytes()
    tflite.assert_builtin_only(data)
    runner, state = tflite.Runner(data), {"image": x}
    sigs = runner.signatures()
    # exit 1 and 2 read the previous exit's features and logits (ISC), never the image
    assert sorted(sigs["exit_1"]["inputs"]) == sorted(sigs["exit_2"]["inputs"]) == ["features", "logits"]
    keras_out = net(x, training=False)
    for name in doc["exits"]:
        got = runner.run({n: state[n] for n in sigs[name]["inputs"]}, signature=name)
        p = tflite.parity(keras_out[name].numpy(), got["logits"])
        assert p["max_abs_error"] < 1e-4 and p["top1_agreement"] == 1.0, (name, p)
        state = {**state, **got}


def test_model_json_has_thresholds_and_segment_madds(exported):
    net, _, _, doc, thresholds = exported
    assert doc["kind"] == "multi_exit" and doc["exits"] == ["exit_0", "exit_1", "exit_2"]
    assert doc["threshold"] == pytest.approx(thresholds)
    assert np.cumsum([doc["stages"][n]["madds"] for n in doc["exits"]]).tolist() == exit_madds(net, SHAPE)
    assert doc["input"]["shape"] == [1, *SHAPE] and doc["num_classes"] == 4


def test_on_device_early_exit_matches_keras_budgeted_path(exported):
    net, out, x, _, thresholds = exported
    preds = Bundle.load(out).predict(x)
    exits = np.array([int(p.stopped_at.split("_")[1]) for p in preds])
    probs = multi_exit.exit_probabilities(net, x)
    want_exits = multi_exit.exit_points(probs.max(-1), np.asarray(thresholds + [0.0]))
    np.testing.assert_array_equal(exits, want_exits)
    np.testing.assert_array_equal([p.index for p in preds], probs.argmax(-1)[want_exits, np.arange(len(x))])
    assert len(set(exits.tolist())) > 1
    assert np.mean([p.madds for p in preds]) == pytest.approx(np.mean(np.asarray(exit_madds(net, SHAPE))[exits]))


def test_export_rejects_bad_thresholds_and_budget(exported, tmp_path):
    net, _, x, _, _ = exported
    validation = (x, np.zeros(len(x), int))
    with pytest.raises(ValueError, match=r"one value per exit but the last \(2\); received exit_thresholds=\[0.5\]"):
        export.export_net(net, tmp_path / "b", export_options(exit_thresholds=[0.5]), DATASET, validation, log=quiet)
    with pytest.raises(ValueError, match=r"budget must be >= the first exit's share .+\(0\.\d+\) at stage_madds=600000 .+; received budget=0.01"):
        export.export_net(net, tmp_path / "b", export_options(budget=0.01), DATASET, validation, log=quiet)
    with pytest.raises(ValueError, match=r"exit_thresholds must be probabilities in \[0, 1\]"):
        export.export_net(net, tmp_path / "b", export_options(exit_thresholds=[0.5, 1.5]), DATASET, validation,
                          log=quiet)
    assert not list(tmp_path.iterdir())  # nothing written before the error


def test_keeps_exit_needs_one_example_and_the_minimum_share():
    assert multi_exit.MIN_EXIT_SHARE == 0.01
    assert multi_exit.keeps_exit(0.01) and not multi_exit.keeps_exit(0.005) and not multi_exit.keeps_exit(0.0)
    assert multi_exit.keeps_exit(0.001, min_share=0.0) and not multi_exit.keeps_exit(0.0, min_share=0.0)


@pytest.fixture(scope="module")
def plain_dropped(tmp_path_factory):
    """A plain-trained multi-exit net (no GE / ISC) exported from a budget whose policy keeps exits 1 and 2: the
    bundle leaves exit 0 out (the search is patched to that choice; the rest is real)."""
    keras.utils.set_random_seed(1)
    net = build("multi_exit_net", input_shape=SHAPE, num_classes=4, num_exits=3, width_multiplier=0.25,
                depth_multiplier=0.25, last_channels=32, gradient_equilibrium=False, inline_collaboration=False)
    x = np.random.RandomState(1).randn(12, *SHAPE).astype("float32") * 3
    y = np.random.RandomState(2).randint(0, 4, len(x))
    median1 = float(np.median(multi_exit.exit_probabilities(net, x)[1].max(-1)))
    patch = pytest.MonkeyPatch()
    patch.setattr(multi_exit, "search_policy",
                  lambda probs, labels, costs, budget, stage: {"exits": [1, 2], "thresholds": [np.inf, median1, -np.inf]})
    out = tmp_path_factory.mktemp("export") / "bundle"
    try:
        export.export_net(net, out, export_options(budget=0.9, stage_madds=0), DATASET, validation=(x, y), log=quiet)
    finally:
        patch.undo()
    return net, out, x, y, json.loads((out / "model.json").read_text()), median1


def test_unused_exit_is_left_out_and_its_head_not_counted(plain_dropped):
    net, out, _, _, doc, median1 = plain_dropped
    assert doc["exits"] == ["exit_1", "exit_2"] and doc["threshold"] == pytest.approx([median1])
    assert doc["threshold_selection"]["dropped_exits"] == ["exit_0"]
    sigs = tflite.Runner((out / "model.tflite").read_bytes()).signatures()
    assert sorted(sigs) == ["exit_1", "exit_2"] and sigs["exit_1"]["inputs"] == ["image"]
    full = exit_madds(net, SHAPE)
    kept = np.cumsum([doc["stages"][n]["madds"] for n in doc["exits"]]).tolist()
    assert kept == exit_madds(net, SHAPE, exits=[1, 2])
    # exit 0's head is all that is saved: the backbone still runs through stage 0
    assert 0 < full[2] - kept[1] < full[0]


def test_bundle_without_the_unused_exit_matches_keras(plain_dropped):
    net, out, x, y, doc, median1 = plain_dropped
    preds = Bundle.load(out).predict(x)
    probs = multi_exit.exit_probabilities(net, x)
    want = multi_exit.exit_points(probs.max(-1), np.asarray([np.inf, median1, 0.0]))
    got = np.array([int(p.stopped_at.split("_")[1]) for p in preds])
    np.testing.assert_array_equal(got, want)
    assert set(got.tolist()) == {1, 2}
    np.testing.assert_array_equal([p.index for p in preds], probs.argmax(-1)[want, np.arange(len(x))])
    acc, _ = multi_exit.evaluate(probs, y, [np.inf, median1, 0.0], exit_madds(net, SHAPE))
    assert doc["threshold_selection"]["accuracy"] == pytest.approx(acc)


def test_null_threshold_leaves_the_exit_out(exported, tmp_path):
    """A given threshold of None (JSON null) drops that exit; the others' thresholds stay as given."""
    net, _, x, doc, thresholds = exported
    export.export_net(net, tmp_path / "b", export_options(exit_thresholds={"exit_0": thresholds[0], "exit_1": None}),
                      DATASET, validation=(x, np.zeros(len(x), int)), log=quiet)
    got = json.loads((tmp_path / "b" / "model.json").read_text())
    assert got["exits"] == ["exit_0", "exit_2"] and got["threshold"] == pytest.approx([thresholds[0]])
    assert "threshold_selection" not in got
    preds = Bundle.load(tmp_path / "b").predict(x)
    probs = multi_exit.exit_probabilities(net, x)
    want = multi_exit.exit_points(probs.max(-1), np.asarray([thresholds[0], np.inf, 0.0]))
    np.testing.assert_array_equal([int(p.stopped_at.split("_")[1]) for p in preds], want)
    np.testing.assert_array_equal([p.index for p in preds], probs.argmax(-1)[want, np.arange(len(x))])
    # the default net feeds exit 1's logits to exit 2 (ISC): exit 2's segment computes exit 1's head itself
    assert sum(got["stages"][n]["madds"] for n in got["exits"]) == exit_madds(net, SHAPE)[-1]


def test_exit_madds_of_kept_exits():
    plain = build("multi_exit_net", input_shape=SHAPE, num_classes=4, num_exits=3, width_multiplier=0.25,
                  depth_multiplier=0.25, last_channels=32, gradient_equilibrium=False, inline_collaboration=False)
    isc = build("multi_exit_net", input_shape=SHAPE, num_classes=4, num_exits=3, width_multiplier=0.25,
                depth_multiplier=0.25, last_channels=32)
    for net in (plain, isc):
        assert exit_madds(net, SHAPE, exits=[0, 1, 2]) == exit_madds(net, SHAPE)
    full = exit_madds(plain, SHAPE)
    assert exit_madds(plain, SHAPE, exits=[2]) == [count_madds(plain, SHAPE, output="exit_2")]
    assert exit_madds(plain, SHAPE, exits=[1, 2])[1] < full[2]
    # with Inline Subnetwork Collaboration exit 1 reads exit 0's logits: leaving exit 0 out saves nothing
    assert exit_madds(isc, SHAPE, exits=[1, 2])[1] == exit_madds(isc, SHAPE)[2]
    for bad in ([2, 1], [], [0, 3]):
        with pytest.raises(ValueError, match="exit"):
            exit_madds(plain, SHAPE, exits=bad)


def test_segments_of_kept_exits_need_the_last():
    net = build("multi_exit_net", input_shape=SHAPE, num_classes=4, num_exits=3, width_multiplier=0.25,
                depth_multiplier=0.25, last_channels=32)
    with pytest.raises(ValueError, match=r"exits=\[0, 1\]"):
        multi_exit.segment_functions(net, [0, 1])


def test_kept_exit_madds_counts_each_set_once(monkeypatch):
    """The search asks for every set of exits at every budget: each set's MAdds are counted once, and they are
    `exit_madds(..., exits=kept)`'s."""
    import keras_layers.models.multi_exit_net as men

    net = build("multi_exit_net", input_shape=SHAPE, num_classes=4, num_exits=3, width_multiplier=0.25,
                depth_multiplier=0.25, last_channels=32, gradient_equilibrium=False, inline_collaboration=False)
    want = {kept: exit_madds(net, SHAPE, exits=list(kept)) for kept in multi_exit.exit_subsets(3)}
    counted = []
    real = men.exit_madds
    monkeypatch.setattr(men, "exit_madds", lambda *a, **kw: counted.append(kw["exits"]) or real(*a, **kw))
    cost_of = multi_exit.kept_exit_madds(net, SHAPE)
    for _ in range(3):
        for kept in multi_exit.exit_subsets(3):
            assert cost_of(kept) == want[kept] and cost_of(list(kept)) == want[kept]
    assert sorted(map(tuple, counted)) == sorted(multi_exit.exit_subsets(3))
