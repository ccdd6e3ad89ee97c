#!/usr/bin/env bash
# Side-by-side comparison of Portcullis, nginx and HAProxy as reverse proxies in front of
# one backend, on one machine (issue 6). Prints a markdown table of medians on stdout;
# progress goes to stderr.
#
# Usage: benches/compare.sh [--quick] [--rounds N] [--duration SECONDS]
#                           [--scenarios LIST] [--no-build] [--raw FILE] [--report FILE]
#                           [--workers N] [--proxy-cpus LIST] [--load-cpus LIST]
#
#   --quick        3 rounds of 3 s runs (a few minutes); default: 7 rounds of 10 s
#   --scenarios    comma-separated subset of: small-c50 iplist-c50 ratelimit-c50 ratelimit-quiet-c50
#                  redislimit-c50 accesslog-c50 jwt-c50 jwt-nocache-c50
#                  small-c1000 64k-c50 newconn-c50 h2c-c50x10 rate-half delay-c1000 idle-10k
#                  tracing1-c50 tracing100-c50 (default: all)
#                  tracing1-c50 / tracing100-c50: small GET through portcullis-t1 /
#                  portcullis-t100 (tracing at 1% / 100% sampling, exporting OTLP/HTTP to
#                  the backend nginx, which answers 200 on /v1/traces and discards the
#                  body), alternating with plain portcullis (tracing off) in the same
#                  scenario
#   --no-build     use target/release/portcullis as it is
#   --raw FILE     also write every run as CSV to FILE
#   --report FILE  print the tables from such a CSV again, without measuring
#   --workers N    multi-core: N workers each (Portcullis `workers: N`, nginx
#                  `worker_processes N` with `reuseport`, HAProxy `nbthread N`), and a
#                  fourth contestant, portcullis-ws (`worker_model: work_stealing`)
#   --proxy-cpus LIST, --load-cpus LIST
#                  taskset CPU lists for the proxies and for wrk + backend (default 0
#                  and 1); e.g. --workers 8 --proxy-cpus 0-7 --load-cpus 8-15. wrk runs
#                  one thread per load CPU.
#   --ab BIN       A/B: run BIN as contestant portcullis-b (same config as portcullis)
#                  against target/release/portcullis and nginx only, e.g. a build of
#                  main against a build of a branch
#
# Layout (what issue 6 found to be the least noisy on 2 cores): each proxy under test is
# pinned to CPU 0 with one worker; the load generator and the backend (a one-worker
# nginx) share CPU 1. Contestants alternate run by run (A B C A B C ...) and medians
# are reported. The figure that separates fast proxies is the proxy's CPU time per
# request: utime+stime from /proc/PID/stat before and after a run, divided by the
# requests the load generator completed. A run where the proxy used less than 90% of
# one CPU is marked load-side-limited: its req/s says more about wrk and the backend
# than about the proxy.
#
# Everything started here is stopped on exit, by PID. Ports: 18081-18097 on 127.0.0.1.
set -euo pipefail

cd "$(dirname "$0")/.."

ARGS="$*"
QUICK=0
ROUNDS=
DURATION=
SCENARIOS=
BUILD=1
RAW=
REPORT=
WORKERS=1
AB_BIN=
ALL_SCENARIOS="small-c50 iplist-c50 ratelimit-c50 ratelimit-quiet-c50 redislimit-c50 accesslog-c50 jwt-c50 jwt-nocache-c50 small-c1000 64k-c50 newconn-c50 h2c-c50x10 rate-half delay-c1000 idle-10k tracing1-c50 tracing100-c50"

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --scenarios) SCENARIOS=${2//,/ }; shift ;;
        --no-build) BUILD=0 ;;
        --raw) RAW=$2; shift ;;
        --report) REPORT=$2; shift ;;
        --workers) WORKERS=$2; shift ;;
        --proxy-cpus) PROXY_CPU=$2; shift ;;
        --load-cpus) LOAD_CPU=$2; shift ;;
        --ab) AB_BIN=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-3}
    DURATION=${DURATION:-3}
else
    ROUNDS=${ROUNDS:-7}
    DURATION=${DURATION:-10}
fi
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
for s in $SCENARIOS; do
    case " $ALL_SCENARIOS " in *" $s "*) ;; *) echo "unknown scenario: $s" >&2; exit 2 ;; esac
done

SATURATED_PCT=90 # a run where the proxy used less of its CPU is load-side-limited

# ---------------------------------------------------------------- tables
# Markdown tables of medians from the CSV of runs that the measurements below write.
print_tables() { # CSV [OFFERED_RATE]
    python3 - "$1" "$SATURATED_PCT" "${2:-0}" <<'EOF'
import csv, statistics, sys

path, saturated_pct, rate_offered = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(path)))
# Runs with several workers record how many CPUs the proxies had and whether the load
# shared them (older CSVs lack the columns: one CPU of its own).
proxy_cpus = max(int(r.get("proxy_cpus") or 1) for r in rows)
shared_cpus = any(r.get("shared_cpus") == "1" for r in rows)
timed = [r for r in rows if r["scenario"] != "idle-10k"] or rows
rounds = max(int(r["round"]) for r in timed)
duration = round(statistics.median(float(r["wall_s"]) for r in timed))
DISTURBED_PCT = 5
proxies = [p for p in ["portcullis", "portcullis-b", "portcullis-ws", "portcullis-t1", "portcullis-t100", "nginx", "haproxy"] if any(r["proxy"] == p for r in rows)]
throughput = ["small-c50", "iplist-c50", "ratelimit-c50", "ratelimit-quiet-c50", "redislimit-c50", "accesslog-c50", "jwt-c50", "jwt-nocache-c50", "small-c1000", "64k-c50", "newconn-c50", "h2c-c50x10", "tracing1-c50", "tracing100-c50"]
titles = {
    "small-c50": "small GET, keep-alive, 50 conns",
    "iplist-c50": "small GET through an IP allow/deny list, 50 conns",
    "ratelimit-c50": "small GET under a per-client rate limit that never triggers, 50 conns",
    "ratelimit-quiet-c50": "the same, the limit with advertise: false (no RateLimit fields; nginx, HAProxy: as ratelimit-c50), 50 conns",
    "redislimit-c50": "small GET under a Redis-backed rate limit (nginx, HAProxy: no limit), 50 conns",
    "accesslog-c50": "small GET with the access log to a file (HAProxy: no log), 50 conns",
    "jwt-c50": "small GET with an RS256 JWT, verified-token cache on (nginx, HAProxy: no JWT), 50 conns",
    "jwt-nocache-c50": "small GET with an RS256 JWT, a signature check per request (nginx, HAProxy: no JWT), 50 conns",
    "small-c1000": "small GET, keep-alive, 1,000 conns",
    "64k-c50": "64 KiB response, 50 conns",
    "newconn-c50": "new connection per request, 50 conns",
    "h2c-c50x10": "h2c, 50 conns x 10 streams (h2load)",
    "rate-half": "fixed rate of half nginx's max" + (f" ({rate_offered:,} req/s)" if rate_offered else "") + ", small GET",
    "delay-c1000": "100 ms upstream, 1,000 conns (ideal 10,000 req/s)",
    "tracing1-c50": "small GET, tracing at 1% (portcullis: off), 50 conns",
    "tracing100-c50": "small GET, tracing at 100% (portcullis: off), 50 conns",
}

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def f(r, k):
    return float(r[k])

