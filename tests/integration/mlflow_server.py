"""A real `mlflow server` for integration tests: 127.0.0.1, a free port, local artifacts, and each
backend store in turn: SQLite, and PostgreSQL (a throwaway server from `postgres_server.py`).

Started and stopped with the project's own `platform/mlflow/server.sh` (so the script is tested too).

    from tests.integration.mlflow_server import mlflow_server   # a module-scoped pytest fixture
    def test_x(mlflow_server): ...                               # -> "http://127.0.0.1:PORT", once per backend
"""
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.ports import free_port
from tests.integration.postgres_server import postgres_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "platform" / "mlflow" / "server.sh"
BACKENDS = ("sqlite", "postgresql")


def server_env(directory, port, **extra):
    """Environment for `platform/mlflow/server.sh` with everything inside `directory`."""
    directory = Path(directory)
    env = {**os.environ, "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1",
           "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{directory / 'mlflow.db'}",
           "MLFLOW_ARTIFACTS_DESTINATION": str(directory / "artifacts"),
           "MLFLOW_STATE_DIR": str(directory / "state"), "PYTHON": sys.executable,
           "MLFLOW_START_TIMEOUT": "240", **extra}  # a loaded CI machine can need minutes to start it
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@contextmanager
def running_server(directory, **extra_env):
    """Start a server whose database, artifacts, pid file and log live in `directory`; yield its URI."""
    directory = Path(directory)
    port = free_port()
    env = server_env(directory, port, **extra_env)
    res = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        log = directory / "state" / "server.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        raise RuntimeError(f"mlflow server did not start: {res.stdout}{res.stderr}\n{tail}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)


def backend_env(request, backend):
    """`running_server` settings for `backend`: SQLite (the default, a file in the server's directory)
    or a new database on the session's PostgreSQL server."""
    if backend == "sqlite":
        return {}
    return {"MLFLOW_BACKEND_STORE_URI": request.getfixturevalue("postgres_server").new_database()}


@pytest.fixture(scope="module", params=BACKENDS)
def mlflow_server(request):
    with tempfile.TemporaryDirectory(prefix="mlflow-it-") as tmp:
        with running_server(tmp, **backend_env(request, request.param)) as uri:
            yield uri
