#!/usr/bin/env bash
# Start a local Ray head for this repo: `make cluster-up` (or platform/ray/start-head.sh).
#   dashboard + job API: http://127.0.0.1:8265     GCS: 127.0.0.1:6379
# Then:  python -m pipelines submit --address http://127.0.0.1:8265 -- tune --family baseline --smoke-test
#        . runs/ray-head/env && python -m pipelines train --workers 2      # a driver on this machine
# Stop with `make cluster-down`: it stops only the head this script started (process group in the pid file),
# never other Ray instances on the machine (`ray stop` would stop them all).
#
# What it locks down (platform/README.md, "What a Ray head opens", lists every port):
# - every server of the head (GCS, raylet, object manager, dashboard, its agents, the runtime-env agent, the
#   Ray client server, metrics) and every worker listens on 127.0.0.1 only: `--node-ip-address=127.0.0.1`
#   alone does not do it (Ray rewrites a loopback node address to the machine's address); with
#   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 it keeps 127.0.0.1. Drivers on this machine need the same setting
#   to find the head: `. $RAY_STATE_DIR/env` sets it with RAY_ADDRESS and the token settings.
# - token auth is always on (Ray 2.60 leaves it off when no token exists): the token file is created if
#   missing and made 0600 (Ray writes it 0644);
# - each head has its own temp dir, /tmp/ray-head-XXXXXX/t inside a 0700 folder (Ray makes the temp dir
#   itself 0777), so two heads on one machine never see each other's sessions, sockets or logs.
#
# Settings (environment): RAY_HEAD_HOST (127.0.0.1; another address opens the head on that network: see
# platform/README.md before doing so), RAY_PORT (6379), RAY_DASHBOARD_PORT (8265), RAY_NUM_CPUS (all cores),
# RAY_NUM_GPUS (auto), RAY_AUTH_TOKEN_PATH ($HOME/.ray/auth_token; RAY_AUTH_TOKEN, if set, is used instead),
# RAY_START_ARGS (more `ray start` flags, e.g. other ports), RAY_STATE_DIR (runs/ray-head: pid file, env, log).
set -euo pipefail
umask 077  # the token file, the env file, the log and the temp dir: this user only
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
RAY="$(dirname "$PY")/ray"
STATE="${RAY_STATE_DIR:-runs/ray-head}"
PORT="${RAY_PORT:-6379}"
DASH="${RAY_DASHBOARD_PORT:-8265}"
HOST="${RAY_HEAD_HOST:-127.0.0.1}"
mkdir -p "$STATE"
if [[ -f "$STATE/head.pid" ]] && kill -0 "$(cat "$STATE/head.pid")" 2>/dev/null; then
  echo "Ray head already running (pid $(cat "$STATE/head.pid")); dashboard http://127.0.0.1:$DASH"
  exit 0
fi
if [[ -n "${RAY_AUTH_MODE:-}" && "$RAY_AUTH_MODE" != "token" ]]; then
  echo "error: RAY_AUTH_MODE=$RAY_AUTH_MODE: this head always runs with token auth (anyone who reaches a head" \
       "without it runs code on this machine); unset RAY_AUTH_MODE" >&2
  exit 2
fi
export RAY_AUTH_MODE=token
if [[ -z "${RAY_AUTH_TOKEN:-}" ]]; then
  TOKEN_FILE="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
  mkdir -p "$(dirname "$TOKEN_FILE")"
  if [[ ! -s "$TOKEN_FILE" ]]; then
    "$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$TOKEN_FILE"
  fi
  chmod 600 "$TOKEN_FILE"
  export RAY_AUTH_TOKEN_PATH="$TOKEN_FILE"
fi
case "$HOST" in
  127.*|localhost|::1)
    HOST=127.0.0.1
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ;;  # keep the loopback node address (see the header)
  *)
    echo "warning: RAY_HEAD_HOST=$HOST: GCS, raylet, object manager, agents and workers listen on $HOST;" \
         "allow only the cluster's nodes to reach it (platform/README.md)" >&2 ;;
esac
TMP_PARENT="$(mktemp -d "${TMPDIR:-/tmp}/ray-head-XXXXXX")"  # short: Ray's socket paths have a length limit
read -r -a EXTRA <<<"${RAY_START_ARGS:-}"
args=(start --head --block --node-ip-address="$HOST" --port="$PORT"
      --dashboard-host=127.0.0.1 --dashboard-port="$DASH" --include-dashboard=true
      --temp-dir="$TMP_PARENT/t" --disable-usage-stats "${EXTRA[@]}")
if [[ -n "${RAY_NUM_CPUS:-}" ]]; then args+=(--num-cpus="$RAY_NUM_CPUS"); fi
if [[ -n "${RAY_NUM_GPUS:-}" ]]; then args+=(--num-gpus="$RAY_NUM_GPUS"); fi
# Workers import `pipelines` from this repo and use the Keras 2 API (see docs/design.md).
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export RAY_ADDRESS="$HOST:$PORT"  # every process of this head names its own cluster (never auto-detection)
setsid "$RAY" "${args[@]}" >"$STATE/head.log" 2>&1 &
echo $! >"$STATE/head.pid"
echo "$TMP_PARENT" >"$STATE/temp_dir"
{
  echo "# drivers on this machine: . $STATE/env"
  echo "export RAY_ADDRESS=$HOST:$PORT RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASH RAY_AUTH_MODE=token"
  if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then echo "export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"; fi
  if [[ "$HOST" == 127.0.0.1 ]]; then echo "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"; fi
} >"$STATE/env"
for _ in $(seq 1 120); do
  if "$PY" - "$DASH" <<'PYEOF' 2>/dev/null; then
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/version", timeout=2)
except urllib.error.HTTPError:
    pass  # 401: up, with Ray's token auth
PYEOF
    echo "Ray head up: dashboard / job API http://127.0.0.1:$DASH, RAY_ADDRESS=$HOST:$PORT (log $STATE/head.log)"
    echo "drivers on this machine: . $STATE/env"
    exit 0
  fi
  if ! kill -0 "$(cat "$STATE/head.pid")" 2>/dev/null; then
    echo "error: ray start failed; see $STATE/head.log" >&2; tail -5 "$STATE/head.log" >&2; exit 1
  fi
  sleep 1
done
echo "error: Ray head did not answer on http://127.0.0.1:$DASH within 120 s; see $STATE/head.log" >&2
exit 1
