#!/usr/bin/env bash
# Makes the image docker/plume/Dockerfile builds plume in, rust:<version>-slim-bookworm, from the
# Rust toolchain this machine already has (the version rust-toolchain.toml pins), for machines that
# reach crates.io but no image registry. Where a registry is reachable, the official image of the
# same tag does the same job. An image that exists already is kept (REBUILD=1 makes it again).
# Prints the tag.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
. "$here/engine.sh"

version=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$repo/rust-toolchain.toml")
tag="rust:$version-slim-bookworm"
named=$(sed -n 's/^ARG RUST_IMAGE=//p' "$repo/docker/plume/Dockerfile")
if [ "$named" != "$tag" ]; then
    echo "rust-toolchain.toml pins $version, but docker/plume/Dockerfile builds in $named:" \
        "set its RUST_IMAGE to $tag" >&2
    exit 1
fi
if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag: present" >&2
    echo "$tag"
    exit 0
fi
docker image inspect debian:bookworm-slim >/dev/null 2>&1 || "$here/base-images.sh" bookworm

# rustup picks the pinned toolchain from the repository's rust-toolchain.toml.
sysroot=$(cd "$repo" && rustc --print sysroot)
found=$(cd "$repo" && rustc --version)
case "$found" in
    "rustc $version "*) ;;
    *) echo "rust-toolchain.toml pins $version, but rustc here is: $found" >&2; exit 1 ;;
esac

context=$(mktemp -d /var/tmp/plume-builder.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp "$repo/docker/rust/Dockerfile" "$context/"
mkdir "$context/toolchain" "$context/ca-certificates"
# Certificate authorities added to this machine (a network that inspects TLS needs them to reach
# crates.io): the builder trusts what the machine trusts.
find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$context/ca-certificates/" \; 2>/dev/null || true
# The compiler, cargo and the standard library; not the documentation, sources or editor tools.
tar -C "$sysroot" -c \
    --exclude=./share/doc --exclude=./lib/rustlib/src --exclude=./lib/rustlib/rustc-src \
    --exclude='./bin/rust-analyzer*' --exclude='./bin/*miri*' --exclude=./bin/rls \
    --exclude='./bin/rust-gdb*' --exclude=./bin/rust-lldb \
    . | tar -C "$context/toolchain" -x
echo "$tag: from $sysroot ..." >&2
docker build --force-rm -t "$tag" "$context" >"$context.log" 2>&1 \
    || { tail -20 "$context.log" >&2; rm -f "$context.log"; exit 1; }
rm -f "$context.log"
echo "$tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }')" >&2
echo "$tag"