def disturbed(r):
    # With the load on the proxies' CPUs, everything else on them is the load itself.
    return not shared_cpus and 100 * f(r, "other_cpu0_s") / f(r, "wall_s") > DISTURBED_PCT

def stats(scenario, proxy):
    """Medians over the runs no other process disturbed; over all runs if each was."""
    every = [r for r in rows if r["scenario"] == scenario and r["proxy"] == proxy]
    if not every:
        return None
    clean = [r for r in every if not disturbed(r)]
    runs = clean or every
    rps = [f(r, "requests") / f(r, "wall_s") for r in runs]
    cpu_us = [1e6 * f(r, "cpu_s") / f(r, "requests") if f(r, "requests") else None for r in runs]
    busy = [100 * f(r, "cpu_s") / f(r, "wall_s") / proxy_cpus for r in runs]
    def pct(k):
        vals = [f(r, k) / 1000 for r in runs if f(r, k) >= 0]
        return med(vals)
    return {
        "n": len(runs),
        "rps": med(rps),
        "p50": pct("p50_us"), "p99": pct("p99_us"), "p999": pct("p999_us"),
        "cpu_us": med(cpu_us),
        "busy": med(busy),
        "limited": sum(1 for b in busy if b < saturated_pct),
        "used": f"{len(clean)}/{len(every)}" if clean else f"0/{len(every)}: all used",
        "errors": sum(int(r["errors"]) + int(r["status_errors"]) for r in every),
        "runs": runs,
    }

def ratio(value, base):
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}"

def num(value, fmt):
    return "-" if value is None else format(value, fmt)

print(f"Medians of up to {rounds} alternating rounds of {duration} s per proxy and scenario. "
      "CPU µs/req is the proxy's utime+stime per completed request (lower is better); "
      f"× nginx divides by nginx's median in the same scenario. A run is load-side-limited "
      f"when the proxy used < {saturated_pct:.0f}% of its CPU: its req/s then reflects wrk and "
      "the backend (sharing CPU 1) more than the proxy. Runs during which other processes took "
      f"> {DISTURBED_PCT}% of the proxy's CPU (from /proc/stat) are left out of the medians; "
      "'runs used' counts the rest.\n")
if proxy_cpus > 1:
    print(f"Each proxy had {proxy_cpus} CPUs and as many workers"
          + (", shared with wrk and the backend: CPU µs/req is the fairer figure, and "
             "'load-side-limited' means little" if shared_cpus else "") + ". Proxy CPU busy "
          f"is per CPU. portcullis is `worker_model: per_core`, portcullis-ws `work_stealing`.\n")
