#!/usr/bin/env bash
# The ingestion benchmarks of docs/BENCHMARKS.md in one go: builds the release binaries, runs each
# plume-load shape RUNS times (default 3) against a fresh private PostgreSQL each time, with plume
# as its own process, and prints every run's figures and then the medians. The criterion benches
# are `cargo bench -p plume-bench --bench hot-path` (not run here: they take a few minutes alone).
#
#   benches/run.sh            # all shapes, 3 runs each (about 8 minutes on 2 cores)
#   RUNS=5 benches/run.sh v2  # one shape: v2 | v1 | one-site | duplicates
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
runs=${RUNS:-3}
cargo build --release --locked -p plume --bin plume -p plume-bench --bin plume-load >&2
load=(target/release/plume-load --plume-binary target/release/plume)

declare -A shapes=(
    [v2]="--api v2 --format ndjson --clients 4 --batch-size 10000 --sites 100 --sites-per-batch 10 --seconds 20 --baseline"
    [v1]="--api v1 --clients 64 --sites 100 --seconds 20 --replay-seconds 5 --baseline"
    [one-site]="--api v1 --clients 10 --sites 1 --seconds 20"
    [duplicates]="--api v1 --clients 64 --sites 100 --seconds 20 --duplicate-ratio 0.1"
)
selected=("${@:-v2 v1 one-site duplicates}")
read -r -a selected <<<"${selected[*]}"

# The median of the numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

summary=()
for shape in "${selected[@]}"; do
    [ -n "${shapes[$shape]:-}" ] || { echo "unknown shape $shape: v2 | v1 | one-site | duplicates" >&2; exit 2; }
    log=$(mktemp)
    for run in $(seq "$runs"); do
        echo "== $shape, run $run: plume-load ${shapes[$shape]}"
        # shellcheck disable=SC2086
        "${load[@]}" ${shapes[$shape]} | tee -a "$log"
    done
    # A figure a shape does not print (replays without --replay-seconds) is "-", not an error.
    figure() { { grep -o "$1" "$log" || true; } | { grep -o '[0-9.]*' || true; }; }
    rate=$(figure 'accepted [0-9]* readings/s' | median)
    p99=$({ grep '^accepted' "$log" || true; } | { grep -o 'p99 [0-9.]*' || true; } | awk '{ print $2 }' | median)
    ratio=$(figure 'service/baseline = [0-9]*%' | median)
    replays=$(figure 'replays: [0-9]* requests/s' | median)
    rss=$(figure 'server peak RSS: [0-9]* MB' | median)
    [ "$ratio" = - ] || ratio="$ratio%"
    [ "$rss" = - ] || rss="$rss MB"
    summary+=("| $shape | $runs | $rate | $p99 | $ratio | $replays | $rss |")
    rm -f "$log"
done
echo
echo "| shape | runs | readings/s (median) | p99 ms (median) | service/psql \\copy | replays/s | server peak RSS |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
