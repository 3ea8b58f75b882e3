"""The family plugin registry: a new family is one plugin (here a toy one, registered in the test) that
is detected, exported by `export_net` and run by the bundle runner without touching any other file."""
import json
import subprocess
import sys

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from pipelines import export
from pipelines.export import bundle as bundle_runner
from pipelines.export import families
from pipelines.export.bundle import Bundle, BundleError
from pipelines.export.policy import need_probability, need_stage, softmax, stops
from tests import bundle_fixtures as bf
from tests.conftest import ROOT

L = keras.layers
DATASET = {"name": "toy", "input_shape": list(bf.SHAPE), "num_classes": bf.CLASSES,
           "normalization": {"input_range": [0.0, 1.0], **bf.NORM}, "class_names": bf.LABELS}


def quiet(*_):
    pass


class Cascade(families.Family):
    """A toy family: a cheap head answers when it is sure, else the whole network runs from the image
    again (two files). Registered by the `cascade` fixture only."""

    kind = "cascade"
    policy_options = ("threshold",)

    def detect(self, net):
        return isinstance(net.output_shape, dict) and set(net.output_shape) == {"cheap", "logits"}

    def selects(self, options):
        return options.threshold is None

    def stages(self, net, mode, selection, options, log):
        from pipelines.export import tflite

        threshold = options.threshold
        if threshold is None:  # between the two middle confidences of the selection images
            conf = np.sort(softmax(net.predict(selection[0], verbose=0)["cheap"]).max(-1))
            threshold = float((conf[len(conf) // 2 - 1] + conf[len(conf) // 2]) / 2)
        cheap = tflite.convert(keras.Model(net.input, net.get_layer("cheap").output), mode)
        full = tflite.convert(keras.Model(net.input, net.get_layer("logits").output), mode)
        spec = {"kind": self.kind, "threshold": threshold, "stages": {
            "cheap": {"file": "model.tflite", "madds": 10}, "full": {"file": "full.tflite", "madds": 100}}}
        return export.Conversion.of(cheap, mode), {"full.tflite": full}, spec

    def validate_spec(self, spec, stages):
        for name in ("cheap", "full"):
            need_stage(stages, f"stages.{name}", name if name in stages else None)
        need_probability("threshold", spec.get("threshold"))

    def run_policy(self, bundle, image):
        logits = bundle.logits("cheap", image, {})
        if stops(softmax(logits).max(), bundle.spec["threshold"]):
            return "cheap", logits, ["cheap"]
        return "full", bundle.logits("full", image, {}), ["cheap", "full"]

    def keras_policy(self, net, spec, images):
        out = net.predict(images, verbose=0)
        stop = stops(softmax(out["cheap"]).max(-1), spec["threshold"])
        return np.where(stop, "cheap", "full"), np.where(stop[:, None], out["cheap"], out["logits"])


def cascade_net():
    keras.utils.set_random_seed(0)
    img = keras.Input(bf.SHAPE, name="image")
    f = L.Conv2D(4, 3, padding="same", activation="relu")(img)
    cheap = L.Dense(bf.CLASSES, name="cheap")(L.GlobalAveragePooling2D()(f))
    g = L.Conv2D(8, 3, padding="same", activation="relu")(f)
    logits = L.Dense(bf.CLASSES, name="logits")(L.GlobalAveragePooling2D()(g))
    return keras.Model(img, {"cheap": cheap, "logits": logits}, name="cascade_toy")


@pytest.fixture
def cascade(monkeypatch):
    families.kinds()  # the real families first; the test's registry is a copy, restored afterwards
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    families.register(Cascade)
    return cascade_net()


def test_a_new_family_is_detected_exported_and_run_by_the_bundle_runner(cascade, tmp_path):
    net = cascade
    assert families.family_of(net).kind == "cascade" and "cascade" in bundle_runner.KINDS
    x = bf.images(16, seed=1)
    options = export.ExportOptions(parity_images=16, selection_images=16, latency_runs=2)
    result = export.export_net(net, tmp_path / "b", options, DATASET, validation=(x, np.zeros(16, int)), log=quiet)
    doc = json.loads((tmp_path / "b" / "model.json").read_text())
    assert result["kind"] == doc["kind"] == "cascade"
    assert export.bundle_files(tmp_path / "b") == [*export.BUNDLE_FILES, "full.tflite"]
    preds = Bundle.load(tmp_path / "b").predict(x)
    out = net.predict(x, verbose=0)
    early = softmax(out["cheap"]).max(-1) >= doc["threshold"]
    assert 0 < early.sum() < len(x)  # the threshold chosen on the selection images splits them
    assert [p.stopped_at for p in preds] == ["cheap" if e else "full" for e in early]
    assert [p.madds for p in preds] == [10.0 if e else 110.0 for e in early]
    np.testing.assert_allclose(np.stack([p.logits for p in preds]),
                               np.where(early[:, None], out["cheap"], out["logits"]), atol=1e-4)
    par = doc["checks"]["parity"]
    assert par["agreement"] == par["stage_agreement"] == 1.0 and par["policy"] == "cascade"
    assert doc["checks"]["latency"]["runs"] == 2
    # its model.json fields are checked by its own validate_spec
    doc["threshold"] = 1.5
    (tmp_path / "b" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"threshold=1.5"):
        Bundle.load(tmp_path / "b")


def test_registry_refuses_a_second_class_for_a_kind_and_a_model_two_families_claim(cascade):
    class Again(Cascade):
        pass

    with pytest.raises(ValueError, match="kind='cascade' is registered twice"):
        families.register(Again)

    class AlsoCascade(Cascade):
        kind = "also_cascade"

    families.register(AlsoCascade)
    with pytest.raises(ValueError, match="'cascade_toy' is detected as several families: also_cascade, cascade"):
        families.family_of(cascade)


def test_unknown_kind_is_refused_naming_the_registered_ones(tmp_path):
    bf.plain(tmp_path)
    spec = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**spec, "kind": "cascade"}))  # not registered outside the fixture
    with pytest.raises(BundleError, match=r"unknown kind='cascade'; valid: basisnet, ds_net, multi_exit, plain$"):
        bundle_runner.read_spec(tmp_path)
    with pytest.raises(ValueError, match="unknown family kind='cascade'"):
        families.get("cascade")


def test_the_bundle_runner_and_the_plugins_import_without_tensorflow():
    code = ("import sys; import pipelines.export.bundle as b; b.KINDS; "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras_layers') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


@pytest.mark.parametrize("field,value", [("threshold", 0.5)])
def test_a_policy_option_of_another_family_is_refused_before_any_work(tmp_path, field, value):
    """A BasisNet `threshold` given for a plain model would be silently ignored: refused, nothing written."""
    inp = keras.Input(bf.SHAPE, name="image")
    net = keras.Model(inp, L.Dense(bf.CLASSES, name="logits")(L.Flatten()(inp)))
    x = np.zeros((4, *bf.SHAPE), np.float32)
    with pytest.raises(ValueError, match=f"{field}={value!r} does not apply to a plain bundle"):
        export.export_net(net, tmp_path / "b", export.ExportOptions(**{field: value}), DATASET,
                          validation=(x, np.zeros(4, int)), log=quiet)
    assert not (tmp_path / "b").exists()
