# shellcheck shell=bash
# Helpers shared by the container scripts (sourced, never run).

# Installs Debian packages with apt, without their Recommends, after a dry run proves that nothing
# of PostgreSQL's (nor needrestart, which restarts services) would be installed, upgraded or
# removed: the machine's own PostgreSQL must keep running as it is. Packages already installed are
# left alone (never upgraded).
plume_guarded_install() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}; as root: apt-get install --no-install-recommends ${missing[*]}" >&2
        return 1
    fi
    echo "installing ${missing[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    local plan
    plan=$(apt-get -s install --no-install-recommends "${missing[@]}")
    if grep -E '^(Inst|Remv|Purg|Conf) ' <<<"$plan" | grep -qiE 'postgresql|libpq|needrestart'; then
        echo "refusing: installing ${missing[*]} would touch PostgreSQL or needrestart:" >&2
        grep -E '^(Inst|Remv|Purg) ' <<<"$plan" | grep -iE 'postgresql|libpq|needrestart' >&2
        return 1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Prints "NAME SECONDS" after running a command, keeping its exit status.
plume_timed() {
    local name=$1 start status=0
    shift
    start=$(date +%s%N)
    "$@" || status=$?
    printf 'time: %-28s %6ss%s\n' "$name" \
        "$(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN { printf "%.1f", ns / 1e9 }')" \
        "$([ "$status" -eq 0 ] || echo " (exit $status)")" >&2
    return "$status"
}
