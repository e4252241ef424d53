#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL with pg_partman (installing it first if
# missing): the Rust tests (they start their own throwaway cluster; nothing else needs to run),
# then the dashboard's type check and browser tests (scripts/dashboard-test.sh, which installs
# Chromium and Node.js if missing). Arguments go to `cargo test`. Ends with one line totalling
# every test's result.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

log=$(mktemp)
browser_log=$(mktemp)
trap 'rm -f "$log" "$browser_log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
scripts/dashboard-test.sh 2>&1 | tee "$browser_log"
browser_status=${PIPESTATUS[0]}
set -e
total() { grep '^test result:' "$log" | grep -o "[0-9]* $1" | awk '{ sum += $1 } END { print sum + 0 }'; }
browser() { grep "^# $1 " "$browser_log" | awk '{ sum += $3 } END { print sum + 0 }'; }
passed=$(( $(total passed) + $(browser pass) ))
failed=$(( $(total failed) + $(browser fail) ))
echo "tests: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$browser_status" -eq 0 ]
