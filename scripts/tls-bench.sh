#!/usr/bin/env bash
# What the trust boundaries cost the router: the same cluster (config/local.toml)
# plain (`insecure = true`), with mutual TLS to the cells (the default), and with
# mutual TLS and an `[auth]` table (HS256 JWTs, one per user, verified once and
# then cached), in alternating rounds of `wrk -t1 -c64 --latency` over the same
# 1,000 users. Prints each round and the medians: req/s, p50, p99, the router's
# CPU per request (user+sys), and the ratios of req/s and of router CPU per
# request (mTLS / plain, JWT / mTLS). wrk shares the cores, and builds a longer
# request in the JWT runs: the router's CPU per request is its own cost.
#
#   scripts/tls-bench.sh [ROUNDS] [SECONDS]   (defaults: 3 rounds of 5 s)
#
# Loopback only; every process it starts is stopped by its pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}

. scripts/common.sh
install_missing wrk wrk curl curl python3 python3 ss iproute2
cargo build --release --locked -q --bin ldc

for mode in plain mtls jwt; do
    sed "s|data_dir = \"./data\"|data_dir = \"$work/$mode\"|" config/local.toml > "$work/$mode.toml"
done
printf '\n[security]\ninsecure = true\n' >> "$work/plain.toml"
(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$work/secret")
printf '\n[auth]\nalgorithms = ["HS256"]\n[[auth.keys]]\nkid = "k1"\nalgorithm = "HS256"\nfile = "%s"\n' \
    "$work/secret" >> "$work/jwt.toml"
# wrk scripts: users u0..u999 in a fixed order, without and with their tokens.
python3 - "$work" <<'PY'
import base64, hashlib, hmac, json, sys, time
work = sys.argv[1]
secret = open(f"{work}/secret", "rb").read()
b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
tokens = []
for n in range(1000):
    claims = b64(json.dumps({"sub": f"u{n}", "exp": int(time.time()) + 3600}).encode())
    signature = b64(hmac.new(secret, f"{head}.{claims}".encode(), hashlib.sha256).digest())
    tokens.append(f"{head}.{claims}.{signature}")
loop = "local n = 0\nrequest = function()\n  n = (n + 7) % 1000\n"
with open(f"{work}/users.lua", "w") as f:
    f.write(loop + '  return wrk.format("GET", "/v1/users/u" .. n .. "/whoami")\nend\n')
with open(f"{work}/tokens.lua", "w") as f:
    f.write("local tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n")
    f.write(loop + '  return wrk.format("GET", "/v1/users/u" .. n .. "/whoami", '
            '{Authorization = "Bearer " .. tokens[n + 1]})\nend\n')
PY

run() { # $1: plain | mtls | jwt; writes "req/s p50_us p99_us router_cpu_us" to $work/result
    ./target/release/ldc up --config "$work/$1.toml" > "$work/up.out" 2> "$work/up.err" < /dev/zero &
    local up=$!
    pids+=("$up")
    for _ in $(seq 1 300); do grep -q "ldc up: ready" "$work/up.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "ldc up: ready" "$work/up.out" || { echo "ldc up did not start" >&2; cat "$work/up.err" >&2; exit 1; }
    local script="$work/users.lua"
    [ "$1" = jwt ] && script="$work/tokens.lua"
    local router before after
    router=$(sed -n 's/.*started router r1 pid=\([0-9]*\).*/\1/p' "$work/up.out")
    wrk -t1 -c64 -d1s -s "$script" http://127.0.0.1:7000 > /dev/null
    before=$(ticks "$router")
    wrk -t1 -c64 -d"${seconds}s" --latency -s "$script" http://127.0.0.1:7000 > "$work/wrk.out"
    after=$(ticks "$router")
    # Stopped, and its ports free, before the next deployment binds them.
    kill "$up"
    wait "$up" 2>/dev/null || true
    while ss -ltn | grep -qE '127\.0\.0\.1:(7000|710[1-3]|720[1-3]|740[1-3]) '; do sleep 0.1; done
    if grep -q "Non-2xx" "$work/wrk.out"; then
        echo "$1: some answers were not 2xx" >&2
        cat "$work/wrk.out" >&2
        exit 1
    fi
    awk -v cpu=$((after - before)) -v hz="$(getconf CLK_TCK)" '
        function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1e6 }
        /Requests\/sec/ { r = $2 }
        /requests in/ { n = $1 }
        /^ +50%/ { p50 = us($2) }
        /^ +99%/ { p99 = us($2) }
        END { printf "%.0f %.0f %.0f %.1f\n", r, p50, p99, cpu * 1e6 / hz / n }' "$work/wrk.out" > "$work/result"
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A rps p50 p99 cpu
for round in $(seq 1 "$rounds"); do
    for mode in plain mtls jwt; do
        run "$mode"
        read -r r a b c < "$work/result"
        echo "round $round $mode: $r req/s, p50 ${a} us, p99 ${b} us, router ${c} us CPU/request"
        rps[$mode]+="$r "; p50[$mode]+="$a "; p99[$mode]+="$b "; cpu[$mode]+="$c "
    done
done
for mode in plain mtls jwt; do
    # shellcheck disable=SC2086
    echo "median $mode: $(median ${rps[$mode]}) req/s, p50 $(median ${p50[$mode]}) us, p99 $(median ${p99[$mode]}) us, router $(median ${cpu[$mode]}) us CPU/request"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
# shellcheck disable=SC2086
for pair in "mtls plain" "jwt mtls"; do
    read -r a b <<< "$pair"
    echo "$a / $b: req/s $(ratio "$(median ${rps[$a]})" "$(median ${rps[$b]})"), router CPU/request $(ratio "$(median ${cpu[$a]})" "$(median ${cpu[$b]})")"
done
