#!/usr/bin/env bash
# Stop the local Ray head started by start-head.sh (`make cluster-down`): only its own process group.
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE="${RAY_STATE_DIR:-runs/ray-head}"
if [[ ! -f "$STATE/head.pid" ]]; then echo "no Ray head started from this repo ($STATE/head.pid missing)"; exit 0; fi
pid="$(cat "$STATE/head.pid")"
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  echo "Ray head (process group $pid) stopped"
else
  echo "Ray head (pid $pid) was not running"
fi
rm -f "$STATE/head.pid"
