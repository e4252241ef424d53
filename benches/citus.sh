#!/usr/bin/env bash
# One node against a three-node Citus cluster, same box, same run: each load shape RUNS times
# (default 2) on a private single-node cluster and on a durable Citus cluster (a coordinator and two
# workers, scripts/citus/citus-cluster.sh, with the bench's PostgreSQL settings on every node),
# alternating which goes first. Every run verifies the stored rows against the totals. Builds Citus
# first if needed (scripts/citus/build-citus.sh; see scripts/test-citus.sh for its source tarball).
#
#   benches/citus.sh [SHAPE...]     # shapes: v1 one-site v2 (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-2}
scripts/setup.sh

declare -A shapes=(
    [v1]="--api v1 --clients 64 --sites 100 --seconds 20 --replay-seconds 5"
    [one-site]="--api v1 --clients 10 --sites 1 --seconds 20"
    [v2]="--api v2 --format ndjson --clients 4 --batch-size 10000 --sites 100 --sites-per-batch 10 --seconds 20"
)
selected=("${@:-v1 one-site v2}")
read -r -a selected <<<"${selected[*]}"
for shape in "${selected[@]}"; do
    [ -n "${shapes[$shape]:-}" ] || { echo "unknown shape $shape: v1 | one-site | v2" >&2; exit 2; }
done

if [ -z "${CITUS_TARBALL:-}" ]; then
    for kit in ../shared/citus "$(cd .. && pwd)/shared/citus" /work/shared/citus; do
        [ -s "$kit/citus-v13.2.2.tar.gz" ] && { CITUS_TARBALL=$(cd "$kit" && pwd)/citus-v13.2.2.tar.gz; break; }
    done
fi
export CITUS_TARBALL
scripts/citus/build-citus.sh >&2
cargo build --release --locked -p plume --bin plume -p plume-bench --bin plume-load >&2
bin=${CARGO_TARGET_DIR:-target}/release

cluster=$(mktemp -d /tmp/plume-citus-bench.XXXXXX)
cleanup() {
    scripts/citus/citus-cluster.sh stop "$cluster" >/dev/null 2>&1 || true
    rm -rf "$cluster"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
read -r coordinator worker1 worker2 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()')
url=$(CITUS_COORDINATOR_PORT=$coordinator CITUS_WORKER1_PORT=$worker1 CITUS_WORKER2_PORT=$worker2 \
    CITUS_MAX_CONNECTIONS=300 CITUS_DURABLE=1 \
    CITUS_EXTRA_CONF=$'shared_buffers = 2GB\nmax_wal_size = 16GB\ncheckpoint_timeout = 30min\nwork_mem = 16MB' \
    scripts/citus/citus-cluster.sh start "$cluster")

variants=("one node|" "citus|--database-url ${url}?sslmode=disable --citus")
for shape in "${selected[@]}"; do
    for run in $(seq 1 "$runs"); do
        order=("${variants[@]}")
        if [ $((run % 2)) -eq 0 ]; then
            order=("${variants[1]}" "${variants[0]}")
        fi
        for variant in "${order[@]}"; do
            IFS='|' read -r name extra <<<"$variant"
            echo "=== $shape, run $run, $name"
            # shellcheck disable=SC2086 # the options are words
            "$bin/plume-load" --plume-binary "$bin/plume" ${shapes[$shape]} $extra 2>&1 |
                grep -E '^(accepted|replays|verify|server peak RSS)' || true
        done
    done
done
