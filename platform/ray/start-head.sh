#!/usr/bin/env bash
# Start a local Ray head for this repo: `make cluster-up` (or platform/ray/start-head.sh).
#   dashboard + job API: http://127.0.0.1:8265     GCS: port 6379
# Then:  python -m pipelines submit --address http://127.0.0.1:8265 -- tune --family baseline --smoke-test
#        RAY_ADDRESS=127.0.0.1:6379 python -m pipelines train --workers 2
# Stop with `make cluster-down`: it stops only the head this script started (process group in the pid file),
# never other Ray instances on the machine (`ray stop` would stop them all).
# Settings (environment): RAY_PORT (6379), RAY_DASHBOARD_PORT (8265), RAY_NUM_CPUS (all cores), RAY_NUM_GPUS (auto),
# RAY_STATE_DIR (runs/ray-head: pid file, log; Ray's own temp dir goes to /tmp/ray-head-$USER).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
RAY="$(dirname "$PY")/ray"
STATE="${RAY_STATE_DIR:-runs/ray-head}"
PORT="${RAY_PORT:-6379}"
DASH="${RAY_DASHBOARD_PORT:-8265}"
mkdir -p "$STATE"
if [[ -f "$STATE/head.pid" ]] && kill -0 "$(cat "$STATE/head.pid")" 2>/dev/null; then
  echo "Ray head already running (pid $(cat "$STATE/head.pid")); dashboard http://127.0.0.1:$DASH"
  exit 0
fi
args=(start --head --block --node-ip-address=127.0.0.1 --port="$PORT"
      --dashboard-host=127.0.0.1 --dashboard-port="$DASH" --include-dashboard=true
      --temp-dir="/tmp/ray-head-${USER:-ray}" --disable-usage-stats)
[[ -n "${RAY_NUM_CPUS:-}" ]] && args+=(--num-cpus="$RAY_NUM_CPUS")
[[ -n "${RAY_NUM_GPUS:-}" ]] && args+=(--num-gpus="$RAY_NUM_GPUS")
# Workers import `pipelines` from this repo and use the Keras 2 API (see DESIGN.md).
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
setsid "$RAY" "${args[@]}" >"$STATE/head.log" 2>&1 &
echo $! >"$STATE/head.pid"
for _ in $(seq 1 120); do
  if "$PY" - "$DASH" <<'PYEOF' 2>/dev/null; then
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/version", timeout=2)
except urllib.error.HTTPError:
    pass  # 401: up, with Ray's token auth
PYEOF
    echo "Ray head up: dashboard / job API http://127.0.0.1:$DASH, RAY_ADDRESS=127.0.0.1:$PORT (log $STATE/head.log)"
    exit 0
  fi
  if ! kill -0 "$(cat "$STATE/head.pid")" 2>/dev/null; then
    echo "error: ray start failed; see $STATE/head.log" >&2; tail -5 "$STATE/head.log" >&2; exit 1
  fi
  sleep 1
done
echo "error: Ray head did not answer on http://127.0.0.1:$DASH within 120 s; see $STATE/head.log" >&2
exit 1
