#!/usr/bin/env bash
# What mutual TLS between router and cells costs: the same cluster
# (config/local.toml) with the secure default and with `insecure = true`, in
# alternating rounds, `wrk -t1 -c64 --latency -s scripts/users.lua` against the
# router. Prints each round and the medians: req/s, p50, p99, and the ratio of
# req/s (mTLS / plain).
#
#   scripts/tls-bench.sh [ROUNDS] [SECONDS]   (defaults: 3 rounds of 5 s)
#
# Loopback only; every process it starts is stopped by its pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}

. scripts/common.sh
install_missing wrk wrk curl curl
cargo build --release --locked -q --bin ldc

sed "s|data_dir = \"./data\"|data_dir = \"$work/data\"|" config/local.toml > "$work/mtls.toml"
sed "s|data_dir = \"./data\"|data_dir = \"$work/plain\"|" config/local.toml > "$work/plain.toml"
printf '\n[security]\ninsecure = true\n' >> "$work/plain.toml"

run() { # $1: mtls | plain; prints "req/s p50_us p99_us"
    ./target/release/ldc up --config "$work/$1.toml" > "$work/up.out" 2> "$work/up.err" < /dev/zero &
    local up=$!
    pids+=("$up")
    for _ in $(seq 1 300); do grep -q "ldc up: ready" "$work/up.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "ldc up: ready" "$work/up.out" || { echo "ldc up did not start"; cat "$work/up.err"; exit 1; }
    wrk -t1 -c64 -d1s -s scripts/users.lua http://127.0.0.1:7000 > /dev/null
    wrk -t1 -c64 -d"${seconds}s" --latency -s scripts/users.lua http://127.0.0.1:7000 > "$work/wrk.out"
    kill "$up"
    wait "$up" 2>/dev/null || true
    awk '
        function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1e6 }
        /Requests\/sec/ { r = $2 }
        /^ +50%/ { p50 = us($2) }
        /^ +99%/ { p99 = us($2) }
        END { printf "%.0f %.0f %.0f\n", r, p50, p99 }' "$work/wrk.out"
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A rps p50 p99
for round in $(seq 1 "$rounds"); do
    for mode in mtls plain; do
        read -r r a b <<< "$(run "$mode")"
        echo "round $round $mode: $r req/s, p50 ${a} us, p99 ${b} us"
        rps[$mode]+="$r "; p50[$mode]+="$a "; p99[$mode]+="$b "
    done
done
for mode in mtls plain; do
    # shellcheck disable=SC2086
    echo "median $mode: $(median ${rps[$mode]}) req/s, p50 $(median ${p50[$mode]}) us, p99 $(median ${p99[$mode]}) us"
done
# shellcheck disable=SC2086
m=$(median ${rps[mtls]}); p=$(median ${rps[plain]})
echo "mTLS / plain req/s: $(awk -v a="$m" -v b="$p" 'BEGIN {printf "%.2f", a / b}')"
