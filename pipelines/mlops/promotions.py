"""Promotion history, rollback, and one promotion at a time per model.

    python -m pipelines promote --model digits_net                      # gated (pipelines.mlops.registry), locked, recorded
    python -m pipelines promote --model digits_net --rollback --reason "p90 latency regression on Pixel 6"
    python -m pipelines history digits_net                              # which version was champion when

History: every move of an alias is one MLflow run in the experiment `promotions` (an append-only
audit log the server indexes): tags `promotion.model`, `.alias`, `.action` (promote | rollback),
`.from_version`, `.to_version`, `.by` (user@host), `.reason`, `.note`; metrics `candidate_score`,
`champion_score`, `parity_agreement`, `latency_ms` where the gates measured them; the run's start time
is the time of the move. Runs rather than one registered-model tag holding a JSON list: tag values are
length-limited and a read-modify-write of one tag by two promoters loses a move; runs are appended,
never rewritten, searchable (`tags.promotion.model = 'NAME'`), and carry metrics. The gates' own
version tags (`promotion.status`, ...) written by `pipelines.mlops.registry` stay as they are.

Rollback replays the history as a stack (promote pushes the new champion, rollback pops) and moves
`champion` back to the version below the top; rolling back twice goes two promotions back. It refuses
when the alias was moved outside these commands (the history's top is not the current champion).

Lock: a promotion holds the model's lock from reading the champion until the move is recorded, so two
promoters are serialised: the second is gated against the first one's result, and the alias can never
end on a version that lost to the champion of the moment. The lock is the registered model
`<NAME>.promotion-lock`: creating a registered model is atomic in MLflow's store (the name is the
primary key; a second create fails with RESOURCE_ALREADY_EXISTS) on SQLite and PostgreSQL alike,
across processes and machines. A lock older than `stale_after_s` (a crashed promoter) is broken.
After the move the alias is read back; the TFLite model's alias (`pipelines.mlops.tflite_flavor`) follows.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import time

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

EXPERIMENT = "promotions"
LOCK_SUFFIX = ".promotion-lock"
CHAMPION = "champion"


class PromotionLocked(ValueError):
    """Another promotion of the same model holds the lock (one line: who, since when)."""


def _who():
    from pipelines.mlops import registry

    return registry._who()


def _now_iso():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the lock

@contextlib.contextmanager
def promotion_lock(client, name, timeout_s=600.0, stale_after_s=1800.0, poll_s=0.5, log=print):
    """Hold `<name>.promotion-lock` for the duration of the block (see module doc)."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    owner = f"{_who()} {_now_iso()} {time.time_ns()}"
    deadline = time.time() + timeout_s
    waited = False
    while True:
        try:
            client.create_registered_model(lock, tags={"owner": owner, "acquired_at": str(time.time())},
                                           description=f"held while a promotion of {name} runs; safe to delete "
                                                       "if no promotion is running")
            break
        except MlflowException as err:
            # Under contention a store can also answer RESOURCE_DOES_NOT_EXIST (the model it collided
            # with was deleted meanwhile): both mean "someone else was there", so look and retry.
            if not any(code in f"{err.error_code} {err}" for code in
                       ("RESOURCE_ALREADY_EXISTS", "already exists", "RESOURCE_DOES_NOT_EXIST")):
                raise
        try:
            held = client.get_registered_model(lock).tags
        except MlflowException:
            continue  # released between our create and this read: try again at once
        if held.get("owner") == owner:
            break  # our create went through although the call reported an error
        since = float(held.get("acquired_at", "0") or 0)
        if time.time() - since > stale_after_s:
            log(f"breaking a stale promotion lock of {name} held by {held.get('owner')}")
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)
            continue
        if time.time() > deadline:
            raise PromotionLocked(f"promotion of {name!r} is locked by {held.get('owner', '?')} "
                                  f"for {time.time() - since:.0f} s; retry later or delete the registered "
                                  f"model {lock!r} if that promotion died")
        if not waited:
            log(f"waiting for another promotion of {name} ({held.get('owner', '?')})")
            waited = True
        time.sleep(poll_s)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            if client.get_registered_model(lock).tags.get("owner") == owner:
                client.delete_registered_model(lock)


# ---------------------------------------------------------------- history

def _experiment_id(client):
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(EXPERIMENT)
    except MlflowException:  # created by a concurrent promoter
        return client.get_experiment_by_name(EXPERIMENT).experiment_id