print("| scenario | proxy | req/s | × nginx | p99 ms | × nginx | CPU µs/req | × nginx | proxy CPU busy | load-side-limited runs | runs used | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for scenario in throughput + ["delay-c1000"]:
    base = stats(scenario, "nginx")
    for proxy in proxies:
        s = stats(scenario, proxy)
        if s is None:
            continue
        limited = f"{s['limited']}/{s['n']}" if scenario in throughput else "n/a"
        print(f"| {titles[scenario]} | {proxy} | {num(s['rps'], ',.0f')} | {ratio(s['rps'], base and base['rps'])} "
              f"| {num(s['p99'], '.2f')} | {ratio(s['p99'], base and base['p99'])} "
              f"| {num(s['cpu_us'], '.2f')} | {ratio(s['cpu_us'], base and base['cpu_us'])} "
              f"| {num(s['busy'], '.0f')}% | {limited} | {s['used']} | {s['errors']} |")

traced = [(sc, p) for sc, p in [("tracing1-c50", "portcullis-t1"), ("tracing100-c50", "portcullis-t100")]
          if stats(sc, p) and stats(sc, "portcullis")]
if traced:
    print("\nTracing against off, in the same scenario (alternating runs): CPU µs/req and req/s of "
          "the traced gateway divided by those of plain portcullis.\n")
    print("| scenario | CPU µs/req off | CPU µs/req traced | CPU × off | req/s × off | p99 × off |")
    print("|---|---:|---:|---:|---:|---:|")
    for sc, p in traced:
        off, on = stats(sc, "portcullis"), stats(sc, p)
        print(f"| {titles[sc]} | {num(off['cpu_us'], '.2f')} | {num(on['cpu_us'], '.2f')} "
              f"| {ratio(on['cpu_us'], off['cpu_us'])} | {ratio(on['rps'], off['rps'])} | {ratio(on['p99'], off['p99'])} |")

if any(r["scenario"] == "rate-half" for r in rows):
    base = stats("rate-half", "nginx")
    print(f"\n**{titles['rate-half']}** (open-loop schedule in wrk's Lua `delay()`; latency counted from each request's send)\n")
    print("| proxy | req/s | p50 ms | p99 ms | × nginx | p99.9 ms | × nginx | CPU µs/req | × nginx | runs used | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for proxy in proxies:
        s = stats("rate-half", proxy)
        if s:
            print(f"| {proxy} | {num(s['rps'], ',.0f')} | {num(s['p50'], '.3f')} | {num(s['p99'], '.3f')} | {ratio(s['p99'], base and base['p99'])} "
                  f"| {num(s['p999'], '.3f')} | {ratio(s['p999'], base and base['p999'])} "
                  f"| {num(s['cpu_us'], '.2f')} | {ratio(s['cpu_us'], base and base['cpu_us'])} | {s['used']} | {s['errors']} |")

if any(r["scenario"] == "idle-10k" for r in rows):
    print("\n**Idle keep-alive connections** (each proxy freshly restarted and warmed up for 1 s; each connection "
          "served one request, then was held idle; RSS from /proc/PID/status, nginx counts master + worker; "
          "the probe is ~1,000 req/s on 10 other connections, before and while they are held)\n")
    print("| proxy | idle conns held | RSS before KiB | RSS with them KiB | KiB per idle conn | × nginx | probe p99 before ms | probe p99 while held ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    per = {}
    for proxy in proxies:
        runs = [r for r in rows if r["scenario"] == "idle-10k" and r["proxy"] == proxy]
        if runs:
            per[proxy] = med([(float(r["rss_after_kb"]) - float(r["rss_before_kb"])) / max(1, int(r["idle_conns"])) for r in runs])
    for proxy in proxies:
        runs = [r for r in rows if r["scenario"] == "idle-10k" and r["proxy"] == proxy]
        if not runs:
            continue
        print(f"| {proxy} | {med([int(r['idle_conns']) for r in runs]):.0f} | {med([float(r['rss_before_kb']) for r in runs]):,.0f} "
              f"| {med([float(r['rss_after_kb']) for r in runs]):,.0f} | {per[proxy]:.2f} | {ratio(per[proxy], per.get('nginx'))} "
              f"| {med([float(r['probe_p99_before_us']) / 1000 for r in runs]):.2f} | {med([float(r['p99_us']) / 1000 for r in runs]):.2f} |")
EOF
}

if [ -n "$REPORT" ]; then
    print_tables "$REPORT"
    exit 0
fi

PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# A taskset CPU list ("0-3,8") as one CPU number per line.
expand_cpus() {
    local part
    for part in ${1//,/ }; do
        case "$part" in
            *-*) seq "${part%-*}" "${part#*-}" ;;
            *) echo "$part" ;;
        esac
    done
}
PROXY_CPU_LIST=$(expand_cpus "$PROXY_CPU" | sort -un)
LOAD_CPU_LIST=$(expand_cpus "$LOAD_CPU" | sort -un)
PROXY_CPUS=$(echo "$PROXY_CPU_LIST" | wc -l)
LOAD_THREADS=$(echo "$LOAD_CPU_LIST" | wc -l)
SHARED_CPUS=0
[ -z "$(comm -12 <(echo "$PROXY_CPU_LIST") <(echo "$LOAD_CPU_LIST"))" ] || SHARED_CPUS=1
[ "$WORKERS" -ge 1 ] 2>/dev/null || { echo "--workers must be a number >= 1" >&2; exit 2; }
CONTESTANTS="portcullis nginx haproxy"
[ "$WORKERS" -gt 1 ] && CONTESTANTS="portcullis portcullis-ws nginx haproxy"
if [ -n "$AB_BIN" ]; then
    [ -x "$AB_BIN" ] || { echo "--ab $AB_BIN: not an executable" >&2; exit 2; }
    AB_BIN=$(cd "$(dirname "$AB_BIN")" && pwd)/$(basename "$AB_BIN")
    CONTESTANTS="portcullis portcullis-b nginx"
fi
BACKEND_PORT=18081
declare -A PORT=([portcullis]=18082 [nginx]=18083 [haproxy]=18084 [portcullis-ws]=18087 [portcullis-b]=18088 [portcullis-t1]=18089 [portcullis-t100]=18090)
# h2c (prior knowledge): Portcullis serves HTTP/1.1 and HTTP/2 on one port; nginx 1.22
# and HAProxy need a port of their own for it.
declare -A H2_PORT=([portcullis]=18082 [nginx]=18085 [haproxy]=18086 [portcullis-ws]=18087 [portcullis-b]=18088)
declare -A ADMIN=([portcullis]=18092 [portcullis-ws]=18093 [portcullis-b]=18094 [portcullis-t1]=18096 [portcullis-t100]=18097)
IDLE_CONNS=${IDLE_CONNS:-10000}
REDIS_PORT=18095

log() { printf '[compare] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
need_install=()
for tool in nginx haproxy wrk h2load python3 taskset curl pgrep; do
    command -v "$tool" >/dev/null 2>&1 || need_install+=("$tool")
done
ECHO_MODULE=
for dir in /usr/lib/nginx/modules /usr/lib64/nginx/modules /usr/share/nginx/modules; do
    [ -f "$dir/ngx_http_echo_module.so" ] && ECHO_MODULE=$dir/ngx_http_echo_module.so && break
done
[ -n "$ECHO_MODULE" ] || need_install+=(echo-module)
if [ ${#need_install[@]} -gt 0 ]; then
    log "missing: ${need_install[*]}; installing with apt-get"
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "install nginx, haproxy, wrk, nghttp2-client (h2load), libnginx-mod-http-echo and python3 first"
    pkgs="nginx haproxy wrk nghttp2-client libnginx-mod-http-echo procps curl"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >&2; }
    for dir in /usr/lib/nginx/modules /usr/lib64/nginx/modules; do
        [ -f "$dir/ngx_http_echo_module.so" ] && ECHO_MODULE=$dir/ngx_http_echo_module.so && break
    done
    [ -n "$ECHO_MODULE" ] || die "ngx_http_echo_module.so not found after installing libnginx-mod-http-echo"
fi
CLK_TCK=$(getconf CLK_TCK)

for port in "$BACKEND_PORT" "${PORT[@]}" "${H2_PORT[@]}" "${ADMIN[@]}" "$REDIS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use; stop whatever listens there"
    fi
done

# ---------------------------------------------------------------- build
BIN=target/release/portcullis
if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    cargo build --release >&2
fi
[ -x "$BIN" ] || die "$BIN not found (drop --no-build)"
# What was built, for the report (src/ may be edited while the benchmark runs).
SRC_STATE=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ "$BUILD" = 1 ] || SRC_STATE="$SRC_STATE (--no-build: binary as found)"
[ -z "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] ||
    SRC_STATE="$SRC_STATE + uncommitted changes in src/"

# ---------------------------------------------------------------- temp dir, cleanup
WORK=$(mktemp -d -t portcullis-compare.XXXXXX)
chmod 755 "$WORK" # nginx workers may run as another user and must read the 64 KiB file
STARTED=()        # PIDs of everything started here, stopped on exit

cleanup() {
    set +e
    local pid deadline
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    deadline=$((SECONDS + 10))
    for pid in "${STARTED[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (at most 10 s) until URL answers 200.
wait_http() {
    local url=$1 i
    for i in $(seq 100); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$url did not answer within 10 s"
}

nginx_temp_paths() {
    local dir=$1 kind
    for kind in client_body proxy fastcgi uwsgi scgi; do
        mkdir -p "$dir/tmp/$kind" && chmod 777 "$dir/tmp/$kind"
        printf '    %s_temp_path %s;\n' "$kind" "$dir/tmp/$kind"
    done
}

# ---------------------------------------------------------------- backend (CPU 1)
start_backend() {
    local dir=$WORK/backend
    mkdir -p "$dir/www"
    head -c 65536 /dev/urandom >"$dir/www/64k"
    jwt_setup "$dir/www"
    chmod 755 "$dir" "$dir/www" && chmod 644 "$dir/www/64k"
    cat >"$dir/nginx.conf" <<EOF
load_module $ECHO_MODULE;
worker_processes $LOAD_THREADS;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 19000; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    sendfile on;
$(nginx_temp_paths "$dir")
    server {
        listen 127.0.0.1:$BACKEND_PORT backlog=4096;
        location = /small { default_type text/plain; return 200 "hello, world\n"; }
        location = /acl/small { default_type text/plain; return 200 "hello, world\n"; }
        location = /rl/small { default_type text/plain; return 200 "hello, world\n"; }
        location = /rls/small { default_type text/plain; return 200 "hello, world\n"; }
        location = /rlq/small { default_type text/plain; return 200 "hello, world\n"; }
        location = /log/small { default_type text/plain; return 200 "hello, world\n"; }
        location = /jwt/small { default_type text/plain; return 200 "hello, world\n"; }
        location = /jwtn/small { default_type text/plain; return 200 "hello, world\n"; }
        location = /jwks.json { default_type application/json; alias $dir/www/jwks.json; }
        location = /64k { default_type application/octet-stream; alias $dir/www/64k; }
        location = /delay { default_type text/plain; echo_sleep 0.1; echo "slept 100 ms"; }
        # The OTLP/HTTP receiver of the tracing scenarios: every export accepted, its
        # body read and discarded.
        location = /v1/traces { client_max_body_size 64m; return 200; }
    }
}
EOF
    taskset -c "$LOAD_CPU" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/error.log" &
    STARTED+=($!)
    wait_http "http://127.0.0.1:$BACKEND_PORT/small"
}

# ---------------------------------------------------------------- contestants (CPU 0)
declare -A PID

# The rate-limit scenarios' parts of gateway.yaml, only when they run (an --ab base
# binary may predate rate limits). The limits are far above any rate reached here: the
# figure is the cost of deciding, not of refusing.
RL_RATE="100000000/s, burst: 100000000"
rate_limit_stores_yaml() {
    runs redislimit-c50 || return 0
    printf 'rate_limit_stores:\n  bench: { redis: { url: "redis://127.0.0.1:%s", timeout: 100ms, pool: 4 }, on_error: deny }\n' "$REDIS_PORT"
}
rate_limit_policies_yaml() {
    if runs ratelimit-c50; then
        printf '  limited:\n    rate_limit:\n      - { key: client_ip, rate: %s, store: local }\n' "$RL_RATE"
    fi
    if runs ratelimit-quiet-c50; then
        printf '  limited-quiet:\n    rate_limit:\n      - { key: client_ip, rate: %s, store: local, advertise: false }\n' "$RL_RATE"
    fi
    if runs redislimit-c50; then
        printf '  limited-shared:\n    rate_limit:\n      - { key: client_ip, rate: %s, store: bench }\n' "$RL_RATE"
    fi
}
rate_limit_routes_yaml() {
    if runs ratelimit-c50; then
        printf '  - name: limited\n    match: { path_prefix: /rl }\n    upstream: backend\n    policies: [limited]\n'
        route_access_log_yaml "$bin"
    fi
    if runs ratelimit-quiet-c50; then
        printf '  - name: limited-quiet\n    match: { path_prefix: /rlq }\n    upstream: backend\n    policies: [limited-quiet]\n'
        route_access_log_yaml "$bin"
    fi
    if runs redislimit-c50; then
        printf '  - name: limited-shared\n    match: { path_prefix: /rls }\n    upstream: backend\n    policies: [limited-shared]\n'
        route_access_log_yaml "$bin"
    fi
}
# The access log: off everywhere (the other scenarios' figures are without a log, the
# gateway's default being on, to stdout), except for accesslog-c50's route, whose
# lines go to a file (JSON lines, the default fields) when that scenario runs. An --ab
# base binary that predates the access log gets none of it.
knows_access_log() { # BINARY
    local probe=$WORK/access-log-probe.yaml
    printf 'listeners:\n  - { name: p, address: 127.0.0.1:0, access_log: off }\n' >"$probe"
    "$1" check -c "$probe" >/dev/null 2>&1
}
listener_access_log_yaml() { # BINARY DIR
    knows_access_log "$1" || return 0
    if runs accesslog-c50; then
        printf '    access_log: { path: "%s/access.log" }\n' "$2"
    else
        printf '    access_log: off\n'
    fi
}
# (`bin` is start_portcullis's, which these run within.)
route_access_log_yaml() { # BINARY
    knows_access_log "$1" && runs accesslog-c50 && printf '    access_log: off\n'
    return 0
}
access_log_routes_yaml() { # BINARY
    if knows_access_log "$1" && runs accesslog-c50; then
        printf '  - name: logged\n    match: { path_prefix: /log }\n    upstream: backend\n'
    fi
}
# The JWT scenarios: the backend serves a JWKS document with the test RSA key, and wrk
# sends one fixed RS256 token (valid for ten years) signed here with openssl.
JWT_KEY=tests/fixtures/jwt/rsa-old.pem
JWT_TOKEN=
jwt_setup() { # WWW_DIR
    runs jwt-c50 || runs jwt-nocache-c50 || return 0
    local modulus
    modulus=$(openssl rsa -in "$JWT_KEY" -noout -modulus | cut -d= -f2)
    python3 - "$modulus" >"$1/jwks.json" <<'PY'
import base64, json, sys
n = bytes.fromhex(sys.argv[1])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "n": b64(n), "e": "AQAB"}]}))
PY
    chmod 644 "$1/jwks.json"
    local signing_input signature
    signing_input=$(python3 -c '
import base64, json, time
b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()
print(b64({"alg": "RS256", "typ": "JWT", "kid": "bench"}) + "." + b64({"iss": "bench", "sub": "user-1", "exp": int(time.time()) + 10 * 365 * 86400}))')
    signature=$(printf '%s' "$signing_input" | openssl dgst -sha256 -sign "$JWT_KEY" -binary |
        python3 -c 'import base64, sys; print(base64.urlsafe_b64encode(sys.stdin.buffer.read()).rstrip(b"=").decode())')
    JWT_TOKEN="$signing_input.$signature"
}
jwt_policies_yaml() {
    local jwt='{ issuers: [{ issuer: bench, jwks: { upstream: backend, path: /jwks.json }, algorithms: [RS256] }]'
    if runs jwt-c50; then
        printf '  jwt:\n    auth: { jwt: %s }\n' "$jwt }"
    fi
    if runs jwt-nocache-c50; then
        printf '  jwt-nocache:\n    auth: { jwt: %s, token_cache: { enabled: false } } }\n' "$jwt"
    fi
}
jwt_routes_yaml() {
    if runs jwt-c50; then
        printf '  - name: jwt\n    match: { path_prefix: /jwt/ }\n    upstream: backend\n    policies: [jwt]\n'
    fi
    if runs jwt-nocache-c50; then
        printf '  - name: jwt-nocache\n    match: { path_prefix: /jwtn/ }\n    upstream: backend\n    policies: [jwt-nocache]\n'
    fi
}
runs() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# The tracing contestants' `tracing` section (portcullis-t1: 1%, portcullis-t100: 100%),
# exporting to the backend nginx's /v1/traces.
tracing_yaml() { # CONTESTANT
    local sample
    case "$1" in
        portcullis-t1) sample=0.01 ;;
        portcullis-t100) sample=1 ;;
        *) return 0 ;;
    esac
    printf 'tracing:\n  otlp: { endpoint: "http://127.0.0.1:%s/v1/traces", timeout: 2s }\n  sample: %s\n' "$BACKEND_PORT" "$sample"
}

