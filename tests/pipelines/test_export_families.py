"""Export of dynamic families: the staged bundle `bundle_runner` runs (early exit / gate) agrees with Keras."""
import json
from pathlib import Path

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import models
from pipelines.export import tflite
from pipelines import export
from pipelines.mlops import release
from pipelines.export import families
from pipelines.export.families import basisnet as basisnet_plugin
from pipelines.export.families import multi_exit as budgeted
from pipelines.export.bundle import Bundle, softmax
from pipelines import data as data_mod

SHAPE = (16, 16, 1)
DATA = {"name": "digits", "image_size": 16, "data_dir": None}
N = 12


def quiet(*_):
    pass


def warm_bn(net, x):
    """A few training-mode passes so BN statistics move off identity (outputs not all alike)."""
    for _ in range(3):
        net(x, training=True)
    return net


@pytest.fixture(scope="module")
def images():
    x, y, _ = data_mod.as_numpy(split="validation", limit=N, **DATA)
    return x, y


def save(net, tmp_path, name):
    path = Path(tmp_path) / f"{name}.keras"
    net.save(path)
    return path


@pytest.fixture(scope="module")
def basisnet(images, tmp_path_factory):
    keras.utils.set_random_seed(0)
    net = models.build("basisnet_mobilenet_v3", input_shape=SHAPE, num_classes=10, num_bases=3, width_multiplier=0.25,
                       last_channels=64, head_channels=64, preview_channels=32, preview_blocks=2,
                       synthesized=[3, 5, 6, 7, 8, 9], synthesize_depthwise=True)
    warm_bn(net, images[0])
    return save(net, tmp_path_factory.mktemp("basisnet"), "basisnet"), net


@pytest.fixture(scope="module")
def multi_exit(images, tmp_path_factory):
    keras.utils.set_random_seed(0)
    net = models.build("multi_exit_net", input_shape=SHAPE, num_classes=10, num_exits=3, width_multiplier=0.25,
                       depth_multiplier=0.25, last_channels=32)
    warm_bn(net, images[0])
    return save(net, tmp_path_factory.mktemp("multi_exit"), "multi_exit"), net


def run_export(path, out, **kwargs):
    return release.export_model(path, kwargs.pop("quantize", "float32"), out, parity_images=N, latency_runs=3,
                               log_to_mlflow=False, data="digits", image_size=16, log=quiet, **kwargs)


def test_family_is_read_off_the_model(basisnet, multi_exit):
    assert families.family_of(basisnet[1]).kind == "basisnet"
    assert families.family_of(multi_exit[1]).kind == "multi_exit"
    assert families.family_of(models.build("ds_mobilenet_v1", SHAPE, 10, gate_hidden=8)).kind == "ds_net"
    assert families.family_of(models.build("mobilenet_v2", SHAPE, 10, width_multiplier=0.25, depth_multiplier=0.25)).kind == "plain"


def test_basisnet_bundle_early_exits_and_agrees_with_keras(basisnet, images, tmp_path):
    x, y = images
    basisnet, net = basisnet
    out = net.predict(x, verbose=0)
    conf = softmax(out["preview_logits"]).max(-1)
    threshold = float(np.median(conf))  # about half the images stop at the preview
    s = run_export(basisnet, tmp_path / "b", threshold=threshold)
    doc = json.loads((tmp_path / "b" / "model.json").read_text())
    assert s["kind"] == doc["kind"] == "basisnet" and doc["threshold"] == threshold
    assert doc["stages"]["preview"]["signature"] == "preview" and doc["input"]["shape"] == [1, *SHAPE]
    assert doc["checks"]["parity"]["agreement"] == 1.0 and doc["checks"]["parity"]["stage_agreement"] == 1.0
    preds = Bundle.load(tmp_path / "b").predict(x)
    stopped = np.array([p.stopped_at == "preview" for p in preds])
    np.testing.assert_array_equal(stopped, conf >= threshold)
    assert stopped.any() and not stopped.all()
    reference = np.where(stopped[:, None], out["preview_logits"], out["logits"])
    np.testing.assert_allclose(np.stack([p.logits for p in preds]), reference, atol=1e-3)
    cost = [p.madds for p in preds]
    assert min(cost) == doc["stages"]["preview"]["madds"] < max(cost)


