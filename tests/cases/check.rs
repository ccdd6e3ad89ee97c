//! `portcullis check` on files that are surely mistakes: each case is a config in and the
//! exact error or warning out (the file's path shown as `FILE`).

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

/// A listener and upstream `u`; cases add their keys below `upstreams.u` or `routes`.
const BASE: &str = "listeners:
  - name: public
    address: 127.0.0.1:8080
upstreams:
  u:
    endpoints: [\"http://127.0.0.1:9101\", \"http://127.0.0.1:9102\"]
";

/// Runs `check` on `text`: the exit code, stdout, and stderr's lines with the file's
/// path replaced by `FILE`.
fn check(text: &str) -> (i32, String, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, text).expect("writes config");
    let output = Command::new(BINARY)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("runs");
    let file = path.display().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&file, "FILE");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).replace(&file, "FILE"),
        stderr.lines().map(str::to_owned).collect(),
    )
}

/// `text` is refused with exactly `error` (one error).
fn refused_with(text: &str, error: &str) {
    let (code, _, lines) = check(text);
    assert_eq!(code, 2, "{text}\n{lines:#?}");
    assert_eq!(
        lines,
        vec![error.to_owned(), "1 error in configuration".to_owned()],
        "{text}"
    );
}

/// `text` loads, with exactly these warnings.
fn warned(text: &str, warnings: &[&str]) {
    let (code, _, lines) = check(text);
    assert_eq!(code, 0, "{text}\n{lines:#?}");
    let expected: Vec<String> = warnings.iter().map(|w| format!("warning: {w}")).collect();
    assert_eq!(lines, expected, "{text}");
}

#[test]
fn durations_in_months_years_and_weeks_are_refused() {
    refused_with(
        &format!("{BASE}    timeout: 1M\n"),
        "FILE:7:14: upstreams.u.timeout: unit `M` (months) in \"1M\" is not accepted: no gateway \
         timeout or interval is that long (for a minute write `m`, the longest unit is `d`)",
    );
    refused_with(
        &format!("{BASE}    connect_timeout: 1y\n"),
        "FILE:7:22: upstreams.u.connect_timeout: unit `y` (years) in \"1y\" is not accepted: no \
         gateway timeout or interval is that long (for a minute write `m`, the longest unit is `d`)",
    );
    refused_with(
        &format!("{BASE}    timeout: 3 fortnights\n"),
        "FILE:7:14: upstreams.u.timeout: unknown unit `fortnights` in \"3 fortnights\"; use ns, \
         us, ms, s, m, h or d",
    );
}

#[test]
fn durations_outside_their_sane_bounds_are_warned_about() {
    warned(
        &format!("{BASE}    timeout: 1ns\n    connect_timeout: 2h\n    pool: {{ idle_timeout: 2d }}\n"),
        &[
            "FILE:7:14: upstreams.u.timeout: 1ns is shorter than 1ms, too short for any timer of the gateway: check the unit",
            "FILE:8:22: upstreams.u.connect_timeout: 2h is longer than 1m, the most that makes sense here: check the unit",
            "FILE:9:27: upstreams.u.pool.idle_timeout: 2d is longer than 1h, the most that makes sense here: check the unit",
        ],
    );
}

