#!/usr/bin/env bash
# The fault suite, short: every scenario of plume-faults (benches/src/faults/) once, each bounded
# in time, then the two fault tests that live with their subjects (a full archive directory during
# retention; a dashboard whose plume process is killed mid-long-poll). Each scenario runs real
# plume processes on a real PostgreSQL under load from clients that retry under the same
# idempotency key, stages its fault, and checks that nothing acknowledged was lost or counted
# twice and that every event reached the webhook in per-site order. Prints a table of the figures
# at the end; exits non-zero if any scenario failed. Needs root (the disk-full scenarios mount
# tmpfs file systems). docs/RELIABILITY.md explains each scenario and holds a longer run's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked -p plume -p plume-bench --bins

results=$(mktemp)
trap 'rm -f "$results"' EXIT
failed=()
# Runs one scenario with a time limit, keeping its name when it fails.
scenario() {
    local name=$1
    shift
    echo "== $name"
    if ! timeout --kill-after=10 600 "$@"; then
        failed+=("$name")
    fi
}
faults=(target/debug/plume-faults --results "$results")
scenario "kill -9 of plume" "${faults[@]}" kill-plume
scenario "PostgreSQL crash, external" "${faults[@]}" db-crash
scenario "PostgreSQL crash, embedded" "${faults[@]}" db-crash-embedded
scenario "network silent" "${faults[@]}" partition --fault-seconds 15 --request-timeout 5
scenario "database disk full" "${faults[@]}" disk-full --fault-seconds 10
scenario "archive directory full" cargo test --locked -p plume --test api -- --ignored \
    an_archive_directory_that_fills_up
scenario "webhook down, failing, slow" "${faults[@]}" webhook --fault-seconds 8
scenario "plume killed under a long-polling dashboard" scripts/dashboard-test.sh --faults
scenario "upload flood" "${faults[@]}" flood

echo
echo "| scenario | acknowledged | retried | lost | double-counted | recovery | outbox | other figures |"
echo "|---|---|---|---|---|---|---|---|"
cat "$results"
if [ "${#failed[@]}" -gt 0 ]; then
    printf 'faults: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "faults: every scenario passed"
