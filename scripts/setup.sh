#!/usr/bin/env bash
# Makes sure what plume needs is installed: PostgreSQL 15 and pg_partman (Debian packages), and
# any further packages named as arguments (one counts as present when installed or when a command
# of its name is on PATH, e.g. a Node.js that bundles npm).
# As root it installs what is missing with apt; otherwise it prints the exact command and fails.
# It never upgrades a package that is already installed: an upgrade of the server under a running
# cluster breaks that cluster's new sessions.
set -euo pipefail

packages=(postgresql-15 postgresql-15-partman "$@")

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for package in "${packages[@]}"; do
    installed "$package" || command -v "$package" >/dev/null 2>&1 || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "plume needs: ${missing[*]}" >&2
        echo "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "plume is built with Rust's cargo, which is not on PATH: install Rust from rustup.rs" >&2
    exit 1
fi
