"""Hostile models on a local SQLite store (no server): an HDF5 model with a Lambda layer, named
`model.keras`, through `export --model PATH`, `register` and `promote` (refused with one line naming the file
and its format; the Lambda's code never runs: it would write a marker file); a model with NaN weights at
promotion (never the first champion, never over a champion, and a NaN champion does not block a healthy
candidate); and what model.json says about where its model came from."""
import json
import re

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from pipelines import cli, tracking
from pipelines.mlops import promotions, registry
from pipelines.mlops.promotions import PromotionGates
from tests.integration.registry_helpers import digits, register_tiny

pytestmark = pytest.mark.slow
GATES = PromotionGates(parity_images=16, limit=64)
HDF5_REFUSAL = r"is an HDF5 file, not a Keras zip archive \(\.keras\): refusing to load it"


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite tracking store (artifacts beside it, under mlartifacts/)."""
    d = tmp_path_factory.mktemp("store")
    return d, f"sqlite:///{d / 'mlflow.db'}"


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """(path of an HDF5 model saved as model.keras, the marker file its Lambda writes when it runs)."""
    d = tmp_path_factory.mktemp("evil")
    marker = d / "lambda_ran"

    def payload(x, marker=str(marker)):
        open(marker, "w").write("ran")
        return x

    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Lambda(payload)(inp)
    net = keras.Model(inp, keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(h)))
    net.save(d / "model.h5")
    marker.unlink()  # building (and saving) the model called the Lambda
    path = d / "model.keras"
    (d / "model.h5").rename(path)
    return path, marker


def one_error_line(capsys):
    """The one `error: ...` line the command ended with (MLflow's own INFO log lines may come before it)."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


@pytest.mark.parametrize("as_folder", [False, True])
def test_export_of_an_hdf5_model_is_refused_and_runs_no_code(evil, tmp_path, capsys, as_folder):
    path, marker = evil
    model = path.parent if as_folder else path
    out = tmp_path / "bundle"
    assert cli.main(["export", "--model", str(model), "--data", "digits", "--image-size", "8", "--out", str(out),
                     "--no-mlflow"]) == 2
    line = one_error_line(capsys)
    assert f"model file '{path}' " in line and re.search(HDF5_REFUSAL, line), line
    assert not marker.exists() and not out.exists()


def test_register_of_an_hdf5_run_artifact_is_refused_and_runs_no_code(evil, store, capsys):
    import mlflow

    path, marker = evil
    _, uri = store
    tracking.configure(uri)
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("tests", uri)) as run:
        mlflow.log_artifact(str(path), "run")
        mlflow.log_dict({"model": "evil", "data": "digits", "image_size": 8, "data_dir": None}, "run/config.json")
        mlflow.log_dict({"num_classes": 10}, "run/dataset.json")
    assert cli.main(["register", "--run", run.info.run_id, "--name", "evil", "--tracking-uri", uri]) == 2
    line = one_error_line(capsys)
    assert re.search(rf"run {run.info.run_id} artifact run/model\.keras {HDF5_REFUSAL}", line), line
    assert not marker.exists()
    assert not [m for m in tracking.client(uri).search_registered_models() if m.name == "evil"]


def test_promote_and_export_of_a_version_swapped_for_hdf5_are_refused_and_run_no_code(evil, tmp_path, capsys):
    """Whoever can write the artifact store replaces a registered version's data/model.keras: promote and
    export refuse it, naming the version and the format."""
    path, marker = evil
    d, uri = tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}"  # a store of its own: one registered model file
    mv = register_tiny("swapped", epochs=0, tracking_uri=uri)
    stored = list((d / "mlartifacts").rglob("data/model.keras"))
    assert len(stored) == 1, stored  # the file promote and export read (registry.load_version_model)
    stored[0].write_bytes(path.read_bytes())
    assert cli.main(["promote", "--model", "swapped", "--tracking-uri", uri]) == 2
    line = one_error_line(capsys)
    assert re.search(rf"models:/swapped/{mv.version} \(data/model\.keras\) {HDF5_REFUSAL}", line), line
    client = tracking.client(uri)
    assert registry.get_version(client, "swapped", alias=registry.CHAMPION) is None
    assert not [m for m in client.search_registered_models() if m.name.endswith(promotions.LOCK_SUFFIX)]
    assert cli.main(["export", "--model", f"models:/swapped/{mv.version}", "--tracking-uri", uri, "--no-mlflow",
                     "--out", str(d / "swapped-bundle")]) == 2
    assert re.search(HDF5_REFUSAL, one_error_line(capsys))
    assert not marker.exists()


