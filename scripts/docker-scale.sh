#!/usr/bin/env bash
# scripts/docker-scale.sh: dockns in host mode on hundreds of REAL Docker networks (issue 14),
# the same figures as scripts/listener-scale.sh (whose helpers it shares, scripts/scale-lib.sh):
# threads, idle CPU, RSS, every gateway answers, queries/s spread over 8 gateways against one;
# then most networks removed with `docker network rm` and compared with a dockns started with the
# remaining ones.
#
# It creates N user-defined bridge networks PREFIX-nI with explicit subnets 10.B.X.0/24 (B from
# NET2, default 240, and up: 300 networks use 10.240.0.0/16 and 10.241.0.0/24-10.241.43.0/24;
# Docker's default pools run out after ~30 networks) and CONTAINERS busybox containers
# (FROM scratch, no registry) PREFIX-cK, container K on every network I with I % CONTAINERS == K,
# so every network has one endpoint. dockns (the given binary, `[docker]`, `gateways = true`,
# `gateway_port = PORT`, admin on loopback) then listens on every gateway. Each gateway is asked
# from this host for `PREFIX-cK.PREFIX-nI` (the host view answers `name.network` on every
# gateway) and must answer the address `docker inspect` gives that container on that network.
#
# Traffic goes only to the gateways of the networks created here (host addresses) and to
# loopback. Everything it creates (containers, networks, the image) carries the unique prefix and
# is removed on exit, also on failure or ^C; nothing else on the shared daemon is touched. Other
# developers' networks on the same daemon are served too (host mode serves every bridge); the
# script says how many. Bounded: each load phase runs DUR seconds. Usage:
#   scripts/docker-scale.sh [BINARY]        (default target/release/dockns; root, a Docker daemon)
# Env: N (networks, default 300), KEEP (networks left after the removal, default 20), DUR
#      (seconds per load phase, default 5), WORKERS (default: CPUs), CONTAINERS (default 10),
#      PORT (gateway port, default 25353; the fresh dockns uses PORT+1), ADMIN_A/ADMIN_B (admin
#      ports, default 29153/29154), NET2 (second octet of the first subnet, default 240),
#      PAR (parallel Docker CLI calls, default 4).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/dockns}
N=${N:-300}
KEEP=${KEEP:-20}
DUR=${DUR:-5}
WORKERS=${WORKERS:-$(nproc)}
CONTAINERS=${CONTAINERS:-10}
PORT=${PORT:-25353}
ADMIN_A=${ADMIN_A:-29153}
ADMIN_B=${ADMIN_B:-29154}
NET2=${NET2:-240}
PAR=${PAR:-4}
# The CLI that matches the daemon (20.10 here), as tests/kit/docker.rs picks it.
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
PREFIX=dkscale$$$((RANDOM % 100))
IMG=$PREFIX-img:1
WORK=$(mktemp -d /tmp/dockns-docker-scale.XXXXXX)
PIDS=()

die() {
    echo "docker-scale.sh: $*" >&2
    exit 1
}

