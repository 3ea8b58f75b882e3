#!/usr/bin/env bash
# Stop the local Ray head started by start-head.sh (`make cluster-down`): only its own process group; then
# remove its temp dir (the /tmp/ray-head-XXXXXX folder start-head.sh made) and its env file.
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
if [[ -f "$STATE/temp_dir" ]]; then
  tmp="$(cat "$STATE/temp_dir")"
  # only a folder start-head.sh made (its name) and this user owns
  if [[ "$(basename "$tmp")" == ray-head-?????? && -d "$tmp" && -O "$tmp" ]]; then rm -rf -- "$tmp"; fi
  rm -f "$STATE/temp_dir"
fi
rm -f "$STATE/head.pid" "$STATE/env"
