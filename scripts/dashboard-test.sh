#!/usr/bin/env bash
# The dashboard's checks: its code type-checked (tsc --checkJs) against the declarations generated
# from the server's Rust types, the vendored chart library and API reference renderer identical to
# their npm packages, and the browser tests: Debian's Chromium, headless, driven by playwright-core,
# against two real plume processes sharing one database. Installs Chromium, Node.js and the npm
# packages when missing.
# With --faults (first), the browser tests of faults (dashboard/faults/) instead of the ordinary
# ones. Other arguments go to `node --test`.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=tests/
if [ "${1:-}" = --faults ]; then
    tests=faults/
    shift
fi
scripts/setup.sh chromium nodejs npm

(cd dashboard && npm ci --no-audit --no-fund --loglevel=error)
(cd dashboard && npx tsc -p tsconfig.json)
for file in uPlot.esm.js uPlot.min.css; do
    cmp "dashboard/vendor/$file" "dashboard/node_modules/uplot/dist/$file" \
        || { echo "dashboard/vendor/$file differs from the uplot npm package" >&2; exit 1; }
done
for file in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt; do
    cmp "dashboard/vendor/swagger-ui/$file" "dashboard/node_modules/swagger-ui-dist/$file" \
        || { echo "dashboard/vendor/swagger-ui/$file differs from the swagger-ui-dist npm package" >&2; exit 1; }
done
cargo build --locked -p plume
cd dashboard
# playwright-core needs Node.js 20 or later; Debian 12's own is 18. An older node runs the tests on
# the npm registry's build of Node.js 20 instead.
node=(node)
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    node=(npx --yes node@20)
fi
# Bounded: a browser or server left running by a failing test must not hold the run forever.
PLUME_BIN=../target/debug/plume timeout --kill-after=10 900 "${node[@]}" --test "$@" "$tests"
