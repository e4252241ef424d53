#!/usr/bin/env bash
# Runs the integration tests that matter past one machine against a real Citus 13.2 cluster: a
# coordinator and two workers, three local PostgreSQL 15 clusters with pg_partman
# (scripts/citus/citus-cluster.sh). Every test gets a database of its own, made on all three nodes,
# migrated and distributed by site as `plume migrate --citus` does (PLUME_TEST_CITUS_URL, see
# server/tests/api/helpers.rs).
#
# Citus is built from source once per machine (scripts/citus/build-citus.sh: about 80 s on 2
# cores, 0.1 s when the same build is installed). Its source tarball, citus-v13.2.2.tar.gz, is
# not in this repository: CITUS_TARBALL names it, else it is looked for in ../shared/citus/ beside
# the checkout. The cluster lives in a temporary directory and is stopped and removed at the end.
#
#   scripts/test-citus.sh                # the selection below, then the shard-rebalance scenario
#   scripts/test-citus.sh ingest::       # arguments replace the selection (cargo test filters);
#                                        # no scenario
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# shellcheck source=scripts/citus/kit.sh
source scripts/citus/kit.sh
# Durable like production: the tests crash nothing, but fsync on keeps the timings honest.
start_citus_cluster plume-citus

# What the distributed mode must keep: ingestion and its exactness under concurrency, retries and
# overlap, rollups, bulk requests, the outbox's order and exactly-once limit events, the relay,
# the change feed (a transaction that commits late; two processes), the query side, partitions,
# maintenance, retention and verify.
selection=(
    citus:: ingest:: concurrency:: in_order:: group_commit:: bulk:: bulk_concurrency:: outbox:: relay::
    changes:: query:: sources:: maintenance:: partitions:: validation:: contract::
)
# Left out, each for a reason of Citus's:
# - tests that arrange their faults with what Citus refuses on distributed tables (a trigger, an
#   UPDATE calling a STABLE function on a column);
# - tests that find a reading's partition by `tableoid`, which on Citus names the shard;
# - moving rows out of the default partition: pg_partman's partition_data_time locks them with a
#   FOR UPDATE across shards, which Citus refuses (docs/SCALING.md says what to do instead).
skips=(
    --skip outbox::a_rolled_back_batch_leaves_no_event_and_a_failed_event_stores_no_reading
    --skip relay::a_streams_pending_since_bounds_its_undelivered_events_and_clears_once_all_are_delivered
    --skip partitions::a_reading_lands_in_its_month_and_never_in_the_default_partition
    --skip partitions::the_default_partition_refuses_rows
    --skip maintenance::rows_in_the_default_partition_are_found_reported_and_moved_out_with_totals_unchanged
)
given=$#
# First the fault scenario of the distributed mode: every shard of one worker moved to the other
# and back while plume ingests under retrying clients (benches/src/faults/citus.rs). Not when
# arguments chose tests. First, because the rebalancer needs background workers, and every
# database the tests make keeps one busy (Citus's maintenance daemon).
if [ "$given" -eq 0 ]; then
    cargo build --locked -p plume -p plume-bench --bins
    timeout --kill-after=10 900 "${CARGO_TARGET_DIR:-target}/debug/plume-faults" \
        --plume-binary "${CARGO_TARGET_DIR:-target}/debug/plume" \
        citus-rebalance --coordinator-url "${CITUS_URL}?sslmode=disable"
fi

[ $# -gt 0 ] && selection=("$@")
PLUME_TEST_CITUS_URL="${CITUS_URL}?sslmode=disable" \
    cargo test -p plume --test api --locked -- "${selection[@]}" "${skips[@]}"
