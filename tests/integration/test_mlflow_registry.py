"""Registry and gated promotion (`promotions.promote`) against a real `mlflow server` (127.0.0.1, SQLite backend).

Story: a barely-trained model becomes the first champion; a properly trained one beats it and takes
the alias; the worse one is refused; a candidate whose int8 export misses the parity tolerance is
refused; every refusal leaves the champion (alias, tags, weights) untouched; the champion loads back
from `models:/NAME@champion` and its Android bundle is logged next to the version.
"""
import contextlib
import io

import numpy as np
import pytest

from pipelines import cli, export
from pipelines.mlops import promotions, registry, release
from pipelines.mlops.promotions import PromotionGates
from pipelines import tracking
from pipelines.training.tracked import TrackingOptions, finish, tracked_run
from pipelines.training.train import TrainConfig, train
from tests.integration.mlflow_server import mlflow_server  # noqa: F401  (fixture)

NAME = "digits_it"
TINY = {"width_multiplier": 0.25, "depth_multiplier": 0.25}
SIZE = 16  # digits at 16x16: the registry story does not need 32x32, and trains twice as fast


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The two runs of the story, trained once for the module (both backends log the same folders)."""
    out = tmp_path_factory.mktemp("runs")
    good = TrainConfig(model="mobilenet_v2", model_config=TINY, epochs=3, batch_size=32, learning_rate=1e-2,
                       out=str(out), run_name="good", limit=512, image_size=SIZE)
    weak = TrainConfig(model="mobilenet_v2", model_config=TINY, epochs=1, batch_size=32, learning_rate=1e-6,
                       out=str(out), run_name="weak", limit=64, image_size=SIZE)
    g, w = train(good, verbose=0), train(weak, verbose=0)
    # Precondition of the story: the two runs are clearly ordered.
    assert g[0]["val_accuracy"] > w[0]["val_accuracy"] + 0.2, (g[0], w[0])
    return {"good": (good, *g), "weak": (weak, *w)}


@pytest.fixture(scope="module")
def runs(mlflow_server, trained):  # noqa: F811
    """The trained runs as this backend's MLflow runs, logged by the path every tracked training ends with
    (params and tags up front, then the final metrics and the `run/` artifacts): (metrics, dir, net, run id)."""
    options = TrackingOptions(mlflow_server, "it").validate()

    def logged(cfg, metrics, run_dir, net):
        with tracked_run(cfg, options) as run_id:
            finish(run_id, run_dir, metrics)
        return metrics, run_dir, net, run_id

    return {name: logged(*run) for name, run in trained.items()}


@pytest.fixture(scope="module")
def champion(mlflow_server, runs):  # noqa: F811
    """weak -> v1 (first champion, via the CLI); good -> v2, promoted over v1."""
    weak_id = runs["weak"][3]
    printed = io.StringIO()  # `python -m pipelines register`, in this process (no second TensorFlow import)
    with contextlib.redirect_stdout(printed):
        code = cli.main(["register", "--run", weak_id, "--name", NAME, "--tracking-uri", mlflow_server])
    assert code == 0 and f"models:/{NAME}/1" in printed.getvalue(), printed.getvalue()
    first = promotions.promote(NAME, tracking_uri=mlflow_server, log=quiet)
    assert first.promoted and first.previous_champion is None, first
    mv = registry.register(runs["good"][3], NAME, tracking_uri=mlflow_server, log=quiet)
    assert mv.version == "2"
    second = promotions.promote(NAME, tracking_uri=mlflow_server, log=quiet, reason="retrained")
    return second


def snapshot(uri, version):
    c = tracking.client(uri)
    return dict(c.get_model_version(NAME, version).tags)


def test_better_candidate_is_promoted_with_tags(mlflow_server, champion, runs):  # noqa: F811
    assert champion.promoted, champion.reason
    assert champion.candidate == "2" and champion.previous_champion == "1"
    assert champion.candidate_score > champion.champion_score
    c = tracking.client(mlflow_server)
    assert c.get_model_version_by_alias(NAME, promotions.CHAMPION).version == "2"
    tags = snapshot(mlflow_server, "2")
    assert tags["promotion.status"] == "promoted" and tags["promotion.previous_champion"] == "1"
    assert "beats champion v1" in tags["promotion.reason"] and tags["promotion.note"] == "retrained"
    assert "@" in tags["promotion.by"] and tags["promotion.at"]
    assert tags["source_run"] == runs["good"][3] and tags["model"] == "mobilenet_v2"
    # stages are never used
    assert c.get_model_version(NAME, "2").current_stage in ("None", None)


def test_signature_and_champion_loads_back(mlflow_server, champion, runs):  # noqa: F811
    import mlflow

    info = mlflow.models.get_model_info(f"models:/{NAME}@champion")
    spec = info.signature.inputs.inputs[0]
    assert tuple(spec.shape) == (-1, SIZE, SIZE, 1) and spec.name == "image"
    net = mlflow.tensorflow.load_model(f"models:/{NAME}@champion")
    x = np.random.RandomState(0).standard_normal((4, SIZE, SIZE, 1)).astype("float32")
    np.testing.assert_allclose(net(x).numpy(), runs["good"][2](x).numpy(), atol=1e-5)


def test_worse_candidate_is_refused_and_champion_untouched(mlflow_server, champion):  # noqa: F811
    before = snapshot(mlflow_server, "2")
    result = promotions.promote(NAME, version="1", tracking_uri=mlflow_server, log=quiet)
    assert not result.promoted and "does not beat champion v2" in result.reason, result
    c = tracking.client(mlflow_server)
    assert c.get_model_version_by_alias(NAME, promotions.CHAMPION).version == "2"
    assert snapshot(mlflow_server, "2") == before
    assert snapshot(mlflow_server, "1")["promotion.status"] == "refused"


def test_candidate_failing_parity_is_refused(mlflow_server, champion, runs):  # noqa: F811
    before = snapshot(mlflow_server, "2")
    mv = registry.register(runs["good"][3], NAME, tracking_uri=mlflow_server, log=quiet)
    result = promotions.promote(NAME, gates=PromotionGates(quantize="int8", max_error=1e-4), version=mv.version,
                                tracking_uri=mlflow_server, log=quiet)
    assert not result.promoted and result.reason.startswith("TFLite parity failed"), result
    assert result.parity["max_abs_error"] > 1e-4
    c = tracking.client(mlflow_server)
    assert c.get_model_version_by_alias(NAME, promotions.CHAMPION).version == "2"
    assert c.get_model_version_by_alias(NAME, promotions.CHALLENGER).version == mv.version
    assert snapshot(mlflow_server, "2") == before


def test_cli_refusal_exits_nonzero_and_says_why(mlflow_server, champion, cli):  # noqa: F811
    res = cli("promote", "--model", NAME, "--version", "2", "--tracking-uri", mlflow_server)
    assert res.returncode == 1 and "already the champion" in res.stdout, res.stdout + res.stderr


def test_bundle_is_logged_next_to_the_champion(mlflow_server, champion, tmp_path):  # noqa: F811
    s = release.export_model(f"models:/{NAME}@champion", "float32", tmp_path / "bundle", parity_images=16,
                            latency_runs=5, tracking_uri=mlflow_server, log=quiet)
    assert s["artifact_uri"].endswith("android/float32") and s["parity"]["agreement"] == 1.0
    c = tracking.client(mlflow_server)
    mv = c.get_model_version_by_alias(NAME, promotions.CHAMPION)
    files = {f.path.rsplit("/", 1)[-1] for f in c.list_artifacts(mv.run_id, "android/float32")}
    assert files == set(export.BUNDLE_FILES)
    assert mv.tags["android_bundle.float32"] == s["artifact_uri"]


def test_unknown_model_is_a_clear_error(mlflow_server):  # noqa: F811
    with pytest.raises(ValueError, match="name='nosuch'"):
        promotions.promote("nosuch", tracking_uri=mlflow_server, log=quiet)
