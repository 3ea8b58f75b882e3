"""The command line's errors: the project's own error types (not only ValueError / FileNotFoundError) and
MLflow's are one line with exit status 2, a traceback only with `--debug` (or PIPELINES_DEBUG=1); a bug in
the code keeps its traceback; `models` refuses impossible inputs before building anything."""
import pytest
from mlflow.exceptions import MlflowException

from pipelines import cli
from pipelines.commands import models as models_cmd
from pipelines.training.distributed import NonFiniteLossError


def failing(monkeypatch, err):
    def run(args):
        raise err
    monkeypatch.setattr(models_cmd, "run", run)


@pytest.mark.parametrize("err,line", [
    (NonFiniteLossError("loss is nan at epoch 3 on worker 1\nsee the log"),
     "error: loss is nan at epoch 3 on worker 1 see the log"),
    (MlflowException("RESOURCE_ALREADY_EXISTS: model x exists"), "error: RESOURCE_ALREADY_EXISTS: model x exists"),
    (ValueError("epochs must be >= 1; received epochs=0"), "error: epochs must be >= 1; received epochs=0"),
])
def test_expected_errors_are_one_line(monkeypatch, capsys, err, line):
    monkeypatch.delenv("PIPELINES_DEBUG", raising=False)
    failing(monkeypatch, err)
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err.strip() == line


@pytest.mark.parametrize("argv,env", [(["--debug", "models"], None), (["models", "--debug"], None),
                                      (["models"], "1")])
def test_debug_shows_the_traceback(monkeypatch, argv, env):
    monkeypatch.delenv("PIPELINES_DEBUG", raising=False)
    if env:
        monkeypatch.setenv("PIPELINES_DEBUG", env)
    failing(monkeypatch, NonFiniteLossError("loss is nan"))
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        cli.main(argv)


def test_pipelines_debug_0_is_off(monkeypatch, capsys):
    monkeypatch.setenv("PIPELINES_DEBUG", "0")
    failing(monkeypatch, ValueError("bad"))
    assert cli.main(["models"]) == 2 and capsys.readouterr().err.strip() == "error: bad"


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv("PIPELINES_DEBUG", raising=False)
    failing(monkeypatch, ZeroDivisionError("division by zero"))
    with pytest.raises(ZeroDivisionError):
        cli.main(["models"])


@pytest.mark.parametrize("argv,message", [
    (["--channels", "2"], "--channels must be 1 (grayscale) or 3 (RGB); received channels=2"),
    (["--channels", "0"], "--channels must be 1 (grayscale) or 3 (RGB); received channels=0"),
    (["--image-size", "0"], "--image-size must be >= 8; received image_size=0"),
    (["--num-classes", "1"], "--num-classes must be >= 2; received num_classes=1"),
])
def test_models_refuses_impossible_inputs_before_building(monkeypatch, capsys, argv, message):
    import keras_layers.models

    monkeypatch.setattr(keras_layers.models, "build", lambda *a, **k: pytest.fail("a model was built"))
    assert cli.main(["models", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_the_tracking_uri_message_suggests_only_stores_that_work(capsys):
    assert cli.main(["history", "x", "--tracking-uri", "file:/tmp/mlruns"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: tracking_uri='file:/tmp/mlruns' is not a tracking URI; use http://HOST:PORT, "
                   "sqlite:///PATH.db or postgresql://USER@HOST/DB")
