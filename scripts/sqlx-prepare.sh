#!/usr/bin/env bash
# Regenerates `.sqlx/` (the query data sqlx's macros compile against offline) from a database built
# from `migrations/`, or with --check fails if the committed data is stale or a query no longer fits
# the schema. Runs its own throwaway PostgreSQL on a private socket; needs nothing running and does
# not need plume to build first (so it works after a query or a migration changed).
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[ "${1:-}" = "--check" ] && check=true

scripts/setup.sh
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
as_postgres=()
[ "$(id -u)" -eq 0 ] && as_postgres=(runuser -u postgres --)

work=$(mktemp -d /tmp/plume-sqlx.XXXXXX)
chmod 755 "$work"
[ ${#as_postgres[@]} -gt 0 ] && chown postgres "$work"
cleanup() {
    "${as_postgres[@]}" "$bin/pg_ctl" -D "$work/db" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"${as_postgres[@]}" "$bin/initdb" -D "$work/db" -U postgres --auth=trust --no-locale --no-sync >/dev/null
"${as_postgres[@]}" "$bin/pg_ctl" -D "$work/db" -l "$work/postgres.log" -w start \
    -o "-c listen_addresses= -c unix_socket_directories=$work -c fsync=off" >/dev/null
psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -U postgres)
"${psql[@]}" -d postgres -c "create database plume"
# The migrations in version order, each in one transaction as refinery runs them, and refinery's
# history table, which the readiness query reads.
for migration in $(ls migrations/V*__*.sql | sort -t V -k 2 -n); do
    "${psql[@]}" -d plume -1 -f "$migration" >/dev/null
done
"${psql[@]}" -d plume -c "create table refinery_schema_history (version int4 primary key,
    name varchar(255), applied_on varchar(255), checksum varchar(255))"

fresh="$work/sqlx"
mkdir -p "$fresh"
# The macros write query data only when they run: touch every crate that has queries.
touch server/src/lib.rs partitioning/src/lib.rs seeds/src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$fresh" DATABASE_URL="postgres:///plume?host=$work&user=postgres" \
    cargo check --locked -q --workspace --all-targets
touch server/src/lib.rs partitioning/src/lib.rs seeds/src/lib.rs

if $check; then
    if ! diff -r -q "$fresh" .sqlx >/dev/null 2>&1; then
        diff -r -q "$fresh" .sqlx >&2 || true
        echo ".sqlx/ is stale: run scripts/sqlx-prepare.sh and commit the result" >&2
        exit 1
    fi
    echo ".sqlx/ matches the schema"
else
    rm -rf .sqlx
    cp -r "$fresh" .sqlx
    echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
fi
