"""Gated promotion to `champion`, its history, rollback, and one promotion at a time per model.

    python -m pipelines promote --model digits_net                      # gated, locked, recorded
    python -m pipelines promote --model digits_net --version 3 --quantize int8 --latency-budget-ms 2
    python -m pipelines promote --model digits_net --rollback --reason "p90 latency regression on Pixel 6"
    python -m pipelines history digits_net                              # which version was champion when

    from pipelines.mlops import promotions
    result = promotions.promote("digits_net", gates=promotions.PromotionGates(quantize="dynamic"))

`promote` is the one way to move `champion` forward (the CLI, the demo and the tests call it): under the
model's lock it moves the alias to a candidate version (default: the newest) only when every gate
(`PromotionGates`, validated before MLflow is contacted) passes, in this order:

1. finite outputs and TFLite parity: the candidate's logits on the validation data are finite (NaN/inf
   weights are refused here: argmax of NaN logits is class 0, so a NaN model would otherwise "score" the
   share of class 0), and its TFLite export (`quantize`, default float32) agrees with the Keras model on
   `parity_images` validation images (top-1 agreement; a finite max abs error of the logits, within the
   mode's tolerance where it has one);
2. metric: on the same validation data (the candidate's dataset, the whole validation split unless
   `limit`), the candidate's finite score beats the current champion by more than `min_delta`
   (`val_accuracy` higher, `val_loss` lower); a champion whose own score is not finite is beaten by any
   finite one (the reason says so);
3. latency (optional): the TFLite model's measured latency is finite and within `latency_budget_ms`.

The candidate carries the `challenger` alias while it is evaluated; on success `champion` moves to it,
`challenger` is removed, the alias is read back, the move is recorded in the history and the TFLite
model's alias (`pipelines.mlops.tflite_flavor`) follows. Either way the outcome is written as version tags
(`promotion.status`, `.by`, `.at`, `.reason`, `.note`, `.metric`, `.parity`, `.latency_ms`,
`.previous_champion`). A refusal, or any error during the gates, leaves `champion` where it was. Aliases
only: the deprecated stages are never used.

History: every move of an alias is one MLflow run in the experiment `promotions` (an append-only
audit log the server indexes): tags `promotion.model`, `.alias`, `.action` (promote | rollback),
`.from_version`, `.to_version`, `.by` (user@host), `.reason`, `.note`; metrics `candidate_score`,
`champion_score`, `parity_agreement`, `latency_ms` where the gates measured them; the run's start time
is the time of the move. Runs rather than one registered-model tag holding a JSON list: tag values are
length-limited and a read-modify-write of one tag by two promoters loses a move; runs are appended,
never rewritten, searchable (`tags.promotion.model = 'NAME'`), and carry metrics.

Rollback replays the history as a stack (promote pushes the new champion, rollback pops) and moves
`champion` back to the version below the top; rolling back twice goes two promotions back. It refuses
when the alias was moved outside these functions (the history's top is not the current champion).

Lock: a promotion holds the model's lock from reading the champion until the move is recorded, so two
promoters are serialised: the second is gated against the first one's result, and the alias can never
end on a version that lost to the champion of the moment. The lock is the registered model
`<NAME>.promotion-lock`: creating a registered model is atomic in MLflow's store (the name is the
primary key; a second create fails with RESOURCE_ALREADY_EXISTS) on SQLite and PostgreSQL alike,
across processes and machines. A lock older than `stale_after_s` (a crashed promoter) is broken.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import re
import time

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)
from pipelines import tracking
from pipelines.mlops import registry
from pipelines.mlops.registry import CHALLENGER, CHAMPION  # noqa: F401  (defined once, in registry)

EXPERIMENT = "promotions"
LOCK_SUFFIX = ".promotion-lock"
METRICS = {"val_accuracy": "max", "val_loss": "min"}


# ---------------------------------------------------------------- what a candidate must pass, and the outcome

@dataclasses.dataclass(frozen=True)
class PromotionGates:
    """The gates of `promote` (see the module doc); `validate()` checks every field up front.

    `max_error` None = the mode's default (`pipelines.export.DEFAULT_MAX_ERROR`; unchecked where it has
    none); `latency_budget_ms` None = no latency gate; `limit` None = the whole validation split."""
    metric: str = "val_accuracy"
    quantize: str = "float32"
    parity_images: int = 64
    min_agreement: float = 0.99
    max_error: float | None = None
    latency_budget_ms: float | None = None
    threads: int = 1
    limit: int | None = None
    min_delta: float = 0.0

    def validate(self):
        """Raise a one-line ValueError naming the first bad field and its value; returns self."""
        from pipelines.export import check_mode

        if self.metric not in METRICS:
            raise ValueError(f"unknown metric={self.metric!r}; valid choices: {', '.join(METRICS)}")
        check_mode(self.quantize)
        for name, optional in (("parity_images", False), ("threads", False), ("limit", True)):
            v = getattr(self, name)
            if not (optional and v is None) and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an int >= 1{' or None' if optional else ''}; received {name}={v!r}")
        for name, optional, what, ok in (("min_agreement", False, "in [0, 1]", lambda v: 0 <= v <= 1),
                                         ("max_error", True, ">= 0", lambda v: v >= 0),
                                         ("latency_budget_ms", True, "> 0", lambda v: v > 0),
                                         ("min_delta", False, ">= 0", lambda v: v >= 0)):
            v = getattr(self, name)
            if optional and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise ValueError(f"{name} must be a finite number {what}{' or None' if optional else ''}; "
                                 f"received {name}={v!r}")
        return self

    def tolerance(self):
        """The parity gate's max abs logit error (None = unchecked)."""
        from pipelines.export import DEFAULT_MAX_ERROR

        return DEFAULT_MAX_ERROR.get(self.quantize) if self.max_error is None else self.max_error

    def beats(self, score, champion_score):
        """Whether `score` wins over `champion_score` on `metric` by more than `min_delta`."""
        if METRICS[self.metric] == "max":
            return score > champion_score + self.min_delta
        return score < champion_score - self.min_delta


