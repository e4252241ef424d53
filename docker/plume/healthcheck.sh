#!/bin/bash
# The image's HEALTHCHECK: healthy when plume answers 200 on /ready (the database answers and is
# migrated). The port is PLUME_HEALTH_LISTEN's if set, else PLUME_RELAY_LISTEN's when the container
# runs `plume relay`, else PLUME_LISTEN's (`plume serve`). Bash's /dev/tcp: the image needs no HTTP
# client.
mapfile -d '' command_line </proc/1/cmdline
case " ${command_line[*]} " in
    *" relay "*) listener=${PLUME_RELAY_LISTEN:-} ;;
    *) listener=${PLUME_LISTEN:-} ;;
esac
address=${PLUME_HEALTH_LISTEN:-$listener}
[ -n "$address" ] || { echo "no listener to check: set PLUME_HEALTH_LISTEN" >&2; exit 1; }
exec 3<>"/dev/tcp/127.0.0.1/${address##*:}" || exit 1
printf 'GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 5 status_line <&3 || exit 1
case "$status_line" in
    "HTTP/1."?" 200 "*) exit 0 ;;
    *) echo "$status_line" >&2; exit 1 ;;
esac
