#!/usr/bin/env bash
# The compose smoke test: builds the images of docker-compose.yml, starts every service (with the
# monitoring profile) on free ports of 127.0.0.1, and uses plume as an operator and its clients
# would: a token, a site, a v1 batch and a v2 bulk batch, /metrics (with a token, and through
# Prometheus), a long poll woken by a batch, the relay emptying the outbox; then restarts plume and
# checks that nothing was lost and that retrying the last batch is a replay; then takes the project
# down and up again on the same volume and runs `plume verify` inside the container. Every step is
# bounded in time and everything is removed at the end (`down -v`), whether it passed or not.
#
# Installs and starts what it needs (scripts/containers/*.sh), so it runs on a fresh Debian 12
# machine as root. COMPOSE overrides the compose command (default: `docker compose` when present,
# else `docker-compose`). KEEP=1 leaves the project running for a look (remove it with the
# printed command).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/containers/lib.sh

started=$(date +%s)
plume_timed "engine" . scripts/containers/engine.sh
plume_timed "base image" scripts/containers/base-images.sh bookworm
plume_timed "builder image" scripts/containers/builder-image.sh >/dev/null

if [ -z "${COMPOSE:-}" ]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
read -r -a compose_command <<<"$COMPOSE"
project="plumesmoke$$"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export PLUME_PORT PLUME_PROMETHEUS_PORT PLUME_DB_PASSWORD
PLUME_PORT=$(free_port)
PLUME_PROMETHEUS_PORT=$(free_port)
PLUME_DB_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
compose() { "${compose_command[@]}" -p "$project" --profile monitoring "$@"; }
# within SECONDS compose ARGS...: the same, ended after SECONDS.
within() {
    local seconds=$1
    shift 2
    timeout --foreground "$seconds" "${compose_command[@]}" -p "$project" --profile monitoring "$@"
}
base="http://127.0.0.1:$PLUME_PORT"
work=$(mktemp -d /tmp/plume-smoke.XXXXXX)

cleanup() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "compose smoke test FAILED (exit $status); the services' last log lines:" >&2
        within 60 compose logs --tail=30 >&2 2>&1 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "left running: ${compose_command[*]} -p $project --profile monitoring down -v" >&2
    else
        timeout 120 "${compose_command[@]}" -p "$project" --profile monitoring down -v \
            --remove-orphans >/dev/null 2>&1 || echo "warning: down -v failed" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 143" TERM
trap "exit 130" INT

fail() { echo "FAIL: $*" >&2; exit 1; }

# Waits (at most $2 seconds) until every container of service $1 reports healthy.
wait_healthy() {
    local service=$1 deadline=$(($(date +%s) + $2)) ids id state all
    while :; do
        all=healthy
        ids=$(within 30 compose ps -q "$service")
        [ -n "$ids" ] || all=missing
        for id in $ids; do
            state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
            [ "$state" = healthy ] || all=$state
        done
        [ "$all" = healthy ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "service $service is $all after $2 s"
        sleep 1
    done
}

# request METHOD PATH [curl arguments...]: the body in $work/body, the headers in $work/headers;
# prints the status.
request() {
    local method=$1 path=$2
    shift 2
    curl -sS --max-time 70 -X "$method" -o "$work/body" -D "$work/headers" -w '%{http_code}' \
        -H "Authorization: Bearer $token" "$@" "$base$path"
}
# expect STATUS METHOD PATH [curl arguments...]
expect() {
    local want=$1 got
    shift
    got=$(request "$@")
    [ "$got" = "$want" ] || fail "$1 $2 answered $got, not $want: $(head -c 600 "$work/body")"
}
# json EXPRESSION: evaluates a Python expression over the last body, bound to `d`.
json() { python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print($1)" "$work/body"; }

# A run that was killed (a CI machine stopped midway) leaves its project behind, and the daemon
# would restart its containers; remove those of runs whose process is gone.
remove_leftovers() {
    local name pid
    for name in $(docker ps -a --format '{{.Label "com.docker.compose.project"}}' | sort -u) \
        $(docker volume ls -q | sed -n 's/^\(plumesmoke[0-9]*\)_.*/\1/p' | sort -u); do
        [[ $name =~ ^plumesmoke([0-9]+)$ ]] || continue
        pid=${BASH_REMATCH[1]}
        kill -0 "$pid" 2>/dev/null && continue
        echo "removing project $name, left by an earlier run" >&2
        docker ps -aq --filter "label=com.docker.compose.project=$name" | xargs -r docker rm -f >/dev/null
        docker volume ls -q | { grep "^${name}_" || true; } | xargs -r docker volume rm >/dev/null
        docker network ls --format '{{.Name}}' | { grep "^${name}_" || true; } | xargs -r docker network rm >/dev/null
    done
}
remove_leftovers

build_flags=()
[ "${compose_command[*]}" = docker-compose ] && build_flags=(--force-rm)
build_images() {
    within 1800 compose build "${build_flags[@]}" >"$work/build.log" 2>&1 \
        || { tail -40 "$work/build.log" >&2; return 1; }
}
plume_timed "compose build" build_images || fail "the images did not build"
echo "runtime image plume:latest: $(docker image inspect -f '{{.Size}}' plume:latest |
    awk '{ printf "%.1f MB", $1 / 1e6 }')" >&2

plume_timed "compose up" within 300 compose up -d
plume_timed "healthy" wait_healthy plume 180
wait_healthy relay 60

# The first token, as the README says: minted by plume inside its container.
token=""
token=$(within 60 compose exec -T plume plume tokens create --kind admin --name smoke --json 2>>"$work/exec.log" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
[ -n "$token" ] || fail "no token"

now=$(date -u +%s)
at() { date -u -d "@$((now - $1))" +%FT%TZ; }

expect 201 POST /v1/sites -H 'Content-Type: application/json' \
    -d '{"name": "Smoke Test Pad", "emission_limit": "5000", "metadata": {"basin": "Permian"}}'
site=$(json 'd["data"]["id"]')

expect 201 POST /v1/ingest -H 'Content-Type: application/json' -H 'Idempotency-Key: smoke-v1-1' \
    -d '{"site_id": '"$site"', "readings": [
          {"timestamp": "'"$(at 600)"'", "value": "1.5", "source_id": "a"},
          {"timestamp": "'"$(at 540)"'", "value": "2300", "unit": "g", "source_id": "b"}]}'
