#!/usr/bin/env bash
# Quick start: installs what is missing, then runs plume with its own PostgreSQL (unless
# DATABASE_URL is set), migrated and loaded with demo data. Arguments go to `plume serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# As root, the embedded PostgreSQL runs as the postgres user, which must reach its data directory.
# A clone under a private home (such as /root) is out of its reach: keep the database elsewhere.
if [ "$(id -u)" -eq 0 ] && [ -z "${DATABASE_URL:-}" ] && [ -z "${PLUME_DATA_DIR:-}" ] \
    && ! runuser -u postgres -- test -x "$PWD"; then
    export PLUME_DATA_DIR="/var/lib/plume/$(printf %s "$PWD" | md5sum | cut -c1-12)"
    echo "note: user postgres cannot reach $PWD; the embedded database lives in $PLUME_DATA_DIR" >&2
fi
exec cargo run --release --locked -p plume -- serve "$@"
