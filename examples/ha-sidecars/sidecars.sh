#!/bin/sh
# Two dockns sidecars on one network, each at its own fixed address, both with the sidecar
# example's dockns.toml (docs/docker.md, "Two sidecars"); application containers mount
# resolv.conf (next to this file), which names both. Defaults: the compose example's network.
#   NET=appnet DNS1=10.53.0.53 DNS2=10.53.0.54 examples/ha-sidecars/sidecars.sh
set -eu
NET=${NET:-appnet}
DNS1=${DNS1:-10.53.0.53}
DNS2=${DNS2:-10.53.0.54}
NAME=${NAME:-dns}
IMAGE=${IMAGE:-dockns:local}
CONFIG=${CONFIG:-$(cd "$(dirname "$0")/../compose-sidecar" && pwd)/dockns.toml}
gid=$(stat -c %g /var/run/docker.sock)
n=0
for ip in "$DNS1" "$DNS2"; do
    n=$((n + 1))
    docker run -d --name "$NAME$n" --restart unless-stopped \
        --user 65532:65532 --group-add "$gid" --read-only --cap-drop ALL \
        --security-opt no-new-privileges:true \
        --network "$NET" --ip "$ip" \
        -v /var/run/docker.sock:/var/run/docker.sock:ro \
        -v "$CONFIG:/etc/dockns/dockns.toml:ro" \
        "$IMAGE" serve --config /etc/dockns/dockns.toml "$@"
done
