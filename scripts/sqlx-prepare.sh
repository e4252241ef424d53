#!/usr/bin/env bash
# Regenerates `.sqlx/` (the query data sqlx's macros compile against offline) from a freshly migrated
# database, or with --check fails if the committed data is stale or a query no longer fits the schema.
# Starts and stops its own embedded PostgreSQL through plume; needs nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[ "${1:-}" = "--check" ] && check=true

scripts/setup.sh
cargo build --locked -q -p plume
work=$(mktemp -d /tmp/plume-sqlx.XXXXXX)
chmod 755 "$work"
log="$work/plume.log"
PLUME_LOG_FORMAT=json target/debug/plume serve --no-demo --data-dir "$work/db" --listen 127.0.0.1:0 >"$log" 2>&1 &
plume=$!
cleanup() { kill -INT "$plume" 2>/dev/null || true; wait "$plume" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 120); do
    grep -q '"plume is serving"' "$log" && break
    kill -0 "$plume" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.5
done
port=$(grep -o '"port":[0-9]*' "$log" | head -1 | cut -d: -f2)
[ -n "$port" ] || { echo "could not find the embedded PostgreSQL's port in $log" >&2; exit 1; }

fresh="$work/sqlx"
mkdir -p "$fresh"
# The macros only write query data when they run: touch every crate that has queries.
touch server/src/lib.rs partitioning/src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$fresh" DATABASE_URL="postgres://postgres@127.0.0.1:$port/plume" \
    cargo check --locked -q --workspace --all-targets
touch server/src/lib.rs partitioning/src/lib.rs

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
