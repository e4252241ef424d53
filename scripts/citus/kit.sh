# Sourced by scripts/test-citus.sh and benches/citus.sh: builds Citus if needed and starts a
# three-node cluster on free ports in a temporary directory, stopped and removed when the shell
# exits. Sets CITUS_URL (the coordinator's postgres database, workers registered).
#
#   start_citus_cluster PREFIX [VAR=VALUE...]    # extra settings for citus-cluster.sh

# citus-v13.2.2.tar.gz: CITUS_TARBALL, else ../shared/citus/ beside the checkout.
if [ -z "${CITUS_TARBALL:-}" ] && [ -s ../shared/citus/citus-v13.2.2.tar.gz ]; then
    CITUS_TARBALL=$(cd ../shared/citus && pwd)/citus-v13.2.2.tar.gz
fi
[ -s "${CITUS_TARBALL:-}" ] || {
    echo "no Citus source: set CITUS_TARBALL to citus-v13.2.2.tar.gz (git archive of tag v13.2.2)" >&2
    exit 1
}
export CITUS_TARBALL

start_citus_cluster() {
    local prefix=$1
    shift
    scripts/citus/build-citus.sh >&2
    CITUS_CLUSTER=$(mktemp -d "/tmp/$prefix.XXXXXX")
    trap 'scripts/citus/citus-cluster.sh stop "$CITUS_CLUSTER" >/dev/null 2>&1 || true; rm -rf "$CITUS_CLUSTER"' EXIT
    trap 'exit 130' INT TERM
    local coordinator worker1 worker2
    read -r coordinator worker1 worker2 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()')
    CITUS_URL=$(env CITUS_COORDINATOR_PORT="$coordinator" CITUS_WORKER1_PORT="$worker1" \
        CITUS_WORKER2_PORT="$worker2" CITUS_MAX_CONNECTIONS=300 CITUS_DURABLE=1 "$@" \
        scripts/citus/citus-cluster.sh start "$CITUS_CLUSTER")
}