def record(client, name, action, from_version, to_version, reason="", note=None, metrics=None, alias=CHAMPION):
    """Append one alias move to the history; returns the run id."""
    tags = {"promotion.model": name, "promotion.alias": alias, "promotion.action": action,
            "promotion.from_version": str(from_version or "none"), "promotion.to_version": str(to_version),
            "promotion.by": _who(), "promotion.reason": (reason or "")[:4000],
            "mlflow.runName": f"{name} {alias}: {'v' + str(from_version) if from_version else '(none)'} -> v{to_version} ({action})"}
    if note:
        tags["promotion.note"] = note[:4000]
    run = client.create_run(_experiment_id(client), tags=tags)
    for k, v in (metrics or {}).items():
        if v is not None:
            client.log_metric(run.info.run_id, k, float(v))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def history(client, name, alias=CHAMPION):
    """Every recorded move of `alias` of `name`, oldest first: dicts with time, action, from, to, by,
    reason, note, metrics."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=(
            f"tags.`promotion.model` = '{name}' and tags.`promotion.alias` = '{alias}'"),
            max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    out = []
    for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id)):
        t = r.data.tags
        out.append({"time": _dt.datetime.fromtimestamp(r.info.start_time / 1000, _dt.timezone.utc).isoformat(timespec="seconds"),
                    "start_time_ms": r.info.start_time, "action": t.get("promotion.action"),
                    "from": None if t.get("promotion.from_version") in (None, "none") else t["promotion.from_version"],
                    "to": t.get("promotion.to_version"), "by": t.get("promotion.by"),
                    "reason": t.get("promotion.reason", ""), "note": t.get("promotion.note"),
                    "metrics": dict(r.data.metrics), "run_id": r.info.run_id})
    return out


def champion_stack(events):
    """Replay the history: promote pushes the new version, rollback pops. Returns the stack (bottom first)."""
    stack = []
    for e in events:
        if e["action"] == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != e["to"]:
                stack.append(e["to"])
        else:
            stack.append(e["to"])
    return stack


def _current(client, name, alias=CHAMPION):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


def _sync_tflite(client, name, log):
    from pipelines.mlops import tflite_flavor

    linked = tflite_flavor.sync_alias(client, name, CHAMPION)
    if linked:
        log(f"  {tflite_flavor.tflite_name(name)}@{CHAMPION} -> v{linked} (its TFLite export)")


# ---------------------------------------------------------------- promote / rollback

def promote(name, tracking_uri=None, lock_timeout_s=600.0, log=print, **gates):
    """`pipelines.mlops.registry.promote` under the model's lock; a successful move is recorded in the history
    and read back. Returns the registry's `Promotion`."""
    from pipelines.mlops import registry
    from pipelines import tracking

    registry.check_name(name)
    client = tracking.client(tracking_uri)
    registry.get_version(client, name, alias=CHAMPION)  # a clear error for an unknown model, before locking
    with promotion_lock(client, name, timeout_s=lock_timeout_s, log=log):
        result = registry.promote(name, tracking_uri=tracking_uri, log=log, **gates)
        if not result.promoted:
            return result
        now = _current(client, name)
        if now != result.candidate:  # only possible if something bypassed the lock
            raise RuntimeError(f"{name}@{CHAMPION} is v{now} right after promoting v{result.candidate}: the alias "
                               "was moved outside `pipelines promote`; check `pipelines history` before retrying")
        par = result.parity or {}
        record(client, name, "promote", result.previous_champion, result.candidate, reason=result.reason,
               note=gates.get("reason"), metrics={"candidate_score": result.candidate_score,
                                                  "champion_score": result.champion_score,
                                                  "parity_agreement": par.get("agreement"),
                                                  "latency_ms": result.latency_ms})
        _sync_tflite(client, name, log)
    return result


def rollback(name, reason=None, tracking_uri=None, lock_timeout_s=600.0, log=print):
    """Move `champion` back to the previous champion (see module doc). Returns `(from, to)` versions."""
    from mlflow.exceptions import MlflowException

    from pipelines.mlops import registry
    from pipelines import tracking

    registry.check_name(name)
    client = tracking.client(tracking_uri)
    registry.get_version(client, name, alias=CHAMPION)  # unknown model -> clear error
    with promotion_lock(client, name, timeout_s=lock_timeout_s, log=log):
        current = _current(client, name)
        stack = champion_stack(history(client, name))
        if current is None:
            raise ValueError(f"{name!r} has no {CHAMPION} alias: nothing to roll back")
        if not stack or stack[-1] != current:
            raise ValueError(f"{name}@{CHAMPION} is v{current} but the promotion history ends at "
                             f"{'v' + stack[-1] if stack else 'nothing'}: the alias was moved outside `pipelines "
                             "promote`; move it with `promote --version N` instead")
        if len(stack) < 2:
            raise ValueError(f"{name}@{CHAMPION} v{current} is the first recorded champion: no previous champion "
                             "to roll back to")
        target = stack[-2]
        try:
            client.get_model_version(name, target)
        except MlflowException:
            raise ValueError(f"previous champion v{target} of {name!r} no longer exists; use promote --version N") from None
        client.set_registered_model_alias(name, CHAMPION, target)
        why = f"rollback of v{current} to the previous champion v{target}"
        for k, v in {"promotion.status": "rolled_back", "promotion.rolled_back_at": _now_iso(),
                     "promotion.rolled_back_by": _who(), "promotion.rollback_reason": reason or ""}.items():
            client.set_model_version_tag(name, current, k, v)
        record(client, name, "rollback", current, target, reason=why, note=reason)
        _sync_tflite(client, name, log)
    log(f"{name}: {CHAMPION} rolled back from v{current} to v{target}" + (f" ({reason})" if reason else ""))
    return current, target


def format_history(name, events, current=None):
    """The `history` command's text: one line per move, then who was champion when."""
    lines = [f"promotion history of {name} ({len(events)} move(s)); {CHAMPION} now: "
             f"{'v' + current if current else '(none)'}"]
    if not events:
        return "\n".join(lines + ["  (no recorded promotions)"])
    lines.append(f"  {'time (UTC)':25s} {'action':9s} {'move':14s} {'by':24s} reason")
    for e in events:
        move = f"{'v' + e['from'] if e['from'] else '-'} -> v{e['to']}"
        why = e["reason"] + (f" [note: {e['note']}]" if e.get("note") else "")
        lines.append(f"  {e['time']:25s} {e['action']:9s} {move:14s} {(e['by'] or '')[:24]:24s} {why}")
    lines.append(f"  {CHAMPION} periods:")
    for i, e in enumerate(events):
        until = events[i + 1]["time"] if i + 1 < len(events) else "now"
        lines.append(f"    v{e['to']:<5s} {e['time']} .. {until}")
    return "\n".join(lines)