# Who runs SCENARIO: a tracing scenario alternates plain portcullis (off) with its traced
# contestant; every other scenario, the contestants.
contestants_of() { # SCENARIO
    case "$1" in
        tracing1-c50) echo "portcullis portcullis-t1" ;;
        tracing100-c50) echo "portcullis portcullis-t100" ;;
        *) echo "$CONTESTANTS" ;;
    esac
}

# A Redis for redislimit-c50, on the load CPUs, no persistence.
start_redis() {
    runs redislimit-c50 || return 0
    command -v redis-server >/dev/null || die "redislimit-c50 needs redis-server (apt-get install redis-server)"
    mkdir -p "$WORK/redis"
    taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
        --appendonly no --dir "$WORK/redis" >"$WORK/redis/redis.log" 2>&1 &
    STARTED+=($!)
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    die "redis-server did not listen on $REDIS_PORT within 10 s"
}

start_portcullis() { # [WORKER_MODEL [CONTESTANT BINARY]]
    local model=${1:-per_core} who=${2:-portcullis} bin=${3:-$BIN}
    [ "$model" = per_core ] || who=portcullis-ws
    [ -n "$bin" ] || bin=$BIN
    local dir=$WORK/$who
    mkdir -p "$dir"
    # Configured as users run it: metrics on (admin listener), request ids, limits set
    # high enough that the limiter never rejects during the benchmark.
    cat >"$dir/gateway.yaml" <<EOF
listeners:
  - name: bench
    address: 127.0.0.1:${PORT[$who]}
    max_connections: 19000
    idle_timeout: 75s
$(listener_access_log_yaml "$bin" "$dir")
admin:
  address: 127.0.0.1:${ADMIN[$who]}
shutdown_timeout: 2s
workers: $WORKERS
worker_model: $model
upstreams:
  backend:
    endpoints: ["http://127.0.0.1:$BACKEND_PORT"]
    max_in_flight: 20000
    max_queue: 20000
    queue_timeout: 10s
    connect_timeout: 2s
    timeout: 30s
    pool: { max_idle_per_endpoint: 1024, idle_timeout: 75s }
$(rate_limit_stores_yaml)
$(tracing_yaml "$who")
policies:
  acl:
    ip: { allow: [127.0.0.0/8], deny: [203.0.113.0/24] }
$(rate_limit_policies_yaml)
$(jwt_policies_yaml)
routes:
  - name: acl
    match: { path_prefix: /acl }
    upstream: backend
    policies: [acl]
$(route_access_log_yaml "$bin")
$(rate_limit_routes_yaml)
$(access_log_routes_yaml "$bin")
$(jwt_routes_yaml)
  - name: all
    match: { path_prefix: / }
    upstream: backend
$(route_access_log_yaml "$bin")
EOF
    "$bin" check -c "$dir/gateway.yaml" >"$dir/check.log" 2>&1 ||
        { cat "$dir/check.log" >&2; die "the generated gateway.yaml is invalid"; }
    taskset -c "$PROXY_CPU" "$bin" run -c "$dir/gateway.yaml" \
        >"$dir/portcullis.log" 2>&1 &
    PID[$who]=$!
    STARTED+=($!)
    wait_http "http://127.0.0.1:${PORT[$who]}/small"
    wait_http "http://127.0.0.1:${ADMIN[$who]}/metrics"
}

