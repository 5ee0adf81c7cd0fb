#!/usr/bin/env bash
# zone-check.sh: checks dockns's zone with zonemaster-cli and dnsviz, offline.
#
# Everything runs inside a fresh network namespace that has only `lo` (nothing can leave the
# machine, there is no route anywhere): a fake root (Knot DNS) delegates `docker.` to dockns,
# a root hints file points the tools at the fake root, and dockns serves a small static table
# (one network with a dotted alias) as an authoritative-only server (`recursion = false`: a
# server that also recurses is an ERROR for zonemaster, NAMESERVER01). The addresses are
# global-looking ones put on the namespace's `lo` (11.0.0.2 for the root, 11.53.0.1 and
# 11.53.0.2 for dockns's two listeners, so the zone has the two name servers zonemaster asks
# for): loopback or private addresses are an ERROR for zonemaster's ADDRESS01 whatever the
# server does. Inside the namespace they reach nothing but the processes started here. Then:
#   - zonemaster-cli (the whole default test suite, IPv4 only) must report no ERROR/CRITICAL;
#   - dnsviz probe -A + grok must report no error and no warning for the zone `docker.`
#     (grok -P: private/loopback server addresses are what a container DNS server has).
# The fake root's own findings (an unsigned root without trust anchor) are not dockns's and
# are not counted.
#
# Needs root (ip netns) and the Debian packages zonemaster-cli, dnsviz, knot, iproute2, jq.
# Usage: sudo scripts/zone-check.sh [path/to/dockns]   (default: builds target/release/dockns)
# Exit status: 0 clean, 1 findings, 2 setup problem. The full reports are printed.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "zone-check: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (it creates a network namespace)"
for tool in ip knotd zonemaster-cli dnsviz jq; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool missing: apt-get install zonemaster-cli dnsviz knot iproute2 jq"
done

DOCKNS=${1:-}
if [ -z "$DOCKNS" ]; then
  cargo build --release --quiet
  DOCKNS=target/release/dockns
fi
DOCKNS=$(realpath "$DOCKNS")

