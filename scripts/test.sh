#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL with pg_partman (installing it first if
# missing). The tests start their own throwaway cluster; nothing else needs to run.
# Arguments go to `cargo test`. Ends with one line totalling every test binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
total() { grep '^test result:' "$log" | grep -o "[0-9]* $1" | awk '{ sum += $1 } END { print sum + 0 }'; }
echo "tests: $(total passed) passed, $(total failed) failed"
exit "$status"
