"""A real PostgreSQL server on 127.0.0.1 for MLflow's backend store, started by
`platform/mlflow/postgres.sh` in a throwaway data dir (one server per test session).

    from tests.integration.postgres_server import postgres_uri   # noqa: F401  (pytest fixture)

    def test_something(postgres_uri):     # "postgresql+psycopg2://mlflow@127.0.0.1:PORT/mlflow"
        ...

`make postgres` (a dependency of `make test`) installs Debian's postgresql package; the fixture skips
with the reason only when PostgreSQL is not installed and cannot be (no root / no apt-get).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "platform" / "mlflow" / "postgres.sh"


class PostgresServer:
    """Start/stop one throwaway server; `new_database()` gives each caller its own empty database."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-pg-", dir="/tmp"))
        self.uri = None

    def start(self):
        install = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True)
        if install.returncode != 0:
            return f"PostgreSQL is not installed and could not be: {install.stderr.strip()}"
        out = subprocess.run(["bash", str(SCRIPT), "start", str(self.dir)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"postgres.sh start failed: {out.stderr.strip()}")
        self.uri = out.stdout.strip().splitlines()[-1]
        return None

    def new_database(self, prefix="mlflow"):
        """Create an empty database on the server; returns its connection string."""
        import psycopg2

        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = psycopg2.connect(self.uri.replace("+psycopg2", ""))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.uri.rsplit("/", 1)[0] + "/" + name

    def stop(self):
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.dir)], capture_output=True, text=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer()
    reason = server.start()
    if reason:
        shutil.rmtree(server.dir, ignore_errors=True)
        pytest.skip(reason)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_uri(postgres_server):
    return postgres_server.uri
