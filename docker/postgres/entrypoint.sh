#!/bin/bash
# Makes the cluster on the first start of an empty data directory, then runs the command (postgres).
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
major=$(pg_config --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')

if [ -s "$PGDATA/PG_VERSION" ]; then
    found=$(cat "$PGDATA/PG_VERSION")
    if [ "$found" != "$major" ]; then
        echo "the data directory holds a PostgreSQL $found cluster, this image runs PostgreSQL $major:" \
            "upgrade it with pg_upgrade or dump and restore it into a new volume" >&2
        exit 1
    fi
else
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        password=$(<"$POSTGRES_PASSWORD_FILE")
    else
        password=${POSTGRES_PASSWORD:-}
    fi
    if [ -z "$password" ]; then
        echo "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE: the cluster's superuser needs a password" >&2
        exit 1
    fi
    echo "creating a PostgreSQL $major cluster in $PGDATA (superuser $user, database $database)" >&2
    initdb -D "$PGDATA" -U "$user" --pwfile=<(printf '%s\n' "$password") -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    # Over the network, only with the password; inside the container, only as the postgres user.
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # peer: the local postgres account may connect as the superuser while the cluster is made.
    sed -i "s/^local\( *\)all\( *\)all\( *\)peer$/local all all peer map=owner/" "$PGDATA/pg_hba.conf"
    printf 'owner postgres %s\nowner postgres postgres\n' "$user" >>"$PGDATA/pg_ident.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/run/postgresql" -w start >/dev/null
    if [ "$database" != postgres ]; then
        echo 'create database :"name"' |
            psql -X -q -v ON_ERROR_STOP=1 -h /run/postgresql -U "$user" -d postgres -v name="$database"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$@"