#[test]
fn a_route_that_can_never_match_is_named_with_the_route_that_takes_its_requests() {
    let text = format!(
        "{BASE}routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: u
  - name: users-again
    match: {{ path_prefix: /api/users/ }}
    upstream: u
  - name: users-post
    match: {{ path_prefix: /api/users, methods: [POST], headers: {{ x-version: 2 }} }}
    upstream: u
  - name: read
    match: {{ path: /x, methods: [GET] }}
    upstream: u
  - name: head
    match: {{ path: /x, methods: [HEAD] }}
    upstream: u
  - name: other-host
    match: {{ path: /x, host: a.example.com }}
    upstream: u
  - name: longer-prefix
    match: {{ path_prefix: /api/users/admin }}
    upstream: u
"
    );
    warned(
        &text,
        &[
            "FILE:12:12: routes[1].match: route \"users-again\" can never match: route \"users\" \
             (routes[0] at FILE:9:12) comes first and matches exactly the same requests",
            "FILE:15:12: routes[2].match: route \"users-post\" can never match: route \"users\" \
             (routes[0] at FILE:9:12) comes first and has the same host and path, so it takes all \
             of these requests (it allows these methods and requires no header this route does not)",
            "FILE:21:12: routes[4].match: route \"head\" can never match: route \"read\" \
             (routes[3] at FILE:18:12) comes first and has the same host and path, so it takes all \
             of these requests (it allows these methods and requires no header this route does not)",
        ],
    );
}

