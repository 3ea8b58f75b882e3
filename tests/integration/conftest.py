"""Fixtures every integration module can use without importing them: the session's PostgreSQL
server (`mlflow_server` and `mlflow_backend` start MLflow on it as well as on SQLite)."""
from tests.integration.postgres_server import postgres_server  # noqa: F401  (fixture)

import pytest

# Stories whose PostgreSQL run repeats the SQLite one step for step (nothing in them depends on how the store
# handles concurrent transactions) run on PostgreSQL in `make test-extended` (and CI), not `make test`. The
# promotion lock and the concurrent promotions, where the backend matters, run on both in `make test`.
SECOND_BACKEND_EXTENDED = ("tests/integration/test_mlflow_registry.py::", "tests/integration/test_tflite_flavor.py::",
                           "tests/integration/test_promotions.py::test_rollback_")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec and "postgresql" in callspec.params.values() and item.nodeid.startswith(SECOND_BACKEND_EXTENDED):
            item.add_marker(pytest.mark.extended)
