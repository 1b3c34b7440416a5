#!/usr/bin/env bash
# User-space instructions per proxied request of a router, counted by callgrind:
# deterministic where time on shared cores is not, so a small change to the router's
# hot path shows up.
#
#   scripts/router-instructions.sh [LDC]      (default: target/release/ldc)
#
# Starts `ldc up` on config/local.toml (cells on 127.0.0.1:7101-7103) and a second
# router (127.0.0.1:7040, admin :7041) of LDC under valgrind, warms it up with 3 s of
# `wrk -t1 -c64 -s scripts/users.lua`, zeroes the counters, runs 10 s more, and
# prints total instructions / requests. Only user space is counted, not the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
install_missing wrk wrk valgrind valgrind curl curl
cargo build --release --locked -q
ldc=${1:-target/release/ldc}

sed "s|data_dir = \"./data\"|data_dir = \"$work/data\"|" config/local.toml > "$work/local.toml"
./target/release/ldc up --config "$work/local.toml" > "$work/up.out" 2> "$work/up.err" < /dev/zero &
pids+=($!)
for _ in $(seq 1 300); do grep -q "ldc up: ready" "$work/up.out" 2>/dev/null && break; sleep 0.1; done
grep -q "ldc up: ready" "$work/up.out" || { echo "ldc up did not start"; cat "$work/up.err"; exit 1; }

cp "$work/local.toml" "$work/counted.toml"
printf '[[routers]]\nid = "r9"\nregion = "local"\nlisten = "127.0.0.1:7040"\nadmin = "127.0.0.1:7041"\n' >> "$work/counted.toml"
TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" \
    "$ldc" router --config "$work/counted.toml" --id r9 > "$work/r9.out" 2> "$work/r9.err" &
pids+=($!)
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:7041/ready > /dev/null && break; sleep 0.2; done
wrk -t1 -c64 -d3s -s scripts/users.lua http://127.0.0.1:7040 > /dev/null
callgrind_control --zero "${pids[-1]}" > /dev/null 2>&1
wrk -t1 -c64 -d10s -s scripts/users.lua http://127.0.0.1:7040 > "$work/wrk.out"
callgrind_control --dump=counted "${pids[-1]}" > /dev/null 2>&1
requests=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
instructions=$(callgrind_annotate "$(ls "$work"/callgrind.*.1)" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$requests requests, $instructions instructions: $((instructions / requests)) per request"
