import os
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# `make test` runs the suite on 2 pytest-xdist workers (`-n 2 --dist loadscope`) with the scheduler
# below: a group of tests runs whole on one worker, so a module's fixtures (trained models, servers)
# are built once. Every module is its own group, except the ones in SHARED_GROUPS, which share what
# they start: the Ray modules each start a Ray head (two heads at once on 2 cores only slow each other
# down), the MLflow modules share the session's PostgreSQL server and `mlflow_backend` servers.
# (xdist's own `--dist loadgroup` marks do not take with pytest 9.2, which no longer reads `_nodeid`.)
SHARED_GROUPS = {
    "ray": ("tests/integration/test_ray_train.py", "tests/integration/test_ray_tune.py",
            "tests/integration/test_ray_multinode.py"),
    "mlflow": ("tests/integration/test_mlflow_registry.py", "tests/integration/test_promotions.py",
               "tests/integration/test_tflite_flavor.py"),
}
# The longest groups are handed out first (minutes each), so that neither worker is left with one at the end.
LONGEST_FIRST = ("mlflow", "ray", "tests/pipelines/test_recipes_under_strategy.py",
                 "tests/pipelines/test_every_model_learns.py", "tests/pipelines/test_export.py",
                 "tests/pipelines/test_paper_presets.py", "tests/pipelines/test_experiment_commands.py",
                 "tests/pipelines/test_demo.py", "tests/pipelines/test_export_families.py",
                 "tests/pipelines/test_slimmable_recipes.py", "tests/pipelines/test_precision_xla.py",
                 "tests/pipelines/test_train.py", "tests/security/test_server_binds.py",
                 "tests/keras_layers/test_models_registry.py", "tests/pipelines/test_deployed_experiments.py",
                 "tests/pipelines/test_train_resume.py", "tests/pipelines/test_multi_exit_experiment.py",
                 "tests/security/test_hostile_models.py", "tests/pipelines/test_devices.py")
_GROUP_OF = {path: group for group, paths in SHARED_GROUPS.items() for path in paths}


def group_of(nodeid):
    path = nodeid.split("::", 1)[0]
    return _GROUP_OF.get(path, path)


def _rank(group):
    return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the order the scheduler hands groups out in
        items.sort(key=lambda item: _rank(group_of(item.nodeid)))  # stable: a module keeps its order


@pytest.hookimpl(optionalhook=True)  # the suite also runs without xdist (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return group_of(nodeid)

    config.option.loadscopereorder = False  # keep LONGEST_FIRST, not "most tests first"
    return GroupScheduling(config, log)


class CliResult(NamedTuple):
    """What `python -m pipelines ARGS` gave: exit status, stdout, stderr (as `subprocess.run` reports them)."""

    returncode: int
    stdout: str
    stderr: str

    def error_line(self):
        """The one line a refused command prints: asserts exit status 2 and exactly one non-blank stderr line,
        starting with ``error:``, and returns it."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert self.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), (self.returncode,
                                                                                          self.stderr)
        return lines[0]


@pytest.fixture
def cli(capsys):
    """Run `python -m pipelines ARGS` in this process (`pipelines.cli.main`): `cli("train", "--epochs", "0")`.

    For the error paths of the command line, which answer before any work starts: a subprocess would spend
    most of its seconds importing TensorFlow again. The environment is restored after each call.
    `tests/pipelines/test_train.py` keeps one real `python -m pipelines` subprocess for the exit status and the
    one-line stderr of the process itself."""
    from pipelines.cli import main

    def run(*args, env=None):
        saved = dict(os.environ)
        os.environ.update(env or {})
        capsys.readouterr()  # drop what the test printed before
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            os.environ.clear()
            os.environ.update(saved)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
