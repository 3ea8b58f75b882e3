"""The bundle runner (`run-bundle`, and the MLflow TFLite flavour's predict) on hand-built bundles of
every model.json kind, checked against the Keras pieces they were converted from."""
import json

import numpy as np
import pytest

from pipelines.export import bundle as bundle_runner
from pipelines import cli
from pipelines.export.bundle import Bundle, BundleError, softmax
from tests import bundle_fixtures as bf


@pytest.fixture(scope="module")
def x():
    return bf.images(8)


def test_plain_bundle_matches_keras(tmp_path, x):
    _, ref = bf.plain(tmp_path)
    preds = Bundle.load(tmp_path).predict(x)
    want = ref(x)["main"]
    np.testing.assert_allclose(np.stack([p.logits for p in preds]), want, atol=1e-4)
    assert [p.index for p in preds] == list(want.argmax(-1))
    assert [p.label for p in preds] == [bf.LABELS[i] for i in want.argmax(-1)]
    assert all(p.stopped_at == "main" and p.stages == ["main"] and p.madds == 1000 and p.time_ms > 0 for p in preds)


@pytest.mark.parametrize("threshold", [0.0, 0.55, 1.0])
def test_basisnet_runs_specialist_only_when_preview_unsure(tmp_path, x, threshold):
    ref = bf.basisnet(tmp_path, threshold)(x)
    preds = Bundle.load(tmp_path).predict(x)
    for i, p in enumerate(preds):
        sure = softmax(ref["preview"][i]).max() >= threshold
        assert p.stages == (["preview"] if sure else ["preview", "specialist"])
        assert p.madds == (100 if sure else 1000)
        # the specialist got the preview's coefficients: its logits equal the Keras two-step reference
        np.testing.assert_allclose(p.logits, ref["preview" if sure else "specialist"][i], atol=1e-4)
    if threshold == 0.0:
        assert all(p.stopped_at == "preview" for p in preds)
    if threshold == 1.0:
        assert all(p.stopped_at == "specialist" for p in preds)


def test_multi_exit_stops_at_first_confident_exit(tmp_path, x):
    ref = bf.multi_exit(tmp_path, 0.5)(x)
    threshold = float(np.median(softmax(ref["exit_0"]).max(-1)))  # about half stop early
    spec = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**spec, "threshold": threshold}))
    preds = Bundle.load(tmp_path).predict(x)
    early = softmax(ref["exit_0"]).max(-1) >= threshold
    assert 0 < early.sum() < len(x)
    for i, p in enumerate(preds):
        stop = "exit_0" if early[i] else "exit_1"
        assert p.stopped_at == stop and p.stages == (["exit_0"] if early[i] else ["exit_0", "exit_1"])
        np.testing.assert_allclose(p.logits, ref[stop][i], atol=1e-4)
        assert 0 < p.tflite_ms <= p.time_ms


def test_tflite_ms_is_the_time_inside_litert_calls_only(tmp_path, x, monkeypatch):
    import time

    from pipelines.export import tflite

    bf.multi_exit(tmp_path, 0.5)
    spec = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**spec, "threshold": 1.0}))  # both exits run
    bundle = Bundle.load(tmp_path)
    family = type(bundle.family)
    policy, run_one = family.run_policy, tflite.Runner.run_one

    def slow_policy(self, b, image):  # Python time outside the LiteRT calls
        time.sleep(0.03)
        return policy(self, b, image)

    def slow_call(self, inputs, signature=None):  # time inside a LiteRT call
        time.sleep(0.01)
        return run_one(self, inputs, signature)

    monkeypatch.setattr(family, "run_policy", slow_policy)
    p = bundle.predict_one(x[0])
    assert p.stages == ["exit_0", "exit_1"]
    assert p.time_ms >= 30 and p.tflite_ms < p.time_ms - 25  # the policy's sleep is not LiteRT time
    monkeypatch.setattr(tflite.Runner, "run_one", slow_call)
    q = bundle.predict_one(x[0])
    assert q.tflite_ms >= 20 and q.time_ms >= q.tflite_ms + 25  # two calls counted, reset between images


def test_ds_net_runs_gate_then_chosen_width(tmp_path):
    x = bf.images(16, seed=3)
    ref = bf.ds_net(tmp_path)(x)
    preds = Bundle.load(tmp_path).predict(x)
    chosen = ref["gate"].argmax(-1)
    assert set(chosen) == {0, 1}, "fixture gate should pick both widths on these images"
    for i, p in enumerate(preds):
        stage = ["width_0.5", "width_1.0"][chosen[i]]
        assert p.stages == ["gate", stage] and p.stopped_at == stage
        assert p.madds == 10 + (200 if chosen[i] == 0 else 800)
        np.testing.assert_allclose(p.logits, ref[stage][i], atol=1e-4)


