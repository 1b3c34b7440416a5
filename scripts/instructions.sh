#!/usr/bin/env bash
# User-space instructions per request of a router or of a cell, counted by callgrind:
# deterministic where time on shared cores is not, so a small change to a hot path
# shows up.
#
#   scripts/instructions.sh [router|cell] [LDC]     (defaults: router, target/release/ldc)
#
# Starts the cells a1-a3 and the router r1 of config/local.toml (cells on
# 127.0.0.1:7101-7103, router on :7000), each with one worker thread as `ldc up`
# gives them on a small host; the one measured (r1, or cell a1) runs LDC under
# valgrind. Warms up with 3 s of `wrk -t1 -c64 -s scripts/users.lua` through the
# router, zeroes the counters, runs 10 s more, and prints total instructions /
# requests: the requests wrk got answered for the router, those cell a1 counted
# (`ldc_cell_requests_total`, about a third) for a cell. Only user space is counted,
# not the kernel. CALLGRIND_OUT=FILE keeps callgrind's output for
# `callgrind_annotate`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
install_missing wrk wrk valgrind valgrind curl curl
cargo build --release --locked -q
measured=${1:-router}
ldc=${2:-target/release/ldc}
case $measured in
    router) counted=r1 ;;
    cell) counted=a1 ;;
    *) echo "usage: $0 [router|cell] [LDC]" >&2; exit 64 ;;
esac

sed "s|data_dir = \"./data\"|data_dir = \"$work/data\"|" config/local.toml > "$work/local.toml"
# Plain TCP between the processes, as in the figures before TLS (docs/benchmarks.md).
printf '\n[security]\ninsecure = true\n' >> "$work/local.toml"
admin_token "$work/data/certs/admin.token"
start() { # $1 role, $2 id, $3 admin port
    if [ "$2" = "$counted" ]; then
        TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" \
            "$ldc" "$1" --config "$work/local.toml" --id "$2" > "$work/$2.out" 2> "$work/$2.err" &
        counted_pid=$!
    else
        TOKIO_WORKER_THREADS=1 target/release/ldc "$1" --config "$work/local.toml" --id "$2" \
            > "$work/$2.out" 2> "$work/$2.err" &
    fi
    pids+=($!)
    for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$3/ready" > /dev/null && break; sleep 0.2; done
    curl -sf "http://127.0.0.1:$3/ready" > /dev/null || { echo "$2 did not start"; cat "$work/$2.err"; exit 1; }
}
start cell a1 7201
start cell a2 7202
start cell a3 7203
start router r1 7001

# Requests cell a1 answered so far.
answered_by_a1() {
    curl -sf http://127.0.0.1:7201/metrics | awk '/^ldc_cell_requests_total/ { n += $2 } END { print n + 0 }'
}
wrk -t1 -c64 -d3s -s scripts/users.lua http://127.0.0.1:7000 > /dev/null
callgrind_control --zero "$counted_pid" > /dev/null 2>&1
before=$(answered_by_a1)
wrk -t1 -c64 -d10s -s scripts/users.lua http://127.0.0.1:7000 > "$work/wrk.out"
callgrind_control --dump=counted "$counted_pid" > /dev/null 2>&1
if [ "$measured" = router ]; then
    requests=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
else
    requests=$(($(answered_by_a1) - before))
fi
out=$(ls "$work"/callgrind.*.1)
[ -n "${CALLGRIND_OUT:-}" ] && cp "$out" "$CALLGRIND_OUT"
instructions=$(callgrind_annotate "$out" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$measured: $requests requests, $instructions instructions: $((instructions / requests)) per request"
