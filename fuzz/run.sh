#!/usr/bin/env bash
# Runs every fuzz target (or those named) for N seconds each. Usage:
#   fuzz/run.sh [SECONDS] [TARGET...]      e.g. fuzz/run.sh 600   or   fuzz/run.sh 60 answer
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Uses the nightly toolchain when rustup has one,
# else RUSTC_BOOTSTRAP=1 on stable. Crashes land in fuzz/artifacts/TARGET/; exit status 1 if any.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(parse_query parse_slow answer tcp_stream upstream_response)
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
failed=0
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s"
  mkdir -p "corpus/$t"
  if ! "${fuzz[@]}" run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -timeout=10 -max_len=65535 -print_final_stats=1 2>&1 | tail -n 25; then
    echo "!! $t FAILED (see fuzz/artifacts/$t/)"
    failed=1
  fi
done
exit $failed
