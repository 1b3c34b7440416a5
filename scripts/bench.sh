#!/usr/bin/env bash
# The router against nginx, side by side, on the same cells and the same workload.
#
#   scripts/bench.sh [ROUNDS] [SECONDS] [BASELINE_LDC]   (defaults: 3 rounds of 5 s)
#
# Starts `ldc up` on config/local.toml (cells on 127.0.0.1:7101-7103, router on
# :7000), writes an nginx config that hashes the user id of /v1/users/{id}/... onto
# the same cells (`hash $user consistent`, upstream keepalive), and runs
# `wrk -t1 -c64 --latency -s scripts/users.lua` (100,000 distinct users) against
# nginx with 1 and 2 workers and the ldc router, and a one-user script straight at a
# cell (the direct hop), in alternation. Prints medians: req/s, p50, p99, and the
# proxy's CPU time per request (user+sys of its processes / requests served), and
# the cells' (all three together), since the hop from proxy to cell costs the
# cells too: HTTP/2 from the router, HTTP/1.1 from nginx.
# BASELINE_LDC (a saved earlier build) runs as a second router (127.0.0.1:7010) in
# front of the same cells, with the same worker threads, in the same rounds, so a
# change is measured side by side with what it replaces.
# Loopback only; every process it starts is stopped by its pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
baseline=${3:-}

. scripts/common.sh
install_missing wrk wrk nginx nginx-light curl curl
cargo build --release --locked -q

sed "s|data_dir = \"./data\"|data_dir = \"$work/data\"|" config/local.toml > "$work/local.toml"
# nginx reaches the cells in plain HTTP/1.1, so both proxies do: like for like
# (scripts/tls-bench.sh measures what mutual TLS costs the router).
printf '\n[security]\ninsecure = true\n' >> "$work/local.toml"
./target/release/ldc up --config "$work/local.toml" > "$work/up.out" 2> "$work/up.err" < /dev/zero &
pids+=($!)
for _ in $(seq 1 300); do grep -q "ldc up: ready" "$work/up.out" 2>/dev/null && break; sleep 0.1; done
grep -q "ldc up: ready" "$work/up.out" || { echo "ldc up did not start"; cat "$work/up.err"; exit 1; }
router_pid=$(sed -n 's/.*started router r1 pid=\([0-9]*\).*/\1/p' "$work/up.out")
read -r -a cell_pids <<< "$(sed -n 's/.*started cell [a-z0-9]* pid=\([0-9]*\).*/\1/p' "$work/up.out" | tr '\n' ' ')"
if [ -n "$baseline" ]; then
    cp "$work/local.toml" "$work/baseline.toml"
    printf '[[routers]]\nid = "r2"\nregion = "local"\nlisten = "127.0.0.1:7010"\nadmin = "127.0.0.1:7011"\n' >> "$work/baseline.toml"
    threads=$(tr '\0' '\n' < "/proc/$router_pid/environ" | sed -n 's/^TOKIO_WORKER_THREADS=//p')
    TOKIO_WORKER_THREADS=${threads:-1} "$baseline" router --config "$work/baseline.toml" --id r2 2> "$work/baseline.err" &
    baseline_pid=$!
    pids+=("$baseline_pid")
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:7011/ready >/dev/null && break; sleep 0.1; done
fi

# A user of cell a1, for the direct hop.
direct_user=$(for i in $(seq 1 100); do
    ./target/release/ldc route --config "$work/local.toml" "u$i" | grep -q ', cell a1 ' && { echo "u$i"; break; }
done)
cat > "$work/direct.lua" <<EOF
request = function() return wrk.format("GET", "/v1/users/$direct_user/whoami") end
EOF