start_portcullis-ws() {
    start_portcullis work_stealing
}

start_portcullis-t1() {
    start_portcullis per_core portcullis-t1 ""
}

start_portcullis-t100() {
    start_portcullis per_core portcullis-t100 ""
}

start_portcullis-b() {
    start_portcullis per_core portcullis-b "$AB_BIN"
}

start_nginx() {
    local dir=$WORK/nginx
    mkdir -p "$dir"
    # Several workers: one listening socket each (reuseport), nginx's fastest setting.
    local reuseport=
    [ "$WORKERS" -gt 1 ] && reuseport=" reuseport"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 19000; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    limit_req_zone \$binary_remote_addr zone=perip:10m rate=100000000r/s;
$(nginx_temp_paths "$dir")
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 1024;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} backlog=4096$reuseport;
        listen 127.0.0.1:${H2_PORT[nginx]} http2 backlog=4096$reuseport;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The same work Portcullis does on every request.
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
            # Stream instead of spilling large responses to disk when the client is slow.
            proxy_max_temp_file_size 0;
        }
        # iplist-c50: the same, behind the same allow/deny list as Portcullis's policy.
        location /acl/ {
            deny 203.0.113.0/24;
            allow 127.0.0.0/8;
            deny all;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
            proxy_max_temp_file_size 0;
        }
        # accesslog-c50: the same, with the access log (combined format) to a file,
        # buffered as it is usually run.
        location /log/ {
            access_log $dir/access.log combined buffer=64k flush=1s;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
            proxy_max_temp_file_size 0;
        }
        # ratelimit-c50: the same, under limit_req per client address.
        location /rl/ {
            limit_req zone=perip burst=100000000 nodelay;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/error.log" &
    PID[nginx]=$!
    STARTED+=($!)
    wait_http "http://127.0.0.1:${PORT[nginx]}/small"
}

