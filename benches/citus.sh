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

# shellcheck source=scripts/citus/kit.sh
source scripts/citus/kit.sh
cargo build --release --locked -p plume --bin plume -p plume-bench --bin plume-load >&2
bin=${CARGO_TARGET_DIR:-target}/release

start_citus_cluster plume-citus-bench \
    CITUS_EXTRA_CONF=$'shared_buffers = 2GB\nmax_wal_size = 16GB\ncheckpoint_timeout = 30min\nwork_mem = 16MB'

variants=("one node|" "citus|--database-url ${CITUS_URL}?sslmode=disable --citus")
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
