#!/usr/bin/env bash
# benches/compare.sh: dockns against Knot DNS, dnsmasq and aardvark-dns, side by side, in one run.
#
# Installs what it needs from Debian (dnsperf knot dnsmasq-base aardvark-dns gcc) when missing,
# generates ONE set of records (280 local names) in each server's format, starts every server
# on a loopback port, runs dnsperf against each in turn, reads each server's CPU time from
# /proc/<pid>/stat and prints one table. The floor is the machine's own limit for a UDP answer:
# benches/floor.c (built here with cc), WORKERS threads of recvmmsg/sendmmsg with one fixed
# answer and no lookup; every server's queries/s is also shown as a ratio to it. Latency
# percentiles come from `dockns bench --json` at half of each server's own peak. The table is
# drawn as an SVG (benches/chart, a small plotters program built here with cargo) at $CHART.
# Then: TCP vs Knot, forwarding (cache hits, cache
# misses vs dnsmasq against the same local Knot upstream), 10k containers / 500 networks (RSS,
# rebuild, throughput), churn under load, and latency at half of peak load.
#
# Loopback only, bounded: every phase runs DUR seconds (default 10); everything started here is
# killed on exit. Usage:   benches/compare.sh            (DUR=5 benches/compare.sh for a quick run)
# Env: DUR (seconds per phase), CLIENTS (dnsperf -c, default 8), INFLIGHT (dnsperf -q, 500),
#      DOCKNS (binary; default: cargo build --release), WORKERS (dockns UDP workers, default 2),
#      ROUNDS (interleaved rounds of the peer comparison and of the forwarding rows, default 3;
#      the tables show medians), ONLY=fwd (only the forwarding rows and the local-name rate they
#      are compared with: DUR=5 ONLY=fwd benches/compare.sh takes about 2 minutes), ONLY=local
#      (only the local-names table and its chart: about 4 minutes at DUR=10),
#      CHART (the SVG to write, default docs/compare-local-udp.svg; CHART= to draw none).
set -euo pipefail

