"""The platform as a package: pyproject.toml builds a wheel with the three packages and the `dynnets` console
script (the commands of `python -m pipelines`), its dependencies are requirements.txt's top-level pins, and
the test tools live in requirements-dev.txt only. Built and installed offline (`--no-index`) into a folder
of its own, with the project venv's setuptools (no build isolation, nothing downloaded)."""
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.conftest import ROOT

PACKAGES = ("keras_layers", "tune_spaces", "pipelines")
DEV_ONLY = ("pytest", "pytest-xdist", "execnet", "iniconfig", "pluggy", "wheel")


def pins(path):
    """`name -> 'name==version'` of every pin of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name = line.split("==", 1)[0].split("[", 1)[0].lower()
            out[name] = line
    return out


def top_level(path):
    """The pins before the file's resolved-dependencies block: the choices, not the resolved set."""
    text = path.read_text().split("# --- resolved", 1)[0]
    tmp = [l.split("#", 1)[0].strip() for l in text.splitlines()]
    return sorted(l for l in tmp if l and not l.startswith("-"))


def test_requirements_are_split_and_pinned():
    runtime, dev = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-dev.txt")
    assert all("==" in spec for spec in [*runtime.values(), *dev.values()])  # lock files: exact versions
    assert not set(DEV_ONLY) & set(runtime), "test tools belong in requirements-dev.txt"
    assert set(DEV_ONLY) <= set(dev) and "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
    assert "tensorboard" in runtime
    assert "requirements-dev.txt" in (ROOT / "Makefile").read_text()


def test_pyproject_dependencies_are_the_runtime_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(project["dependencies"]) == top_level(ROOT / "requirements.txt")
    assert project["scripts"] == {"dynnets": "pipelines.cli:main"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources (the checkout gets no build/ or egg-info), installed with
    its console script into a folder of its own."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"),
                    str(src)], check=True, capture_output=True, timeout=180)
    (wheel,) = (tmp / "dist").glob("*.whl")
    target = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, timeout=180)
    return wheel, target


def test_wheel_holds_the_packages_and_the_console_script(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "dynnets = pipelines.cli:main" in entry_points
    for module in ("pipelines/cli.py", "pipelines/commands/train.py", "keras_layers/models/__init__.py",
                   "tune_spaces/__init__.py", "pipelines/export/bundle.py"):
        assert module in names, module
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "platform/"))]


def test_dynnets_lists_the_commands(installed):
    """The installed `dynnets` (run outside the checkout, importing the installed packages) answers --help
    with every command of `python -m pipelines`."""
    from pipelines.commands import parser

    _, target = installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    res = subprocess.run([str(target / "bin" / "dynnets"), "--help"], cwd=target.parent, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    commands = parser()._subparsers._group_actions[0].choices
    assert commands and all(name in res.stdout for name in commands)
    assert res.stdout.startswith("usage: dynnets "), res.stdout[:200]  # named as the user called it
    where = subprocess.run([sys.executable, "-c", "import pipelines; print(pipelines.__file__)"], cwd=target.parent,
                           env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(target)), where.stdout  # the wheel's code, not the checkout's
    res = subprocess.run([str(target / "bin" / "dynnets"), "train", "--help"], cwd=target.parent, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--resume" in res.stdout and "--config" in res.stdout, res.stderr