ROOT_IP=11.0.0.2
DOCKNS_IP=11.53.0.1
DOCKNS_IP2=11.53.0.2
NS=dockns-zonecheck-$$
WORK=$(mktemp -d /tmp/dockns-zonecheck.XXXXXX)
PIDS=()
cleanup() {
  # Every process inside this script's own namespace (knotd, dockns), then the wrappers.
  for p in $(ip netns pids "$NS" 2>/dev/null) "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
for a in "$ROOT_IP" "$DOCKNS_IP" "$DOCKNS_IP2"; do in_ns ip addr add "$a/32" dev lo; done

# --- The fake root: Knot, authoritative for ".", delegating docker. to dockns. ---
cat >"$WORK/root.zone" <<EOF
\$TTL 86400
.                   SOA  a.root-servers.net. nstld.example. 1 1800 900 604800 86400
.                   NS   a.root-servers.net.
a.root-servers.net. A    $ROOT_IP
docker.             NS   ns1.docker.
docker.             NS   ns2.docker.
ns1.docker.         A    $DOCKNS_IP
ns2.docker.         A    $DOCKNS_IP2
EOF
cat >"$WORK/knot.conf" <<EOF
server:
    listen: $ROOT_IP@53
    rundir: "$WORK"
database:
    storage: "$WORK"
log:
  - target: "$WORK/knot.log"
    any: warning
zone:
  - domain: "."
    file: "$WORK/root.zone"
EOF
cat >"$WORK/hints" <<EOF
.                   3600000 NS a.root-servers.net.
a.root-servers.net. 3600000 A  $ROOT_IP
EOF

# --- dockns: a static table under domain = "docker". ---
cat >"$WORK/dockns.toml" <<EOF
[server]
listen = ["$DOCKNS_IP:53", "$DOCKNS_IP2:53"]
domain = "docker"
ttl = 60
recursion = false
# The tools ask from the namespace's own addresses.
allow = ["11.0.0.0/8"]

[upstream]
servers = ["127.0.0.9:53"]
timeout_ms = 200
budget_ms = 400

[[network]]
name = "appnet"
subnet = "10.89.0.0/24"

[[network.container]]
name = "db"
ipv4 = ["10.89.0.2"]
aliases = ["postgres"]

[[network.container]]
name = "web"
ipv4 = ["10.89.0.3"]
aliases = ["www", "api.v1"]
EOF

ip netns exec "$NS" knotd -c "$WORK/knot.conf" >"$WORK/knotd.out" 2>&1 &
PIDS+=($!)
ip netns exec "$NS" "$DOCKNS" serve --config "$WORK/dockns.toml" >"$WORK/dockns.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
  if in_ns kdig +time=1 +tries=1 @"$ROOT_IP" . SOA >/dev/null 2>&1 &&
    in_ns kdig +time=1 +tries=1 @"$DOCKNS_IP" docker SOA >/dev/null 2>&1; then
    break
  fi
  sleep 0.2
done
in_ns kdig +short @"$DOCKNS_IP" docker SOA | grep -q . ||
  { cat "$WORK/dockns.log" "$WORK/knot.log" "$WORK/knotd.out" 2>/dev/null; die "dockns or knotd did not start"; }

status=0
echo "== versions"
echo "dockns: $("$DOCKNS" --version 2>/dev/null || echo "?")"
echo "zonemaster-cli: $(zonemaster-cli --version 2>/dev/null | tr '\n' ' ')"
echo "dnsviz: $(dpkg-query -W -f '${Version}' dnsviz 2>/dev/null)"
echo "knot: $(knotd --version 2>/dev/null | head -1)"

echo
echo "== zonemaster-cli --hints (fake root) --no-ipv6 --level NOTICE docker"
in_ns zonemaster-cli --hints "$WORK/hints" --no-ipv6 --level NOTICE --show-testcase \
  --no-progress --count docker >"$WORK/zonemaster.txt" 2>&1 || true
cat "$WORK/zonemaster.txt"
if grep -Eq '^[[:space:]]*[0-9.]+[[:space:]]+(ERROR|CRITICAL)' "$WORK/zonemaster.txt"; then
  echo "zone-check: zonemaster reports ERROR or CRITICAL"
  status=1
fi
if ! grep -Eq 'Number of log entries' "$WORK/zonemaster.txt"; then
  echo "zone-check: zonemaster produced no test results"
  status=1
fi

echo
echo "== dnsviz probe -A -E -x .:$ROOT_IP -4 docker; dnsviz grok -P"
in_ns dnsviz probe -A -E -4 -x ".:a.root-servers.net=$ROOT_IP" -p -o "$WORK/probe.json" docker 2>"$WORK/probe.err" ||
  { cat "$WORK/probe.err"; die "dnsviz probe failed"; }
in_ns dnsviz grok -P -r "$WORK/probe.json" -o "$WORK/grok.json" 2>"$WORK/grok.err" ||
  { cat "$WORK/grok.err"; die "dnsviz grok failed"; }
# Every error and warning anywhere under the zone's entry, as "path: code: description".
jq -r '
  .["docker."] | paths(type == "object" and (has("errors") or has("warnings"))) as $p
  | getpath($p) as $o
  | (($o.errors // [])[] | "ERROR \($p | map(tostring) | join("/")): \(.code): \(.description)"),
    (($o.warnings // [])[] | "WARNING \($p | map(tostring) | join("/")): \(.code): \(.description)")
' "$WORK/grok.json" >"$WORK/dnsviz-findings.txt"
echo "status of docker.: $(jq -r '.["docker."].status // "?"' "$WORK/grok.json")"
echo "delegation: $(jq -r '.["docker."].delegation.status // "?"' "$WORK/grok.json")"
jq -r '.["docker."].queries | keys[]' "$WORK/grok.json" 2>/dev/null | sed 's/^/queried: /'
if [ -s "$WORK/dnsviz-findings.txt" ]; then
  cat "$WORK/dnsviz-findings.txt"
  grep -q '^ERROR' "$WORK/dnsviz-findings.txt" && { echo "zone-check: dnsviz reports errors for docker."; status=1; }
  grep -q '^WARNING' "$WORK/dnsviz-findings.txt" && echo "zone-check: dnsviz warnings above (not counted as failure)"
else
  echo "no errors, no warnings for docker."
fi

echo
if [ "$status" = 0 ]; then echo "zone-check: clean"; else echo "zone-check: FINDINGS"; fi
exit "$status"