start_haproxy() {
    local dir=$WORK/haproxy
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 19000
    # The open-files limit here (20,000) is below what maxconn asks for; run anyway.
    no strict-limits
    # Keep pooling upstream connections while many clients sit idle.
    tune.pool-high-fd-ratio 90
    tune.pool-low-fd-ratio 80

defaults
    mode http
    maxconn 19000
    timeout connect 5s
    timeout client 75s
    timeout server 30s
    timeout http-keep-alive 75s
    http-reuse always
    # The same work Portcullis does on every request.
    option forwardfor
    unique-id-format %[uuid()]
    unique-id-header X-Request-Id

frontend bench
    bind 127.0.0.1:${PORT[haproxy]}
    bind 127.0.0.1:${H2_PORT[haproxy]} proto h2
    http-response set-header X-Request-Id %[unique-id]
    # iplist-c50: the same allow/deny list as Portcullis's policy.
    http-request deny if { path_beg /acl/ } { src 203.0.113.0/24 }
    http-request deny if { path_beg /acl/ } !{ src 127.0.0.0/8 }
    # ratelimit-c50: a per-client request rate in a stick table, as HAProxy limits.
    http-request track-sc0 src table rate_per_client if { path_beg /rl/ }
    http-request deny deny_status 429 if { path_beg /rl/ } { sc_http_req_rate(0) gt 100000000 }
    default_backend backend

backend rate_per_client
    stick-table type ip size 100k expire 10s store http_req_rate(1s)

backend backend
    server s1 127.0.0.1:$BACKEND_PORT
EOF
    taskset -c "$PROXY_CPU" haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    PID[haproxy]=$!
    STARTED+=($!)
    wait_http "http://127.0.0.1:${PORT[haproxy]}/small"
}

# The processes that make up a contestant: the main one and its children (nginx workers).
pids_of() {
    local main=${PID[$1]}
    echo "$main" $(pgrep -P "$main" || true)
}

