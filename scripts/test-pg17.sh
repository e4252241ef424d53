#!/usr/bin/env bash
# Runs the Rust test suite against PostgreSQL 17 with pg_partman 5.x from Debian 13's own packages,
# in a container (docker/postgres17/Dockerfile), where scripts/test.sh runs it on the host's
# PostgreSQL 15 with pg_partman 4.7: both pg_partman lines, on every CI run. It builds the image
# (cached between runs), starts it on a free 127.0.0.1 port, runs `cargo test --workspace --locked`
# with PLUME_TEST_ADMIN_URL pointing at it (every test still gets a fresh database there; the tests
# of the embedded cluster itself use the host's PostgreSQL), then the test of the upgrade from
# pg_partman 4.7 to 5.x (the container gets the host's pg_partman 4.7 install script for it), and
# removes the container whatever happens. Arguments go to `cargo test` (and skip the upgrade test).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
scripts/setup.sh
# shellcheck source=scripts/containers/engine.sh
source scripts/containers/engine.sh
scripts/containers/base-images.sh trixie

image=plume-postgres17-test
name=plume-postgres17-test-$$
docker build --force-rm -q -t "$image" docker/postgres17 >/dev/null
built=$SECONDS
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
# Port 0 on the host side: the engine picks a free one.
docker run -d --name "$name" -p 127.0.0.1::5432 "$image" >/dev/null
address=$(docker port "$name" 5432/tcp | grep -m 1 '^127\.0\.0\.1:')
for _ in $(seq 1 120); do
    docker exec "$name" /usr/lib/postgresql/17/bin/pg_isready -q -h 127.0.0.1 && break
    sleep 0.5
done
docker exec "$name" /usr/lib/postgresql/17/bin/pg_isready -h 127.0.0.1 >/dev/null
versions=$(docker exec "$name" sh -c 'dpkg-query -W -f="\${Package} \${Version}\n" postgresql-17 postgresql-17-partman' | tr '\n' ' ')
echo "testing against ${versions}on $address (image ready after $((built - started)) s)"

export PLUME_TEST_ADMIN_URL="postgres://postgres:plume-test@$address/postgres"
status=0
env -u DATABASE_URL cargo test --workspace --locked "$@" || status=$?

# The upgrade of a database made with pg_partman 4.7 to 5.x needs both on one server: Debian 13
# ships only 5.x, so the 4.7 install script comes from the host's postgresql-15-partman.
old_partman=$(ls /usr/share/postgresql/*/extension/pg_partman--4.*.sql 2>/dev/null | grep -v -- '--.*--' | sort -V | tail -n 1 || true)
if [ $# -eq 0 ] && [ -n "$old_partman" ]; then
    docker cp "$old_partman" "$name:/usr/share/postgresql/17/extension/"
    env -u DATABASE_URL cargo test --locked -p plume --test api -- --ignored partman_upgrade || status=$?
elif [ $# -eq 0 ]; then
    echo "no pg_partman 4.x install script on this machine: the 4.7 to 5.x upgrade test did not run" >&2
fi
echo "PostgreSQL 17 + pg_partman 5 run: $((SECONDS - started)) s, cargo test exit status $status"
exit "$status"
