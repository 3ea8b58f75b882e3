"""The registry on a local SQLite store (no server): what `register` and the gates agree to load; the
promotion options, checked before any store is touched."""
import json
import re

import pytest

from pipelines import cli, tracking
from pipelines.mlops import promotions, registry
from pipelines.mlops.promotions import PromotionGates


@pytest.mark.parametrize("field,value,message", [
    ("metric", "accuracy", "unknown metric='accuracy'"),
    ("quantize", "int4", "unknown quantize='int4'"),
    ("parity_images", 0, "parity_images must be an int >= 1; received parity_images=0"),
    ("parity_images", 8.0, "received parity_images=8.0"),
    ("parity_images", True, "received parity_images=True"),
    ("threads", 0, "received threads=0"),
    ("limit", 0, "limit must be an int >= 1 or None; received limit=0"),
    ("min_agreement", 1.5, "min_agreement must be a finite number in [0, 1]; received min_agreement=1.5"),
    ("min_agreement", float("nan"), "received min_agreement=nan"),
    ("min_agreement", "0.9", "received min_agreement='0.9'"),
    ("max_error", -1.0, "max_error must be a finite number >= 0 or None; received max_error=-1.0"),
    ("latency_budget_ms", 0, "latency_budget_ms must be a finite number > 0 or None; received latency_budget_ms=0"),
    ("min_delta", -0.01, "min_delta must be a finite number >= 0; received min_delta=-0.01"),
    ("min_delta", float("inf"), "received min_delta=inf"),
])
def test_promotion_gates_name_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        PromotionGates(**{field: value}).validate()
    assert "\n" not in str(err.value)


def test_promotion_gates_defaults_and_tolerance():
    gates = PromotionGates().validate()
    assert (gates.metric, gates.quantize, gates.parity_images, gates.min_agreement) == ("val_accuracy", "float32", 64, 0.99)
    assert gates.tolerance() == 1e-3 and PromotionGates(quantize="int8").tolerance() is None
    assert PromotionGates(max_error=0.5).tolerance() == 0.5
    assert PromotionGates(min_delta=0.01).beats(0.90, 0.885) and not PromotionGates(min_delta=0.01).beats(0.89, 0.885)
    assert PromotionGates(metric="val_loss").beats(0.3, 0.4) and not PromotionGates(metric="val_loss").beats(0.4, 0.4)


@pytest.mark.parametrize("kwargs,message", [
    ({"gates": {"metric": "val_loss"}}, "gates must be a PromotionGates"),
    ({"gates": PromotionGates(threads=0)}, "threads=0"),
    ({"version": "latest"}, "version='latest'"),
    ({"version": 0}, "version=0"),
    ({"reason": 3}, "reason=3"),
    ({"tracking_uri": "nonsense"}, "tracking_uri='nonsense'"),
])
def test_promote_checks_its_arguments_before_touching_the_store(tmp_path, kwargs, message):
    db = tmp_path / "m.db"
    with pytest.raises(ValueError, match=message):
        promotions.promote("digits", **{"tracking_uri": f"sqlite:///{db}", **kwargs})
    assert not db.exists()