[ "$(json 'd["data"]["accepted_emissions"]')" = 3.800000 ] || fail "v1 batch: $(cat "$work/body")"

printf 'site_id,source_id,timestamp,value\n%s,c,%s,0.25\n%s,c,%s,0.75\n' \
    "$site" "$(at 480)" "$site" "$(at 420)" >"$work/bulk.csv"
expect 201 POST /v2/ingest -H 'Content-Type: text/csv' -H 'Idempotency-Key: smoke-v2-1' \
    --data-binary "@$work/bulk.csv"
[ "$(json 'd["data"]["readings_accepted"]')" = 2 ] || fail "v2 batch: $(cat "$work/body")"

expect 200 GET /metrics
grep -q '^plume_ingest_requests_total{outcome="created"} 2$' "$work/body" \
    || fail "/metrics does not count two stored batches: $(grep plume_ingest_requests_total "$work/body")"

# A long poll waits for the next change and answers the moment a batch commits.
expect 200 GET /v2/changes
cursor=$(json 'd["meta"]["cursor"]')
poll_started=$(date +%s)
curl -sS --max-time 70 -o "$work/poll" -H "Authorization: Bearer $token" \
    "$base/v2/changes?cursor=$cursor&wait=60" &
poll=$!
sleep 1
last_batch='{"site_id": '"$site"', "readings": [{"timestamp": "'"$(at 360)"'", "value": "4", "source_id": "a"}]}'
expect 201 POST /v1/ingest -H 'Content-Type: application/json' -H 'Idempotency-Key: smoke-v1-2' \
    -d "$last_batch"
wait "$poll" || fail "the long poll failed"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["data"]; sys.exit(not any(s["site_id"] == int(sys.argv[2]) for s in d))' \
    "$work/poll" "$site" || fail "the long poll did not report site $site: $(cat "$work/poll")"
echo "long poll answered after $(($(date +%s) - poll_started)) s" >&2

expect 200 GET "/v1/sites/$site/metrics"
before=$(json '(d["data"]["total_emissions_to_date"], d["data"]["reading_count"])')
[ "$before" = "('8.800000', 5)" ] || fail "site $site before the restart: $before"

# The relay (its own service) delivers the batches' events and empties the outbox.
deliver_all() {
    local deadline=$(($(date +%s) + 60)) pending
    while :; do
        pending=$(within 30 compose exec -T relay plume outbox status --json 2>>"$work/exec.log" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["status"]["pending"])')
        [ "$pending" = 0 ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "$pending outbox events still pending after 60 s"
        sleep 2
    done
}
plume_timed "outbox delivered" deliver_all

# Prometheus scrapes plume (through --ops-listen, no token) and the relay.
scraped() {
    local deadline=$(($(date +%s) + 90)) up
    while :; do
        up=$(curl -sS --max-time 10 "http://127.0.0.1:$PLUME_PROMETHEUS_PORT/api/v1/query" \
            --data-urlencode 'query=sum(up{job=~"plume|plume-relay"})' |
            python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' \
            2>/dev/null || echo 0)
        [ "$up" = 2 ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "Prometheus scrapes $up of 2 targets after 90 s"
        sleep 2
    done
}
plume_timed "prometheus scraped" scraped

plume_timed "restart plume" within 120 compose restart plume
wait_healthy plume 120
within 30 compose logs plume >"$work/plume.log" 2>&1
grep -q "plume stopped serving" "$work/plume.log" || fail "plume did not shut down gracefully on SIGTERM"
expect 200 GET "/v1/sites/$site/metrics"
[ "$(json '(d["data"]["total_emissions_to_date"], d["data"]["reading_count"])')" = "$before" ] \
    || fail "site $site after the restart: $(cat "$work/body")"
expect 200 POST /v1/ingest -H 'Content-Type: application/json' -H 'Idempotency-Key: smoke-v1-2' \
    -d "$last_batch"
grep -qi '^Idempotent-Replay: true' "$work/headers" || fail "the retried batch is not a replay"
[ "$(json 'd["data"]["replayed"]')" = True ] || fail "the retried batch's receipt: $(cat "$work/body")"

plume_timed "down (volume kept)" within 120 compose down
plume_timed "up again" within 300 compose up -d
wait_healthy plume 180
expect 200 GET "/v1/sites/$site/metrics"
[ "$(json '(d["data"]["total_emissions_to_date"], d["data"]["reading_count"])')" = "$before" ] \
    || fail "site $site after down and up: $(cat "$work/body")"
plume_timed "plume verify" within 120 compose exec -T plume plume verify >"$work/verify" 2>&1 \
    || fail "plume verify: $(cat "$work/verify")"

echo "compose smoke test passed in $(($(date +%s) - started)) s (${compose_command[*]})"
