#!/usr/bin/env bash
# Failover time per client library with two dockns sidecars (docs/docker.md, "Two sidecars").
#
# Two sidecars of the offline image (contrib/image/build-offline.sh) on one network, started by
# examples/ha-sidecars/sidecars.sh (both with examples/compose-sidecar/dockns.toml), N idle
# containers to resolve, and clients whose resolv.conf is examples/ha-sidecars/resolv.conf with
# the sidecars' addresses (and $OPTIONS as its options line when set). After `docker stop` of the first sidecar every client library does N lookups of
# container names (`<name>.<network>`, A and AAAA), one at a time, 2 a second; the script prints
# the time of each and a table per library:
#
#   glibc  getaddrinfo (tests/clients/lookups.c, gcc)
#   musl   getaddrinfo (the same program, static, musl-gcc)
#   go     Go's own resolver (tests/clients/lookups.go, CGO_ENABLED=0, static)
#   c-ares Node's dns.Resolver (tests/clients/lookups.js; node and its libraries in the image)
#
#   scripts/failover.sh [DOCKNS_BINARY]         # default target/debug/dockns (cargo build first)
#   OPTIONS="ndots:0 timeout:1 attempts:2 rotate" N=8 scripts/failover.sh
#
# Needs root, a running dockerd, gcc, musl-gcc (musl-tools), go (golang-go) and node. Traffic
# stays on the network it creates (the sidecars' upstream is 127.0.0.1:9, which nothing answers:
# no name in this run is forwarded). Everything it creates carries a unique prefix and is
# removed on exit, even on failure. Takes one to two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${1:-target/debug/dockns}
N=${N:-6}
OPTIONS=${OPTIONS:-$(sed -n 's/^options //p' examples/ha-sidecars/resolv.conf)}

need() { command -v "$1" >/dev/null || { echo "failover.sh: $1 is missing: apt-get install $2" >&2; exit 2; }; }
need docker docker.io; need gcc gcc; need musl-gcc musl-tools; need go golang-go; need node nodejs
[ -x "$BIN" ] || { echo "failover.sh: $BIN is not built: cargo build" >&2; exit 2; }

P=dnsfo$$
tmp=$(mktemp -d)
chmod 755 "$tmp"
cleanup() {
    docker ps -aq --filter "name=^$P-" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker network rm "$P-net" >/dev/null 2>&1 || true
    docker image rm "$P-img:1" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

echo "building the clients" >&2
gcc -O2 -o "$tmp/lookups-glibc" tests/clients/lookups.c
musl-gcc -static -O2 -o "$tmp/lookups-musl" tests/clients/lookups.c
(cd "$tmp" && HOME="$tmp" GOCACHE="$tmp/gocache" GOPATH="$tmp/gopath" GOFLAGS=-mod=mod \
    CGO_ENABLED=0 go build -o "$tmp/lookups-go" "$ROOT/tests/clients/lookups.go")
cp tests/clients/lookups.js "$tmp/lookups.js"
NODE=$(readlink -f "$(command -v node)")
EXTRA="$tmp/lookups-glibc $tmp/lookups-musl $tmp/lookups-go $NODE $tmp/lookups.js" \
    sh contrib/image/build-offline.sh "$BIN" "$P-img:1" >/dev/null

# A free /23 (the daemon is shared): Docker allocates from the first /24, the sidecars' fixed
# addresses are in the second.
for a in $(seq 160 219); do
    if docker network create --subnet "10.$a.0.0/23" --ip-range "10.$a.0.0/24" "$P-net" >/dev/null 2>&1; then
        break
    fi
done
docker network inspect "$P-net" >/dev/null 2>&1 || { echo "failover.sh: no free /23 in 10.160-219" >&2; exit 1; }
DNS1="10.$a.1.53"
DNS2="10.$a.1.54"
NET="$P-net" DNS1=$DNS1 DNS2=$DNS2 NAME="$P-dns" IMAGE="$P-img:1" \
    sh examples/ha-sidecars/sidecars.sh --upstream 127.0.0.1:9 >/dev/null
for i in $(seq 0 $((N - 1))); do     # one container per lookup: <prefix>-web<i>.<network>
    docker run -d --name "$P-web$i" --network "$P-net" --entrypoint "$NODE" "$P-img:1" \
        -e 'setInterval(() => {}, 1e9)' >/dev/null
done
for n in 1 2; do
    for _ in $(seq 1 60); do
        docker exec "$P-dns$n" /usr/local/bin/dockns health >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker exec "$P-dns$n" /usr/local/bin/dockns health >/dev/null
done
sed -e "s/^nameserver 10.53.0.53\$/nameserver $DNS1/" -e "s/^nameserver 10.53.0.54\$/nameserver $DNS2/" \
    -e "s/^options .*/options $OPTIONS/" examples/ha-sidecars/resolv.conf > "$tmp/resolv.conf"
chmod 644 "$tmp/resolv.conf"

# One client run: N lookups of the web containers' names, 2 a second, at most 300 s.
client() { # LIBRARY TAG
    local entry args
    case $1 in
        glibc) entry=$tmp/lookups-glibc; args=() ;;
        musl) entry=$tmp/lookups-musl; args=() ;;
        go) entry=$tmp/lookups-go; args=() ;;
        c-ares) entry=$NODE; args=("$tmp/lookups.js") ;;
    esac
    timeout 300 docker run --name "$P-$1-$2" --network "$P-net" -v "$tmp/resolv.conf:/etc/resolv.conf:ro" \
        --entrypoint "$entry" "$P-img:1" "${args[@]}" "$N" 2 "$P-web" "$P-net" 1200
}

LIBS="glibc musl go c-ares"
for lib in $LIBS; do
    out=$(client "$lib" before)
    echo "$out" | head -n "$N" | awk '$2 != 0 { bad = 1 } END { exit bad }' || {
        echo "failover.sh: $lib does not resolve with both sidecars up:"; echo "$out"; exit 1; } >&2
done
docker stop "$P-dns1" >/dev/null
echo "first sidecar ($DNS1) stopped; resolv.conf: nameserver $DNS1, nameserver $DNS2, options $OPTIONS"
printf '| library | lookups | resolved | median ms | max ms |\n|---|---:|---:|---:|---:|\n' > "$tmp/table"
for lib in $LIBS; do
    out=$(client "$lib" after)
    echo "== $lib"; echo "$out"
    echo "$out" | head -n "$N" | sort -n | awk -v lib="$lib" -v n="$N" '
        { ms[NR] = $1; if ($2 == 0) ok++ }
        END { printf "| %s | %d | %d | %.0f | %.0f |\n", lib, n, ok, ms[int((NR + 1) / 2)], ms[NR] }' >> "$tmp/table"
done
echo
cat "$tmp/table"
