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

# shellcheck source=scripts/scale-lib.sh
. "$ROOT/scripts/scale-lib.sh"

answers_file() { # COUNT: the first COUNT listener addresses, each asked for `db`
    for ((i = 0; i < $1; i++)); do echo "$(addr $i) db 10.89.0.2"; done >"$WORK/answers.$1"
    echo "$WORK/answers.$1"
}

config "$WORK/all.toml" "$N" "$ADMIN_A"
config "$WORK/few.toml" "$KEEP" "$ADMIN_A"
ln -s "$WORK/all.toml" "$WORK/dockns.toml"
"$BIN" serve --config "$WORK/dockns.toml" >"$WORK/a.log" 2>&1 &
A=$!
PIDS+=("$A")
wait_ready "$ADMIN_A" || exit 1
sleep 1
echo "dockns $("$BIN" --version 2>/dev/null || true), $N listeners, workers = $WORKERS, $(nproc) CPUs"
echo "threads: $(threads $A) (limit $((2 * $(nproc) + 16)))"
t0=$(ticks $A); sleep 10; t1=$(ticks $A)
echo "idle CPU: $((t1 - t0)) ticks in 10 s (limit 2)"
echo "RSS: $(($(rss_kib $A) / 1024)) MiB (limit 64)"
echo "answering: $(answering "$(answers_file "$N")" "$PORT") of $N listeners"
spread=()
for i in 0 37 75 112 150 187 225 262; do spread+=("$(addr $((i % N)))"); done
one=("$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)" "$(addr 0)")
q1=$(load "$PORT" db "${one[@]}")
q8=$(load "$PORT" db "${spread[@]}")
echo "queries/s, 8 clients on one listener: $q1; on 8 listeners: $q8 ($(ratio "$q8" "$q1")x, target >= 0.8x)"
echo "after load: threads $(threads $A), RSS $(($(rss_kib $A) / 1024)) MiB, /metrics $(metrics_bytes $ADMIN_A) bytes"

# Remove all but KEEP listeners with a reload (the same removal path as a Docker network going).
ln -sfn "$WORK/few.toml" "$WORK/dockns.toml"
kill -HUP "$A"
for _ in $(seq 1 100); do
    [ "$(udp_sockets "$PORT")" -le $((KEEP * WORKERS)) ] && break
    sleep 0.1
done
sleep 2
ta=$(threads $A); ra=$(rss_kib $A); ma=$(metrics_bytes $ADMIN_A)
echo "after removing $((N - KEEP)): threads $ta, RSS $((ra / 1024)) MiB, /metrics $ma bytes, UDP sockets $(udp_sockets "$PORT"), answering $(answering "$(answers_file "$KEEP")" "$PORT") of $KEEP"

config "$WORK/fresh.toml" "$KEEP" "$ADMIN_B"
sed -i "s/:$PORT\"/:$((PORT + 1))\"/g" "$WORK/fresh.toml"
"$BIN" serve --config "$WORK/fresh.toml" >"$WORK/b.log" 2>&1 &
B=$!
PIDS+=("$B")
wait_ready "$ADMIN_B" || exit 1
# The same load as the first one had, so both have touched their buffers alike.
load "$((PORT + 1))" db "${one[@]}" >/dev/null
few=()
for i in 0 3 6 9 12 15 18 19; do few+=("$(addr $((i % KEEP)))"); done
load "$((PORT + 1))" db "${few[@]}" >/dev/null
sleep 2
tb=$(threads $B); rb=$(rss_kib $B); mb=$(metrics_bytes $ADMIN_B)
echo "fresh dockns with $KEEP, after the same load: threads $tb, RSS $((rb / 1024)) MiB, /metrics $mb bytes"
compare_fresh "$ta" "$ra" "$ma" "$tb" "$rb" "$mb"
