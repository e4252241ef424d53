#!/usr/bin/env bash
# Moving an existing single-node plume database onto Citus, timed: a database with plume's schema
# on the coordinator of a three-node cluster (scripts/citus/citus-cluster.sh), loaded with
# SITES × READINGS synthetic readings (`plume seed --synthetic`, default 100 × 100,000 = 10M) while
# its tables are still plain tables, then `plume migrate --citus`, which distributes them with
# their rows. Meanwhile a probe reads a site's readings and inserts one (rolled back), each with a
# 1 s timeout, every 200 ms, and counts what had to wait: what the distribution locks. Then
# `plume verify`.
#
#   benches/citus-migrate.sh                 # starts its own cluster (see scripts/test-citus.sh)
#   CITUS_URL=postgresql://postgres@127.0.0.1:5432/postgres benches/citus-migrate.sh
#                                            # an existing cluster's coordinator (workers registered)
set -euo pipefail
cd "$(dirname "$0")/.."
sites=${SITES:-100}
readings=${READINGS:-100000}
scripts/setup.sh
cargo build --release --locked -p plume --bin plume >&2
plume=${CARGO_TARGET_DIR:-target}/release/plume
if [ -z "${CITUS_URL:-}" ]; then
    # shellcheck source=scripts/citus/kit.sh
    source scripts/citus/kit.sh
    start_citus_cluster plume-citus-migrate
fi

name=plume_migrate_$$
coordinator=${CITUS_URL%/*}
psql=(psql -X -q -v ON_ERROR_STOP=1)
workers=$("${psql[@]}" -At "$CITUS_URL" -c \
    "select node_name || ':' || node_port from citus_get_active_worker_nodes() order by node_port")
coordinator_port=$("${psql[@]}" -At "$CITUS_URL" -c "select current_setting('port')")
for node in $workers "127.0.0.1:$coordinator_port"; do
    url="postgresql://postgres@$node"
    "${psql[@]}" "$url/postgres" -c "create database $name"
    "${psql[@]}" "$url/$name" -c "set client_min_messages = warning" -c "create extension citus" \
        -c "create schema partman" -c "create extension pg_partman schema partman"
done
url="$coordinator/$name?sslmode=disable"
"${psql[@]}" "$url" -c "select citus_set_coordinator_host('127.0.0.1', $coordinator_port)" >/dev/null
for node in $workers; do
    "${psql[@]}" "$url" -c "select citus_add_node('${node%:*}', ${node#*:})" >/dev/null
done

echo "== one node's schema on the coordinator, $sites sites × $readings readings"
"$plume" migrate --database-url "$url"
"$plume" seed --synthetic --sites "$sites" --readings-per-site "$readings" --database-url "$url"

# The probe: a read and a write every 200 ms, each given 1 s.
probe_log=$(mktemp)
probe() {
    local site
    site=$("${psql[@]}" -At "$url" -c "select min(id) from sites")
    while :; do
        # The write is what ingestion does first to the largest table, rolled back.
        for what in "select count(*) from measurements where site_id = $site" \
            "insert into measurements values ($site, 'probe', now(), 1) on conflict do nothing"; do
            started=$(date +%s.%N)
            if "${psql[@]}" "$url" -c "set statement_timeout = '1s'" -c "begin" -c "$what" \
                -c "rollback" >/dev/null 2>&1; then
                result=ok
            else
                result=timed-out
            fi
            echo "${what%% *} $result $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" >>"$probe_log"
        done
        sleep 0.2
    done
}
probe &
probe_pid=$!
echo "== plume migrate --citus"
started=$(date +%s.%N)
"$plume" migrate --citus --database-url "$url"
took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
kill "$probe_pid" 2>/dev/null || true
wait "$probe_pid" 2>/dev/null || true
echo "plume migrate --citus: $took s for $((sites * readings)) readings"
for kind in select insert; do
    awk -v kind="$kind" '$1 == kind { n++; if ($2 != "ok") late++; if ($3 > max) max = $3 }
        END { printf "probe %s during the distribution: %d tries, %d timed out (1 s), longest %.2f s\n",
              kind, n, late, max }' "$probe_log"
done
rm -f "$probe_log"
"$plume" verify --database-url "$url"
