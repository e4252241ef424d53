#!/usr/bin/env bash
# Makes `docker` usable on this machine: installs Debian's docker.io and docker-compose (1.29) when
# missing, without their Recommends and never touching PostgreSQL's packages, then uses a running
# Docker daemon or starts one of plume's own (the machine may have no systemd to start one).
#
#   source scripts/containers/engine.sh     # sets DOCKER_HOST in this shell
#   eval "$(scripts/containers/engine.sh)"  # the same, from a script's output
#
# The daemon it starts keeps its images and layer cache under $PLUME_DOCKER_ROOT
# (/var/lib/plume-docker), so they survive between runs, and listens on
# unix:///run/plume-docker/docker.sock. It runs until stopped:
#   kill "$(cat /run/plume-docker/dockerd.pid)"
# Idempotent: on a warm machine it only checks that the daemon answers.

plume_engine() {
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    # shellcheck source=scripts/containers/lib.sh
    . "$here/lib.sh"
    local root=${PLUME_DOCKER_ROOT:-/var/lib/plume-docker}
    local run=${PLUME_DOCKER_RUN:-/run/plume-docker}
    local own="unix://$run/docker.sock"

    command -v dockerd >/dev/null && command -v docker-compose >/dev/null \
        || plume_guarded_install docker.io docker-compose || return 1

    # A daemon that answers already: the one DOCKER_HOST names, the machine's own, or ours.
    local candidate
    for candidate in "${DOCKER_HOST:-}" unix:///var/run/docker.sock "$own"; do
        [ -n "$candidate" ] || continue
        if DOCKER_HOST=$candidate timeout 10 docker info >/dev/null 2>&1; then
            export DOCKER_HOST=$candidate
            return 0
        fi
    done
    if pgrep -x dockerd >/dev/null; then
        # A second daemon would fight the first over the docker0 bridge and its networks.
        echo "a dockerd runs (pid $(pgrep -x dockerd | tr '\n' ' ')) but answers on none of" \
            "\$DOCKER_HOST, /var/run/docker.sock, $own: point DOCKER_HOST at it" >&2
        return 1
    fi
    mkdir -p "$root" "$run"
    # A daemon that was killed leaves its and its containerd's pid files behind. Once the pid is
    # reused by another process, a new dockerd waits for a containerd that is not there (or
    # refuses to start): a pid file is kept only while its process is the program it names.
    local pidfile program
    for pidfile in "$run/dockerd.pid:dockerd" "$run/exec/containerd/containerd.pid:containerd"; do
        program=${pidfile##*:}
        pidfile=${pidfile%:*}
        [ -f "$pidfile" ] || continue
        if [ "$(ps -o comm= -p "$(cat "$pidfile")" 2>/dev/null)" != "$program" ]; then
            echo "removing the stale $pidfile" >&2
            rm -f "$pidfile"
        fi
    done
    echo "starting dockerd ($own, data in $root, log $root/dockerd.log)" >&2
    # setsid: the daemon outlives the script that started it and ignores its terminal's signals.
    setsid dockerd --data-root "$root/data" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
        -H "$own" >>"$root/dockerd.log" 2>&1 </dev/null &
    local _
    for _ in $(seq 1 120); do
        if DOCKER_HOST=$own docker info >/dev/null 2>&1; then
            export DOCKER_HOST=$own
            return 0
        fi
        sleep 0.5
    done
    echo "dockerd did not answer within 60 s; its log:" >&2
    tail -20 "$root/dockerd.log" >&2
    return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    plume_engine >&2
    echo "export DOCKER_HOST=$DOCKER_HOST"
else
    plume_engine
fi
