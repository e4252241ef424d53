#!/usr/bin/env bash
# Before and after in the same run: builds plume and plume-load at another revision (in a worktree
# under target/compare/, with a target directory of its own, about 8 minutes the first time) and at
# the working tree, then runs each load shape RUNS times (default 3) with both, alternating which
# goes first, so that both share the machine's drift. Prints each run's figures.
#
#   benches/compare.sh REV [SHAPE...]     # shapes: v1 one-site one-client v2 (default: all four)
#
# VARIANTS adds "after" runs with other settings, as NAME=ENV pairs separated by spaces, e.g.
#   VARIANTS="linger0=PLUME_GROUP_LINGER_US=0 linger2ms=PLUME_GROUP_LINGER_US=2000"
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
rev=$1
shift
runs=${RUNS:-3}
scripts/setup.sh

declare -A shapes=(
    [v1]="--api v1 --clients 64 --sites 100 --seconds 20 --replay-seconds 5 --baseline"
    [one-site]="--api v1 --clients 10 --sites 1 --seconds 20 --baseline"
    [one-client]="--api v1 --clients 1 --sites 100 --seconds 10"
    [v2]="--api v2 --format ndjson --clients 4 --batch-size 10000 --sites 100 --sites-per-batch 10 --seconds 20 --baseline"
)
selected=("${@:-v1 one-site one-client v2}")
read -r -a selected <<<"${selected[*]}"
for shape in "${selected[@]}"; do
    [ -n "${shapes[$shape]:-}" ] || { echo "unknown shape $shape: v1 | one-site | one-client | v2" >&2; exit 2; }
done

commit=$(git rev-parse --verify "$rev^{commit}")
tree=target/compare/$commit
if [ ! -x "$tree/bin/plume" ] || [ ! -x "$tree/bin/plume-load" ]; then
    git worktree remove --force "$tree/src" 2>/dev/null || true
    mkdir -p "$tree"
    git worktree add --detach "$tree/src" "$commit" >&2
    (cd "$tree/src" && CARGO_TARGET_DIR=../target cargo build --release --locked -p plume --bin plume \
        -p plume-bench --bin plume-load >&2)
    mkdir -p "$tree/bin"
    cp "$tree/target/release/plume" "$tree/target/release/plume-load" "$tree/bin/"
    git worktree remove --force "$tree/src"
fi
cargo build --release --locked -p plume --bin plume -p plume-bench --bin plume-load >&2
now=target/compare/working-tree
mkdir -p "$now"
cp "${CARGO_TARGET_DIR:-target}/release/plume" "${CARGO_TARGET_DIR:-target}/release/plume-load" "$now/"

# Each variant: name, binaries, environment.
variants=("before|$tree/bin|" "after|$now|")
for extra in ${VARIANTS:-}; do
    variants+=("${extra%%=*}|$now|${extra#*=}")
done

for shape in "${selected[@]}"; do
    for run in $(seq 1 "$runs"); do
        order=("${variants[@]}")
        if [ $((run % 2)) -eq 0 ]; then
            mapfile -t order < <(printf '%s\n' "${variants[@]}" | tac)
        fi
        for variant in "${order[@]}"; do
            IFS='|' read -r name bin env <<<"$variant"
            echo "=== $shape, run $run, $name"
            # shellcheck disable=SC2086 # the shape's options are words
            env $env "$bin/plume-load" --plume-binary "$bin/plume" ${shapes[$shape]} 2>&1 |
                grep -E '^(accepted|replays|baseline|server peak RSS)' || true
        done
    done
done