@dataclasses.dataclass
class Promotion:
    name: str
    candidate: str
    previous_champion: str | None
    promoted: bool
    reason: str
    metric: str
    candidate_score: float | None = None
    champion_score: float | None = None
    parity: dict | None = None
    latency_ms: float | None = None

    def summary(self):
        verdict = "PROMOTED" if self.promoted else "NOT PROMOTED"
        return f"{self.name} v{self.candidate}: {verdict} - {self.reason}"


def evaluate(net, images, labels, metric, main_output="logits"):
    """`val_accuracy` (top-1) or `val_loss` (mean cross-entropy) of `net` on NumPy arrays."""
    return score(predict_logits(net, images, main_output), labels, metric)


def predict_logits(net, images, main_output="logits"):
    from pipelines.export import main_logits
    from pipelines.export.checks import keras_outputs

    return main_logits(keras_outputs(net, images), main_output)


def nonfinite_rows(logits):
    """How many examples have a NaN or infinite logit."""
    import numpy as np

    logits = np.asarray(logits, np.float64)
    return int((~np.isfinite(logits)).reshape(len(logits), -1).any(-1).sum())


def score(logits, labels, metric):
    """`val_accuracy` (top-1) or `val_loss` (mean cross-entropy) of `logits` (N, classes)."""
    import numpy as np

    logits = np.asarray(logits, np.float64)
    if metric == "val_accuracy":
        return float(np.mean(np.argmax(logits, -1) == labels))
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def _check_call(version, reason, lock_timeout_s):
    if version is not None and (isinstance(version, bool) or not re.fullmatch(r"[1-9][0-9]*", str(version))):
        raise ValueError(f"version must be a version number >= 1 or None (the newest); received version={version!r}")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"reason must be text or None; received reason={reason!r}")
    if isinstance(lock_timeout_s, bool) or not isinstance(lock_timeout_s, (int, float)) or not lock_timeout_s > 0:
        raise ValueError(f"lock_timeout_s must be a number > 0; received lock_timeout_s={lock_timeout_s!r}")


