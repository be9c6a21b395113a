#!/usr/bin/env bash
# The primary's replication setup, run once by the postgres image when it initialises an empty
# data directory (mounted into /docker-entrypoint-initdb.d): a replication role, the slot the
# replica streams from, and a pg_hba line letting that role in from the compose network.
# A data directory initialised before this script existed never runs it: see compose.yaml.
set -Eeo pipefail

: "${REPLICATION_USER:?set REPLICATION_USER}" "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"
: "${REPLICATION_SLOT:?set REPLICATION_SLOT}"

# psql interpolates :'name' and :"name" as a quoted literal and identifier: no quoting by hand.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=user="$REPLICATION_USER" --set=password="$REPLICATION_PASSWORD" \
    --set=slot="$REPLICATION_SLOT" <<'SQL'
CREATE ROLE :"user" WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot(:'slot');
SQL

# `samenet`: any address on the server's own subnets, i.e. the compose network whatever range
# Docker gave it. "all" in the image's own line matches no replication connection.
echo "host replication $REPLICATION_USER samenet scram-sha-256" >>"$PGDATA/pg_hba.conf"