DUR=${DUR:-10}
CLIENTS=${CLIENTS:-8}
INFLIGHT=${INFLIGHT:-500}
WORKERS=${WORKERS:-2}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-}
case "$ONLY" in "" | fwd | local) ;; *) echo "ONLY must be empty, fwd or local" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHART=${CHART-$ROOT/docs/compare-local-udp.svg}
WORK=$(mktemp -d /tmp/dockns-compare.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    sleep 0.3
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

log() { echo "# $*" >&2; }

# --- tools -----------------------------------------------------------------------------------
need_pkg() { # command package
    if ! command -v "$1" >/dev/null 2>&1 && ! [ -x "$1" ]; then
        log "installing $2"
        if [ "$(id -u)" -eq 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2 ||
                { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2; }
        else
            sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2
        fi
    fi
}
need_pkg dnsperf dnsperf
need_pkg knotd knot
need_pkg dnsmasq dnsmasq-base
need_pkg cc gcc
AARDVARK=$(command -v aardvark-dns 2>/dev/null || echo /usr/lib/podman/aardvark-dns)
[ "$ONLY" = fwd ] || need_pkg "$AARDVARK" aardvark-dns
PATH=$PATH:/usr/sbin

if [ -n "${DOCKNS:-}" ]; then
    BIN=$DOCKNS
else
    log "building dockns (release)"
    (cd "$ROOT" && cargo build --release --quiet) >&2
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/dockns
fi
FLOOR=$WORK/floor
cc -O2 -pthread -o "$FLOOR" "$ROOT/benches/floor.c"

# Loopback ports: a random base, each checked free.
BASE=$((20000 + RANDOM % 30000))
next_port() { # VAR: the next free loopback port (no subshell, so BASE advances)
    while ss -Hltun "sport = :$BASE" 2>/dev/null | grep -q .; do BASE=$((BASE + 1)); done
    printf -v "$1" '%s' "$BASE"
    BASE=$((BASE + 1))
}
for v in P_FLOOR P_KNOT P_DNSMASQ P_AARD P_DOCKNS P_FWD_DOCKNS P_FWD_NOCACHE P_FWD_DNSMASQ P_BIG; do next_port $v; done

# --- one set of records ----------------------------------------------------------------------
N=280
NET=bench
QUERIES=$WORK/queries.txt          # dnsperf format: name type
: >"$QUERIES"
KZONE=$WORK/knot/bench.zone; mkdir -p "$WORK/knot" "$WORK/aardvark"
HOSTS=$WORK/dnsmasq.hosts; : >"$HOSTS"
AFILE=$WORK/aardvark/$NET
DTOML=$WORK/dockns.toml
{
    echo "\$ORIGIN $NET."
    echo "\$TTL 5"
    echo "@ SOA ns.$NET. hostmaster.$NET. 1 3600 600 86400 5"
    echo "@ NS ns.$NET."
    echo "ns A 127.0.0.1"
} >"$KZONE"
echo "127.0.0.1" >"$AFILE"
cat >"$DTOML" <<EOF
[server]
listen = ["127.0.0.1:$P_DOCKNS"]
host_view = ["$NET"]
ttl = 5
workers = $WORKERS

[upstream]
servers = ["127.0.0.1:$P_KNOT"]

[[network]]
name = "$NET"
subnet = "10.77.0.0/16"
EOF
for i in $(seq 1 $N); do
    name=$(printf 'c%04d' "$i")
    v4="10.77.$((i / 250)).$((i % 250 + 2))"
    v6="fd77::$(printf '%x' "$i")"
    id=$(printf '%064x' "$i")
    echo "$name.$NET A" >>"$QUERIES"
    echo "$name A $v4" >>"$KZONE"
    echo "$name AAAA $v6" >>"$KZONE"
    echo "$v4 $name.$NET" >>"$HOSTS"
    echo "$v6 $name.$NET" >>"$HOSTS"
    echo "$id $v4 $v6 $name.$NET" >>"$AFILE"
    printf '\n[[network.container]]\nname = "%s"\nipv4 = ["%s"]\nipv6 = ["%s"]\n' "$name" "$v4" "$v6" >>"$DTOML"
done

cat >"$WORK/knot/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@$P_KNOT
    udp-workers: 2
    tcp-workers: 2
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot/db"
template:
  - id: default
    storage: "$WORK/knot"
    semantic-checks: off
zone:
  - domain: $NET.
    file: "$KZONE"
  - domain: fwd.
    file: "$WORK/knot/fwd.zone"
EOF
# A zone for forwarding tests: Knot plays the fast local upstream. A wildcard answers unique
# names (cache misses) without a table.
cat >"$WORK/knot/fwd.zone" <<EOF
\$ORIGIN fwd.
\$TTL 300
@ SOA ns.fwd. hostmaster.fwd. 1 3600 600 86400 300
@ NS ns.fwd.
ns A 127.0.0.1
* A 192.0.2.1
EOF
FWD_HIT=$WORK/fwd-hit.txt; FWD_MISS=$WORK/fwd-miss.txt
# Cache misses: 200,000 unique names, all answered by Knot's wildcard (dnsperf cycles through
# the file; both forwarders run with their cache off, so every query goes upstream).
MISS_NAMES=200000
for i in $(seq 1 $N); do echo "h$i.fwd A"; done >"$FWD_HIT"
awk -v n=$MISS_NAMES 'BEGIN { for (i = 1; i <= n; i++) printf "m%d.fwd A\n", i }' >"$FWD_MISS"

# --- helpers ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
wait_udp() { # port: until the server answers (max 10 s)
    for _ in $(seq 1 100); do
        if dig +tries=1 +time=1 @127.0.0.1 -p "$1" "c0001.$NET" A >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "server on port $1 did not answer within 10 s"; return 1
}
start() { # VAR logfile cmd...: runs cmd in the background, its pid in VAR (and in PIDS)
    local var=$1 logf=$2; shift 2
    "$@" >"$logf" 2>&1 &
    PIDS+=($!)
    printf -v "$var" '%s' "$!"
    disown "$!" 2>/dev/null || true # no "Killed" job notices at cleanup
}

# run_dnsperf NAME PID PORT QUERYFILE [extra dnsperf args]: one line "name qps cpu_us mean_us p99_us"
run_dnsperf() {
    local name=$1 pid=$2 port=$3 qf=$4; shift 4
    local out=$WORK/dnsperf-$name.txt c0 c1
    c0=$(cpu_ticks "$pid")
    dnsperf -s 127.0.0.1 -p "$port" -d "$qf" -l "$DUR" -c "$CLIENTS" -q "$INFLIGHT" -t 2 "$@" >"$out" 2>&1 || true
    c1=$(cpu_ticks "$pid")
    awk -v name="$name" -v cpu=$((c1 - c0)) -v tck="$TCK" '
        /Queries completed:/ { done = $3 }
        /Queries lost:/ { lost = $3 }
        /Queries per second:/ { qps = $4 }
        /Average Latency \(s\):/ { mean = $4 * 1e6 }
        END { printf "%s %.0f %.2f %.0f %s\n", name, qps, (done > 0 ? cpu / tck * 1e6 / done : 0), mean, lost + 0 }' "$out"
}

# churn PID LINK FILE_A FILE_B: for DUR seconds, 50 times a second, points LINK at the other file
# (an atomic rename) and sends PID a SIGHUP: one container change per reload. One python process
# drives it, so the driver costs next to no CPU. Prints the number of reloads asked for.
churn() {
    python3 - "$@" "$DUR" <<'PY'
import os, signal, sys, time
pid, link, a, b, dur = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
start = time.monotonic(); k = 0
while time.monotonic() - start < dur:
    tmp = link + ".next"
    os.symlink(b if k % 2 == 0 else a, tmp)
    os.replace(tmp, link)
    os.kill(pid, signal.SIGHUP)
    k += 1
    time.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
print(k)
PY
}
publishes() { grep -c "snapshot published" "$1" || true; }

# latency_at NAME PORT QUERYFILE RATE: "mean p50 p90 p99 p99.9" (µs) from `dockns bench --json`
# at a fixed send rate (open loop, HDR histogram of every reply); its JSON is kept in
# $WORK/latency-NAME.json.
latency_at() {
    local name=$1 port=$2 qf=$3 rate=$4
    "$BIN" bench --server "127.0.0.1:$port" --queries "$qf" --rate "$rate" --duration "$DUR" \
        --json >"$WORK/latency-$name.json" 2>"$WORK/latency-$name.err" || true
    python3 - "$WORK/latency-$name.json" <<'PY'
import json, sys
try:
    l = json.load(open(sys.argv[1]))["latency_us"]
    print("%.0f %.0f %.0f %.0f %.0f" % (l["mean"], l["p50"], l["p90"], l["p99"], l["p999"]))
except Exception:
    print("0 0 0 0 0")
PY
}

# --- start the peers -------------------------------------------------------------------------
log "work dir $WORK; ports floor=$P_FLOOR knot=$P_KNOT dnsmasq=$P_DNSMASQ aardvark=$P_AARD dockns=$P_DOCKNS"
knotc_conf="$WORK/knot/knot.conf"
start PID_FLOOR "$WORK/floor.log" "$FLOOR" "$P_FLOOR" "$WORKERS"
start PID_KNOT "$WORK/knot.log" knotd -c "$knotc_conf" -s "$WORK/knot/knot.sock"
start PID_DNSMASQ "$WORK/dnsmasq.log" dnsmasq -k -R -h -u root --pid-file= -z \
    --listen-address=127.0.0.1 --port="$P_DNSMASQ" --addn-hosts="$HOSTS" --cache-size=10000 \
    --log-facility=-
# (not in ONLY=fwd runs)
if [ "$ONLY" != fwd ]; then
# aardvark-dns 1.4 exits when it cannot reach syslog (/dev/log or /var/run/syslog), which many
# containers and CI machines lack: then give it a private /run holding a syslog sink, in its own
# mount namespace (nothing on the machine changes).
AARD_CMD=("$AARDVARK" --config "$WORK/aardvark" -p "$P_AARD" run)
if ! [ -S /dev/log ] && ! [ -S /var/run/syslog ]; then
    mkdir -p "$WORK/run"
    start PID_SYSLOG "$WORK/syslog.log" python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    s.recv(65536)' "$WORK/run/syslog"
    for _ in $(seq 1 50); do [ -S "$WORK/run/syslog" ] && break; sleep 0.1; done
    AARD_CMD=(unshare -m sh -c 'mount --bind "$0" /run && exec "$@"' "$WORK/run" "${AARD_CMD[@]}")
fi
start PID_AARD "$WORK/aardvark.log" "${AARD_CMD[@]}"
# `aardvark-dns run` forks into the background: the server is the pid it writes.
for _ in $(seq 1 100); do [ -s "$WORK/aardvark/aardvark.pid" ] && break; sleep 0.1; done
PID_AARD=$(cat "$WORK/aardvark/aardvark.pid")
PIDS+=("$PID_AARD")
fi
# dockns reads its config through a symlink, so the churn phase can flip it between two versions
# of the file with one rename (see churn below).
DLIVE=$WORK/dockns-live.toml
cp "$DTOML" "$WORK/dockns-a.toml"
ln -s "$WORK/dockns-a.toml" "$DLIVE"
start PID_DOCKNS "$WORK/dockns.log" "$BIN" serve --config "$DLIVE" --log-level "warn,dockns::model=debug"
if [ "$ONLY" = fwd ]; then
    for p in $P_KNOT $P_DOCKNS; do wait_udp "$p"; done
else
    for p in $P_FLOOR $P_KNOT $P_DNSMASQ $P_AARD $P_DOCKNS; do wait_udp "$p"; done
fi

declare -A QPS CPU MEAN LOST SAMPLES
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
if [ "$ONLY" != fwd ]; then
# --- 1. local names over UDP -----------------------------------------------------------------
# ROUNDS interleaved rounds (floor, knot, dnsmasq, aardvark, dockns, floor, ...): each figure in the
# table is the median over the rounds, so a burst of noise on the shared machine moves one
# sample, not the result.
log "phase 1: local A queries over UDP, ${DUR}s each, $ROUNDS interleaved rounds"
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
    for s in floor:$PID_FLOOR:$P_FLOOR knot:$PID_KNOT:$P_KNOT dnsmasq:$PID_DNSMASQ:$P_DNSMASQ aardvark-dns:$PID_AARD:$P_AARD dockns:$PID_DOCKNS:$P_DOCKNS; do
        IFS=: read -r name pid port <<<"$s"
        read -r _ q c m l < <(run_dnsperf "$name" "$pid" "$port" "$QUERIES")
        QPS[$name]="${QPS[$name]:-} $q"; CPU[$name]="${CPU[$name]:-} $c"
        MEAN[$name]="${MEAN[$name]:-} $m"; LOST[$name]="${LOST[$name]:-} $l"
    done
done
SERVERS="floor knot dnsmasq aardvark-dns dockns"
for name in $SERVERS; do
    SAMPLES[$name]=${QPS[$name]# }
    QPS[$name]=$(median <<<"${QPS[$name]}"); CPU[$name]=$(median <<<"${CPU[$name]}")
    MEAN[$name]=$(median <<<"${MEAN[$name]}"); LOST[$name]=$(median <<<"${LOST[$name]}")
done
# Latency percentiles at half of each server's own peak (dockns bench, open loop).
declare -A HMEAN HP50 HP90 HP99 HP999
for s in floor:$P_FLOOR knot:$P_KNOT dnsmasq:$P_DNSMASQ aardvark-dns:$P_AARD dockns:$P_DOCKNS; do
    IFS=: read -r name port <<<"$s"
    half=$(awk -v q="${QPS[$name]}" 'BEGIN { h = int(q / 2); print (h < 1 ? 1 : h) }')
    read -r hm h50 h90 h99 h999 < <(latency_at "$name" "$port" "$QUERIES" "$half")
    HMEAN[$name]=$hm; HP50[$name]=$h50; HP90[$name]=$h90; HP99[$name]=$h99; HP999[$name]=$h999
done
LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
FQPS=${QPS[floor]}
local_table() {
    echo "dockns vs peers: $N local names, UDP, dnsperf -c $CLIENTS -q $INFLIGHT, ${DUR}s each, median of $ROUNDS interleaved rounds, $(nproc) CPUs shared by dnsperf and the server"
    echo
    printf '| %-13s | %9s | %12s | %8s | %10s | %9s | %9s | %11s | %8s | %7s |\n' server "queries/s" "CPU µs/query" "mean µs" "mean µs @½" "p50 µs @½" "p99 µs @½" "p99.9 µs @½" "vs floor" "vs Knot"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ---------------: ----------: --------------: ----------: ------------: -----------: -----------: -------------: ----------: ---------:
    for name in $SERVERS; do
        printf '| %-13s | %9s | %12s | %8s | %10s | %9s | %9s | %11s | %7sx | %6sx |\n' "$name" "${QPS[$name]}" "${CPU[$name]}" "${MEAN[$name]}" \
            "${HMEAN[$name]}" "${HP50[$name]}" "${HP99[$name]}" "${HP999[$name]}" "$(ratio "${QPS[$name]}" "$FQPS")" "$(ratio "${QPS[$name]}" "${QPS[knot]}")"
    done
    echo
    echo "(load average: $LOAD_BEFORE before, $LOAD_AFTER after phase 1; floor: benches/floor.c, $WORKERS threads, recvmmsg/sendmmsg and one fixed answer: the machine's own limit; mean µs: dnsperf average at peak; @½: dockns bench --rate <half of that server's peak>, every reply in an HDR histogram)"
    for name in $SERVERS; do echo "  $name queries/s per round: ${SAMPLES[$name]}"; done
}
# results.json for the chart (benches/chart reads it).
{
    printf '{"subtitle": "%s names, dnsperf -c %s -q %s, %ss each, median of %s interleaved rounds, %s CPUs shared by load and server; load average %s before, %s after (shared machine: noisy)",\n "servers": [' \
        "$N" "$CLIENTS" "$INFLIGHT" "$DUR" "$ROUNDS" "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER"
    sep=""
    for name in $SERVERS; do
        printf '%s\n  {"name": "%s", "qps": %s, "cpu_us_per_query": %s, "ratio_to_floor": %s, "samples": [%s], "latency_us": {"mean": %s, "p50": %s, "p90": %s, "p99": %s, "p999": %s}}' \
            "$sep" "$name" "${QPS[$name]}" "${CPU[$name]}" "$(ratio "${QPS[$name]}" "$FQPS")" "$(tr -s ' ' ',' <<<"${SAMPLES[$name]}")" \
            "${HMEAN[$name]}" "${HP50[$name]}" "${HP90[$name]}" "${HP99[$name]}" "${HP999[$name]}"
        sep=","
    done
    printf '\n]}\n'
} >"$WORK/results.json"
if [ -n "$CHART" ]; then
    log "drawing $CHART"
    (cd "$ROOT/benches/chart" && cargo build --release --quiet) >&2
    CHART_BIN=${CARGO_TARGET_DIR:-$ROOT/benches/chart/target}/release/dockns-bench-chart
    "$CHART_BIN" "$WORK/results.json" "$CHART"
    cp "$WORK/results.json" "${CHART%.svg}.json"
fi
if [ "$ONLY" = local ]; then
    echo
    local_table
    exit 0
fi

# --- 2. TCP ----------------------------------------------------------------------------------
log "phase 2: TCP (several queries per connection)"
read -r _ TQ_KNOT TC_KNOT TM_KNOT _ < <(run_dnsperf knot-tcp "$PID_KNOT" "$P_KNOT" "$QUERIES" -m tcp)
read -r _ TQ_DOCKNS TC_DOCKNS TM_DOCKNS _ < <(run_dnsperf dockns-tcp "$PID_DOCKNS" "$P_DOCKNS" "$QUERIES" -m tcp)

fi

# --- 3. forwarding ---------------------------------------------------------------------------
log "phase 3: forwarding (Knot on $P_KNOT is the upstream)"
sed -e "s/127.0.0.1:$P_DOCKNS/127.0.0.1:$P_FWD_DOCKNS/" "$DTOML" >"$WORK/fwd.toml"
sed -e "s/127.0.0.1:$P_DOCKNS/127.0.0.1:$P_FWD_NOCACHE/" -e "s/^\[upstream\]/[upstream]\ncache_size = 0/" "$DTOML" >"$WORK/nocache.toml"
start PID_FWD "$WORK/fwd.log" "$BIN" serve --config "$WORK/fwd.toml" --log-level warn
start PID_NOCACHE "$WORK/nocache.log" "$BIN" serve --config "$WORK/nocache.toml" --log-level warn
start PID_FDM "$WORK/dnsmasq-fwd.log" dnsmasq -k -R -h -u root --pid-file= -z \
    --listen-address=127.0.0.1 --port="$P_FWD_DNSMASQ" --server="127.0.0.1#$P_KNOT" \
    --cache-size=0 --dns-forward-max=1000 --log-facility=-
for p in $P_FWD_DOCKNS $P_FWD_NOCACHE $P_FWD_DNSMASQ; do wait_udp "$p"; done
# ROUNDS interleaved rounds of: dockns local names (the rate cache hits are held to), dockns
# cache hits, dockns cache misses, dnsmasq cache misses; each row is the median over the rounds.
declare -A FQ FC FM FL
for r in $(seq 1 "$ROUNDS"); do
    for s in fwd-local:$PID_DOCKNS:$P_DOCKNS:$QUERIES fwd-hit:$PID_FWD:$P_FWD_DOCKNS:$FWD_HIT \
        fwd-miss:$PID_NOCACHE:$P_FWD_NOCACHE:$FWD_MISS dnsmasq-miss:$PID_FDM:$P_FWD_DNSMASQ:$FWD_MISS; do
        IFS=: read -r name pid port qf <<<"$s"
        read -r _ q c m l < <(run_dnsperf "$name" "$pid" "$port" "$qf")
        FQ[$name]="${FQ[$name]:-} $q"; FC[$name]="${FC[$name]:-} $c"
        FM[$name]="${FM[$name]:-} $m"; FL[$name]="${FL[$name]:-} $l"
    done
done
declare -A FSAMPLES FCSAMPLES
for name in fwd-local fwd-hit fwd-miss dnsmasq-miss; do
    FSAMPLES[$name]=${FQ[$name]# }; FCSAMPLES[$name]=${FC[$name]# }
    FQ[$name]=$(median <<<"${FQ[$name]}"); FC[$name]=$(median <<<"${FC[$name]}")
    FM[$name]=$(median <<<"${FM[$name]}"); FL[$name]=$(median <<<"${FL[$name]}")
done
FH_Q=${FQ[fwd-hit]}; FH_C=${FC[fwd-hit]}; FH_M=${FM[fwd-hit]}; FH_L=${FL[fwd-hit]}
FM_Q=${FQ[fwd-miss]}; FM_C=${FC[fwd-miss]}; FM_M=${FM[fwd-miss]}; FM_L=${FL[fwd-miss]}
DM_Q=${FQ[dnsmasq-miss]}; DM_C=${FC[dnsmasq-miss]}; DM_M=${FM[dnsmasq-miss]}; DM_L=${FL[dnsmasq-miss]}
FLOC_Q=${FQ[fwd-local]}
kill "$PID_FWD" "$PID_NOCACHE" "$PID_FDM" 2>/dev/null || true

forward_table() {
    echo "forwarding: Knot on loopback is the upstream (wildcard zone); cache misses: $MISS_NAMES unique names, cache off on both; dnsperf -c $CLIENTS -q $INFLIGHT, ${DUR}s each, median of $ROUNDS interleaved rounds"
    echo
    echo "| measurement | queries/s | CPU µs/query | mean µs | ratio | target |"
    echo "|---|---:|---:|---:|---:|---|"
    echo "| local names (dockns, same rounds) | $FLOC_Q | ${FC[fwd-local]} | ${FM[fwd-local]} | | |"
    echo "| forwarded, cache hits (dockns) | $FH_Q | $FH_C | $FH_M | $(ratio "$FH_Q" "$FLOC_Q")x local | ≥ 0.9x |"
    echo "| forwarded, cache misses (dockns, cache off) | $FM_Q | $FM_C | $FM_M | $(ratio "$FM_Q" "$DM_Q")x dnsmasq q/s, $(ratio "$FM_C" "$DM_C")x CPU | ≥ 1.3x q/s, ≤ 0.8x CPU |"
    echo "| forwarded, dnsmasq (cache off), same upstream | $DM_Q | $DM_C | $DM_M | | |"
    echo
    for name in fwd-local fwd-hit fwd-miss dnsmasq-miss; do
        echo "  $name per round: queries/s ${FSAMPLES[$name]}; CPU µs/query ${FCSAMPLES[$name]}"
    done
    echo "  lost (median): local ${FL[fwd-local]}, hits $FH_L, misses $FM_L, dnsmasq $DM_L"
}
if [ "$ONLY" = fwd ]; then
    echo
    forward_table
    exit 0
fi

# --- 4. 10k containers over 500 networks -----------------------------------------------------
log "phase 4: 10,000 containers over 500 networks"
BIG=$WORK/big.toml
{
    printf '[server]\nlisten = ["127.0.0.1:%s"]\nttl = 5\nworkers = %s\nhost_view = ["%s"]\n' "$P_BIG" "$WORKERS" "$NET"
    printf '\n[upstream]\nservers = ["127.0.0.1:%s"]\n' "$P_KNOT"
    # Network 0 is the same 280-name network as above; 9,720 more containers over 499 networks.
    awk -v net="$NET" -v n="$N" 'BEGIN {
        printf "\n[[network]]\nname = \"%s\"\n", net
        for (k = 1; k <= n; k++)
            printf "\n[[network.container]]\nname = \"c%04d\"\nipv4 = [\"10.77.%d.%d\"]\n", k, int(k / 250), k % 250 + 2
        per = (10000 - n) / 499
        for (w = 1; w < 500; w++) {
            printf "\n[[network]]\nname = \"n%03d\"\n", w
            for (c = int((w - 1) * per); c < int(w * per); c++)
                printf "\n[[network.container]]\nname = \"x%05d\"\nipv4 = [\"10.%d.%d.%d\"]\n", c, 100 + int(w / 100), w % 100, c % 200 + 2
        }
    }'
} >"$BIG"
start PID_BIG "$WORK/big.log" "$BIN" serve --config "$BIG" --log-level "warn,dockns::model=debug"
wait_udp "$P_BIG"
BIG_RSS=$(rss_kib "$PID_BIG")
read -r _ BIG_Q BIG_C BIG_M _ < <(run_dnsperf dockns-10k "$PID_BIG" "$P_BIG" "$QUERIES")
# One change: rename one container, reload; the publisher logs each rebuild's duration.
sed -i '0,/name = "x00020"/s//name = "x00020b"/' "$BIG"
before=$(grep -c "snapshot published" "$WORK/big.log" || true)
kill -HUP "$PID_BIG"
for _ in $(seq 1 100); do
    now=$(grep -c "snapshot published" "$WORK/big.log" || true)
    [ "$now" -ge $((before + 1)) ] && break
    sleep 0.1
done
BIG_REBUILD=$(grep "snapshot published" "$WORK/big.log" | tail -1 | sed -e 's/\x1b\[[0-9;]*m//g' | sed -n 's/.*build_us=\([0-9]*\).*/\1/p')
BIG_RSS_AFTER=$(rss_kib "$PID_BIG")

# --- 5. churn: 50 changes per second under load ----------------------------------------------
# A change is one container gaining or losing an alias; each reload re-reads the whole file, as a
# SIGHUP does (in Docker mode a change is one event and one inspect, no file).
log "phase 5: churn (50 reloads/s, one changed container each) under load, 280 and 10k names"
cp "$WORK/dockns-a.toml" "$WORK/dockns-b.toml"
printf 'aliases = ["churn-alias"]\n' >>"$WORK/dockns-b.toml"
read -r _ C0_Q C0_C C0_M _ < <(run_dnsperf dockns-280-again "$PID_DOCKNS" "$P_DOCKNS" "$QUERIES")
p0=$(publishes "$WORK/dockns.log")
churn "$PID_DOCKNS" "$DLIVE" "$WORK/dockns-a.toml" "$WORK/dockns-b.toml" >"$WORK/churn-280.txt" &
CHURN=$!
PIDS+=($CHURN)
read -r _ C1_Q C1_C C1_M C1_L < <(run_dnsperf dockns-280-churn "$PID_DOCKNS" "$P_DOCKNS" "$QUERIES")
wait "$CHURN" 2>/dev/null || true
C1_SENT=$(cat "$WORK/churn-280.txt"); C1_PUB=$(( $(publishes "$WORK/dockns.log") - p0 ))
C1_ERR=$(awk '/Response codes:/ { sub(/.*Response codes: */, ""); print }' "$WORK/dnsperf-dockns-280-churn.txt")

cp "$BIG" "$WORK/big-a.toml"
cp "$BIG" "$WORK/big-b.toml"
printf 'aliases = ["churn-alias"]\n' >>"$WORK/big-b.toml"
ln -s "$WORK/big-a.toml" "$BIG.next" && mv -T "$BIG.next" "$BIG"
p0=$(publishes "$WORK/big.log")
churn "$PID_BIG" "$BIG" "$WORK/big-a.toml" "$WORK/big-b.toml" >"$WORK/churn-10k.txt" &
CHURN=$!
PIDS+=($CHURN)
read -r _ CH_Q CH_C CH_M CH_L < <(run_dnsperf dockns-churn "$PID_BIG" "$P_BIG" "$QUERIES")
wait "$CHURN" 2>/dev/null || true
CH_SENT=$(cat "$WORK/churn-10k.txt"); CH_PUB=$(( $(publishes "$WORK/big.log") - p0 ))
CH_ERR=$(awk '/Response codes:/ { sub(/.*Response codes: */, ""); print }' "$WORK/dnsperf-dockns-churn.txt")

# --- report ----------------------------------------------------------------------------------
echo
local_table
echo
echo "| measurement | queries/s | CPU µs/query | mean µs | ratio | target |"
echo "|---|---:|---:|---:|---:|---|"
echo "| TCP, Knot | $TQ_KNOT | $TC_KNOT | $TM_KNOT | | |"
echo "| TCP, dockns | $TQ_DOCKNS | $TC_DOCKNS | $TM_DOCKNS | $(ratio "$TQ_DOCKNS" "$TQ_KNOT")x Knot | ≥ 1.0x |"
echo "| 10k containers / 500 networks | $BIG_Q | $BIG_C | $BIG_M | $(ratio "$BIG_Q" "${QPS[dockns]}")x 280-name | ≥ 0.9x |"
echo "| 280 names, again (no churn) | $C0_Q | $C0_C | $C0_M | | |"
echo "| 280 names, churn: 50 changes/s (SIGHUP) | $C1_Q | $C1_C | $C1_M | $(ratio "$C1_Q" "$C0_Q")x no churn | ≥ 0.9x, no errors |"
echo "| 10k, churn: 50 changes/s (SIGHUP, 650 KB file re-read each) | $CH_Q | $CH_C | $CH_M | $(ratio "$CH_Q" "$BIG_Q")x no churn | |"
echo
echo
forward_table
echo
echo "10k containers / 500 networks: RSS $((BIG_RSS / 1024)) MiB at start, $((BIG_RSS_AFTER / 1024)) MiB after reload (target ≤ 64 MiB); snapshot rebuild after one change: $(awk -v u="${BIG_REBUILD:-0}" 'BEGIN { printf "%.2f", u / 1000 }') ms (target ≤ 5 ms)"
echo "churn, 280 names: $C1_SENT reloads asked, $C1_PUB snapshots published, lost ${C1_L:-?} queries; response codes: ${C1_ERR:-?}"
echo "churn, 10k: $CH_SENT reloads asked, $CH_PUB snapshots published (SIGHUPs that arrive during a reload coalesce), lost ${CH_L:-?} queries; response codes: ${CH_ERR:-?}"
echo "lost queries at peak: knot ${LOST[knot]}, dnsmasq ${LOST[dnsmasq]}, aardvark-dns ${LOST[aardvark-dns]}, dockns ${LOST[dockns]}"