# utime + stime of a contestant, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    local total=0 pid stat fields
    for pid in $(pids_of "$1"); do
        read -r stat <"/proc/$pid/stat" || continue
        stat=${stat##*) } # the command name may contain spaces; fields restart at 3
        read -ra fields <<<"$stat"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

rss_kb() {
    local total=0 pid kb
    for pid in $(pids_of "$1"); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

now_ns() { date +%s%N; }

# Ticks the proxies' CPUs spent in user, nice, system and steal time (/proc/stat):
# compared with the proxy's own CPU time, this shows when something else ran on them.
cpu0_ticks() {
    awk -v cpus=" $(echo $PROXY_CPU_LIST) " '
        $1 ~ /^cpu[0-9]+$/ && index(cpus, " " substr($1, 4) " ") { t += $2 + $3 + $4 + $9 }
        END { print t + 0 }' /proc/stat
}

# Between runs nothing of ours is busy, so CPU time used now is someone else's (a build, a
# test suite). Waits until the machine has been quiet for half a second, at most
# QUIET_WAIT_S seconds; runs disturbed anyway are left out of the medians.
QUIET_WAIT_S=${QUIET_WAIT_S:-30}
wait_quiet() {
    local a b deadline=$((SECONDS + QUIET_WAIT_S))
    while :; do
        a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
        sleep 0.5
        b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
        # less than 5% of one CPU over the half second
        [ $((b - a)) -le $((CLK_TCK / 40)) ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            log "the machine is still busy with other work after ${QUIET_WAIT_S}s; running anyway"
            return 0
        fi
    done
}

# ---------------------------------------------------------------- load generators (CPU 1)
cat >"$WORK/report.lua" <<'EOF'
-- With WRK_RATE set, each wrk thread sends that many requests per second, open loop: each
-- request about to go out takes the next slot of a fixed schedule and waits for it, so
-- a slow answer does not lower the offered rate (as long as enough connections are
-- free). Latency is counted from each request's send. At the end, prints one
-- machine-readable line.
local rate = tonumber(os.getenv("WRK_RATE") or "")
if rate then
    local ffi = require("ffi")
    ffi.cdef[[
        typedef struct { long tv_sec; long tv_nsec; } pace_timespec;
        int clock_gettime(int clock, pace_timespec *ts);
    ]]
    local ts = ffi.new("pace_timespec")
    local function now_ms()
        ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
        return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
    end
    local interval = 1000 / rate
    local slot
    delay = function()
        local now = now_ms()
        -- More than a second behind: the target cannot keep up; do not send a burst.
        if slot == nil or slot < now - 1000 then slot = now end
        slot = slot + interval
        return math.max(0, slot - now)
    end
end
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d errors=%d status_errors=%d p50_us=%d p99_us=%d p999_us=%d\n",
        summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
EOF

# run_wrk CONTESTANT CONNS PATH [wrk args...]: sets REQUESTS WALL_S CPU_S OTHER_S ERRORS
# STATUS P50 P99 P999 (OTHER_S: time CPU $PROXY_CPU spent on anything but the proxy)
run_wrk() {
    local who=$1 conns=$2 path=$3 out=$WORK/wrk.out t0 t1 c0 c1 s0 s1 line
    shift 3
    c0=$(cpu_ticks "$who"); s0=$(cpu0_ticks); t0=$(now_ns)
    timeout $((DURATION + 60)) taskset -c "$LOAD_CPU" wrk -t"$LOAD_THREADS" -c"$conns" -d"${DURATION}s" \
        --timeout 10s -s "$WORK/report.lua" "$@" "http://127.0.0.1:${PORT[$who]}$path" >"$out" 2>&1 || true
    t1=$(now_ns); c1=$(cpu_ticks "$who"); s1=$(cpu0_ticks)
    line=$(grep '^RESULT ' "$out" || true)
    [ -n "$line" ] || { cat "$out" >&2; die "wrk produced no result for $who"; }
    eval "$(echo "${line#RESULT }" | tr ' ' '\n' | sed 's/^/local _/')"
    REQUESTS=$_requests ERRORS=$_errors STATUS=$_status_errors
    P50=$_p50_us P99=$_p99_us P999=$_p999_us
    WALL_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    CPU_S=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / hz }')
    OTHER_S=$(awk -v a="$s0" -v b="$s1" -v p="$CPU_S" -v hz="$CLK_TCK" 'BEGIN { o = (b - a) / hz - p; printf "%.3f", (o < 0 ? 0 : o) }')
}

# run_h2load CONTESTANT CONNS STREAMS PATH: the same variables; h2load gives no percentiles.
run_h2load() {
    local who=$1 conns=$2 streams=$3 path=$4 out=$WORK/h2load.out t0 t1 c0 c1 s0 s1
    c0=$(cpu_ticks "$who"); s0=$(cpu0_ticks); t0=$(now_ns)
    timeout $((DURATION + 60)) taskset -c "$LOAD_CPU" h2load -t"$LOAD_THREADS" -c"$conns" -m"$streams" \
        -D "$DURATION" "http://127.0.0.1:${H2_PORT[$who]}$path" >"$out" 2>&1 || true
    t1=$(now_ns); c1=$(cpu_ticks "$who"); s1=$(cpu0_ticks)
    read -r REQUESTS ERRORS STATUS < <(awk '
        /^requests:/ { done = $6; failed = $10 + $12 + $14 }
        /^status codes:/ { bad = $7 + $9 }
        END { print done + 0, failed + 0, bad + 0 }' "$out")
    [ "$REQUESTS" -gt 0 ] || { cat "$out" >&2; die "h2load completed no request for $who"; }
    P50=-1 P99=-1 P999=-1
    WALL_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    CPU_S=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / hz }')
    OTHER_S=$(awk -v a="$s0" -v b="$s1" -v p="$CPU_S" -v hz="$CLK_TCK" 'BEGIN { o = (b - a) / hz - p; printf "%.3f", (o < 0 ? 0 : o) }')
}

CSV=$WORK/runs.csv
echo "scenario,proxy,round,requests,wall_s,cpu_s,other_cpu0_s,errors,status_errors,p50_us,p99_us,p999_us,rss_before_kb,rss_after_kb,idle_conns,probe_p99_before_us,proxy_cpus,shared_cpus" >"$CSV"
record() { # SCENARIO WHO ROUND [rss_before rss_after idle_conns probe_before]
    local line="$1,$2,$3,$REQUESTS,$WALL_S,$CPU_S,$OTHER_S,$ERRORS,$STATUS,$P50,$P99,$P999,${4:-},${5:-},${6:-},${7:-},$PROXY_CPUS,$SHARED_CPUS"
    echo "$line" >>"$CSV"
    log "$1 round $3 $(printf '%-10s' "$2") $(awk -v r="$REQUESTS" -v w="$WALL_S" -v c="$CPU_S" -v o="$OTHER_S" -v p="$P99" \
        'BEGIN { printf "%8.0f req/s  p99 %7.2f ms  cpu %5.1f%%  %6.2f us/req  other on cpu %4.1f%%", r / w, p / 1000, 100 * c / w, (r > 0 ? 1e6 * c / r : 0), 100 * o / w }')$([ "$ERRORS$STATUS" = 00 ] || echo "  errors $ERRORS, non-2xx $STATUS")"
}

# ---------------------------------------------------------------- idle connections
cat >"$WORK/hold.py" <<'EOF'
"""Opens N keep-alive connections, sends one GET on each (in batches), then holds them
idle until the release file appears (at most 120 s). Writes 'OPEN FAILED' to the ready
file once every connection has been answered."""
import os, socket, sys, time

port, count, ready, release = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
request = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
deadline = time.monotonic() + 60
socks, failed = [], 0
for _ in range(count):
    if time.monotonic() > deadline:
        break
    try:
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    except OSError:
        failed += 1

def answered(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return False
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")

held = []
for start in range(0, len(socks), 200):
    batch = socks[start:start + 200]
    for s in batch:
        s.sendall(request)
    for s in batch:
        try:
            ok = answered(s)
        except OSError:
            ok = False
        if ok:
            held.append(s)
        else:
            failed += 1
            s.close()
with open(ready, "w") as f:
    f.write(f"{len(held)} {failed}\n")
end = time.monotonic() + 120
while not os.path.exists(release) and time.monotonic() < end:
    time.sleep(0.1)
for s in held:
    s.close()
EOF

# A light probe at 1,000 req/s over 10 connections; sets P99.
probe() {
    local saved=$DURATION
    DURATION=2
    WRK_RATE=1000 run_wrk "$1" 10 /small
    DURATION=$saved
}

# Stops a contestant and starts it again, so that a measurement of its memory does not
# inherit heap and pools grown by earlier scenarios (1,000 connections, 64 KiB bodies).
restart() {
    local who=$1 old=${PID[$1]} pid i kept=()
    kill -TERM "$old" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$old" 2>/dev/null || true
    wait "$old" 2>/dev/null || true
    for pid in "${STARTED[@]}"; do [ "$pid" = "$old" ] || kept+=("$pid"); done
    STARTED=("${kept[@]}")
    "start_$who"
    local saved=$DURATION
    DURATION=1
    run_wrk "$who" 50 /small
    DURATION=$saved
}

run_idle() {
    local who=$1 round=$2 before after probe_before hold_pid i
    rm -f "$WORK/ready" "$WORK/release"
    restart "$who"
    probe "$who"; probe_before=$P99
    before=$(rss_kb "$who")
    timeout 200 python3 "$WORK/hold.py" "${PORT[$who]}" "$IDLE_CONNS" "$WORK/ready" "$WORK/release" &
    hold_pid=$!
    STARTED+=($hold_pid)
    for i in $(seq 900); do [ -s "$WORK/ready" ] && break; sleep 0.1; done
    [ -s "$WORK/ready" ] || die "the idle connections to $who were not open after 90 s"
    sleep 1
    after=$(rss_kb "$who")
    read -r held _ <"$WORK/ready"
    probe "$who"
    touch "$WORK/release"
    wait "$hold_pid" || true
    record idle-10k "$who" "$round" "$before" "$after" "$held" "$probe_before"
    log "idle-10k round $round $who: $held idle connections, RSS $before -> $after KiB"
}

# ---------------------------------------------------------------- scenarios
median_rps() { # SCENARIO PROXY: over the undisturbed runs, as in the tables, if any
    awk -F, -v s="$1" -v p="$2" '
        $1 == s && $2 == p && $5 > 0 { all[++n] = $4 / $5; if ($7 / $5 <= 0.05) clean[++c] = $4 / $5 }
        END { if (c) for (i = 1; i <= c; i++) print clean[i]; else for (i = 1; i <= n; i++) print all[i] }' "$CSV" |
        sort -n | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); else print 0 }'
}

run_one() { # SCENARIO WHO ROUND
    wait_quiet
    case "$1" in
        small-c50) run_wrk "$2" 50 /small ;;
        iplist-c50) run_wrk "$2" 50 /acl/small ;;
        ratelimit-c50) run_wrk "$2" 50 /rl/small ;;
        # nginx and HAProxy send no such fields: their limit is ratelimit-c50's.
        ratelimit-quiet-c50) case "$2" in
            portcullis*) run_wrk "$2" 50 /rlq/small ;;
            *) run_wrk "$2" 50 /rl/small ;;
            esac ;;
        redislimit-c50) run_wrk "$2" 50 /rls/small ;;
        accesslog-c50) run_wrk "$2" 50 /log/small ;;
        jwt-c50) run_wrk "$2" 50 /jwt/small -H "Authorization: Bearer $JWT_TOKEN" ;;
        jwt-nocache-c50) run_wrk "$2" 50 /jwtn/small -H "Authorization: Bearer $JWT_TOKEN" ;;
        small-c1000) run_wrk "$2" 1000 /small ;;
        64k-c50) run_wrk "$2" 50 /64k ;;
        newconn-c50) run_wrk "$2" 50 /small -H "Connection: close" ;;
        h2c-c50x10) run_h2load "$2" 50 10 /small ;;
        # Each wrk thread keeps its own schedule: give each its share of the rate.
        rate-half) WRK_RATE=$((RATE / LOAD_THREADS)) run_wrk "$2" "$RATE_CONNS" /small ;;
        delay-c1000) run_wrk "$2" 1000 /delay ;;
        idle-10k) run_idle "$2" "$3"; return ;;
        tracing1-c50 | tracing100-c50) run_wrk "$2" 50 /small ;;
    esac
    record "$1" "$2" "$3"
}

