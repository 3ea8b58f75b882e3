"""Fixtures every integration module can use without importing them: the session's PostgreSQL
server (`mlflow_server` and `mlflow_backend` start MLflow on it as well as on SQLite)."""
from tests.integration.postgres_server import postgres_server  # noqa: F401  (fixture)
