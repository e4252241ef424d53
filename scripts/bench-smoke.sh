#!/usr/bin/env bash
# Runs every benchmark briefly, to prove each still works (not to measure: see docs/BENCHMARKS.md
# for the real runs). The criterion benches run each case once, the auth-cost bench two short
# rounds; the load tool drives v1 (gzip bodies) and v2 (zstd bodies) for two seconds each with
# authentication enforced, verifies what was stored and runs its psql \copy baseline, then v1 for a second with
# authentication off (`--auth off`), then the 64-client and one-site shapes of group commit for two
# seconds each; the outbox bench delivers a few thousand events; the query
# bench loads 200,000 synthetic readings and times a few requests of each kind and exports in
# each format; the change-feed bench wakes 50 long polls twice on one process and on two.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

cargo test -p plume-bench --benches --locked
cargo build -p plume-bench -p plume --bins --locked
load=target/debug/plume-load
"$load" --api v1 --clients 4 --sites 5 --seconds 2 --duplicate-ratio 0.1 --replay-seconds 1 --baseline \
    --compress gzip
"$load" --api v2 --format csv --clients 2 --sites 6 --sites-per-batch 3 --batch-size 2000 --seconds 2 \
    --plume-binary target/debug/plume --compress zstd
"$load" --api v1 --clients 2 --sites 5 --seconds 1 --auth off --plume-binary target/debug/plume
# The two shapes group commit is measured on: 64 clients over 100 sites, and 10 clients on one site.
"$load" --api v1 --clients 64 --sites 100 --seconds 2 --plume-binary target/debug/plume
"$load" --api v1 --clients 10 --sites 1 --seconds 2 --plume-binary target/debug/plume
target/debug/outbox-bench --events 2000 --sites 20 --ingest-seconds 2 --ingest-clients 2
target/debug/query-bench --plume-binary target/debug/plume --sites 10 --readings-per-site 20000 \
    --requests 5 --exports 2 --ceiling-rows-per-stream 40000 --formats csv,ndjson,parquet
for instances in 1 2; do
    target/debug/changes-bench --plume-binary target/debug/plume --instances "$instances" \
        --waiters 50 --rounds 2 --baseline-requests 20
done