log "work dir $WORK; $ROUNDS rounds of ${DURATION}s; proxies on CPU $PROXY_CPU, wrk and backend on CPU $LOAD_CPU"
start_backend
start_redis
# The tracing contestants, only when their scenarios run.
EXTRA=
runs tracing1-c50 && EXTRA="$EXTRA portcullis-t1"
runs tracing100-c50 && EXTRA="$EXTRA portcullis-t100"
for who in $CONTESTANTS $EXTRA; do
    "start_$who"
done

log "warm-up"
for who in $CONTESTANTS $EXTRA; do
    saved=$DURATION; DURATION=1; run_wrk "$who" 50 /small; DURATION=$saved
done

for scenario in $SCENARIOS; do
    rounds=$ROUNDS
    if [ "$scenario" = rate-half ]; then
        # Half of nginx's maximum, from this run's small-c50 if it ran, else a short probe.
        max=$(median_rps small-c50 nginx)
        if [ "${max%.*}" -le 0 ]; then
            run_wrk nginx 50 /small
            max=$(awk -v r="$REQUESTS" -v w="$WALL_S" 'BEGIN { print r / w }')
        fi
        RATE=$(awk -v m="$max" 'BEGIN { printf "%d", m / 2 }')
        # One connection per 250 req/s: each has ~4 ms per request, ample at this load.
        RATE_CONNS=$(awk -v r="$RATE" 'BEGIN { c = int(r / 250); print (c < 10 ? 10 : (c > 1000 ? 1000 : c)) }')
        log "rate-half: $RATE req/s over $RATE_CONNS connections (nginx max $(printf '%.0f' "$max"))"
    fi
    # Memory per idle connection barely varies; in --quick mode measure it once.
    [ "$scenario" = idle-10k ] && [ "$QUICK" = 1 ] && rounds=1
    for round in $(seq "$rounds"); do
        for who in $(contestants_of "$scenario"); do
            run_one "$scenario" "$who" "$round"
        done
    done
    # Keep what is measured so far, should a later scenario be interrupted.
    [ -z "$RAW" ] || cp "$CSV" "$RAW"
done

[ -n "$RAW" ] && cp "$CSV" "$RAW"

# ---------------------------------------------------------------- summary
cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r)
- portcullis: $SRC_STATE (workers: $WORKERS, pinned to CPUs $PROXY_CPU; wrk and the backend on CPUs $LOAD_CPU)${AB_BIN:+
- portcullis-b: $AB_BIN}
- peers: $(nginx -v 2>&1 | sed 's|.*/||; s|^|nginx |'), $(haproxy -v 2>&1 | awk 'NR == 1 { print "HAProxy " $3 }'); load: $(wrk -v 2>&1 | awk 'NR == 1 { print "wrk " $2 }'), $(h2load --version 2>&1 | awk 'NR == 1 { print $2 }' | sed 's|/| |')
- command: benches/compare.sh $ARGS

EOF
print_tables "$CSV" "${RATE:-0}"
