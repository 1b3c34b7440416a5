#!/usr/bin/env bash
# Leasing from a global zone against static shares, side by side: four cells and a
# router under `ldc up`, `ldc bench` ordering one hot item through the router, the
# two setups alternating (A B A B ...). Prints per run the confirmed orders/s, the
# calls to the global zone and how long buyers waited for a lease (from the cells'
# /metrics), then the medians.
#
#   scripts/leases.sh [ROUNDS] [SECONDS] [STOCK]    defaults: 3 rounds, 10 s, 10000000
#
# Listens on 127.0.0.1:7300-7304 and 7400-7404; everything it starts is stopped by
# pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
stock=${3:-10000000}
cargo build --release --quiet
work=$(mktemp -d)
up_pid=
cleanup() {
    if [ -n "$up_pid" ]; then kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

deploy() { # $1: leased|static
    echo "name = \"leases\""
    echo "data_dir = \"$work/data-$1\""
    echo "[[regions]]"
    echo "id = \"local\""
    for i in 1 2 3 4; do
        printf '[[cells]]\nid = "c%s"\nregion = "local"\nlisten = "127.0.0.1:730%s"\nadmin = "127.0.0.1:740%s"\npeer = "127.0.0.1:750%s"\n' "$i" "$i" "$i" "$i"
    done
    printf '[[routers]]\nid = "r1"\nregion = "local"\nlisten = "127.0.0.1:7300"\nadmin = "127.0.0.1:7400"\n'
    printf '[[items]]\nid = "hot"\nname = "Hot"\nprice = 1\nstock = %s\n' "$stock"
    if [ "$1" = leased ]; then printf '[global_zone]\ncell = "c1"\n'; fi
}

# Sums a metric family over the four cells' /metrics.
scrape() {
    for i in 1 2 3 4; do curl -sf "http://127.0.0.1:740$i/metrics"; done
}

summary() { # stdin: metrics text; prints: lease calls, waits, p99 wait in ms
    python3 -c '
import re, sys
calls = waits = 0
buckets = {}
for line in sys.stdin:
    if line.startswith("ldc_cell_leases_total{"):
        calls += float(line.split()[-1])
    elif line.startswith("ldc_cell_lease_wait_seconds_count"):
        waits += float(line.split()[-1])
    elif line.startswith("ldc_cell_lease_wait_seconds_bucket{"):
        le = re.search(r"le=\"([^\"]+)\"", line).group(1)
        buckets[le] = buckets.get(le, 0) + float(line.split()[-1])
p99 = "-"
if waits:
    for le, n in sorted(buckets.items(), key=lambda kv: float(kv[0])):
        if n >= 0.99 * waits:
            p99 = "<=%.1f" % (float(le) * 1000) if le != "+Inf" else ">max"
            break
print(int(calls), int(waits), p99)
'
}

declare -A rates
for round in $(seq 1 "$rounds"); do
    for mode in leased static; do
        rm -rf "$work/data-$mode"
        deploy "$mode" > "$work/$mode.toml"
        ./target/release/ldc up --config "$work/$mode.toml" > "$work/up.out" 2> "$work/up.err" < /dev/zero &
        up_pid=$!
        for _ in $(seq 1 300); do grep -q "ldc up: ready" "$work/up.out" && break; sleep 0.1; done
        grep -q "ldc up: ready" "$work/up.out" || { cat "$work/up.err"; exit 1; }
        ./target/release/ldc bench --config "$work/$mode.toml" --duration-s "$seconds" \
            --users 4000 --concurrency 64 > "$work/bench.out"
        confirmed=$(awk '/confirmed \(201\)/ {print $3; exit}' "$work/bench.out")
        rate=$(awk -v n="${confirmed:-0}" -v s="$seconds" 'BEGIN {printf "%.0f", n / s}')
        read -r calls waits p99 < <(scrape | summary)
        echo "round $round $mode: $rate confirmed/s ($confirmed in ${seconds}s), lease calls $calls, orders that waited $waits, wait p99 ${p99} ms"
        rates[$mode]+="$rate "
        kill "$up_pid"; wait "$up_pid" 2>/dev/null || true; up_pid=
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
leased=$(echo "${rates[leased]}" | median)
static=$(echo "${rates[static]}" | median)
echo "median confirmed/s: leased $leased, static $static, ratio $(awk -v a="$leased" -v b="$static" 'BEGIN {printf "%.2f", a / b}')"
