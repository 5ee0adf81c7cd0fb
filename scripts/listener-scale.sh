#!/usr/bin/env bash
# scripts/listener-scale.sh: dockns with hundreds of listeners (host mode follows one gateway
# address per Docker network), measured: threads, idle CPU, RSS, every listener answers,
# queries/s spread over 8 listener addresses against one, then most listeners removed by a
# reload and compared with a dockns started with the remaining ones.
#
# "Networks" are simulated as loopback listener addresses 127.0.N.M (the same ListenerSet::add
# and remove that host mode's network sync calls; a reload adds and removes them here).
# Loopback only, bounded (each load phase runs DUR seconds). Usage:
#   scripts/listener-scale.sh [BINARY]      (default target/release/dockns)
# Env: N (listeners, default 300), KEEP (listeners left after the reload, default 20),
#      DUR (seconds per load phase, default 5), WORKERS (default: CPUs), PORT (default 25353).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/dockns}
N=${N:-300}
KEEP=${KEEP:-20}
DUR=${DUR:-5}
WORKERS=${WORKERS:-$(nproc)}
PORT=${PORT:-25353}
ADMIN_A=${ADMIN_A:-29153}
ADMIN_B=${ADMIN_B:-29154}
WORK=$(mktemp -d /tmp/dockns-listeners.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

addr() { echo "127.0.$((1 + $1 / 250)).$((1 + $1 % 250))"; }

config() { # FILE COUNT ADMIN_PORT
    {
        printf '[server]\nworkers = %s\nlisten = [' "$WORKERS"
        for ((i = 0; i < $2; i++)); do printf '"%s:%s",' "$(addr $i)" "$PORT"; done
        printf ']\n[upstream]\nservers = ["127.0.0.1:9"]\n[admin]\nlisten = "127.0.0.1:%s"\n' "$3"
        printf '[[network]]\nname = "demo"\n[[network.container]]\nname = "db"\nipv4 = ["10.89.0.2"]\n'
    } >"$1"
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
metrics_bytes() { curl -fsS "http://127.0.0.1:$1/metrics" | wc -c; }

wait_ready() { # ADMIN_PORT
    for _ in $(seq 1 200); do
        curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "dockns did not become ready" >&2
    exit 1
}

answering() { # COUNT: how many of the first COUNT listener addresses answer `db A`
    python3 - "$1" "$PORT" <<'EOF'
import socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
ok = 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for i in range(n):
    a = f"127.0.{1 + i // 250}.{1 + i % 250}"
    q = i.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02db\x00\x00\x01\x00\x01"
    s.sendto(q, (a, port))
    try:
        r, src = s.recvfrom(512)
        ok += r[:2] == q[:2] and r[3] & 15 == 0 and r[7] == 1 and src == (a, port)
    except socket.timeout:
        pass
print(ok)
EOF
}

load() { # PORT ADDRESS... : one `dockns bench` per address (64 in flight each), summed queries/s
    local out=() p i=0 tag=$RANDOM port=$1
    shift
    for a in "$@"; do
        i=$((i + 1))
        "$BIN" bench -s "$a:$port" -n db -q 64 --sockets 4 -l "$DUR" --json >"$WORK/bench.$tag.$i.json" &
        out+=($!)
    done
    for p in "${out[@]}"; do wait "$p"; done
    python3 -c 'import json,sys; print(int(sum(json.load(open(f))["qps"] for f in sys.argv[1:])))' "$WORK"/bench.$tag.*.json
}

config "$WORK/all.toml" "$N" "$ADMIN_A"
config "$WORK/few.toml" "$KEEP" "$ADMIN_A"
ln -s "$WORK/all.toml" "$WORK/dockns.toml"
"$BIN" serve --config "$WORK/dockns.toml" >"$WORK/a.log" 2>&1 &
A=$!
PIDS+=("$A")
wait_ready "$ADMIN_A"
sleep 1
echo "dockns $("$BIN" --version 2>/dev/null || true), $N listeners, workers = $WORKERS, $(nproc) CPUs"
echo "threads: $(threads $A) (limit $((2 * $(nproc) + 16)))"
t0=$(ticks $A); sleep 10; t1=$(ticks $A)
echo "idle CPU: $((t1 - t0)) ticks in 10 s (limit 2)"
echo "RSS: $(($(rss_kib $A) / 1024)) MiB (limit 64)"
echo "answering: $(answering "$N") of $N listeners"
spread=()
for i in 0 37 75 112 150 187 225 262; do spread+=("$(addr $((i % N)))"); done
one=("$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)")
q1=$(load "$PORT" "${one[@]}")
q8=$(load "$PORT" "${spread[@]}")
echo "queries/s, 8 clients on one listener: $q1; on 8 listeners: $q8 ($(python3 -c "print(f'{$q8/$q1:.2f}')")x, target >= 0.8x)"
echo "after load: threads $(threads $A), RSS $(($(rss_kib $A) / 1024)) MiB, /metrics $(metrics_bytes $ADMIN_A) bytes"

# Remove all but KEEP listeners with a reload (the same removal path as a Docker network going).
ln -sfn "$WORK/few.toml" "$WORK/dockns.toml"
kill -HUP "$A"
for _ in $(seq 1 100); do
    [ "$(ss -Hlun "sport = :$PORT" | wc -l)" -le $((KEEP * WORKERS)) ] && break
    sleep 0.1
done
sleep 2
ta=$(threads $A); ra=$(rss_kib $A); ma=$(metrics_bytes $ADMIN_A)
echo "after removing $((N - KEEP)): threads $ta, RSS $((ra / 1024)) MiB, /metrics $ma bytes, UDP sockets $(ss -Hlun "sport = :$PORT" | wc -l), answering $(answering "$KEEP") of $KEEP"

config "$WORK/fresh.toml" "$KEEP" "$ADMIN_B"
sed -i "s/:$PORT\"/:$((PORT + 1))\"/g" "$WORK/fresh.toml"
"$BIN" serve --config "$WORK/fresh.toml" >"$WORK/b.log" 2>&1 &
B=$!
PIDS+=("$B")
wait_ready "$ADMIN_B"
# The same load as the first one had, so both have touched their buffers alike.
load "$((PORT + 1))" "${one[@]}" >/dev/null
few=()
for i in 0 3 6 9 12 15 18 19; do few+=("$(addr $((i % KEEP)))"); done
load "$((PORT + 1))" "${few[@]}" >/dev/null
sleep 2
tb=$(threads $B); rb=$(rss_kib $B); mb=$(metrics_bytes $ADMIN_B)
echo "fresh dockns with $KEEP, after the same load: threads $tb, RSS $((rb / 1024)) MiB, /metrics $mb bytes"
python3 -c "
for k, a, b in (('threads', $ta, $tb), ('RSS', $ra, $rb), ('/metrics', $ma, $mb)):
    print(f'{k}: {a / b:.2f}x the fresh one (target within 25%)')
"