class PromotionLocked(ValueError):
    """Another promotion of the same model holds the lock (one line: who, since when)."""


# ---------------------------------------------------------------- the lock

def _acquired_at(tags):
    """The lock's `acquired_at` tag as a time, or None when it is missing or not a finite number: a lock whose
    age is unknown is never broken as stale (a lock read without its tags must not look 55 years old)."""
    try:
        value = float(tags.get("acquired_at", ""))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@contextlib.contextmanager
def promotion_lock(client, name, timeout_s=600.0, stale_after_s=1800.0, poll_s=0.5, log=print):
    """Hold `<name>.promotion-lock` for the duration of the block (see module doc)."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    owner = f"{registry.who()} {registry.timestamp()} {time.time_ns()}"
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
        since = _acquired_at(held)
        if since is not None and time.time() - since > stale_after_s:
            log(f"breaking a stale promotion lock of {name} held by {held.get('owner')}")
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)
            continue
        if time.time() > deadline:
            held_for = "" if since is None else f" for {time.time() - since:.0f} s"
            raise PromotionLocked(f"promotion of {name!r} is locked by {held.get('owner', '?')}"
                                  f"{held_for}; retry later or delete the registered "
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
            "promotion.by": registry.who(), "promotion.reason": (reason or "")[:4000],
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


def champion_history(name, tracking_uri=None):
    """`(events, current)`: the recorded moves of `champion` of `name` (see `history`) and the version it
    points at now (None if unset). An unknown model is a ValueError."""
    registry.check_name(name)
    client = tracking.client(tracking_uri)
    registry.get_version(client, name, alias=CHAMPION)  # unknown model -> clear error
    return history(client, name), current_version(client, name)


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


def current_version(client, name, alias=CHAMPION):
    """The version `alias` points at, as a string (a local SQL store answers ints), or None when it is not
    set (any other MLflow error is raised: an unreachable store must not read as "no champion")."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        if not tracking.not_found(err):
            raise
        return None


def _sync_tflite(client, name, log):
    from pipelines.mlops import tflite_flavor

    linked = tflite_flavor.sync_alias(client, name, CHAMPION)
    if linked:
        log(f"  {tflite_flavor.tflite_name(name)}@{CHAMPION} -> v{linked} (its TFLite export)")


# ---------------------------------------------------------------- promote / rollback

def promote(name, gates=PromotionGates(), version=None, reason=None, tracking_uri=None, lock_timeout_s=600.0,
            log=print):
    """Move `champion` of `name` to `version` (default: the newest) if it passes `gates`; see the module doc.

    Every argument is checked before MLflow is contacted. Returns a `Promotion`; a refusal is a normal
    outcome (`promoted=False`, `reason` says which gate and why). `reason` is the promoter's free-text
    note, stored with the tags and the history."""
    registry.check_name(name)
    if not isinstance(gates, PromotionGates):
        raise ValueError(f"gates must be a PromotionGates; received gates={gates!r}")
    gates.validate()
    _check_call(version, reason, lock_timeout_s)
    client = tracking.client(tracking_uri)
    registry.get_version(client, name, alias=CHAMPION)  # a clear error for an unknown model, before locking
    with promotion_lock(client, name, timeout_s=lock_timeout_s, log=log):
        result = _run_gates(client, name, gates, version, reason, log)
        if not result.promoted:
            return result
        now = current_version(client, name)
        if now != result.candidate:  # only possible if something bypassed the lock
            raise RuntimeError(f"{name}@{CHAMPION} is v{now} right after promoting v{result.candidate}: the alias "
                               "was moved outside `pipelines promote`; check `pipelines history` before retrying")
        par = result.parity or {}
        record(client, name, "promote", result.previous_champion, result.candidate, reason=result.reason,
               note=reason, metrics={"candidate_score": result.candidate_score,
                                     "champion_score": result.champion_score,
                                     "parity_agreement": par.get("agreement"), "latency_ms": result.latency_ms})
        _sync_tflite(client, name, log)
    return result


