#!/bin/sh
# Gives every workspace member copied so far (its Cargo.toml only) an empty body: a src/lib.rs, and
# `fn main() {}` at every [[bin]] and [[bench]] path its manifest names. Building that skeleton
# compiles every dependency of the workspace into a layer that depends on the manifests and the
# lock file alone.
set -eu
for manifest in */Cargo.toml; do
    member=$(dirname "$manifest")
    mkdir -p "$member/src"
    : >"$member/src/lib.rs"
    sed -n 's/^path *= *"\(.*\)"$/\1/p' "$manifest" | while read -r path; do
        [ "$path" = src/lib.rs ] && continue
        mkdir -p "$member/$(dirname "$path")"
        echo 'fn main() {}' >"$member/$path"
    done
done
