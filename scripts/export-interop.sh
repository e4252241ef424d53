#!/usr/bin/env bash
# Reads plume's Parquet exports with what data teams read them with, pyarrow and DuckDB, and checks
# them against the database: a real `plume serve` over its own embedded PostgreSQL, readings
# ingested through the API, exports downloaded (one site of awkward values, one of 150,000 readings
# in several row groups, every site, and an empty one), and for each the schema, the unit in the
# footer, the count, the sum of milligrams and every row compared exactly with psql's
# (scripts/export-interop.py). pyarrow and DuckDB come from PyPI at the versions pinned in
# scripts/export-interop.requirements.txt, in a virtual environment kept between runs
# (PLUME_PY_VENV, by default ~/.cache/plume-py/interop) and remade when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
scripts/setup.sh python3-venv

requirements=scripts/export-interop.requirements.txt
venv=${PLUME_PY_VENV:-$HOME/.cache/plume-py/interop}
if ! cmp -s "$requirements" "$venv/installed-requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: -r "$requirements"
    cp "$requirements" "$venv/installed-requirements.txt"
fi

cargo build --locked -p plume
plume=${CARGO_TARGET_DIR:-target}/debug/plume

# Under /tmp: as root, the embedded PostgreSQL runs as the postgres user, which must reach it.
data_dir=$(mktemp -d /tmp/plume-interop-XXXXXX)
server=
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$data_dir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PLUME_DATA_DIR=$data_dir DATABASE_URL= RUST_LOG=warn
PLUME_LISTEN=127.0.0.1:$port "$plume" serve --no-demo --no-relay >"$data_dir/serve.log" 2>&1 &
server=$!
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$data_dir/serve.log" >&2; exit 1; }
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/ready" >/dev/null || { echo "plume did not become ready" >&2; exit 1; }

token=$("$plume" tokens create --kind admin --name export-interop --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
pid_file=$(find "$data_dir" -name postmaster.pid | head -n 1)
PLUME_URL=http://127.0.0.1:$port PLUME_TOKEN=$token \
    PGHOST=127.0.0.1 PGPORT=$(sed -n 4p "$pid_file") PGUSER=postgres PGDATABASE=plume \
    PGPASSWORD=$(cat "$data_dir/password") \
    "$venv/bin/python" scripts/export-interop.py
echo "export-interop: $(($(date +%s) - started)) s"