nginx_conf() { # $1: workers
    cat > "$work/nginx$1.conf" <<EOF
worker_processes $1;
pid $work/nginx$1.pid;
error_log $work/nginx$1.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    map \$uri \$user { ~^/v1/users/(?<u>[^/]+)/ \$u; default ""; }
    upstream cells {
        hash \$user consistent;
        server 127.0.0.1:7101;
        server 127.0.0.1:7102;
        server 127.0.0.1:7103;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:740$1;
        location / {
            proxy_pass http://cells;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}


# One wrk run: prints "req/s p50_ms p99_ms proxy_cpu_us_per_request cells_cpu_us_per_request".
run() { # $1 url, $2 script, $3.. pids whose CPU counts as the proxy's
    local url=$1 script=$2; shift 2
    local before after cells_before cells_after out
    before=$(ticks "$@")
    cells_before=$(ticks "${cell_pids[@]}")
    out=$(wrk -t1 -c64 -d"${seconds}s" --latency -s "$script" "$url")
    after=$(ticks "$@")
    cells_after=$(ticks "${cell_pids[@]}")
    echo "$out" | awk -v cpu=$((after - before)) -v cells=$((cells_after - cells_before)) -v hz="$(getconf CLK_TCK)" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        function per(t) { return n > 0 ? t * 1e6 / hz / n : 0 }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
        /requests in/ { n = $1 } /^Requests\/sec/ { rps = $2 }
        END { printf "%.0f %.3f %.3f %.1f %.1f\n", rps, p50, p99, per(cpu), per(cells) }'
}

for workers in 1 2; do
    nginx_conf "$workers"
    nginx -c "$work/nginx$workers.conf" -p "$work"
    for _ in $(seq 1 50); do [ -s "$work/nginx$workers.pid" ] && break; sleep 0.1; done
    pids+=("$(cat "$work/nginx$workers.pid")")
done
nginx_procs() { pgrep -f "nginx: worker process" -P "$(cat "$work/nginx$1.pid")" | tr '\n' ' '; echo "$(cat "$work/nginx$1.pid")"; }

declare -A results
for round in $(seq 1 "$rounds"); do
    results[direct]+="$(run http://127.0.0.1:7101 "$work/direct.lua")"$'\n'
    # shellcheck disable=SC2046
    results[nginx1]+="$(run http://127.0.0.1:7401 scripts/users.lua $(nginx_procs 1))"$'\n'
    # shellcheck disable=SC2046
    results[nginx2]+="$(run http://127.0.0.1:7402 scripts/users.lua $(nginx_procs 2))"$'\n'
    results[router]+="$(run http://127.0.0.1:7000 scripts/users.lua "$router_pid")"$'\n'
    if [ -n "$baseline" ]; then
        results[baseline]+="$(run http://127.0.0.1:7010 scripts/users.lua "$baseline_pid")"$'\n'
    fi
    echo "round $round of $rounds done" >&2
done

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
col() { echo -n "${results[$1]}" | awk -v c="$2" '{ print $c }' | median; }
printf "%-28s %10s %9s %9s %14s %14s\n" target "req/s" "p50 ms" "p99 ms" "CPU us/req" "cells us/req"
targets="direct nginx1 nginx2 router"
[ -n "$baseline" ] && targets+=" baseline"
for target in $targets; do
    case $target in
        direct) name="cell direct (one user)";; nginx1) name="nginx, 1 worker";;
        nginx2) name="nginx, 2 workers";; router) name="ldc router";;
        baseline) name="ldc router, baseline";;
    esac
    printf "%-28s %10s %9s %9s %14s %14s\n" "$name" "$(col $target 1)" "$(col $target 2)" "$(col $target 3)" "$(col $target 4)" "$(col $target 5)"
done
best=$( [ "$(col nginx1 1)" -ge "$(col nginx2 1)" ] && echo nginx1 || echo nginx2 )
awk -v r="$(col router 1)" -v n="$(col $best 1)" -v rc="$(col router 4)" -v nc="$(col $best 4)" -v b="$best" \
    'BEGIN { printf "router / best nginx (%s): throughput %.2fx, CPU per request %.2fx\n", b, r / n, (nc > 0 ? rc / nc : 0) }'
if [ -n "$baseline" ]; then
    awk -v r="$(col router 1)" -v b="$(col baseline 1)" -v rc="$(col router 4)" -v bc="$(col baseline 4)" \
        'BEGIN { printf "router / baseline: throughput %.2fx, CPU per request %.2fx\n", r / b, (bc > 0 ? rc / bc : 0) }'
fi
