#!/usr/bin/env bash
# The dashboard's checks: its code type-checked (tsc --checkJs) against the declarations generated
# from the server's Rust types, the vendored chart library identical to its npm package, and the
# browser tests: Debian's Chromium, headless, driven by playwright-core, against two real plume
# processes sharing one database. Installs Chromium, Node.js and the npm packages when missing.
# Arguments go to `node --test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "the dashboard tests need: ${missing[*]}" >&2
        echo "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

(cd dashboard && npm ci --no-audit --no-fund --loglevel=error)
(cd dashboard && npx tsc -p tsconfig.json)
for file in uPlot.esm.js uPlot.min.css; do
    cmp "dashboard/vendor/$file" "dashboard/node_modules/uplot/dist/$file" \
        || { echo "dashboard/vendor/$file differs from the uplot npm package" >&2; exit 1; }
done
cargo build --locked -p plume
cd dashboard
PLUME_BIN=../target/debug/plume node --test "$@" tests/
