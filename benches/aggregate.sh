#!/usr/bin/env bash
# The aggregation route against the sum of its calls made directly (issue 6).
#
# Usage: benches/aggregate.sh [--no-build] [--rounds N] [--duration SECONDS] [--rate R]
#
# A one-worker nginx backend (CPU 1, with wrk) answers three small JSON documents.
# Portcullis (CPU 0, `workers: 1`, metrics on) has an aggregate route that calls all
# three concurrently and merges them (keyed). At a fixed rate (wrk's open-loop `delay()`
# schedule, default 2,000 req/s over 20 connections) it measures, alternating run by run:
#   - GET /agg through Portcullis: p50/p99, and Portcullis's CPU µs per aggregate request;
#   - each of the three calls made directly against the backend: p50/p99.
# It prints medians, the sum of the three direct calls (what a client making them one
# after another would wait) and the largest of them (the floor for calls made
# concurrently), and Portcullis's overhead over that floor.
#
# nginx and HAProxy have no aggregation, so they take no part. Everything started here
# is stopped on exit, by PID. Ports: 18191 (backend), 18192 (Portcullis), 18193 (admin).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
ROUNDS=5
DURATION=5
RATE=2000
CONNS=20
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --rate) RATE=$2; shift ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[aggregate] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in nginx wrk taskset curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (bash benches/compare.sh installs what is missing)"
done
PROXY_CPU=0
LOAD_CPU=$(($(nproc) > 1 ? 1 : 0))
BACKEND_PORT=18191
GW_PORT=18192
ADMIN_PORT=18193
for port in $BACKEND_PORT $GW_PORT $ADMIN_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use"; fi
done

BIN=target/release/portcullis
if [ "$BUILD" = 1 ]; then cargo build --release >&2; fi
[ -x "$BIN" ] || die "$BIN not found (drop --no-build)"

WORK=$(mktemp -d -t portcullis-aggregate.XXXXXX)
chmod 755 "$WORK"
STARTED=()
cleanup() {
    set +e
    local pid
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() {
    local i
    for i in $(seq 100); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not answer within 10 s"
}

mkdir -p "$WORK/backend/tmp"
chmod 777 "$WORK/backend/tmp"
cat >"$WORK/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/backend/tmp; proxy_temp_path $WORK/backend/tmp;
    fastcgi_temp_path $WORK/backend/tmp; uwsgi_temp_path $WORK/backend/tmp;
    scgi_temp_path $WORK/backend/tmp;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        default_type application/json;
        location = /users/42 { return 200 '{"id":42,"name":"Ada Lovelace","team_id":7,"email":"ada@example.com"}'; }
        location = /orders { return 200 '{"orders":[{"id":1,"total":12.5},{"id":2,"total":99.0},{"id":3,"total":7.25}]}'; }
        location = /teams/7 { return 200 '{"id":7,"name":"Analytical Engines","members":12}'; }
    }
}
EOF
taskset -c $LOAD_CPU nginx -e "$WORK/backend/error.log" -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
STARTED+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/users/42"

cat >"$WORK/gateway.yaml" <<EOF
listeners:
  - { name: bench, address: "127.0.0.1:$GW_PORT" }
admin: { address: "127.0.0.1:$ADMIN_PORT" }
workers: 1
upstreams:
  backend:
    endpoints: ["http://127.0.0.1:$BACKEND_PORT"]
    max_in_flight: 10000
routes:
  - name: agg
    match: { path: "/agg/{id}", methods: [GET] }
    aggregate:
      calls:
        user:   { upstream: backend, path: "/users/{id}" }
        orders: { upstream: backend, path: "/orders?user={id}" }
        team:   { upstream: backend, path: "/teams/7" }
EOF
"$BIN" check -c "$WORK/gateway.yaml" >/dev/null
taskset -c $PROXY_CPU "$BIN" run -c "$WORK/gateway.yaml" >"$WORK/portcullis.log" 2>&1 &
GW_PID=$!
STARTED+=($GW_PID)
wait_http "http://127.0.0.1:$GW_PORT/agg/42"
body=$(curl -fsS "http://127.0.0.1:$GW_PORT/agg/42")
for call in user orders team; do
    case "$body" in *"\"$call\":{"*) ;; *) die "unexpected aggregate answer: $body" ;; esac
