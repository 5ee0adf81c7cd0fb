#!/usr/bin/env bash
# scripts/ab-local.sh OLD NEW: local UDP queries/s and CPU per query of two dockns binaries, in
# interleaved rounds (OLD, NEW, OLD, ...), as benches/compare.sh's peer table measures dockns:
# 280 local names on one loopback listener, workers = 2, dnsperf -c 8 -q 500. Loopback only,
# bounded (ROUNDS x 2 runs of DUR seconds). Env: ROUNDS (default 3), DUR (default 10).
set -euo pipefail
A=$1; B=$2; ROUNDS=${ROUNDS:-3}; DUR=${DUR:-10}
W=$(mktemp -d /tmp/dockns-ab.XXXXXX)
trap 'rm -rf "$W"' EXIT
{ printf '[server]\nlisten = ["127.0.0.1:25400"]\nworkers = 2\n[upstream]\nservers = ["127.0.0.1:9"]\n[[network]]\nname = "bench"\n'
  for i in $(seq 1 280); do printf '[[network.container]]\nname = "c%04d"\nipv4 = ["10.90.%d.%d"]\n' $i $((i / 250)) $((1 + i % 250)); done; } > $W/c.toml
for i in $(seq 1 280); do echo "c$(printf %04d $i) A"; done > $W/q.txt
run() { # BIN
  "$1" serve --config $W/c.toml > $W/log 2>&1 & local p=$!
  sleep 1
  local t0=$(awk '{print $14+$15}' /proc/$p/stat)
  local q=$(dnsperf -s 127.0.0.1 -p 25400 -d $W/q.txt -c 8 -q 500 -l $DUR 2>/dev/null | awk '/Queries per second/ {print int($4)}')
  local t1=$(awk '{print $14+$15}' /proc/$p/stat)
  kill $p; wait $p 2>/dev/null || true
  echo "qps $q cpu_us_per_q $(python3 -c "print(round(($t1-$t0)*10000/($q*$DUR),2))")"
}
for r in $(seq 1 $ROUNDS); do
  echo "round $r  old: $(run "$A")   new: $(run "$B")"
done

