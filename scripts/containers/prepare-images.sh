#!/usr/bin/env bash
# Makes every image the container tests start from, ahead of them: the Debian base images, the Rust
# builder image, and the database and Prometheus images of docker-compose.yml and of
# scripts/test-pg17.sh. Each is cached (a second run takes seconds). Mostly downloads and package
# installs, so .ci/run runs it beside the compile of the lint step. Needs a running engine
# (`source scripts/containers/engine.sh` first).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/containers/lib.sh
plume_timed "base images" scripts/containers/base-images.sh bookworm trixie
plume_timed "builder image" scripts/containers/builder-image.sh >/dev/null
build() { docker build --force-rm -q "$@" >/dev/null; }
plume_timed "database image" build -t plume-postgres:latest --build-arg DEBIAN_RELEASE=bookworm docker/postgres
plume_timed "prometheus image" build -t plume-prometheus:latest docker/prometheus
plume_timed "PostgreSQL 17 test image" build -t plume-postgres17-test docker/postgres17
