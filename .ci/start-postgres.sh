#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for the test suite: its own data directory, its own port, loopback
# only, no durability (fsync off), gone with the machine. Installs Debian's server package when
# it is missing, since a new machine keeps nothing installed by hand. Run as root (initdb itself
# runs as the postgres user, which the package creates).
#
#   eval "$(bash .ci/start-postgres.sh)"     # exports OOS_TEST_PG_URL, PG_BIN, PGDATA_TMP
#   runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_TMP" -m immediate stop
set -euo pipefail
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PORT=${PGPORT_TEST:-55432}
if [[ ! -x $PG_BIN/initdb ]]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
fi
# Another server (another checkout's CI run) may hold the port: take the next free one.
while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
DIR=$(mktemp -d /tmp/pgtest.XXXXXX)
chown postgres:postgres "$DIR"
# Trust authentication: the server listens on 127.0.0.1 and a private socket directory only.
runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 \
  --locale=C.UTF-8 --no-sync >"$DIR/initdb.log"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 -o \
  "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off \
   -c full_page_writes=off -c max_connections=300" start >&2
# The tests' role may create databases (one per test, cloned from a template) and end the
# sessions on them, autovacuum's included, when it drops them (DROP DATABASE ... WITH (FORCE)).
runuser -u postgres -- "$PG_BIN/psql" -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -q \
  -c "CREATE ROLE oos LOGIN CREATEDB PASSWORD 'oos'" -c "GRANT pg_signal_backend TO oos" \
  -c "CREATE DATABASE oos OWNER oos"
echo "export PG_BIN=$PG_BIN PGDATA_TMP=$DIR/data"
echo "export OOS_TEST_PG_URL=postgresql+psycopg://oos:oos@127.0.0.1:$PORT/oos"
