#!/usr/bin/env bash
# The ingestion benchmarks of docs/BENCHMARKS.md in one go: builds the release binaries, runs each
# plume-load shape RUNS times (default 3) against a fresh private PostgreSQL each time, with plume
# as its own process, and prints every run's figures and then the medians. The criterion benches
# are `cargo bench -p plume-bench --bench hot-path` (not run here: they take a few minutes alone).
#
#   benches/run.sh            # all shapes, 3 runs each (about 8 minutes on 2 cores)
#   RUNS=5 benches/run.sh v2  # one shape: v2 | v1 | one-site | duplicates
#
# AUTH="enforce off" runs each shape with authentication enforced and off (`plume-load --auth`),
# alternating run by run (enforce, off, off, enforce, ...: neither always goes first) so that both
# share the machine's drift, and reports each apart: what authentication costs. The shapes auth-v1, auth-replays and auth-one-client are made for it
# (the default AUTH is enforce alone, as the service runs):
#
#   AUTH="enforce off" benches/run.sh auth-v1 auth-replays auth-one-client   # about 12 minutes
#
# COMPRESS="none gzip zstd" does the same with the bodies' coding (`plume-load --compress`): each
# shape runs with plain, gzip and zstd bodies in turn, the order reversed every other run. The
# shapes compress-v1, compress-v2 and compress-v2-csv are made for it (short, so that the nine runs
# of a shape stay under five minutes):
#
#   RUNS=3 COMPRESS="none gzip zstd" benches/run.sh compress-v1 compress-v2 compress-v2-csv
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
    [auth-v1]="--api v1 --clients 64 --sites 100 --seconds 20"
    [auth-replays]="--api v1 --clients 64 --sites 100 --seconds 5 --replay-seconds 20"
    [auth-one-client]="--api v1 --clients 1 --sites 100 --seconds 10 --replay-seconds 10"
    [compress-v1]="--api v1 --clients 64 --sites 100 --seconds 10 --replay-seconds 3"
    [compress-v2]="--api v2 --format ndjson --clients 4 --batch-size 10000 --sites 100 --sites-per-batch 10 --seconds 10"
    [compress-v2-csv]="--api v2 --format csv --clients 4 --batch-size 10000 --sites 100 --sites-per-batch 10 --seconds 10"
)
read -r -a auths <<<"${AUTH:-enforce}"
read -r -a codings <<<"${COMPRESS:-none}"
# Each mode is one authentication mode with one coding of the bodies: "enforce/gzip".
modes=()
for auth in "${auths[@]}"; do
    for coding in "${codings[@]}"; do modes+=("$auth/$coding"); done
done
selected=("${@:-v2 v1 one-site duplicates}")
read -r -a selected <<<"${selected[*]}"

# The median of the numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

summary=()
for shape in "${selected[@]}"; do
    [ -n "${shapes[$shape]:-}" ] || {
        echo "unknown shape $shape: v2 | v1 | one-site | duplicates | auth-v1 | auth-replays | auth-one-client | compress-v1 | compress-v2 | compress-v2-csv" >&2
        exit 2
    }
    declare -A logs=()
    for mode in "${modes[@]}"; do logs[$mode]=$(mktemp); done
    for run in $(seq "$runs"); do
        order=("${modes[@]}")
        if [ $((run % 2)) -eq 0 ]; then mapfile -t order < <(printf '%s\n' "${modes[@]}" | tac); fi
        for mode in "${order[@]}"; do
            args="${shapes[$shape]} --auth ${mode%/*} --compress ${mode#*/}"
            echo "== $shape, run $run, $mode: plume-load $args"
            # shellcheck disable=SC2086
            "${load[@]}" $args | tee -a "${logs[$mode]}"
        done
    done
    for mode in "${modes[@]}"; do
        log=${logs[$mode]}
        # A figure a shape does not print (replays without --replay-seconds) is "-", not an error.
        figure() { { grep -o "$1" "$log" || true; } | { grep -o '[0-9.]*' || true; }; }
        # The latency percentile $2 (p50, p99) of the lines starting with $1.
        latency() { { grep "^$1" "$log" || true; } | { grep -o "$2 [0-9.]*" || true; } | awk '{ print $2 }' | median; }
        # The server's CPU µs per request on the lines starting with $1.
        cpu() { { grep "^$1" "$log" || true; } | { grep -o '[0-9]* µs' || true; } | awk '{ print $1 }' | median; }
        rate=$(figure 'accepted [0-9]* readings/s' | median)
        ratio=$(figure 'service/baseline = [0-9]*%' | median)
        replays=$(figure 'replays: [0-9]* requests/s' | median)
        rss=$(figure 'server peak RSS: [0-9]* MB' | median)
        body=$(figure 'bodies sent: [0-9]* bytes' | median)
        share=$(figure '[0-9.]*% of their' | median)
        [ "$ratio" = - ] || ratio="$ratio%"
        [ "$rss" = - ] || rss="$rss MB"
        summary+=("| $shape | ${mode%/*} | ${mode#*/} | $body ($share%) | $runs | $rate | $(latency accepted p50) / $(latency accepted p99) | $ratio | $replays | $(latency replays: p50) / $(latency replays: p99) | $(cpu 'server CPU') / $(cpu "replays' server CPU") | $rss |")
        rm -f "$log"
    done
    unset logs
done
echo
echo "| shape | auth | bodies | body bytes per request (of plain) | runs | readings/s | p50 / p99 ms | service/psql \\copy | replays/s | replays p50 / p99 ms | server CPU µs per request / per replay | server peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
echo "(medians of the runs)"
