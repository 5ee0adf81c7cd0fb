#!/usr/bin/env bash
# Soak test: the real dockns (release build) under mixed load for a bounded time, loopback only.
#   scripts/soak.sh [SECONDS]          default 600 (10 minutes); SOAK_SECS works too
# Load: 2 UDP clients (local names, name.network, a round-robin pool, forwarded names both
# repeating and unique) and 1 TCP client on a persistent connection, against a fake upstream on
# 127.0.0.1; every 2 s the static config is rewritten (containers added/removed) and SIGHUP sent.
# Prints queries, errors, timeouts and RSS every 10 s and at the end; exits 1 on any error,
# timeout or unclean exit. Docker churn is not included (the Docker tests cover it).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-${SOAK_SECS:-600}}"
cargo build --release --quiet --bin dockns --example soak
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/examples/soak" --bin "$target/release/dockns" --secs "$secs"