def test_run_bundle_command_reads_images_like_the_app(tmp_path, capsys):
    from PIL import Image

    _, ref = bf.plain(tmp_path / "bundle")
    pixels = np.random.RandomState(5).randint(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    paths = []
    for i, px in enumerate(pixels):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(px).save(paths[-1])
    normed = (pixels / 255.0 - np.array(bf.NORM["mean"])) / np.array(bf.NORM["std"])
    bundle = Bundle.load(tmp_path / "bundle")
    np.testing.assert_allclose(bundle.preprocess(paths[0]), normed[0], atol=1e-5)
    assert cli.main(["run-bundle", str(tmp_path / "bundle"), *paths, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = ref(normed.astype("float32"))["main"].argmax(-1)
    assert [r["label"] for r in rows] == [bf.LABELS[i] for i in want]
    assert all(r["stopped_at"] == "main" and 0 < r["tflite_ms"] <= r["time_ms"] for r in rows)
    assert cli.main(["run-bundle", str(tmp_path / "bundle"), paths[0]]) == 0
    out = capsys.readouterr().out
    assert "stopped at" in out and bf.LABELS[want[0]] in out and "ms per image" in out and "inside LiteRT" in out


@pytest.mark.parametrize("patch,match", [
    ({"kind": "tree"}, r"unknown kind='tree'"),
    ({"kind": "basisnet", "threshold": 1.5}, r"stages.preview=None"),
    ({"stages": {"main": {"file": "nope.tflite"}}}, r"stages.main.file='nope.tflite' not found"),
    ({"stages": {"main": {"file": "model.tflite", "signature": "serve"}}}, r"signature='serve' not in model.tflite"),
    ({"format": 7}, r"format=7"),
])
def test_bad_model_json_is_one_line_error(tmp_path, patch, match):
    bf.plain(tmp_path)
    spec = json.loads((tmp_path / "model.json").read_text())
    spec.update(patch)
    (tmp_path / "model.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match=match):
        Bundle.load(tmp_path)


def test_threshold_must_be_probability(tmp_path):
    bf.basisnet(tmp_path, 0.5)
    spec = json.loads((tmp_path / "model.json").read_text())
    spec["threshold"] = 1.5
    (tmp_path / "model.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match=r"threshold=1.5"):
        bundle_runner.read_spec(tmp_path)
    assert cli.main(["run-bundle", str(tmp_path), str(tmp_path / "model.json")]) == 2


def test_confidence_equal_to_the_threshold_stops_in_selection_and_in_the_runner(tmp_path, x):
    """One early-exit rule: a preview confidence exactly at the threshold stops in the threshold
    selection (`early_termination`) as it does in the runner (it did not in selection, which used `>`)."""
    from pipelines.export.families import basisnet

    bf.basisnet(tmp_path, 0.5)
    bundle = Bundle.load(tmp_path)
    probs = np.stack([softmax(bundle.logits_of("preview", bundle.run_stage("preview", x[i:i + 1], {})))
                      for i in range(len(x))])
    conf = probs.max(-1)
    threshold = float(np.sort(conf)[len(conf) // 2])  # exactly one image's confidence
    spec = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**spec, "threshold": threshold}))
    ran = np.array([p.stopped_at == "preview" for p in Bundle.load(tmp_path).predict(x)])
    assert ran[conf == threshold].all() and 0 < ran.sum() < len(x)
    labels = probs.argmax(-1)
    table = basisnet.early_termination({"preview_probs": probs, "probs": probs}, labels,
                                       {"preview": 100.0, "full": 1000.0}, thresholds=[threshold])
    assert table["stopped"][0] == ran.mean()


def test_model_json_text_is_strict_json_with_null_for_non_finite_numbers():
    """Android's JSON parsers reject NaN / Infinity: a check with nothing to measure is written as null."""
    import json as json_mod

    from pipelines.export.bundle import json_text

    doc = {"checks": {"parity": {"max_abs_error": float("nan"), "per_stage": [1.0, float("inf")]}}, "ok": 0.5}
    text = json_text(doc)
    assert "NaN" not in text and "Infinity" not in text
    assert json_mod.loads(text) == {"checks": {"parity": {"max_abs_error": None, "per_stage": [1.0, None]}}, "ok": 0.5}


def test_top_probability_is_the_softmax_maximum_bit_for_bit():
    from pipelines.export.policy import top_probability

    rng = np.random.RandomState(7)
    z = (rng.randn(5000, 10) * rng.rand(5000, 1) * 40).astype(np.float32)  # near-ties to saturated rows
    want = softmax(z).max(-1)
    np.testing.assert_array_equal(top_probability(z), want)  # what threshold selection computes
    np.testing.assert_array_equal([top_probability(row) for row in z], want)  # what the runner computes


def test_runner_reads_the_signature_list_once(tmp_path, x, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    bf.multi_exit(tmp_path, 0.5)
    calls = []
    real = Interpreter.get_signature_list
    monkeypatch.setattr(Interpreter, "get_signature_list", lambda self: calls.append(1) or real(self))
    bundle = Bundle.load(tmp_path)
    loaded = len(calls)
    preds = bundle.predict(x)
    assert loaded >= 1 and len(calls) == loaded and len(preds) == len(x)  # none per image or stage