done

# wrk at a fixed rate: requests leave on an open-loop schedule, latency from each send.
cat >"$WORK/rate.lua" <<EOF
local interval_us = 1e6 * $CONNS / $RATE
function delay() return interval_us / 1000 end
done = function(summary, latency, requests)
    io.stderr:write(string.format("RESULT %d %d %.1f %.1f\n", summary.requests,
        summary.errors.status + summary.errors.connect + summary.errors.read
        + summary.errors.write + summary.errors.timeout,
        latency:percentile(50), latency:percentile(99)))
end
EOF

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CSV=$WORK/runs.csv
: >"$CSV"

measure() { # NAME URL: one run; appends NAME,p50_us,p99_us,cpu_us_per_req,errors
    local name=$1 url=$2 before after line
    before=$(cpu_ticks $GW_PID)
    line=$(taskset -c $LOAD_CPU timeout $((DURATION + 30)) wrk -t1 -c$CONNS -d${DURATION}s \
        -s "$WORK/rate.lua" "$url" 2>&1 >/dev/null | grep '^RESULT') || die "wrk failed for $name"
    after=$(cpu_ticks $GW_PID)
    read -r _ requests errors p50 p99 <<<"$line"
    local cpu=0
    [ "$name" = portcullis ] && cpu=$(awk -v t=$((after - before)) -v k="$CLK_TCK" -v r="$requests" \
        'BEGIN { printf "%.2f", (r > 0 ? 1e6 * t / k / r : 0) }')
    echo "$name,$p50,$p99,$cpu,$errors" >>"$CSV"
    log "round $round $name: p50 ${p50} us, p99 ${p99} us$([ "$name" = portcullis ] && echo ", $cpu CPU us/req"), errors $errors"
}

log "warm-up"
taskset -c $LOAD_CPU wrk -t1 -c$CONNS -d1s "http://127.0.0.1:$GW_PORT/agg/42" >/dev/null
for round in $(seq "$ROUNDS"); do
    measure portcullis "http://127.0.0.1:$GW_PORT/agg/42"
    measure user "http://127.0.0.1:$BACKEND_PORT/users/42"
    measure orders "http://127.0.0.1:$BACKEND_PORT/orders?user=42"
    measure team "http://127.0.0.1:$BACKEND_PORT/teams/7"
done

python3 - "$CSV" "$RATE" "$CONNS" "$DURATION" "$ROUNDS" <<'EOF'
import csv, statistics, sys
path, rate, conns, duration, rounds = sys.argv[1:]
runs = {}
for name, p50, p99, cpu, errors in csv.reader(open(path)):
    runs.setdefault(name, []).append((float(p50), float(p99), float(cpu), int(errors)))
med = lambda name, i: statistics.median(r[i] for r in runs[name])
calls = ["user", "orders", "team"]
print(f"Fixed rate {rate} req/s over {conns} connections, {rounds} alternating rounds of {duration} s; medians in ms.\n")
print("| request | p50 ms | p99 ms | Portcullis CPU µs/req | errors |")
print("|---|---:|---:|---:|---:|")
for name in ["portcullis"] + calls:
    label = "GET /agg/42 through Portcullis (3 calls, keyed merge)" if name == "portcullis" else f"direct: {name}"
    cpu = f"{med(name, 2):.1f}" if name == "portcullis" else "-"
    print(f"| {label} | {med(name, 0) / 1000:.3f} | {med(name, 1) / 1000:.3f} | {cpu} | {sum(r[3] for r in runs[name])} |")
total50 = sum(med(c, 0) for c in calls); total99 = sum(med(c, 1) for c in calls)
max50 = max(med(c, 0) for c in calls); max99 = max(med(c, 1) for c in calls)
print(f"| sum of the direct calls (made one after another) | {total50 / 1000:.3f} | {total99 / 1000:.3f} | - | - |")
print(f"| largest direct call (the floor for concurrent calls) | {max50 / 1000:.3f} | {max99 / 1000:.3f} | - | - |")
print(f"\nPortcullis / sum of direct calls: p50 {med('portcullis', 0) / total50:.2f}x, p99 {med('portcullis', 1) / total99:.2f}x. "
      f"Overhead over the largest call: p50 +{(med('portcullis', 0) - max50) / 1000:.3f} ms.")
EOF
