#!/usr/bin/env bash
# The TiKV backend over testkv against the embedded store, side by side: two cells
# of one release build (`ldc cell`, no router), one on each ledger, `ldc bench
# --cell` ordering at c64 in alternating rounds. Prints confirmed orders/s and p99
# per round, testkv's RPCs per confirmed order (from its own counters, read after
# the bench has funded its users), the medians and the ratio. Then takeover on
# TiKV: `ldc chaos` on config/chaos.toml switched to testkv, kills only, and the
# p50/max of kill → standby serving over its kills.
#
#   scripts/testkv-bench.sh [ROUNDS] [SECONDS] [CHAOS_SECONDS]   defaults: 3, 10, 40
#
# testkv is a test server (one process, an in-memory map behind a mutex, no Raft),
# so its figures bound what the client and the cell cost per order; they are not a
# forecast of a real cluster, where every RPC is a network round trip.
# Listens on 127.0.0.1:7601, 7602, 7611 and 7612 (and port 0 for the rest); everything
# it starts is stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
chaos_seconds=${3:-40}
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
for name in embedded tikv; do
    admin_token "$work/$name/certs/admin.token"
    target/release/ldc cell --config "$work/$name.toml" --id b1 > "$work/$name.log" 2>&1 &
    pids+=("$!")
done
for admin in 7602 7612; do
    for _ in $(seq 1 200); do
        curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

rpcs() { # the sum of testkv's TiKV and PD call counters
    curl -sf "$control/counters" | python3 -c 'import json,sys
c = json.load(sys.stdin)
print(sum(v for k, v in c.items() if not k.startswith("fault.") and k != "unimplemented"))'
}

bench() { # $1: deploy file, $2: count RPCs (yes/no); prints "orders/s p99_ms rpcs_per_order"
    local before=0 after=0
    target/release/ldc bench --config "$1" --cell b1 --concurrency 64 --users 1000 \
        --duration-s "$seconds" > "$work/bench.out" 2>&1 &
    local pid=$!
    if [ "$2" = yes ]; then
        until grep -q "funded" "$work/bench.out" || ! kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        before=$(rpcs)
    fi
    wait "$pid"
    [ "$2" = yes ] && after=$(rpcs)
    awk -v rpcs=$((after - before)) '/confirmed \(201\)/ {n=$3; r=$4; p=$7} END {
        printf "%.0f %.2f %.1f\n", r, p, (n > 0 ? rpcs / n : 0) }' "$work/bench.out"
}

embedded=() tikv=() per_order=()
for round in $(seq 1 "$rounds"); do
    read -r e ep _ < <(bench "$work/embedded.toml" no)
    read -r t tp tr < <(bench "$work/tikv.toml" yes)
    echo "round $round: embedded $e orders/s (p99 $ep ms), testkv $t orders/s (p99 $tp ms, $tr RPCs per order)"
    embedded+=("$e") tikv+=("$t") per_order+=("$tr")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
e=$(median "${embedded[@]}") t=$(median "${tikv[@]}") r=$(median "${per_order[@]}")
echo "median: embedded $e orders/s, testkv $t orders/s, ratio" \
    "$(awk -v a="$t" -v b="$e" 'BEGIN {printf "%.2f", a / b}'); $r RPCs per confirmed order"

echo "takeover on TiKV: ldc chaos, kills only, ${chaos_seconds}s"
LDC_DATA_DIR="$work/chaos" LDC_LEDGER__BACKEND=tikv LDC_LEDGER__PD_ENDPOINTS="$pd" \
    LDC_TAKEOVER__LEASE_MS=600 LDC_TAKEOVER__POLL_MS=100 RUST_LOG=warn \
    target/release/ldc chaos --config config/chaos.toml --seed 5 --actions kill=1 \
    --gap 3s --duration "${chaos_seconds}s" --report "$work/chaos.json" > "$work/chaos.out" || {
    tail -20 "$work/chaos.out"
    exit 1
}
python3 - "$work/chaos.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
times = sorted(r["takeover_ms"] for r in report["reactions"] if r.get("takeover_ms") is not None)
if not times:
    sys.exit("no takeover measured")
print(f"takeover (kill to the standby serving) over {len(times)} kills: "
      f"p50 {times[(len(times) - 1) // 2]} ms, max {times[-1]} ms; "
      f"{len(report['violations'])} invariant violations")
EOF