def test_basisnet_threshold_picked_on_validation(basisnet, images):
    """Without a threshold the export picks one with the experiment's sweep on the validation images (the
    same function the plugin's `stages` calls before converting; a full export is tested above)."""
    net = basisnet[1]
    picked = basisnet_plugin.select_threshold(net, images, log=quiet)
    madds = basisnet_plugin.stage_madds(net, SHAPE)
    outputs = basisnet_plugin.predict(net, images[0])
    rule = basisnet_plugin.select(outputs, images[1], madds, min_past=basisnet_plugin.MIN_SPECIALIST_SHARE)
    assert {k: picked[k] for k in rule} == rule
    table = basisnet_plugin.early_termination(outputs, images[1], madds)
    assert picked["past_first_stage"] == pytest.approx(1 - picked["stopped"])
    assert picked["past_first_stage"] >= basisnet_plugin.MIN_SPECIALIST_SHARE - 1e-9
    assert picked["accuracy"] >= table["reference_accuracy"] - 0.005 - 1e-9


def test_basisnet_threshold_is_chosen_on_more_images_than_parity(basisnet, tmp_path):
    """The threshold is chosen on `selection_images` validation images (default: the whole split of
    digits), not only on the few parity images: on a handful, 'everything stops at the preview' ties
    with the full model too easily."""
    s = run_export(basisnet[0], tmp_path / "b", selection_images=4 * N)
    doc = json.loads((tmp_path / "b" / "model.json").read_text())
    assert doc["threshold_selection"]["images"] == 4 * N and s["parity"]["images"] == N
    x, y, _ = data_mod.as_numpy(split="validation", limit=4 * N, **DATA)
    want = basisnet_plugin.select_threshold(basisnet[1], (x, y), basisnet_plugin.stage_madds(basisnet[1], SHAPE), log=quiet)
    assert doc["threshold"] == pytest.approx(want["threshold"])


def test_multi_exit_bundle_early_exits_and_agrees_with_keras(multi_exit, images, tmp_path):
    x, y = images
    multi_exit, net = multi_exit
    probs = budgeted.exit_probabilities(net, x)
    thresholds = [float(np.median(probs[0].max(-1))), float(np.median(probs[1].max(-1)))]
    s = run_export(multi_exit, tmp_path / "m", exit_thresholds={"exit_0": thresholds[0], "exit_1": thresholds[1]})
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert s["kind"] == doc["kind"] == "multi_exit" and doc["exits"] == ["exit_0", "exit_1", "exit_2"]
    assert doc["threshold"] == thresholds and sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(export.BUNDLE_FILES)
    preds = Bundle.load(tmp_path / "m").predict(x)
    want = budgeted.exit_points(probs.max(-1), thresholds + [0.0])
    got = np.array([int(p.stopped_at.split("_")[1]) for p in preds])
    np.testing.assert_array_equal(got, want)
    assert (got == 0).any() and (got > 0).any()
    keras_out = net.predict(x, verbose=0)
    reference = np.stack([keras_out[f"exit_{k}"][i] for i, k in enumerate(want)])
    np.testing.assert_allclose(np.stack([p.logits for p in preds]), reference, atol=1e-3)
    assert s["parity"]["agreement"] == 1.0 and s["parity"]["stage_agreement"] == 1.0


