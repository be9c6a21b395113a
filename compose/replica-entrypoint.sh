#!/usr/bin/env bash
# The replica's entrypoint: on an empty data directory, wait for the primary and clone it with
# `pg_basebackup -R -X stream` (-R leaves standby.signal and a primary_conninfo carrying the
# password, so the standby reconnects by itself after the primary restarts); then hand over to
# the image's own entrypoint, which starts postgres on the existing data directory.
set -Eeo pipefail

: "${PRIMARY_HOST:?set PRIMARY_HOST}" "${REPLICATION_USER:?set REPLICATION_USER}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}" "${REPLICATION_SLOT:?set REPLICATION_SLOT}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
WAIT_SECONDS="${PRIMARY_WAIT_SECONDS:-60}"

if [ "$(id -u)" = 0 ]; then
    # A fresh volume belongs to root: give it to postgres, then run this script again as postgres.
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    exec gosu postgres bash "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    waited=0
    until pg_isready --quiet --host "$PRIMARY_HOST" --port "$PRIMARY_PORT"; do
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            echo "replica: the primary $PRIMARY_HOST:$PRIMARY_PORT did not answer in ${WAIT_SECONDS}s" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "replica: cloning $PRIMARY_HOST:$PRIMARY_PORT into $PGDATA" >&2
    PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup \
        --host "$PRIMARY_HOST" --port "$PRIMARY_PORT" --username "$REPLICATION_USER" \
        --pgdata "$PGDATA" --write-recovery-conf --wal-method stream \
        --slot "$REPLICATION_SLOT" --checkpoint fast --no-password
fi

exec docker-entrypoint.sh "$@"
