#!/usr/bin/env bash
# Quick start: installs what is missing, then runs plume with its own PostgreSQL (unless
# DATABASE_URL is set), migrated and loaded with demo data. Arguments go to `plume serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -p plume -- serve "$@"
