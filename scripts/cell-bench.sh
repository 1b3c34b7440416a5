#!/usr/bin/env bash
# A cell's sold-out fast path against a plain hyper hello-world, side by side: one
# cell (`ldc cell`, no router) with an item of stock 0, `examples/hello.rs` answering
# the same-sized body, `wrk -t1 -c64` POSTing orders at each in alternation.
# Prints req/s, p99 and the server's CPU time per request (user+sys from /proc, the
# steadier figure on shared cores) per run, then the medians and the ratios.
#
#   scripts/cell-bench.sh [ROUNDS] [SECONDS] [BASELINE_LDC]   defaults: 3, 5, none
#
# BASELINE_LDC (a saved earlier build) runs as a second cell in the same rounds, so a
# change is measured side by side with what it replaces.
# Listens on 127.0.0.1:7501, 7502, 7511, 7512 and 7999; everything it starts is
# stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
baseline=${3:-}
. scripts/common.sh
install_missing wrk wrk
cargo build --release --locked -q --bin ldc --example hello

cat > "$work/cell.toml" <<EOF
name = "cellbench"
data_dir = "$work/data"
# wrk and the hello-world server speak plain HTTP.
[security]
insecure = true
[[regions]]
id = "local"
[[cells]]
id = "b1"
region = "local"
listen = "127.0.0.1:7501"
admin = "127.0.0.1:7502"
[[items]]
id = "gone"
name = "Gone"
price = 1
stock = 0
EOF
cat > "$work/order.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"item_id":"gone","quantity":1,"request_id":"r1"}'
wrk.headers["Content-Type"] = "application/json"
EOF
admin_token "$work/data/certs/admin.token"
target/release/ldc cell --config "$work/cell.toml" --id b1 > "$work/cell.log" 2>&1 &
cell_pid=$!
pids+=("$cell_pid")
if [ -n "$baseline" ]; then
    sed 's/7501/7511/; s/7502/7512/; s|/data"|/base"|' "$work/cell.toml" > "$work/base.toml"
    "$baseline" cell --config "$work/base.toml" --id b1 > "$work/base.log" 2>&1 &
    base_pid=$!
    pids+=("$base_pid")
fi
target/release/examples/hello 127.0.0.1:7999 > "$work/hello.log" 2>&1 &
hello_pid=$!
pids+=("$hello_pid")
for admin in 7502 ${baseline:+7512}; do
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

hz=$(getconf CLK_TCK)
run() { # $1: pid, $2: url; prints "req/s p99_ms cpu_us_per_request"
    local before after
    before=$(ticks "$1")
    wrk -t1 -c64 -d"${seconds}s" --latency -s "$work/order.lua" "$2" > "$work/wrk.out"
    after=$(ticks "$1")
    awk -v t=$((after - before)) -v hz="$hz" '/requests in/ {n=$1} /Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {
        if (p ~ /us$/) {sub(/us/, "", p); p /= 1000} else if (p ~ /ms$/) {sub(/ms/, "", p)} else {sub(/s/, "", p); p *= 1000}
        printf "%.0f %.2f %.1f\n", r, p, t / hz * 1e6 / n }' "$work/wrk.out"
}
hello=() cell=() hello_cpu=() cell_cpu=() base=() base_cpu=()
for round in $(seq 1 "$rounds"); do
    read -r h hp hc < <(run "$hello_pid" http://127.0.0.1:7999/v1/users/u1/orders)
    read -r c cp cc < <(run "$cell_pid" http://127.0.0.1:7501/v1/users/u1/orders)
    echo "round $round: hello $h req/s (p99 $hp ms, $hc us CPU/req), cell sold-out $c req/s (p99 $cp ms, $cc us CPU/req)"
    hello+=("$h") cell+=("$c") hello_cpu+=("$hc") cell_cpu+=("$cc")
    if [ -n "$baseline" ]; then
        read -r b bp bc < <(run "$base_pid" http://127.0.0.1:7511/v1/users/u1/orders)
        echo "         baseline cell $b req/s (p99 $bp ms, $bc us CPU/req)"
        base+=("$b") base_cpu+=("$bc")
    fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
h=$(median "${hello[@]}") c=$(median "${cell[@]}")
hc=$(median "${hello_cpu[@]}") cc=$(median "${cell_cpu[@]}")
echo "median: hello $h req/s $hc us/req, cell sold-out $c req/s $cc us/req;" \
    "throughput ratio $(awk -v a="$c" -v b="$h" 'BEGIN {printf "%.2f", a / b}')," \
    "CPU ratio $(awk -v a="$cc" -v b="$hc" 'BEGIN {printf "%.2f", a / b}')"
if [ -n "$baseline" ]; then
    b=$(median "${base[@]}") bc=$(median "${base_cpu[@]}")
    echo "baseline: $b req/s $bc us/req; this build against it: throughput" \
        "$(awk -v a="$c" -v b="$b" 'BEGIN {printf "%.2f", a / b}'), CPU per request" \
        "$(awk -v a="$cc" -v b="$bc" 'BEGIN {printf "%.2f", a / b}')"
fi
