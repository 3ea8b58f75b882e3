import json
import subprocess
import sys

import pytest

from pipelines.training import recipes
from pipelines.training.train import TrainConfig, train
from tests.conftest import ROOT


def test_tiny_training_writes_a_run(tmp_path):
    cfg = TrainConfig(model="mobilenet_v2", model_config={"width_multiplier": 0.25, "depth_multiplier": 0.25},
                      epochs=2, batch_size=32, out=str(tmp_path), run_name="r", limit=96)
    metrics, run_dir, net = train(cfg, verbose=0)
    for f in ("model.keras", "history.json", "metrics.json", "config.json", "checkpoints"):
        assert (run_dir / f).exists(), f
    assert metrics["epochs_run"] == 2 and metrics["madds"] > 0 and metrics["params"] == net.count_params()
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    # a second run with the same name never overwrites the first
    _, run_dir2, _ = train(cfg, verbose=0)
    assert run_dir2 != run_dir and (run_dir / "model.keras").exists()


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    cfg = TrainConfig(model_config={"width_multiplier": 0.25, "depth_multiplier": 0.25}, epochs=1, batch_size=32,
                      out=str(tmp_path), run_name="r", limit=64)
    _, run_dir, _ = train(cfg, verbose=0)
    cfg.epochs = 3
    metrics, same_dir, _ = train(cfg, verbose=0, resume_dir=run_dir)
    assert same_dir == run_dir and metrics["epochs_run"] == 2  # epochs 2 and 3 only


@pytest.mark.parametrize("field,value", [
    ("model", "nosuch"), ("epochs", 0), ("batch_size", -1), ("learning_rate", 0.0), ("optimizer", "lion"),
    ("recipe", "nosuch"), ("early_stopping", -2),
])
def test_bad_config_names_field(field, value):
    cfg = TrainConfig(**{field: value})
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        cfg.validate()


def test_bad_recipe_field():
    with pytest.raises(ValueError, match="label_smoothing=0.9"):
        TrainConfig(recipe_config={"label_smoothing": 0.9}).validate()
    with pytest.raises(ValueError, match="nosuch"):
        TrainConfig(recipe_config={"nosuch": 1}).validate()


def test_default_recipe():
    assert recipes.for_model("mobilenet_v2") == "standard"
    assert "standard" in recipes.names()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args,bad", [(("--data", "nosuch"), "nosuch"), (("--model", "nosuch"), "nosuch")])
def test_cli_bad_value_is_one_line_and_nonzero(args, bad):
    res = run_cli("train", *args)
    assert res.returncode != 0
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and bad in lines[0] and lines[0].startswith("error:"), res.stderr


def test_cli_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0 and "train" in res.stdout and "models" in res.stdout
    res = run_cli("train", "--help")
    assert res.returncode == 0 and "--data" in res.stdout


def test_cli_models_lists_registry():
    res = run_cli("models", "--image-size", "32")
    assert res.returncode == 0 and "mobilenet_v2" in res.stdout, res.stderr


def test_stdlib_platform_not_shadowed():
    res = subprocess.run([sys.executable, "-c", "import platform; print(platform.system())"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "Linux"
    assert not (ROOT / "platform" / "__init__.py").exists()