def _run_gates(client, name, gates, version, note, log):
    """The gates, in order, under the caller's lock; moves `champion` (the only write to it) when all pass."""
    from pipelines import data as data_mod
    from pipelines import export

    cand = registry.get_version(client, name, version=version)
    champ = registry.get_version(client, name, alias=CHAMPION)
    # Versions are strings over REST and ints from a local SQL store: compare them as strings.
    cand_v = str(cand.version)
    prev = str(champ.version) if champ is not None else None
    metric = gates.metric

    def finish(promoted, why, **extra):
        result = Promotion(name=name, candidate=cand_v, previous_champion=prev, promoted=promoted,
                           reason=why, metric=metric, **extra)
        tags = {"promotion.status": "promoted" if promoted else "refused", "promotion.by": registry.who(),
                "promotion.at": registry.timestamp(), "promotion.reason": why,
                "promotion.previous_champion": prev or "none"}
        if note:
            tags["promotion.note"] = note
        if result.candidate_score is not None:
            tags["promotion.metric"] = (f"{metric}={result.candidate_score:.4f}"
                                        + (f" vs champion v{prev} {result.champion_score:.4f}"
                                           if result.champion_score is not None else " (no champion)"))
        if result.parity:
            tags["promotion.parity"] = json.dumps(result.parity)
        if result.latency_ms is not None:
            tags["promotion.latency_ms"] = f"{result.latency_ms:.3f}"
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, cand_v)
            try:
                if str(client.get_model_version_by_alias(name, CHALLENGER).version) == cand_v:
                    client.delete_registered_model_alias(name, CHALLENGER)
            except Exception:
                pass
        for k, v in tags.items():
            client.set_model_version_tag(name, cand_v, k, v)
        log(result.summary())
        return result

    if prev == cand_v:  # nothing to do; the champion's tags are not touched
        result = Promotion(name=name, candidate=cand_v, previous_champion=prev, promoted=False,
                           reason=f"version {cand_v} is already the champion", metric=metric)
        log(result.summary())
        return result
    log(f"promote {name}: candidate v{cand_v}, champion {'v' + prev if prev else '(none)'}; "
        f"gates: parity ({gates.quantize}), {metric}"
        + (f", latency <= {gates.latency_budget_ms} ms" if gates.latency_budget_ms else ""))
    client.set_registered_model_alias(name, CHALLENGER, cand_v)

    config, dataset = registry.run_context(client, cand.run_id)
    kwargs = registry.data_kwargs(config)
    images, labels, info = data_mod.as_numpy(split="validation", limit=gates.limit, **kwargs)
    main_output = export.main_output_name(config)
    net = registry.load_version_model(client, cand)

    # Gate 1: finite outputs, and the TFLite export agrees with the Keras model.
    logits = predict_logits(net, images, main_output)
    bad = nonfinite_rows(logits)
    if bad:
        return finish(False, f"v{cand_v} gives non-finite logits (NaN or inf) on {bad} of {len(logits)} validation "
                             "images: a model with non-finite outputs is never promoted")
    log(f"  gate 1/3 parity: converting v{cand_v} to TFLite ({gates.quantize}) ...")
    try:
        conv = export.convert(net, gates.quantize, data=kwargs, log=lambda m: log("    " + m))
    except ValueError as err:
        return finish(False, f"TFLite export ({gates.quantize}) failed: {err}")
    par = export.parity(net, conv.tflite, images[:gates.parity_images], main_output=main_output)
    tol = gates.tolerance()
    par["mode"] = gates.quantize
    log(f"    top-1 agreement {par['agreement']:.4f} on {par['images']} images, max abs error {par['max_abs_error']:.3g}")
    if not par["agreement"] >= gates.min_agreement:
        return finish(False, f"TFLite parity failed: top-1 agreement {par['agreement']:.4f} < {gates.min_agreement} "
                             f"on {par['images']} validation images ({gates.quantize})", parity=par)
    if not math.isfinite(par["max_abs_error"]) or (tol is not None and par["max_abs_error"] > tol):
        return finish(False, f"TFLite parity failed: max abs error {par['max_abs_error']:.3g} > "
                             f"{'a finite value' if tol is None else format(tol, '.3g')} "
                             f"on {par['images']} validation images ({gates.quantize})", parity=par)

    # Gate 2: a finite score that beats the champion on the same validation data.
    cand_score = score(logits, labels, metric)
    log(f"  gate 2/3 {metric}: candidate v{cand_v} {cand_score:.4f} on {len(labels)} validation images of "
        f"{config['data']}")
    if not math.isfinite(cand_score):
        return finish(False, f"{metric} of v{cand_v} is {cand_score} on {len(labels)} validation images: a "
                             "non-finite score is never promoted", candidate_score=cand_score, parity=par)
    champ_score = None
    champ_note = ""
    if champ is not None:
        champ_config, _ = registry.run_context(client, champ.run_id)
        if registry.data_kwargs(champ_config) != kwargs:
            return finish(False, f"champion v{prev} was trained on {registry.data_kwargs(champ_config)}, the "
                                 f"candidate on {kwargs}: not comparable on the same validation data",
                          candidate_score=cand_score, parity=par)
        champ_logits = predict_logits(registry.load_version_model(client, champ), images,
                                      export.main_output_name(champ_config))
        champ_score = score(champ_logits, labels, metric)
        log(f"    champion v{prev} {champ_score:.4f}")
        champ_bad = nonfinite_rows(champ_logits)
        if champ_bad or not math.isfinite(champ_score):
            champ_note = (f" (champion v{prev} gives non-finite logits on {champ_bad} of {len(champ_logits)} "
                          f"validation images, {metric} {champ_score}: any finite candidate beats it)")
        elif not gates.beats(cand_score, champ_score):
            word = "higher" if METRICS[metric] == "max" else "lower"
            return finish(False, f"{metric} {cand_score:.4f} does not beat champion v{prev} {champ_score:.4f} "
                                 f"({word} is better, min_delta={gates.min_delta}) on {len(labels)} validation images",
                          candidate_score=cand_score, champion_score=champ_score, parity=par)

    # Gate 3 (optional): measured TFLite latency within the budget.
    lat = None
    budget = gates.latency_budget_ms
    if budget is not None:
        lat = export.latency(conv.tflite, threads=gates.threads, example=images[:1])["median_ms"]
        log(f"  gate 3/3 latency: median {lat:.3f} ms per image ({gates.threads} thread(s)), budget {budget} ms")
        if not math.isfinite(lat) or lat > budget:
            return finish(False, f"TFLite latency {lat:.3f} ms exceeds the budget {budget} ms",
                          candidate_score=cand_score, champion_score=champ_score, parity=par, latency_ms=lat)
    why = (f"{metric} {cand_score:.4f}" + (f" beats champion v{prev} {champ_score:.4f}" if champ is not None
                                           else " (first champion)") + champ_note
           + f"; TFLite {gates.quantize} parity {par['agreement']:.3f}" + (f"; latency {lat:.3f} ms" if lat else ""))
    return finish(True, why, candidate_score=cand_score, champion_score=champ_score, parity=par, latency_ms=lat)


def rollback(name, reason=None, tracking_uri=None, lock_timeout_s=600.0, log=print):
    """Move `champion` back to the previous champion (see module doc). Returns `(from, to)` versions."""
    from mlflow.exceptions import MlflowException

    registry.check_name(name)
    _check_call(None, reason, lock_timeout_s)
    client = tracking.client(tracking_uri)
    registry.get_version(client, name, alias=CHAMPION)  # unknown model -> clear error
    with promotion_lock(client, name, timeout_s=lock_timeout_s, log=log):
        current = current_version(client, name)
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
        except MlflowException as err:
            if not tracking.not_found(err):
                raise
            raise ValueError(f"previous champion v{target} of {name!r} no longer exists; use promote --version N") from None
        client.set_registered_model_alias(name, CHAMPION, target)
        why = f"rollback of v{current} to the previous champion v{target}"
        for k, v in {"promotion.status": "rolled_back", "promotion.rolled_back_at": registry.timestamp(),
                     "promotion.rolled_back_by": registry.who(), "promotion.rollback_reason": reason or ""}.items():
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
