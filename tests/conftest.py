import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# `make test` runs the suite on 2 pytest-xdist workers with `--dist loadgroup`: a group runs whole on
# one worker, so a module's fixtures (trained models, servers) are built once. Every module is its own
# group, except the ones below, which share what they start: the Ray modules each start a Ray head
# (two heads at once on 2 cores only slow each other down), and the MLflow modules share the
# session's PostgreSQL server and `mlflow_backend` servers.
SHARED_GROUPS = {
    "ray": ("tests/integration/test_ray_train.py", "tests/integration/test_ray_tune.py"),
    "mlflow": ("tests/integration/test_mlflow_registry.py", "tests/integration/test_promotions.py",
               "tests/integration/test_tflite_flavor.py"),
}
_GROUP_OF = {path: group for group, paths in SHARED_GROUPS.items() for path in paths}


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    import pytest

    for item in items:
        path = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(_GROUP_OF.get(path, path)))