cleanup() {
    set +e
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    # Only what carries this run's prefix. Containers one at a time (Docker 20.10 can leave a
    # stale endpoint behind when containers on the same networks are removed concurrently).
    for c in $($DOCKER ps -aq --filter "name=$PREFIX-c" 2>/dev/null); do
        $DOCKER rm -f "$c" >/dev/null 2>&1
    done
    local nets
    nets=$($DOCKER network ls -q --filter "name=$PREFIX-n" 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$nets" ] && echo $nets | xargs -n 20 -P "$PAR" $DOCKER network rm >/dev/null 2>&1
    $DOCKER rmi -f "$IMG" >/dev/null 2>&1
    left=$($DOCKER network ls -q --filter "name=$PREFIX-" 2>/dev/null | wc -l)
    [ "$left" -gt 0 ] && echo "!!! docker-scale.sh: $left networks named $PREFIX-* could not be removed" >&2
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/scale-lib.sh
. "$ROOT/scripts/scale-lib.sh"

[ -x "$BIN" ] || die "no dockns binary at $BIN: cargo build --release, or give its path"
[ "$(id -u)" = 0 ] || die "run as root (Docker, ss)"
$DOCKER info >/dev/null 2>&1 || die "Docker is unreachable: start dockerd"
[ -x /bin/busybox ] || die "/bin/busybox (static) is needed for the image: apt-get install busybox-static"
[ "$N" -gt "$KEEP" ] || die "N ($N) must be larger than KEEP ($KEEP)"
[ "$KEEP" -ge 8 ] || die "KEEP must be at least 8 (the spread load uses 8 gateways)"

subnet() { echo "10.$((NET2 + $1 / 256)).$(($1 % 256))"; } # I -> the first three octets
net() { echo "$PREFIX-n$1"; }
ctr() { echo "$PREFIX-c$(($1 % CONTAINERS))"; } # the container on network I

# Nothing on this machine may already route the subnets (another run, a VPN, a lab network).
for b in $(seq "$NET2" $((NET2 + (N - 1) / 256))); do
    if ip -4 route | grep -q "^10\.$b\."; then
        die "10.$b.0.0/16 is already routed here ($(ip -4 route | grep "^10\.$b\." | head -1)); choose NET2"
    fi
done

# The image: busybox FROM scratch (as tests/kit/docker.rs builds it; there is no registry).
mkdir "$WORK/img"
cp /bin/busybox "$WORK/img/busybox"
cat >"$WORK/img/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"]
EOF
$DOCKER build -q -t "$IMG" "$WORK/img" >/dev/null

started=$(date +%s)
mk_net() { # I
    local s
    s=$(subnet "$1")
    $DOCKER network create --subnet "$s.0/24" --gateway "$s.1" "$(net "$1")" >/dev/null
}
export -f mk_net subnet net
export DOCKER NET2 PREFIX
seq 0 $((N - 1)) | xargs -P "$PAR" -I{} bash -c 'mk_net {}' ||
    die "could not create the $N networks (see above)"

# Container K starts on network K, then joins every network I with I % CONTAINERS == K (one
# sequence per container; the containers in parallel).
join_all() { # K
    local k=$1 i
    $DOCKER run -d --name "$PREFIX-c$k" --stop-timeout 1 --network "$(net "$k")" "$IMG" >/dev/null
    for ((i = k + CONTAINERS; i < N; i += CONTAINERS)); do
        $DOCKER network connect "$(net "$i")" "$PREFIX-c$k"
    done
}
export -f join_all
export IMG N CONTAINERS
seq 0 $((CONTAINERS - 1)) | xargs -P "$CONTAINERS" -I{} bash -c 'join_all {}' ||
    die "could not start the containers (see above)"
echo "created $N networks ($(subnet 0).0/24 ... $(subnet $((N - 1))).0/24) and $CONTAINERS containers on them in $(($(date +%s) - started)) s"

# What Docker says: each container's address and gateway on each of its networks.
for ((k = 0; k < CONTAINERS; k++)); do
    $DOCKER inspect -f '{{range $n, $e := .NetworkSettings.Networks}}{{$e.Gateway}} {{$.Name}}.{{$n}} {{$e.IPAddress}}{{"\n"}}{{end}}' "$PREFIX-c$k"
done | sed 's# /# #' | grep . >"$WORK/truth"
[ "$(wc -l <"$WORK/truth")" = "$N" ] || die "docker inspect lists $(wc -l <"$WORK/truth") endpoints, not $N"
# One line per network, in network order: "GATEWAY CONTAINER.NETWORK ADDRESS".
for ((i = 0; i < N; i++)); do grep -F " $(ctr $i).$(net $i) " "$WORK/truth"; done >"$WORK/answers.all"
head -n "$KEEP" "$WORK/answers.all" >"$WORK/answers.keep"
gw() { echo "$(subnet "$1").1"; }

# UDP sockets bound on PORT to this run's gateways (WORKERS per gateway).
ours() { ss -Hlun "sport = :$1" | awk '{print $4}' | grep -c "^10\.\($NET2\|$((NET2 + 1))\)\." || true; }

wait_sockets() { # PORT COUNT SECONDS: until exactly COUNT of our gateway sockets are bound
    local i
    for i in $(seq 1 $(($3 * 10))); do
        [ "$(ours "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    die "after $3 s, $(ours "$1") UDP sockets on our gateways at port $1, not $2"
}

serve() { # NAME GATEWAY_PORT ADMIN_PORT
    printf '[server]\ngateways = true\ngateway_port = %s\nworkers = %s\n[upstream]\nservers = ["127.0.0.1:9"]\n[admin]\nlisten = "127.0.0.1:%s"\n[docker]\n' \
        "$2" "$WORKERS" "$3" >"$WORK/$1.toml"
    "$BIN" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    PIDS+=("$!")
}

events() { # ADMIN_PORT: Docker events dockns applied so far
    curl -fsS "http://127.0.0.1:$1/metrics" | awk '$1 ~ /^dockns_docker_events_total/ {s += $2} END {print s + 0}'
}

serve a "$PORT" "$ADMIN_A"
A=${PIDS[-1]}
wait_ready "$ADMIN_A" 60 || die "dockns did not become ready ($(tail -3 "$WORK/a.log"))"
wait_sockets "$PORT" $((N * WORKERS)) 60
sleep 1
all=$(metric "$ADMIN_A" dockns_listeners)
echo "dockns $("$BIN" --version 2>/dev/null || true), host mode, $N networks of this run ($all listeners in all: the daemon's other bridge networks are served too), workers = $WORKERS, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "threads: $(threads "$A") (limit $((2 * $(nproc) + 16)))"
e0=$(events "$ADMIN_A")
t0=$(ticks "$A")
sleep 10
t1=$(ticks "$A")
echo "idle CPU: $((t1 - t0)) ticks in 10 s (limit 2); Docker events meanwhile (other developers' containers): $(($(events "$ADMIN_A") - e0))"
echo "RSS: $(($(rss_kib "$A") / 1024)) MiB (limit 64)"
echo "answering: $(answering "$WORK/answers.all" "$PORT") of $N gateways (CONTAINER.NETWORK A = Docker's address)"
NAME="$(ctr 0).$(net 0)"
one=()
for _ in 1 2 3 4 5 6 7 8; do one+=("$(gw 0)"); done
spread=()
for i in 0 37 75 112 150 187 225 262; do spread+=("$(gw $((i * N / 300)))"); done
q1=$(load "$PORT" "$NAME" "${one[@]}")
q8=$(load "$PORT" "$NAME" "${spread[@]}")
echo "queries/s, 8 clients on one gateway: $q1; on 8 gateways: $q8 ($(ratio "$q8" "$q1")x, target >= 0.8x)"
echo "after load: threads $(threads "$A"), RSS $(($(rss_kib "$A") / 1024)) MiB, /metrics $(metrics_bytes "$ADMIN_A") bytes"

# Remove all but KEEP networks: disconnect their containers, then `docker network rm`.
started=$(date +%s)
leave_all() { # K
    local k=$1 i
    for ((i = k; i < N; i += CONTAINERS)); do
        [ "$i" -ge "$KEEP" ] && $DOCKER network disconnect "$(net "$i")" "$PREFIX-c$k"
    done
    return 0
}
export -f leave_all
export KEEP
seq 0 $((CONTAINERS - 1)) | xargs -P "$CONTAINERS" -I{} bash -c 'leave_all {}' ||
    die "could not disconnect the containers (see above)"
for ((i = KEEP; i < N; i++)); do net "$i"; done | xargs -n 10 -P "$PAR" $DOCKER network rm >/dev/null ||
    die "could not remove the networks (see above)"
# Positive signal: dockns has closed the removed gateways' sockets.
wait_sockets "$PORT" $((KEEP * WORKERS)) 60
echo "removed $((N - KEEP)) networks in $(($(date +%s) - started)) s; dockns listeners now $(metric "$ADMIN_A" dockns_listeners)"
sleep 2
ta=$(threads "$A")
ra=$(rss_kib "$A")
ma=$(metrics_bytes "$ADMIN_A")
echo "after removing $((N - KEEP)): threads $ta, RSS $((ra / 1024)) MiB (anonymous $(anon_kib "$A") KiB), /metrics $ma bytes, UDP sockets on our gateways $(ours "$PORT"), answering $(answering "$WORK/answers.keep" "$PORT") of $KEEP"

serve b $((PORT + 1)) "$ADMIN_B"
B=${PIDS[-1]}
wait_ready "$ADMIN_B" 60 || die "the fresh dockns did not become ready ($(tail -3 "$WORK/b.log"))"
wait_sockets $((PORT + 1)) $((KEEP * WORKERS)) 60
# The same load as the first one had, so both have touched their buffers alike.
load $((PORT + 1)) "$NAME" "${one[@]}" >/dev/null
few=()
for i in 0 3 6 9 12 15 18 19; do few+=("$(gw $((i * KEEP / 20)))"); done
load $((PORT + 1)) "$NAME" "${few[@]}" >/dev/null
sleep 2
tb=$(threads "$B")
rb=$(rss_kib "$B")
mb=$(metrics_bytes "$ADMIN_B")
echo "fresh dockns with the $KEEP, after the same load: threads $tb, RSS $((rb / 1024)) MiB (anonymous $(anon_kib "$B") KiB), /metrics $mb bytes, answering $(answering "$WORK/answers.keep" $((PORT + 1))) of $KEEP"
compare_fresh "$ta" "$ra" "$ma" "$tb" "$rb" "$mb"
