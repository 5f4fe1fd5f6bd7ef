#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server for the test suite (installing
# Debian's package if it is absent) and prints its URL.
# Usage: eval "$(bash .ci/postgres.sh)"   -> sets GIGAFAB_TEST_POSTGRES
set -euo pipefail
PORT="${GIGAFAB_PG_PORT:-55432}"
DIR="${GIGAFAB_PG_DIR:-/tmp/gigafab-pg-$PORT}"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
    echo "installing PostgreSQL from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
as_pg() {
    if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    as_pg "$bin/initdb -D $DIR -A trust -U gigafab -E UTF8 >/dev/null"
    as_pg "$bin/pg_ctl -D $DIR -l $DIR/log -w -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on' start >/dev/null"
fi
"$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT"
echo "export GIGAFAB_TEST_POSTGRES=postgres://gigafab@127.0.0.1:$PORT/postgres"