def nan_weights(net):
    net.set_weights([np.full_like(w, np.nan) for w in net.get_weights()])


def always(cls):
    """A `transform` making the net answer class `cls` for every image (a weak but finite model)."""
    def set_head(net):
        dense = net.get_layer("logits")
        kernel, bias = dense.get_weights()
        bias = np.zeros_like(bias)
        bias[cls] = 10.0
        dense.set_weights([np.zeros_like(kernel), bias])
    return set_head


def test_a_nan_model_never_becomes_the_first_champion(store):
    _, uri = store
    mv = register_tiny("nan_first", epochs=0, tracking_uri=uri, transform=nan_weights)
    result = promotions.promote("nan_first", gates=GATES, tracking_uri=uri, log=quiet)
    assert not result.promoted and "non-finite logits" in result.reason, result.reason
    assert f"on {GATES.limit} of {GATES.limit} validation images" in result.reason
    client = tracking.client(uri)
    assert registry.get_version(client, "nan_first", alias=registry.CHAMPION) is None
    assert client.get_model_version("nan_first", mv.version).tags["promotion.status"] == "refused"


def test_a_nan_model_does_not_beat_a_weak_champion(store):
    """argmax of NaN logits is class 0: against a champion that scores less than the share of class 0, the
    NaN model used to "win"."""
    _, uri = store
    _, labels, _ = digits("validation", limit=GATES.limit)
    counts = np.bincount(labels, minlength=10)
    weak = int(np.argmin(counts))
    assert counts[weak] < counts[0]  # the weak champion scores less than "always class 0" would
    v1 = register_tiny("nan_vs", epochs=0, tracking_uri=uri, transform=always(weak))
    assert promotions.promote("nan_vs", gates=GATES, version=v1.version, tracking_uri=uri, log=quiet).promoted
    v2 = register_tiny("nan_vs", epochs=0, tracking_uri=uri, transform=nan_weights)
    result = promotions.promote("nan_vs", gates=GATES, version=v2.version, tracking_uri=uri, log=quiet)
    assert not result.promoted and "non-finite logits" in result.reason, result.reason
    assert registry.get_version(tracking.client(uri), "nan_vs", alias=registry.CHAMPION).version in (v1.version, int(v1.version))


def test_a_nan_champion_does_not_block_a_finite_candidate(store):
    """A champion whose outputs are NaN (moved there before the gates required finite outputs) scores NaN on
    val_loss, which nothing "beats": any finite candidate replaces it, and the reason says why."""
    _, uri = store
    bad = register_tiny("nan_champ", epochs=0, tracking_uri=uri, transform=nan_weights)
    tracking.client(uri).set_registered_model_alias("nan_champ", registry.CHAMPION, bad.version)
    good = register_tiny("nan_champ", epochs=2, tracking_uri=uri)
    gates = PromotionGates(metric="val_loss", parity_images=16, limit=64)
    result = promotions.promote("nan_champ", gates=gates, version=good.version, tracking_uri=uri, log=quiet)
    assert result.promoted, result.reason
    assert f"champion v{bad.version} gives non-finite logits on 64 of 64" in result.reason


def test_model_json_names_the_source_file_without_its_local_path(tmp_path):
    from tests.integration.registry_helpers import tiny_digits_net

    net, _ = tiny_digits_net(0)
    folder = tmp_path / "secret-user-dir"
    folder.mkdir()
    net.save(folder / "model.keras")
    out = tmp_path / "bundle"
    assert cli.main(["export", "--model", str(folder / "model.keras"), "--data", "digits", "--image-size", "8",
                     "--out", str(out), "--no-mlflow", "--parity-images", "8", "--latency-runs", "2"]) == 0
    text = (out / "model.json").read_text()
    assert str(tmp_path) not in text and "secret-user-dir" not in text
    assert re.fullmatch(r"model\.keras sha256:[0-9a-f]{64}", json.loads(text)["source"])
