#!/usr/bin/env bash
# Prints a Compose v2 command: `docker compose` where the Docker CLI has the plugin, else Debian
# 13's own Compose v2 (package docker-compose, a Go binary that runs on Debian 12 too), taken from
# the package inside a debian:trixie-slim container and kept under $PLUME_DOCKER_ROOT. Debian 12
# packages only Compose 1.29; this lets the compose file be checked with both on such a machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/engine.sh"
if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
    exit 0
fi
dir=${PLUME_DOCKER_ROOT:-/var/lib/plume-docker}/compose-v2
if [ ! -x "$dir/docker-compose" ]; then
    docker image inspect debian:trixie-slim >/dev/null 2>&1 || "$here/base-images.sh" trixie
    mkdir -p "$dir"
    docker run --rm -v "$dir:/out" debian:trixie-slim bash -c '
        set -e
        apt-get update -qq
        cd /tmp && apt-get download -qq docker-compose
        dpkg-deb -x docker-compose_*.deb package
        cp "$(find package -type f -name docker-compose -perm -u+x | head -n 1)" /out/docker-compose' >&2
fi
"$dir/docker-compose" version >&2
echo "$dir/docker-compose"
