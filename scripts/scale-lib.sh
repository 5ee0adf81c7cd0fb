# scripts/scale-lib.sh: the measurements shared by scripts/listener-scale.sh (loopback listener
# addresses) and scripts/docker-scale.sh (real Docker networks). Sourced, not run.
#
# Only reads /proc, asks dockns's admin API on loopback, and sends DNS queries to the addresses
# it is given (loopback, or gateways of networks the caller created). Callers set BIN (the dockns
# binary), WORK (a scratch directory) and DUR (seconds per load phase).

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Anonymous part of RSS (heap, stacks), without the binary's file-backed pages.
anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }
metrics_bytes() { curl -fsS "http://127.0.0.1:$1/metrics" | wc -c; }
# One gauge or counter of /metrics (the first sample of NAME).
metric() { curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 {print $2; exit}'; }

wait_ready() { # ADMIN_PORT [SECONDS]: until /readyz says 200 (listeners bound, first sync done)
    local i
    for i in $(seq 1 $((${2:-10} * 20))); do
        curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "dockns did not become ready" >&2
    return 1
}

# How many UDP sockets are bound to PORT (each listener address has one per worker).
udp_sockets() { ss -Hlun "sport = :$1" | wc -l; }

answering() { # FILE PORT: lines "ADDRESS NAME EXPECTED_IPV4"; prints how many ADDRESS:PORT answer
    # an A question for NAME with NOERROR, our ID, from the address asked, and EXPECTED_IPV4
    # among the answers. The ones that do not are listed on stderr (at most 10).
    python3 - "$1" "$2" <<'EOF'
import socket, sys
lines = [l.split() for l in open(sys.argv[1]) if l.strip()]
port = int(sys.argv[2])
ok, bad = 0, []
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.rstrip(".").split(".")) + b"\0"
def addresses(r, qlen):
    # RFC 1035 4.1: header, the question as sent, then answers with compressed owner names.
    out, i = [], 12 + qlen
    for _ in range(int.from_bytes(r[6:8], "big")):
        while r[i] and r[i] < 0xC0:
            i += r[i] + 1
        i += 2 if r[i] >= 0xC0 else 1
        typ, rdlen = int.from_bytes(r[i:i + 2], "big"), int.from_bytes(r[i + 8:i + 10], "big")
        if typ == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(r[i + 10:i + 14]))
        i += 10 + rdlen
    return out
for n, (addr, qname, want) in enumerate(lines):
    qid = (n + 1) & 0xFFFF
    question = name(qname) + b"\x00\x01\x00\x01"
    q = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question
    s.sendto(q, (addr, port))
    got = "timeout"
    try:
        while True:
            r, src = s.recvfrom(4096)
            if r[:2] == q[:2]:
                break
        if src != (addr, port):
            got = f"reply from {src}"
        elif r[3] & 15:
            got = f"rcode {r[3] & 15}"
        else:
            got = addresses(r, len(question))
            if want in got:
                ok += 1
                continue
    except socket.timeout:
        pass
    except (IndexError, ValueError) as e:
        got = f"malformed reply ({e})"
    bad.append(f"{addr}:{port} {qname} A: {got}, want {want}")
for b in bad[:10]:
    print("  not answering:", b, file=sys.stderr)
print(ok)
EOF
}

load() { # PORT NAME ADDRESS...: one `dockns bench` per address (64 in flight each, DUR seconds,
    # all at once), summed queries/s
    local out=() p i=0 tag=$RANDOM port=$1 qname=$2
    shift 2
    for a in "$@"; do
        i=$((i + 1))
        "$BIN" bench -s "$a:$port" -n "$qname" -q 64 --sockets 4 -l "$DUR" --json >"$WORK/bench.$tag.$i.json" &
        out+=($!)
    done
    for p in "${out[@]}"; do wait "$p"; done
    python3 -c 'import json,sys; print(int(sum(json.load(open(f))["qps"] for f in sys.argv[1:])))' "$WORK"/bench.$tag.*.json
}

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

compare_fresh() { # THREADS_A RSS_A METRICS_A THREADS_B RSS_B METRICS_B
    python3 -c "
for k, a, b in (('threads', $1, $4), ('RSS', $2, $5), ('/metrics', $3, $6)):
    print(f'{k}: {a / b:.2f}x the fresh one (target within 25%)')
"
}