#[test]
fn a_template_conflict_names_the_other_route_without_router_internals() {
    let text = format!(
        "{BASE}routes:
  - name: by-id
    match: {{ path: \"/users/{{id}}\" }}
    upstream: u
  - name: by-name
    match: {{ path: \"/users/{{name}}\" }}
    upstream: u
"
    );
    refused_with(
        &text,
        "FILE:12:20: routes[1].match.path: path template \"/users/{name}\" conflicts with \
         \"/users/{id}\" of route \"by-id\" (routes[0] at FILE:9:20): the same path cannot bind \
         two sets of parameter names; use the same names, or a different literal segment",
    );
}

#[test]
fn settings_that_do_nothing_are_warned_about() {
    let text = format!(
        "{BASE}    timeout: 2s
    retry: {{ attempts: 2, per_try_timeout: 2s }}
  solo:
    endpoints: [\"http://127.0.0.1:9103\"]
    outlier: {{ consecutive_failures: 3 }}
    max_queue: 0
    queue_timeout: 1s
    health_check: {{ path: /healthz, interval: 1s, timeout: 2s }}
    retry: {{ attempts: 1, on: [timeout] }}
routes:
  - name: slow
    match: {{ path: /slow }}
    upstream: solo
    timeout: 1s
    retry: {{ attempts: 3, per_try_timeout: 1s }}
  - name: board
    match: {{ path: \"/board/{{id}}\" }}
    retry: {{ attempts: 2 }}
    aggregate:
      merge: flat
      stream: ndjson
      timeout: 1s
      calls:
        a: {{ upstream: u, path: \"/a/{{id}}\", timeout: 2s }}
"
    );
    warned(
        &text,
        &[
            "FILE:8:44: upstreams.u.retry.per_try_timeout: 2s is not shorter than the upstream's \
             timeout (2s), which bounds all tries together: the first try uses all of it and is \
             never retried after a timeout",
            "FILE:11:14: upstreams.solo.outlier: has no effect with one endpoint: \
             max_ejection_percent 50 never ejects an upstream's only endpoint",
            "FILE:13:20: upstreams.solo.queue_timeout: has no effect with `max_queue: 0`: no \
             request waits for a permit",
            "FILE:14:60: upstreams.solo.health_check.timeout: 2s is longer than the interval \
             (1s): a slow check is still waiting when the next is due",
            "FILE:15:24: upstreams.solo.retry.attempts: 1 is the first try only: nothing is \
             retried (write 2 for one retry)",
            "FILE:15:31: upstreams.solo.retry.on: retrying on `timeout` needs `per_try_timeout`: \
             without it the first try has the whole timeout and none is left for another",
            "FILE:21:44: routes[0].retry.per_try_timeout: the route's per_try_timeout (1s) is not \
             shorter than its timeout (1s, routes[0].timeout), which bounds all tries together: \
             the first try uses all of it and is never retried after a timeout",
            "FILE:24:12: routes[1].retry: has no effect: aggregate calls are not retried (each \
             call is tried once, within `aggregate.timeout`)",
            "FILE:26:14: routes[1].aggregate.merge: has no effect with `stream: ndjson`: a \
             streamed answer sends each call's result on its own line, unmerged",
            "FILE:30:53: routes[1].aggregate.calls.a.timeout: 2s is longer than the route's \
             aggregate.timeout (1s), which cancels the call first",
        ],
    );
}

#[test]
fn unknown_keys_and_values_get_the_closest_known_one() {
    refused_with(
        &format!("{BASE}    max_inflight: 64\n"),
        "FILE:7:5: upstreams.u: unknown field `max_inflight` (did you mean `max_in_flight`?), \
         expected one of `endpoints`, `balance`, `max_in_flight`, `max_queue`, `queue_timeout`, \
         `connect_timeout`, `timeout`, `pool`, `host_header`, `health_check`, `outlier`, \
         `retry`, `protocol`, `tls`",
    );
    refused_with(
        &format!("{BASE}    pool: {{ idle_timout: 5s }}\n"),
        "FILE:7:13: upstreams.u.pool: unknown field `idle_timout` (did you mean \
         `idle_timeout`?), expected `max_idle_per_endpoint` or `idle_timeout`",
    );
    refused_with(
        &format!("{BASE}    balance: least_requests\n"),
        "FILE:7:14: upstreams.u.balance: unknown variant `least_requests` (did you mean \
         `least_request`?), expected one of `round_robin`, `least_request`, `random`",
    );
}

#[test]
fn a_value_of_the_wrong_shape_says_what_is_expected_where_it_is() {
    refused_with(
        &format!("{BASE}    max_in_flight: lots\n"),
        "FILE:7:20: upstreams.u.max_in_flight: invalid type: string \"lots\", expected a number \
         of requests such as 128, or { adaptive: { min, max, initial } }",
    );
    refused_with(
        &format!("{BASE}    max_in_flight: {{ adaptive: {{ mn: 4 }} }}\n"),
        "FILE:7:34: upstreams.u.max_in_flight.adaptive: unknown field `mn` (did you mean \
         `min`?), expected one of `min`, `max`, `initial`",
    );
}

#[test]
fn a_listener_address_must_be_an_ip_address() {
    refused_with(
        &BASE.replace("127.0.0.1:8080", "localhost:8443"),
        "FILE:3:14: listeners[0].address: \"localhost:8443\" names a host; an IP address is \
         needed (host names are not resolved): write e.g. 127.0.0.1:8443 for loopback or \
         0.0.0.0:8443 for every interface",
    );
    refused_with(
        &format!("{BASE}admin: {{ address: ':9090' }}\n"),
        "FILE:7:19: admin.address: \":9090\" is not an IP address and port; write e.g. \
         0.0.0.0:8080 or [::]:8080",
    );
}

#[test]
fn the_summary_shows_each_upstreams_settings_in_aligned_columns() {
    let text = "listeners:
  - name: a-listener-with-a-very-long-name
    address: 127.0.0.1:8080
upstreams:
  an-upstream-with-a-long-name:
    endpoints: [\"http://127.0.0.1:9101\", \"http://127.0.0.1:9102\"]
    health_check: { path: /healthz }
    outlier: { consecutive_failures: 3 }
    retry: { attempts: 2, per_try_timeout: 500ms }
  tls:
    endpoints: [\"https://127.0.0.1:9443\"]
    protocol: auto
routes:
  - name: chat
    match: { path_prefix: /chat }
    upstream: an-upstream-with-a-long-name
    websocket: { max_connections: 10, idle_timeout: 1m }
";
    let (code, stdout, stderr) = check(text);
    assert_eq!(code, 0, "{stderr:#?}");
    let expected = "
listeners:
  a-listener-with-a-very-long-name 127.0.0.1:8080         max_connections 10000

upstreams:
  an-upstream-with-a-long-name     round_robin, max_in_flight 512, max_queue 512, timeout 30s: http://127.0.0.1:9101 http://127.0.0.1:9102
                                     health_check GET /healthz every 5s, timeout 1s, out after 3 failed, back after 2 passed, status 200-399
                                     outlier: ejected after 3 failures in a row for 30s (doubling up to 5m), at most 50% at once
                                     retry 2 attempts on connect_failure,reset,502,503,504 for GET,HEAD,OPTIONS,PUT,DELETE, per try 500ms, budget 20%
  tls                              round_robin, max_in_flight 512, max_queue 512, timeout 30s: https://127.0.0.1:9443
                                     protocol auto
                                     tls: verified against the web PKI roots

routes, in match order:
    1. chat             * /chat** -> an-upstream-with-a-long-name; websocket: at most 10 connections, closed after 1m idle
";
    assert!(stdout.contains(expected), "{stdout}");
}

#[test]
fn an_empty_file_says_only_listeners_are_required() {
    refused_with(
        "# nothing yet\n",
        "FILE:1:1: the file is empty; it needs at least `listeners` (and `upstreams` and \
         `routes` to forward anything)",
    );
}

/// Auth: consumers' keys and hashes, references to consumers, and where keys are read.
const AUTH_BASE: &str = "listeners:
  - name: public
    address: 127.0.0.1:8080
upstreams:
  u:
    endpoints: [\"http://127.0.0.1:9101\"]
consumers:
  mobile-app:
    api_keys: [{ sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }]
";

#[test]
fn auth_mistakes_are_located_and_named() {
    refused_with(
        &format!("{AUTH_BASE}policies:\n  p:\n    auth: {{ api_key: {{ consumers: [mobile-ap] }} }}\n"),
        "FILE:12:36: policies.p.auth.api_key.consumers[0]: unknown consumer \"mobile-ap\" (did you mean \"mobile-app\"?)",
    );
    refused_with(
        &AUTH_BASE.replace("9f86d0", "zz86d0"),
        "FILE:9:26: consumers.mobile-app.api_keys[0].sha256: is not hexadecimal; must be a SHA-256 digest: 64 hex digits (e.g. `printf %s \"$KEY\" | sha256sum`)",
    );
    refused_with(
        &format!("{AUTH_BASE}  other:\n    api_keys: [{{ env: PORTCULLIS_CHECK_UNSET_VARIABLE }}]\n"),
        "FILE:11:23: consumers.other.api_keys[0].env: environment variable PORTCULLIS_CHECK_UNSET_VARIABLE is not set",
    );
    refused_with(
        &format!("{AUTH_BASE}policies:\n  p:\n    auth: {{ api_key: {{ from: heder.x-key }} }}\n"),
        "FILE:12:30: policies.p.auth.api_key.from: unknown credential source \"heder.x-key\" (did you mean \"header.NAME\"?); use header.NAME, query.NAME or cookie.NAME",
    );
    refused_with(
        &format!("{AUTH_BASE}policies:\n  p:\n    auth: {{ api_kye: {{}} }}\n"),
        "FILE:12:13: policies.p.auth: unknown field `api_kye` (did you mean `api_key`?), expected one of `api_key`, `basic`, `jwt`, `forward`, `any_of`, `all_of`",
    );
    refused_with(
        &format!("{AUTH_BASE}policies:\n  p:\n    rate_limit: [{{ key: consumr, rate: 1/s }}]\n"),
        "FILE:12:25: policies.p.rate_limit[0].key: unknown key part \"consumr\" (did you mean \"consumer\"?); use client_ip, route, consumer, header.NAME, query.NAME, param.NAME or jwt.CLAIM",
    );
    refused_with(
        &format!("{AUTH_BASE}policies:\n  p:\n    auth: {{ jwt: {{ issuers: [{{ issuer: https://idp/, algorithms: [RS256], jwks: {{ upstream: idp, path: /jwks }} }}] }} }}\n"),
        "FILE:12:93: policies.p.auth.jwt.issuers[0].jwks.upstream: unknown upstream \"idp\"; defined upstreams: u",
    );
}
