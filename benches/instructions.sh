#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: a figure that does
# not move with the machine's load, for A/B comparisons of builds on shared, noisy
# machines where CPU time cannot tell a 2% change.
#
# Usage: benches/instructions.sh BIN [BIN ...]
#
# For each binary: a one-worker gateway (the same config as compare.sh's) runs under
# `valgrind --tool=callgrind` in front of a local nginx; h2load --h1 sends small GETs
# on 50 keep-alive connections, then POSTs with a 1 KiB body. Each load is run twice,
# with N and 5N requests, and the difference of the totals divided by 4N is reported,
# so that start-up and shutdown cancel out. Needs valgrind, nginx, h2load
# (nghttp2-client). Everything started here is stopped on exit, by PID. Ports:
# 18181-18183 on 127.0.0.1.
#
# POLICY='{ rate_limit: [ { key: client_ip, rate: 100000/s } ] }' gives the route one
# policy (named `bench`) with that YAML, to count what a policy adds.
set -euo pipefail

cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
for tool in valgrind nginx h2load; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done

N=${N:-4000}
BACKEND_PORT=18181
PROXY_PORT=18182
ADMIN_PORT=18183
WORK=$(mktemp -d /tmp/portcullis-instructions.XXXXXX)
STARTED=()
cleanup() {
    for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() {
    for _ in $(seq 1 600); do
        curl -fso /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "$1 did not answer" >&2
    exit 1
}

mkdir -p "$WORK/backend"
cat >"$WORK/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/backend;
    proxy_temp_path $WORK/backend;
    fastcgi_temp_path $WORK/backend;
    uwsgi_temp_path $WORK/backend;
    scgi_temp_path $WORK/backend;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location = /small { default_type text/plain; return 200 "hello, world\n"; }
        location = /upload {
            client_body_buffer_size 16k;
            default_type text/plain;
            return 200 "stored\n";
        }
    }
}
EOF
nginx -e "$WORK/backend/error.log" -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
STARTED+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/small"

cat >"$WORK/gateway.yaml" <<EOF
listeners:
  - { name: bench, address: "127.0.0.1:$PROXY_PORT", max_connections: 1000 }
admin: { address: "127.0.0.1:$ADMIN_PORT" }
shutdown_timeout: 2s
workers: 1
upstreams:
  backend:
    endpoints: ["http://127.0.0.1:$BACKEND_PORT"]
    max_in_flight: 20000
    max_queue: 20000
    pool: { max_idle_per_endpoint: 1024 }
EOF
if [ -n "${POLICY:-}" ]; then
    printf 'policies:\n  bench: %s\nroutes:\n  - { name: all, match: { path_prefix: / }, upstream: backend, policies: [bench] }\n' \
        "$POLICY" >>"$WORK/gateway.yaml"
else
    printf 'routes:\n  - { name: all, match: { path_prefix: / }, upstream: backend }\n' >>"$WORK/gateway.yaml"
fi
head -c 1024 /dev/zero | tr '\0' a >"$WORK/body"

# Total instructions of one gateway run that served `requests` of `kind`.
instructions() { # BIN KIND REQUESTS
    local bin=$1 kind=$2 requests=$3 out=$WORK/callgrind.out
    rm -f "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run -c "$WORK/gateway.yaml" \
        >"$WORK/gateway.log" 2>&1 &
    local pid=$!
    wait_http "http://127.0.0.1:$PROXY_PORT/small"
    case "$kind" in
        get) h2load --h1 -c 50 -n "$requests" "http://127.0.0.1:$PROXY_PORT/small" >"$WORK/h2load.log" ;;
        post) h2load --h1 -c 50 -n "$requests" -d "$WORK/body" "http://127.0.0.1:$PROXY_PORT/upload" >"$WORK/h2load.log" ;;
    esac
    grep -q "$requests succeeded" "$WORK/h2load.log" || { cat "$WORK/h2load.log" >&2; exit 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    sed -n 's/^summary: //p' "$out"
}

printf '| binary | small GET, instructions/request | POST 1 KiB, instructions/request |\n|---|---:|---:|\n'
for bin in "$@"; do
    row="| $bin"
    for kind in get post; do
        small=$(instructions "$bin" "$kind" "$N")
        large=$(instructions "$bin" "$kind" $((5 * N)))
        row="$row | $(( (large - small) / (4 * N) ))"
    done
    echo "$row |"
done
