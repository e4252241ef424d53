#!/usr/bin/env bash
# Holds a live plume to its OpenAPI document: starts `plume serve` over its own embedded
# PostgreSQL (migrated, no demo data), mints an admin token, checks that /openapi.json validates as
# OpenAPI 3.1 (openapi-spec-validator), then runs Schemathesis over every operation, stateless and
# stateful (the document's links: create a site, ingest into it, read its metrics, series and
# readings). It fails on any 5xx and on any response that the document does not describe (status,
# content type, headers, body schema), on a secured operation that answers without a credential, on
# an undeclared method not answered 405 with its Allow header, and on a missing required header
# that is not refused.
# Bounded: PLUME_FUZZ_EXAMPLES cases per operation and phase (default 40), PLUME_FUZZ_SECONDS for
# Schemathesis in all (default 150). PLUME_FUZZ_SEED picks the generator's seed
# (default 1, so that a run can be repeated). Installs Schemathesis and the validator, pinned, into
# a virtualenv kept between runs (PLUME_FUZZ_VENV). Arguments go to `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh curl python3-venv

examples=${PLUME_FUZZ_EXAMPLES:-40}
seconds=${PLUME_FUZZ_SECONDS:-150}
seed=${PLUME_FUZZ_SEED:-1}
venv=${PLUME_FUZZ_VENV:-$HOME/.cache/plume/api-fuzz-venv}
requirements=(schemathesis==4.32.5 openapi-spec-validator==0.9.0)

# The virtualenv, made once per set of pinned versions.
if [ "$(cat "$venv/.pinned" 2>/dev/null)" != "${requirements[*]}" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
    echo "${requirements[*]}" >"$venv/.pinned"
fi

cargo build --locked -p plume

# Under /tmp: as root, the embedded PostgreSQL runs as the postgres user, which must reach it.
work=$(mktemp -d /tmp/plume-api-fuzz-XXXXXX)
chmod 755 "$work"
# A copy: a build in the same target directory must not swap the binary under the run.
plume=$work/plume
cp "${CARGO_TARGET_DIR:-target}/debug/plume" "$plume"
server=
stop() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server"
        wait "$server" || true
    fi
    rm -rf "$work"
}
trap stop EXIT
export PLUME_DATA_DIR=$work/data DATABASE_URL= RUST_LOG=${RUST_LOG:-warn}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
address=http://127.0.0.1:$port
"$plume" serve --no-demo --no-relay --listen "127.0.0.1:$port" >"$work/plume.log" 2>&1 &
server=$!
for _ in $(seq 600); do
    curl -fsS "$address/ready" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$work/plume.log" >&2; echo "plume exited" >&2; exit 1; }
    sleep 0.2
done
curl -fsS "$address/ready" >/dev/null || { cat "$work/plume.log" >&2; echo "plume is not ready" >&2; exit 1; }
token=$("$plume" tokens create --kind admin --name api-fuzz --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

curl -fsS "$address/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

# Stateful runs follow the document's own links only: links Schemathesis infers by itself take any
# parameter named like an id, `X-Request-Id` among them, and fill it with an integer.
cat >"$work/schemathesis.toml" <<'TOML'
[phases.stateful.inference]
algorithms = []
TOML

started=$(date +%s)
status=0
# --max-time is Schemathesis' own budget (fuzzing and stateful testing go on until it is spent);
# the timeout is a backstop should a request hang.
# Run from the work directory, where Schemathesis keeps its cache of crashes.
(cd "$work" && timeout --kill-after=10 $((seconds + 120)) "$venv/bin/schemathesis" --config-file schemathesis.toml \
    run "$address/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth,unsupported_method,allow_header_conformance,missing_required_header \
    --max-examples "$examples" \
    --max-time "$seconds" \
    --seed "$seed" \
    --generation-database none \
    --request-timeout 70 \
    --continue-on-failure \
    --no-color \
    "$@") || status=$?
echo "api-fuzz: schemathesis took $(($(date +%s) - started)) s (exit $status)"
if grep -q "panicked" "$work/plume.log"; then
    grep -m1 -A3 "panicked" "$work/plume.log" >&2
    echo "api-fuzz: plume panicked ($(grep -c "panicked at" "$work/plume.log") times)" >&2
    status=1
fi
exit "$status"
