#!/usr/bin/env bash
# Measures the ingest transaction with an advisory lock vs a row lock on the site (pgbench), as
# recorded in docs/BENCHMARKS.md. DESTRUCTIVE: point it at a scratch database migrated by
# `plume migrate`; it truncates measurements and ingest_batches before every run.
#
#   LOCKBENCH_URL=postgres://postgres@127.0.0.1:5432/scratch benches/lock-choice/run.sh
#
# Three configurations (64 clients over 100 sites, 10 and 50 clients on one site), both variants,
# three interleaved runs each; prints tps, mean latency and failures per run.
set -euo pipefail
url=${LOCKBENCH_URL:?set LOCKBENCH_URL to a scratch database migrated by plume migrate}
seconds=${SECONDS_PER_RUN:-20}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")" && pwd)

"$bin/psql" "$url" -Atq -v ON_ERROR_STOP=1 -c \
  "insert into sites (name, emission_limit_mg)
   select 'lockbench ' || g, 1000000000000 from generate_series(1, 100 - (select count(*) from sites)) g"

for config in "64 100" "10 1" "50 1"; do
  set -- $config
  clients=$1 sites=$2
  for round in 1 2 3; do
    order="advisory rowlock"
    [ "$round" = 2 ] && order="rowlock advisory"
    for variant in $order; do
      "$bin/psql" "$url" -Atq -c "truncate measurements, ingest_batches" -c "vacuum analyze sites" -c "checkpoint"
      result=$("$bin/pgbench" -n -f "$here/$variant.sql" -c "$clients" -j 2 -T "$seconds" -D nsites="$sites" "$url" 2>&1)
      summary=$(echo "$result" | grep -E "^tps|latency average|failed" | tr '\n' ' ')
      echo "clients=$clients sites=$sites $variant round=$round: $summary"
    done
  done
done
