"""A real `mlflow server` on 127.0.0.1 (started with `platform/mlflow/server.sh`) over each backend store:
SQLite, and PostgreSQL from `postgres_server.py`. One server per backend per test session.

    from tests.integration.mlflow_backends import mlflow_backend, postgres_server  # noqa: F401

    def test_x(mlflow_backend):          # runs once per backend: "sqlite", "postgresql"
        uri = mlflow_backend.uri         # http://127.0.0.1:PORT
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.postgres_server import postgres_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "platform" / "mlflow" / "server.sh"
BACKENDS = ("sqlite", "postgresql")


@dataclasses.dataclass
class Server:
    backend: str
    uri: str
    store: str
    dir: Path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(backend, store, workdir):
    env = {**os.environ, "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(_free_port()), "MLFLOW_WORKERS": "1",
           "MLFLOW_BACKEND_STORE_URI": store, "MLFLOW_ARTIFACTS_DESTINATION": str(workdir / "artifacts"),
           "MLFLOW_STATE_DIR": str(workdir / "state"), "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    uri = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    out = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=240)
    # server.sh waits 60 s for /health; on a loaded CI machine the server may need longer: it is still
    # running (its pid file is kept), so give it more time before failing.
    if out.returncode != 0 and not (workdir / "state" / "server.pid").exists() or not _healthy(uri, 180):
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True)
        raise RuntimeError(f"mlflow server ({backend}) did not start: {out.stderr.strip()[-2000:]}")
    return Server(backend, uri, store, workdir), env


def _healthy(uri, timeout):
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


@pytest.fixture(scope="session", params=BACKENDS)
def mlflow_backend(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    if request.param == "sqlite":
        store = f"sqlite:///{workdir}/mlflow.db"
    else:
        store = request.getfixturevalue("postgres_server").new_database()
    server, env = start_server(request.param, store, workdir)
    yield server
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True)
    shutil.rmtree(workdir, ignore_errors=True)
