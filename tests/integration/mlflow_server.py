"""A real `mlflow server` for integration tests: 127.0.0.1, a free port, SQLite backend, local artifacts.

Started and stopped with the project's own `platform/mlflow/server.sh` (so the script is tested too).

    from tests.integration.mlflow_server import mlflow_server   # a module-scoped pytest fixture
    def test_x(mlflow_server): ...                               # -> "http://127.0.0.1:PORT"
"""
import os
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "platform" / "mlflow" / "server.sh"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(directory):
    """Start a server whose database, artifacts, pid file and log live in `directory`; yield its URI."""
    directory = Path(directory)
    port = free_port()
    env = {**os.environ, "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1",
           "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{directory / 'mlflow.db'}",
           "MLFLOW_ARTIFACTS_DESTINATION": str(directory / "artifacts"),
           "MLFLOW_STATE_DIR": str(directory / "state"), "PYTHON": sys.executable}
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        log = directory / "state" / "server.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        raise RuntimeError(f"mlflow server did not start: {res.stdout}{res.stderr}\n{tail}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def mlflow_server():
    with tempfile.TemporaryDirectory(prefix="mlflow-it-") as tmp:
        with running_server(tmp) as uri:
            yield uri
