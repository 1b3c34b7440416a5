#!/usr/bin/env bash
# Chaos soak: `ldc chaos` over and over, a fresh seed each time, on
# config/chaos.toml in a throwaway data directory. Failing seeds are appended to
# scripts/failing-seeds.txt with their report kept next to it, so a failure can be
# replayed with `ldc chaos --config config/chaos.toml --seed N`.
#
#   scripts/chaos.sh [ROUNDS] [DURATION]      (defaults: 10 rounds of 120s)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
duration=${2:-120s}
cargo build --release --locked
mkdir -p scripts/chaos-reports
for round in $(seq 1 "$rounds"); do
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    data=$(mktemp -d)
    report="scripts/chaos-reports/$seed.json"
    echo "== round $round of $rounds: seed $seed"
    if LDC_DATA_DIR="$data" RUST_LOG=warn ./target/release/ldc chaos \
        --config config/chaos.toml --seed "$seed" --duration "$duration" --report "$report"; then
        rm -f "$report"
    else
        echo "$seed $(date -u +%FT%TZ)" >> scripts/failing-seeds.txt
        echo "== seed $seed FAILED; report kept in $report, data in $data"
        continue
    fi
    rm -rf "$data"
done
