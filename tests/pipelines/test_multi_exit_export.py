import json

import numpy as np
import pytest

from keras_layers import _env  # noqa: F401
import tf_keras as keras

from keras_layers.models import build
from keras_layers.models.multi_exit_net import exit_madds
from pipelines.export import budgeted, tflite
from pipelines.export.families import multi_exit

SHAPE = (16, 16, 1)


@pytest.fixture(scope="module", params=["prefixes", "segments"])
def exported(request, tmp_path_factory):
    keras.utils.set_random_seed(0)
    net = build("multi_exit_net", input_shape=SHAPE, num_classes=4, num_exits=3, width_multiplier=0.25,
                depth_multiplier=0.25, last_channels=32)
    out = tmp_path_factory.mktemp("export")
    x = np.random.RandomState(0).randn(12, *SHAPE).astype("float32") * 3
    probs = budgeted.exit_probabilities(net, x)
    conf = probs.max(-1)
    thresholds = [float(np.median(conf[0])), float(np.median(conf[1])), -np.inf]  # some exit at each exit
    manifest = multi_exit.export(net, out, thresholds=thresholds, layout=request.param)
    return net, out, x, manifest, thresholds


def tflite_exit_logits(out, manifest, x):
    """Logits of every exit from the exported files, run the way the layout prescribes."""
    if manifest["layout"] == "prefixes":
        return [tflite.Runner((out / e["file"]).read_bytes()).run(x)[e["output"]] for e in manifest["exits"]]
    runner, logits = tflite.Runner(out / multi_exit.MODEL_FILE), []
    state = {"image": x}
    for e in manifest["exits"]:
        got = runner.run({n: state[n] for n in e["inputs"]}, signature=e["signature"])
        logits.append(got["logits"])
        state = {"features": got.get("features"), "previous_logits": got["logits"]}
    return logits


def test_exported_exits_match_keras(exported):
    net, out, x, manifest, _ = exported
    keras_out = net(x, training=False)
    for e, got in zip(manifest["exits"], tflite_exit_logits(out, manifest, x)):
        tflite.assert_builtin_only((out / e["file"]).read_bytes())
        p = tflite.parity(keras_out[f"exit_{e['exit']}"].numpy(), got)
        assert p["max_abs_error"] < 1e-4 and p["top1_agreement"] == 1.0, (e, p)
    if manifest["layout"] == "prefixes":  # a prefix holds only what its exit needs
        sizes = [(out / e["file"]).stat().st_size for e in manifest["exits"]]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    else:  # exit 1 and 2 read the previous exit's logits (ISC) and features, never the image
        assert manifest["exits"][1]["inputs"] == ["features", "previous_logits"]


def test_manifest_has_thresholds_and_cumulative_madds(exported):
    net, out, _, manifest, thresholds = exported
    on_disk = json.loads((out / multi_exit.MANIFEST).read_text())
    assert on_disk == manifest
    assert [e["madds"] for e in manifest["exits"]] == exit_madds(net, SHAPE)
    assert [e["threshold"] for e in manifest["exits"]] == pytest.approx(thresholds[:2] + [0.0])
    assert manifest["input_shape"] == list(SHAPE) and manifest["num_classes"] == 4


def test_on_device_early_exit_matches_keras_budgeted_path(exported):
    net, out, x, _, thresholds = exported
    preds, exits, avg = multi_exit.run_exported(out, x)
    probs = budgeted.exit_probabilities(net, x)
    want_exits = budgeted.exit_points(probs.max(-1), np.asarray(thresholds))
    np.testing.assert_array_equal(exits, want_exits)
    np.testing.assert_array_equal(preds, probs.argmax(-1)[want_exits, np.arange(len(x))])
    assert len(set(exits.tolist())) > 1
    assert avg == pytest.approx(np.mean(np.asarray(exit_madds(net, SHAPE))[exits]))


def test_export_rejects_bad_thresholds_and_budget(exported, tmp_path):
    net, _, x, _, _ = exported
    with pytest.raises(ValueError, match="thresholds"):
        multi_exit.export(net, tmp_path, thresholds=[0.5])
    with pytest.raises(ValueError, match="layout='tiles'"):
        multi_exit.export(net, tmp_path, layout="tiles")
    with pytest.raises(ValueError, match="budget=1"):
        multi_exit.export(net, tmp_path, budget=1, validation=(x, np.zeros(len(x), int)))
    assert not list(tmp_path.iterdir())  # nothing written before the error