def test_promote_cli_checks_the_flags_before_touching_the_store(tmp_path, capsys):
    db = tmp_path / "m.db"
    assert cli.main(["promote", "--model", "digits", "--min-agreement", "2", "--tracking-uri", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: min_agreement must be a finite number in [0, 1]; received min_agreement=2.0"
    assert cli.main(["promote", "--model", "digits", "--rollback", "--reason", "x", "--tracking-uri", "nonsense"]) == 2
    assert "tracking_uri='nonsense'" in capsys.readouterr().err
    # a rollback runs no gates: a gate option given with it is a mistake, not something to ignore
    assert cli.main(["promote", "--model", "digits", "--rollback", "--min-agreement", "0.5",
                     "--tracking-uri", f"sqlite:///{db}"]) == 2
    assert "--rollback runs no gates" in capsys.readouterr().err
    assert not db.exists()


def test_register_refuses_an_hdf5_model_file_and_runs_none_of_its_code(tmp_path):
    """`run/model.keras` is whatever was uploaded to the run. tf_keras applies `safe_mode` only to the zip
    `.keras` format: an HDF5 file under that name would run its Lambda layer's code while loading."""
    import mlflow
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    marker = tmp_path / "lambda_ran"

    def touch(x, marker=str(marker)):
        open(marker, "w").write("ran")
        return x

    inp = keras.Input((4,), name="image")
    net = keras.Model(inp, keras.layers.Lambda(touch, name="logits")(inp))
    marker.unlink()  # building the model called it once
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracking.configure(uri)
    art = tmp_path / "run"
    art.mkdir()
    net.save(tmp_path / "model.h5")
    (tmp_path / "model.h5").rename(art / "model.keras")
    (art / "config.json").write_text(json.dumps({"model": "evil", "data": "digits", "image_size": 8}))
    (art / "dataset.json").write_text(json.dumps({"num_classes": 4}))
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("tests", uri)) as run:
        mlflow.log_artifacts(str(art), "run")

    with pytest.raises(ValueError, match=r"model\.keras.* not a Keras zip archive"):
        registry.register(run.info.run_id, "evil", tracking_uri=uri, log=lambda *_: None)
    assert not marker.exists()
    assert not tracking.client(uri).search_registered_models()


class _Touch:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_version_model_unpickles_nothing_from_the_artifact_store(tmp_path):
    """MLflow's loader unpickles `data/global_custom_objects.cloudpickle` of the version; ours reads only the
    zip `data/model.keras`."""
    import pickle

    from tests.integration.registry_helpers import register_tiny

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    mv = register_tiny("tiny", epochs=0, tracking_uri=uri)
    marker = tmp_path / "unpickled"
    stored = list((tmp_path / "mlartifacts").rglob("global_custom_objects.cloudpickle"))
    assert len(stored) == 1  # the file the test replaces is where MLflow's loader reads it
    stored[0].write_bytes(pickle.dumps(_Touch(marker)))
    net = registry.load_version_model(tracking.client(uri), mv)
    assert not marker.exists()
    assert net.output_names == ["logits"] and tuple(net.input_shape) == (None, 8, 8, 1)


def test_register_tags_the_reported_epoch_not_the_last_one(tmp_path):
    """A run's per-epoch `val_accuracy` ends lower than its best epoch, which is the epoch `model.keras`
    holds and `metrics.json` reports: the version's tag must be the reported value. (MLflow's
    `run.data.metrics` shows the highest step, the last epoch.)"""
    import mlflow
    from mlflow.entities import Metric
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracking.configure(uri)
    art = tmp_path / "run"
    art.mkdir()
    inp = keras.Input((4,), name="image")
    keras.Model(inp, keras.layers.Dense(3, name="logits")(inp)).save(art / "model.keras")
    (art / "config.json").write_text(json.dumps({"model": "tiny", "data": "digits", "image_size": 8}))
    (art / "dataset.json").write_text(json.dumps({"num_classes": 3}))
    (art / "metrics.json").write_text(json.dumps({"val_accuracy": 0.9, "best_epoch": 1, "madds": 12, "params": 15}))
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("tests", uri)) as run:
        mlflow.log_artifacts(str(art), "run")
        client = tracking.client(uri)
        client.log_batch(run.info.run_id, metrics=[Metric("val_accuracy", 0.9, 0, 1), Metric("val_accuracy", 0.5, 0, 2),
                                                   Metric("val_accuracy", 0.9, 0, 0)])
    assert client.get_run(run.info.run_id).data.metrics["val_accuracy"] == 0.5  # what the bug read
    mv = registry.register(run.info.run_id, "tiny", tracking_uri=uri, log=lambda *_: None)
    assert mv.tags["val_accuracy"] == "0.9" and mv.tags["madds"] == "12"