def test_multi_exit_thresholds_from_budget(multi_exit, tmp_path):
    from keras_layers.models.multi_exit_net import exit_madds

    costs = exit_madds(multi_exit[1], SHAPE)
    s = run_export(multi_exit[0], tmp_path / "m", budget=0.6, selection_images=N, stage_madds=0)
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    sel = doc["threshold_selection"]
    assert sel["stage_madds"] == 0 and sel["avg_cost"] == pytest.approx(sel["avg_madds"])
    assert sel["budget_cost"] == pytest.approx(0.6 * costs[-1]) and sel["avg_madds"] <= sel["budget_cost"] + 1
    assert all(0 <= t <= 1 for t in doc["threshold"]) and len(doc["threshold"]) == len(doc["exits"]) - 1
    # an exit no selection image leaves at is left out of the bundle (the last exit always stays)
    assert doc["exits"][-1] == "exit_2" and sorted(doc["exits"] + sel["dropped_exits"]) == ["exit_0", "exit_1", "exit_2"]
    # the bundle spends what the selection measured on the same validation images
    assert s["parity"]["stage_agreement"] == 1.0
    assert s["parity"]["avg_madds"] == pytest.approx(sel["avg_madds"], rel=1e-6)


@pytest.mark.parametrize("mode", ["int8", "qat"])
def test_dynamic_family_refuses_integer_modes_naming_the_layer(basisnet, mode, tmp_path):
    with pytest.raises(tflite.ConversionError, match=rf"quantize='{mode}' is not supported by layer '.+' \("):
        run_export(basisnet[0], tmp_path / "b", quantize=mode)
    assert not (tmp_path / "b").exists()


def test_bad_budget_names_the_field(multi_exit):
    with pytest.raises(ValueError, match="budget=1.5"):
        run_export(multi_exit[0], "unused", budget=1.5)


def test_ds_net_bundle_runs_the_gate_and_agrees_with_keras(images, tmp_path):
    from keras_layers.models import ds_mobilenet_v1 as ds

    x, _ = images
    keras.utils.set_random_seed(0)
    net = models.build("ds_mobilenet_v1", SHAPE, 10, width_multipliers=(0.5, 1.0), gate_hidden=8)
    warm_bn(net, x)
    gate = ds.gate_layer(net)  # shift the gate's bias so that its choice splits these images
    scores = net.predict(x, verbose=0)["gate_scores"]
    d = np.sort(scores[:, 0] - scores[:, 1])
    i = 3 + int(np.argmax(np.diff(d)[3:-3]))  # the widest gap between the middle images' score margins
    gate.b2.assign(gate.b2.numpy() - np.array([(d[i] + d[i + 1]) / 2, 0.0], np.float32))
    path = save(net, tmp_path, "ds")
    s = run_export(path, tmp_path / "d")
    doc = json.loads((tmp_path / "d" / "model.json").read_text())
    assert s["kind"] == doc["kind"] == "ds_net" and doc["gate"] == "front" and doc["gate_output"] == "gate_scores"
    assert [w for w, _ in doc["widths"]] == [0.5, 1.0]
    assert export.bundle_files(tmp_path / "d") == [*export.BUNDLE_FILES, "back_0_5.tflite", "back_1.tflite"]
    preds = Bundle.load(tmp_path / "d").predict(x)
    out = net.predict(x, verbose=0)
    want = [doc["widths"][c][1] for c in out["gate_scores"].argmax(-1)]
    assert [p.stopped_at for p in preds] == want and len(set(want)) == 2  # the gate picks both widths
    table = ds.choice_madds(net, SHAPE)
    assert sorted({p.madds for p in preds}) == pytest.approx(sorted({table[c] for c in out["gate_scores"].argmax(-1)}))
    agree = np.mean(np.argmax([p.logits for p in preds], -1) == out["logits"].argmax(-1))
    assert agree == s["parity"]["agreement"] == 1.0


@pytest.mark.parametrize("given,match", [({"first": 0.5}, "keys must be exit_0"), ({"exit_0": 0.5}, "one value per exit")])
def test_bad_exit_thresholds_name_the_field(multi_exit, given, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        run_export(multi_exit[0], tmp_path / "m", exit_thresholds=given)
    assert not (tmp_path / "m").exists()
