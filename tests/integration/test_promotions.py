"""Promotion history, rollback and the promotion lock against a real MLflow server (SQLite and
PostgreSQL backends), with tiny registered digits models whose quality is set by their epochs."""
import threading
import time

import pytest

from pipelines import cli
from pipelines.mlops import promotions
from pipelines.mlops.promotions import PromotionGates
from pipelines import tracking
from tests.integration.mlflow_backends import mlflow_backend, postgres_server  # noqa: F401
from tests.integration.registry_helpers import register_tiny

GATES = PromotionGates(parity_images=16, quantize="float32")
quiet = lambda *a, **k: None  # noqa: E731


def test_lock_serialises_holders_and_reports_the_owner(mlflow_backend):
    client = tracking.client(mlflow_backend.uri)
    name = f"lock_{mlflow_backend.backend}"
    spans, errors, said = [], [], []

    def hold(i):
        try:
            with promotions.promotion_lock(client, name, timeout_s=60, poll_s=0.05, log=said.append):
                start = time.monotonic()
                time.sleep(0.3)
                spans.append((start, time.monotonic(), i))
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(spans) == 4
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"lock holders overlapped: {spans}; {said}"
    assert not [m for m in said if "stale" in m], said
    # released: the lock model is gone
    assert not [m for m in client.search_registered_models() if m.name == name + promotions.LOCK_SUFFIX]

    with promotions.promotion_lock(client, name, log=quiet):
        with pytest.raises(promotions.PromotionLocked, match=rf"promotion of '{name}' is locked by .*@"):
            with promotions.promotion_lock(client, name, timeout_s=0.5, poll_s=0.1, log=quiet):
                pass
    # a lock left by a crashed promoter is broken after stale_after_s
    client.create_registered_model(name + promotions.LOCK_SUFFIX, tags={"owner": "dead", "acquired_at": "0"})
    broke = []
    with promotions.promotion_lock(client, name, timeout_s=5, stale_after_s=60, log=broke.append):
        pass
    assert broke and "stale" in broke[0]
    # a lock whose age is unknown (no acquired_at, or not a number) is waited for, never broken as stale
    for tags in ({"owner": "someone"}, {"owner": "someone", "acquired_at": "nan"}):
        client.create_registered_model(name + promotions.LOCK_SUFFIX, tags=tags)
        said.clear()
        with pytest.raises(promotions.PromotionLocked, match=r"locked by someone; retry later"):
            with promotions.promotion_lock(client, name, timeout_s=0.3, stale_after_s=60, poll_s=0.1,
                                           log=said.append):
                pass
        assert not [m for m in said if "stale" in m], said
        client.delete_registered_model(name + promotions.LOCK_SUFFIX)


def test_rollback_restores_previous_champion_and_history_shows_both_moves(mlflow_backend, capsys):
    uri = mlflow_backend.uri
    client = tracking.client(uri)
    name = f"rollback_{mlflow_backend.backend}"
    v1 = register_tiny(name, epochs=0, tracking_uri=uri).version
    v2 = register_tiny(name, epochs=4, tracking_uri=uri).version

    first = promotions.promote(name, version=v1, tracking_uri=uri, log=quiet, gates=GATES)
    second = promotions.promote(name, version=v2, tracking_uri=uri, log=quiet, reason="retrained", gates=GATES)
    assert first.promoted and second.promoted, (first.reason, second.reason)
    assert client.get_model_version_by_alias(name, "champion").version == v2

    capsys.readouterr()
    assert cli.main(["promote", "--model", name, "--rollback", "--reason", "crash on device",
                     "--tracking-uri", uri]) == 0
    assert client.get_model_version_by_alias(name, "champion").version == v1
    assert client.get_model_version(name, v2).tags["promotion.status"] == "rolled_back"

    events = promotions.history(client, name)
    assert [(e["action"], e["from"], e["to"]) for e in events] == [
        ("promote", None, v1), ("promote", v1, v2), ("rollback", v2, v1)]
    assert events[1]["note"] == "retrained" and events[1]["metrics"]["candidate_score"] > events[1]["metrics"]["champion_score"]
    assert events[2]["note"] == "crash on device" and "@" in events[2]["by"]

    capsys.readouterr()
    assert cli.main(["history", name, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"champion now: v{v1}" in out
    assert f"- -> v{v1}" in out and f"v{v1} -> v{v2}" in out and f"v{v2} -> v{v1}" in out
    assert "crash on device" in out

    # nothing below the first champion: a clear refusal, alias unchanged
    assert cli.main(["promote", "--model", name, "--rollback", "--tracking-uri", uri]) == 2
    assert "no previous champion" in capsys.readouterr().err
    assert client.get_model_version_by_alias(name, "champion").version == v1


def test_concurrent_promotions_never_leave_champion_on_a_loser(mlflow_backend):
    """Champion c (untrained); candidates A (8 epochs) and B (4 epochs) both beat c, A beats B.
    Promoted at the same moment from two threads, the alias must end on A: if B goes second it must be
    gated against A and refused. (Without the lock both pass against c and the last write wins.)"""
    uri = mlflow_backend.uri
    client = tracking.client(uri)
    name = f"race_{mlflow_backend.backend}"
    c = register_tiny(name, epochs=0, tracking_uri=uri).version
    a = register_tiny(name, epochs=8, tracking_uri=uri).version
    b = register_tiny(name, epochs=4, tracking_uri=uri).version
    assert promotions.promote(name, version=c, tracking_uri=uri, log=quiet, gates=GATES).promoted

    barrier, results, errors = threading.Barrier(2), {}, []

    def go(version):
        try:
            barrier.wait()
            results[version] = promotions.promote(name, version=version, tracking_uri=uri, log=quiet, gates=GATES)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=go, args=(v,)) for v in (b, a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert client.get_model_version_by_alias(name, "champion").version == a
    assert results[a].promoted
    events = promotions.history(client, name)
    # a consistent chain: every move starts from the champion the previous move left
    assert all(e["from"] == prev["to"] for prev, e in zip(events, events[1:]))
    assert events[-1]["to"] == a
    if not results[b].promoted:  # B went second: gated against A, not against c
        assert results[b].previous_champion == a and f"champion v{a}" in results[b].reason
