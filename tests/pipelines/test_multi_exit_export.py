"""The multi-exit bundle (one model.tflite, a signature per exit segment) against the Keras model:
each segment's parity, the thresholds and MAdds in model.json, and the runner's early exit against the
budgeted-inference reference (`exit_points`)."""
import json

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.models import build
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
    with pytest.raises(ValueError, match=r"budget must be >= the first exit's share .+\(0\.\d+\); received budget=0.01"):
        export.export_net(net, tmp_path / "b", export_options(budget=0.01), DATASET, validation, log=quiet)
    with pytest.raises(ValueError, match=r"exit_thresholds must be probabilities in \[0, 1\]"):
        export.export_net(net, tmp_path / "b", export_options(exit_thresholds=[0.5, 1.5]), DATASET, validation,
                          log=quiet)
    assert not list(tmp_path.iterdir())  # nothing written before the error
