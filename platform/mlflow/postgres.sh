#!/usr/bin/env bash
# A throwaway PostgreSQL server for MLflow's backend store (tests, local experiments).
#
#   platform/mlflow/postgres.sh install          # Debian's postgresql package (apt-get, as root); no-op if present
#   platform/mlflow/postgres.sh start DIR [DB]   # initdb in DIR, start on 127.0.0.1 on a free port, create DB;
#                                                # prints the connection string, e.g.
#                                                # postgresql+psycopg2://mlflow@127.0.0.1:54321/mlflow
#                                                # (SQLAlchemy form; for psql drop "+psycopg2")
#   platform/mlflow/postgres.sh stop DIR         # stop the server started in DIR (the data stays in DIR)
#
# The server listens on 127.0.0.1 only and trusts local connections (a throwaway data dir, never a
# shared one). As root, initdb/pg_ctl run as the `postgres` user (PostgreSQL refuses to run as root).
# Use the printed URI as `mlflow server --backend-store-uri URI` (the psycopg2-binary driver is pinned
# in requirements.txt).
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

pg_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir; return 0
    fi
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

install() {
    if pg_bindir >/dev/null; then
        echo "postgresql already installed: $(pg_bindir)"; return 0
    fi
    [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and installing it needs root: sudo apt-get install postgresql"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and this is not a Debian/Ubuntu system (no apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's own post-install would create and start a system cluster: we only want the binaries.
    mkdir -p /etc/postgresql-common
    [ -f /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold postgresql >/dev/null
    pg_bindir >/dev/null || die "apt-get installed postgresql but initdb was not found"
    echo "postgresql installed: $(pg_bindir)"
}

# Run a command as the user that owns the data dir (postgres when we are root).
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    local py
    py=$(command -v python3 || command -v python) || die "python3 is needed to pick a free port"
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local dir=${1:?usage: postgres.sh start DIR [DB]} db=${2:-mlflow} bin port
    bin=$(pg_bindir) || die "PostgreSQL is not installed; run: platform/mlflow/postgres.sh install (or make postgres)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ ! -f "$dir/data/PG_VERSION" ] || die "$dir/data already holds a cluster; use a new DIR"
    mkdir -p "$dir/data" "$dir/socket"
    [ "$(id -u)" != 0 ] || chown -R postgres: "$dir"
    chmod 700 "$dir/data"
    as_owner test -w "$dir/data" || die "the postgres user cannot write $dir (a parent folder is private?); use a DIR under /tmp"
    as_owner "$bin/initdb" -D "$dir/data" -U mlflow --auth=trust --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || die "initdb failed; see $dir/initdb.log"
    local tries
    for tries in 1 2 3; do
        port=$(free_port)
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
                -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c fsync=off" start >/dev/null 2>&1; then
            echo "$port" > "$dir/port"
            as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U mlflow "$db" || die "createdb $db failed"
            echo "postgresql+psycopg2://mlflow@127.0.0.1:$port/$db"
            return 0
        fi
    done
    die "the server did not start; see $dir/server.log"
}

stop() {
    local dir=${1:?usage: postgres.sh stop DIR} bin
    bin=$(pg_bindir) || die "PostgreSQL is not installed"
    [ -f "$dir/data/postmaster.pid" ] || { echo "no server running in $dir"; return 0; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    echo "stopped the server in $dir"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
