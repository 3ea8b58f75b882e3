#!/usr/bin/env bash
# Run the MLflow tracking server for this project: start | stop | status.
#
#   platform/mlflow/server.sh start          # = make mlflow-up   -> http://127.0.0.1:5000
#   platform/mlflow/server.sh stop           # = make mlflow-down
#
# Settings (environment variables, defaults in brackets):
#   MLFLOW_HOST                  [127.0.0.1]  interface to bind; anything but loopback (127.x, ::1, localhost)
#                                             is refused unless MLFLOW_AUTH=1 (and then put TLS in front)
#   MLFLOW_PORT                  [5000]
#   MLFLOW_BACKEND_STORE_URI     [sqlite:///<project>/mlruns.db]  or postgresql://USER:PASS@HOST:5432/DB
#                                             (read as postgresql+psycopg2://, the pinned driver)
#   MLFLOW_ARTIFACTS_DESTINATION [<project>/mlartifacts]  where the server stores artifacts (or s3://...)
#   MLFLOW_WORKERS               [2]
#   MLFLOW_AUTH                  [0]  1 = basic-auth app (users/permissions); needs MLFLOW_AUTH_ADMIN_PASSWORD
#   MLFLOW_AUTH_DB               [sqlite:///<project>/mlflow_auth.db]  user store of the basic-auth app
#   MLFLOW_STATE_DIR             [<project>/.mlflow]  pid file and server.log
#   PYTHON                       [<project>/.venv/bin/python]
#   MLFLOW_START_TIMEOUT         [60]  seconds to wait for /health (a loaded machine may need more)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION [false]  MLflow 3's server-side job runner (GenAI evaluation jobs,
#                                             trace rollups): this project uses none of it, and on start it
#                                             spawns ~8 huey worker processes and a temp dir in /dev/shm
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
HOST="${MLFLOW_HOST:-127.0.0.1}"
PORT="${MLFLOW_PORT:-5000}"
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$ROOT/mlruns.db}"
# SQLAlchemy 2.1 reads a bare postgresql:// as the psycopg 3 driver, which is not installed
if [[ "$BACKEND" == postgresql://* ]]; then BACKEND="postgresql+psycopg2://${BACKEND#postgresql://}"; fi
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$ROOT/mlartifacts}"
WORKERS="${MLFLOW_WORKERS:-2}"
STATE="${MLFLOW_STATE_DIR:-$ROOT/.mlflow}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PIDFILE="$STATE/server.pid"
LOG="$STATE/server.log"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

loopback() { case "$1" in 127.*|::1|localhost) return 0 ;; *) return 1 ;; esac; }

# Where this machine reaches the server: a wildcard bind is reached on loopback; an IPv6 address in brackets.
local_url() {
  case "$HOST" in
    0.0.0.0) echo "http://127.0.0.1:$PORT" ;;
    ::) echo "http://[::1]:$PORT" ;;
    *:*) echo "http://[$HOST]:$PORT" ;;
    *) echo "http://$HOST:$PORT" ;;
  esac
}

start() {
  if ! loopback "$HOST" && [[ "${MLFLOW_AUTH:-0}" != "1" ]]; then
    echo "error: MLFLOW_HOST=$HOST opens the tracking server beyond this machine with no login: anyone who reaches" \
         "it reads and changes runs, models and artifacts; set MLFLOW_AUTH=1 (with MLFLOW_AUTH_ADMIN_PASSWORD) or" \
         "keep MLFLOW_HOST=127.0.0.1" >&2
    exit 2
  fi
  if running; then echo "mlflow server already running (pid $(cat "$PIDFILE")) on $(local_url)"; return 0; fi
  mkdir -p "$STATE"
  case "$ARTIFACTS" in *://*) ;; *) mkdir -p "$ARTIFACTS" ;; esac
  local args=(server --host "$HOST" --port "$PORT" --workers "$WORKERS"
              --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS")
  if [[ "${MLFLOW_AUTH:-0}" == "1" ]]; then
    if [[ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]]; then
      echo "error: MLFLOW_AUTH=1 needs MLFLOW_AUTH_ADMIN_PASSWORD (the admin password set on first start)" >&2
      exit 2
    fi
    sed "s#^database_uri = .*#database_uri = ${MLFLOW_AUTH_DB:-sqlite:///$ROOT/mlflow_auth.db}#" \
      "$HERE/basic_auth.ini" > "$STATE/basic_auth.ini"
    export MLFLOW_AUTH_CONFIG_PATH="$STATE/basic_auth.ini"
    export MLFLOW_FLASK_SERVER_SECRET_KEY="${MLFLOW_FLASK_SERVER_SECRET_KEY:-$("$PY" -c 'import secrets; print(secrets.token_hex(16))')}"
    args+=(--app-name basic-auth)
  fi
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
  # Own session, so `stop` can end the server and its workers (one process group) and nothing else.
  setsid "$PY" -m mlflow "${args[@]}" >"$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local timeout="${MLFLOW_START_TIMEOUT:-60}"
  for _ in $(seq 1 $((timeout * 2))); do
    if curl -fsS "$(local_url)/health" >/dev/null 2>&1; then
      echo "mlflow server up: $(local_url) (bound to $HOST, backend ${BACKEND%%:*}, artifacts $ARTIFACTS, pid $(cat "$PIDFILE"))"
      echo "use it: export MLFLOW_TRACKING_URI=$(local_url)   (or --tracking-uri $(local_url))"
      return 0
    fi
    if ! running; then echo "error: mlflow server exited; see $LOG" >&2; tail -n 20 "$LOG" >&2; rm -f "$PIDFILE"; exit 1; fi
    sleep 0.5
  done
  echo "error: mlflow server did not answer on $(local_url)/health within $timeout s; see $LOG" >&2
  exit 1
}

stop() {
  if ! running; then echo "mlflow server not running"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "mlflow server stopped (pid $pid)"
}

status() {
  if running; then echo "mlflow server running (pid $(cat "$PIDFILE")) on $(local_url)"; else echo "mlflow server not running"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status  (settings: see the header of this script)" >&2; exit 2 ;;
esac
