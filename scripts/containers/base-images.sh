#!/usr/bin/env bash
# Makes the base images the Dockerfiles start from, `debian:bookworm-slim` and `debian:trixie-slim`,
# from Debian's packages alone (for machines that reach Debian's mirror but no image registry):
# debootstrap --variant=minbase, trimmed like Debian's own slim images, then `docker import` under
# the very tag the Dockerfiles name, so the same Dockerfiles build unchanged where a registry is
# reachable. An image that exists already is kept (REBUILD=1 makes it again).
#
#   scripts/containers/base-images.sh [SUITE...]   # default: bookworm trixie
#
# The mirror is the one the machine's apt uses (MIRROR and SECURITY_MIRROR override it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/engine.sh"
plume_guarded_install debootstrap

# The address apt uses for bookworm/main (and bookworm-security/main): a sources.list or deb822 entry.
mirror_of() {
    apt-cache policy | awk -v suite="$1/main" '$3 == suite && $2 ~ /^https?:/ { print $2; exit }'
}

make_image() {
    local suite=$1 tag="debian:$1-slim"
    if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
        echo "$tag: present" >&2
        return 0
    fi
    local mirror security rootfs
    mirror=${MIRROR:-$(mirror_of bookworm)}
    mirror=${mirror:-http://deb.debian.org/debian}
    security=${SECURITY_MIRROR:-$(mirror_of bookworm-security)}
    security=${security:-http://deb.debian.org/debian-security}
    rootfs=$(mktemp -d "/var/tmp/plume-rootfs-$suite.XXXXXX")
    # shellcheck disable=SC2064 # the path is fixed now
    trap "rm -rf '$rootfs'; trap - RETURN" RETURN
    echo "$tag: debootstrap from $mirror ..." >&2
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; return 1; }
    rm -f "$rootfs.log"
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    # As Debian's slim images: no documentation, manual pages or translations from later installs.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
SLIM
    # Package scripts inside an image build never start services.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/{man,info,lintian,groff}/* \
        "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    mkdir -p "$rootfs/var/lib/apt/lists/partial"
    echo "$tag: importing ..." >&2
    tar --numeric-owner -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$tag" >/dev/null
    echo "$tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }')" >&2
}

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)
for suite in "${suites[@]}"; do
    plume_timed "base image $suite" make_image "$suite"
done
