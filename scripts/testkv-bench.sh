#!/usr/bin/env bash
# The TiKV backend over testkv against the embedded store, side by side: three
# cells of one release build (`ldc cell`, no router): embedded, TiKV two_phase and
# TiKV one_pc, `ldc bench --cell` ordering at c64 in alternating rounds. Prints
# confirmed orders/s and p99 per round, testkv's RPCs per confirmed order (from its
# own counters, read after the bench has funded its users, with the busiest RPCs),
# the medians and the ratios. Then takeover on TiKV: `ldc chaos` on
# config/chaos.toml switched to testkv, kills only, with a restart backoff long
# enough that the standby always takes over first, and kill → standby serving
# over its kills.
#
#   scripts/testkv-bench.sh [ROUNDS] [SECONDS] [CHAOS_SECONDS]   defaults: 3, 10, 70
#
# testkv is a test server (one process, an in-memory map behind a mutex, no Raft),
# so its figures bound what the client and the cell cost per order; they are not a
# forecast of a real cluster, where every RPC is a network round trip.
# Listens on 127.0.0.1:7601, 7602, 7611, 7612, 7621 and 7622 (and port 0 for the rest); everything
# it starts is stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
chaos_seconds=${3:-70}
. scripts/common.sh
cargo build --release --locked -q --features tikv --bin ldc
cargo build --release --locked -q -p testkv

target/release/testkv --stores 2 --data "$work/kv" > "$work/kv.json" 2> "$work/kv.log" &
pids+=("$!")
for _ in $(seq 1 100); do
    [ -s "$work/kv.json" ] && break
    sleep 0.1
done
pd=$(python3 -c 'import json,sys; print(",".join(json.loads(sys.stdin.readline())["pd"]))' < "$work/kv.json")
control=http://$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["control"])' < "$work/kv.json")
echo "testkv: PD at $pd, control at $control"

cell_file() { # $1: name, $2: listen port, $3: admin port, $4: extra tables
    cat > "$work/$1.toml" <<EOF
name = "$1"
data_dir = "$work/$1"
# ldc bench speaks plain HTTP to the cell.
[security]
insecure = true
$4
[[regions]]
id = "local"
[[cells]]
id = "b1"
region = "local"
listen = "127.0.0.1:$2"
admin = "127.0.0.1:$3"
[[items]]
id = "hot"
name = "Hot"
price = 1
stock = 1000000000
EOF
}
cell_file embedded 7601 7602 ""
cell_file tikv 7611 7612 "[ledger]
backend = \"tikv\"
pd_endpoints = [\"${pd//,/\",\"}\"]"
cell_file onepc 7621 7622 "[ledger]
backend = \"tikv\"
commit = \"one_pc\"
pd_endpoints = [\"${pd//,/\",\"}\"]"
for name in embedded tikv onepc; do
    admin_token "$work/$name/certs/admin.token"
    target/release/ldc cell --config "$work/$name.toml" --id b1 > "$work/$name.log" 2>&1 &
    pids+=("$!")
done
for admin in 7602 7612 7622; do
    for _ in $(seq 1 200); do
        curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

counters() { curl -sf "$control/counters"; }

bench() { # $1: deploy file, $2: count RPCs (yes/no); prints "orders/s p99_ms rpcs_per_order"
    local rpcs=0
    target/release/ldc bench --config "$1" --cell b1 --concurrency 64 --users 1000 \
        --duration-s "$seconds" > "$work/bench.out" 2>&1 &
    local pid=$!
    if [ "$2" = yes ]; then
        until grep -q "funded" "$work/bench.out" || ! kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        counters > "$work/before.json"
    fi
    wait "$pid"
    if [ "$2" = yes ]; then
        counters > "$work/after.json"
        rpcs=$(python3 - "$work/before.json" "$work/after.json" <<'EOF'
import json, sys
before, after = (json.load(open(p)) for p in sys.argv[1:])
calls = {k: v - before.get(k, 0) for k, v in after.items() if not k.startswith("fault.")}
print(sum(calls.values()))
busiest = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
print("  RPCs: " + " ".join(f"{k}={v}" for k, v in busiest), file=sys.stderr)
EOF
        )
    fi
    awk -v rpcs="$rpcs" '/confirmed \(201\)/ {n=$3; r=$4; p=$7} END {
        printf "%.0f %.2f %.3f\n", r, p, (n > 0 ? rpcs / n : 0) }' "$work/bench.out"
}

embedded=() tikv=() onepc=() per_order=() per_order_1pc=()
for round in $(seq 1 "$rounds"); do
    read -r e ep _ < <(bench "$work/embedded.toml" no)
    read -r t tp tr < <(bench "$work/tikv.toml" yes)
    read -r o op or < <(bench "$work/onepc.toml" yes)
    echo "round $round: embedded $e orders/s (p99 $ep ms); testkv two_phase $t orders/s" \
        "(p99 $tp ms, $tr RPCs per order); testkv one_pc $o orders/s (p99 $op ms, $or RPCs per order)"
    embedded+=("$e") tikv+=("$t") onepc+=("$o") per_order+=("$tr") per_order_1pc+=("$or")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
e=$(median "${embedded[@]}") t=$(median "${tikv[@]}") o=$(median "${onepc[@]}")
r=$(median "${per_order[@]}") r1=$(median "${per_order_1pc[@]}")
echo "median: embedded $e orders/s; two_phase $t ($(ratio "$t" "$e")x, $r RPCs per confirmed order);" \
    "one_pc $o ($(ratio "$o" "$e")x, $r1 RPCs per confirmed order)"

echo "takeover on TiKV: ldc chaos, kills only, ${chaos_seconds}s"
LDC_DATA_DIR="$work/chaos" LDC_LEDGER__BACKEND=tikv LDC_LEDGER__PD_ENDPOINTS="$pd" \
    LDC_TAKEOVER__LEASE_MS=600 LDC_TAKEOVER__POLL_MS=100 RUST_LOG=warn \
    LDC_SUPERVISOR__RESTART_BACKOFF_INITIAL_MS=4000 LDC_SUPERVISOR__RESTART_BACKOFF_MAX_MS=4000 \
    target/release/ldc chaos --config config/chaos.toml --seed 5 --actions kill=1 \
    --gap 6s --duration "${chaos_seconds}s" --report "$work/chaos.json" > "$work/chaos.out" || {
    tail -20 "$work/chaos.out"
    exit 1
}
python3 - "$work/chaos.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
times = sorted(r["takeover_ms"] for r in report["reactions"] if r.get("takeover_ms") is not None)
if not times:
    sys.exit("no takeover measured")
print(f"takeover (kill to the router routing to the standby) over {len(times)} kills: "
      f"p50 {times[(len(times) - 1) // 2]} ms, max {times[-1]} ms (all: {times}); "
      f"{len(report['violations'])} invariant violations")
EOF
