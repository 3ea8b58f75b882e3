"""One `mlflow server` per backend store (SQLite, PostgreSQL) for the whole test session, for tests
that use their own model names and so can share a server (cheaper than `mlflow_server`'s one per
module). Same start/stop path: `mlflow_server.running_server` (platform/mlflow/server.sh).

    from tests.integration.mlflow_backends import mlflow_backend, postgres_server  # noqa: F401

    def test_x(mlflow_backend):          # runs once per backend
        mlflow_backend.backend           # "sqlite" | "postgresql"
        mlflow_backend.uri               # http://127.0.0.1:PORT
"""
from __future__ import annotations

import dataclasses
import tempfile

import pytest

from tests.integration.mlflow_server import BACKENDS, backend_env, running_server
from tests.integration.postgres_server import postgres_server  # noqa: F401  (fixture)


@dataclasses.dataclass
class Server:
    backend: str
    uri: str


@pytest.fixture(scope="session", params=BACKENDS)
def mlflow_backend(request):
    with tempfile.TemporaryDirectory(prefix=f"mlflow-{request.param}-") as tmp:
        with running_server(tmp, **backend_env(request, request.param)) as uri:
            yield Server(request.param, uri)
