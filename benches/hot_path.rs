//! Micro-benchmarks of the pieces every proxied request goes through, through the public
//! library API: the route lookup (10 and 1,000 routes), the request header rules, the
//! merge of an aggregate route's call results, the policy step with and without a local
//! rate limit that never triggers, and (once per reload, not per request) compiling a
//! 1,000-route configuration.
//!
//! Run with `cargo bench --bench hot_path` (about a minute; `-- --quick` is faster).
//! The end-to-end comparison against nginx and HAProxy is `benches/compare.sh`; figures
//! from both are in `benches/RESULTS.md`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{
    ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, CACHE_CONTROL, CONNECTION, COOKIE, HOST, REFERER,
    USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portcullis::aggregate::merge;
use portcullis::config::MergeMode;
use portcullis::policy::forwarded;
use portcullis::proxy::headers;
use portcullis::request_id;
use portcullis::routing::{HostPattern, Lookup, PathPattern, RouteSpec, RouteTable};

/// A route table shaped like a real gateway's: per service an exact health path, a
/// templated item path with a method restriction, an API prefix, and for every fourth
/// service a host-specific route (exact host, or a wildcard for every eighth). No
/// catch-all, so a miss is a real 404 that walks every level of the prefix search.
fn route_specs(count: usize) -> Vec<RouteSpec> {
    let mut specs = Vec::with_capacity(count);
    for i in 0..count {
        let service = i / 4;
        let (host, path, methods) = match i % 4 {
            0 => (
                None,
                PathPattern::path(&format!("/svc{service}/healthz")),
                None,
            ),
            1 => (
                None,
                PathPattern::path(&format!("/svc{service}/users/{{id}}/orders/{{order}}")),
                Some(vec![Method::GET, Method::HEAD]),
            ),
            2 => (
                None,
                PathPattern::prefix(&format!("/svc{service}/api")),
                Some(vec![Method::GET, Method::POST, Method::PUT, Method::DELETE]),
            ),
            _ => {
                let host = if service % 2 == 0 {
                    format!("svc{service}.example.com")
                } else {
                    format!("*.svc{service}.example.net")
                };
                (
                    Some(HostPattern::parse(&host).expect("valid host")),
                    PathPattern::prefix("/"),
                    None,
                )
            }
        };
        specs.push(RouteSpec {
            host,
            path: path.expect("valid path"),
            methods,
            headers: Vec::new(),
        });
    }
    specs
}

/// The route a lookup found, or `None` for 404/405.
fn matched(lookup: Lookup<'_, '_>) -> Option<usize> {
    match lookup {
        Lookup::Matched { route, .. } => Some(route),
        Lookup::MethodNotAllowed(_) | Lookup::NotFound => None,
    }
}

fn route_lookup(c: &mut Criterion) {
    let request_headers = browser_headers();
    for count in [10, 1_000] {
        let table = RouteTable::build(&route_specs(count)).expect("route table builds");
        // The last service that has all four kinds of route: the worst place in file order.
        let service = count / 4 - 1;
        let template_path = format!("/svc{service}/users/4711/orders/99");
        let deep_prefix_path = format!("/svc{service}/api/v2/catalog/items/12345/reviews/recent");
        let miss_path = "/nothing/matches/this/path/at/all";
        // The Host a browser sends for an API that has no host-specific routes.
        let host = Some("api.example.org");

        // Check once that each case is what its name says, so a routing change cannot
        // silently turn a hit into a miss.
        let route = |path: &str| matched(table.lookup(host, path, &Method::GET, &request_headers));
        assert_eq!(route(&template_path), Some(4 * service + 1));
        assert_eq!(route(&deep_prefix_path), Some(4 * service + 2));
        assert_eq!(route(miss_path), None);

        let mut group = c.benchmark_group(format!("route_lookup/{count}_routes"));
        for (name, path) in [
            ("template_hit", template_path.as_str()),
            ("deep_prefix_hit", deep_prefix_path.as_str()),
            ("miss", miss_path),
        ] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    matched(table.lookup(
                        black_box(host),
                        black_box(path),
                        black_box(&Method::GET),
                        black_box(&request_headers),
                    ))
                })
            });
        }
        group.finish();
    }
}

/// What a browser sends through a keep-alive connection to an API behind a CDN: about
/// fifteen headers, a cookie, an existing `X-Forwarded-For`, and `Connection` naming a
/// hop-by-hop header.
fn browser_headers() -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut add = |name: HeaderName, value: &'static str| {
        map.append(name, HeaderValue::from_static(value));
    };
    add(HOST, "api.example.org");
    add(
        USER_AGENT,
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    );
    add(ACCEPT, "application/json, text/plain, */*");
    add(ACCEPT_LANGUAGE, "en-GB,en;q=0.8,de;q=0.5");
    add(ACCEPT_ENCODING, "gzip, deflate, br, zstd");
    add(REFERER, "https://www.example.org/account/orders?page=2");
    add(
        COOKIE,
        "session=3f2a9c1e0b7d4e5f8a6b; theme=dark; consent=analytics%3D0%26ads%3D0",
    );
    add(CONNECTION, "keep-alive, x-client-trace");
    add(HeaderName::from_static("keep-alive"), "timeout=5");
    add(HeaderName::from_static("x-client-trace"), "on");
    add(HeaderName::from_static("sec-fetch-dest"), "empty");
    add(HeaderName::from_static("sec-fetch-mode"), "cors");
    add(HeaderName::from_static("sec-fetch-site"), "same-site");
    add(CACHE_CONTROL, "no-cache");
    add(forwarded::X_FORWARDED_FOR, "203.0.113.7");
    map
}

fn header_rules(c: &mut Criterion) {
    let original = browser_headers();
    let peer_ip = HeaderValue::from_static("127.0.0.1");
    let proto = HeaderValue::from_static("http");
    let host = original.get(HOST).cloned();

    let mut group = c.benchmark_group("request_headers");
    // The map is cloned outside the timed part; only the rule itself is measured.
    group.bench_function("remove_hop_by_hop", |b| {
        b.iter_batched_ref(
            || original.clone(),
            |map| headers::remove_hop_by_hop(map, true),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("set_forwarded", |b| {
        b.iter_batched_ref(
            || original.clone(),
            |map| forwarded::set_forwarded(map, &peer_ip, &proto, host.clone()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("generate_request_id", |b| {
        b.iter(request_id::generate_request_id)
    });
    // Everything the proxy does to a request's headers, in the proxy's order.
    group.bench_function("all_rules", |b| {
        b.iter_batched_ref(
            || original.clone(),
            |map| {
                let id = request_id::client_request_id(map)
                    .unwrap_or_else(request_id::generate_request_id);
                headers::remove_hop_by_hop(map, true);
                let host = map.get(HOST).cloned();
                forwarded::set_forwarded(map, &peer_ip, &proto, host);
                map.insert(request_id::X_REQUEST_ID, id);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A valid `gateway.yaml` with `count` routes in the same mix as [`route_specs`], over
/// eight upstreams, with rewrites and per-route timeouts.
fn config_yaml(count: usize) -> String {
    let mut yaml = String::from(
        "listeners:\n  - name: public\n    address: 127.0.0.1:18080\n    max_connections: 20000\n\
         admin:\n  address: 127.0.0.1:18090\nupstreams:\n",
    );
    for u in 0..8 {
        let _ = writeln!(
            yaml,
            "  up{u}:\n    endpoints: [\"http://127.0.0.1:{}\", \"http://10.0.0.{u}:8080\"]\n    \
             balance: least_request\n    max_in_flight: 256\n    max_queue: 512\n    \
             pool: {{ max_idle_per_endpoint: 64, idle_timeout: 30s }}",
            19000 + u
        );
    }
    yaml.push_str("routes:\n");
    for i in 0..count {
        let service = i / 4;
        let upstream = service % 8;
        let _ = write!(yaml, "  - name: r{i}\n    upstream: up{upstream}\n");
        match i % 4 {
            0 => {
                let _ = writeln!(yaml, "    match: {{ path: /svc{service}/healthz }}");
            }
            1 => {
                let _ = writeln!(
                    yaml,
                    "    match: {{ path: \"/svc{service}/users/{{id}}/orders/{{order}}\", methods: [GET, HEAD] }}\n    \
                     rewrite: {{ path: \"/v1/users/{{id}}/orders/{{order}}\" }}"
                );
            }
            2 => {
                let _ = writeln!(
                    yaml,
                    "    match: {{ path_prefix: /svc{service}/api, methods: [GET, POST, PUT, DELETE] }}\n    \
                     rewrite: {{ strip_prefix: /svc{service}/api, add_prefix: /v1 }}\n    timeout: 5s"
                );
            }
            _ => {
                let host = if service % 2 == 0 {
                    format!("svc{service}.example.com")
                } else {
                    format!("\"*.svc{service}.example.net\"")
                };
                let _ = writeln!(
                    yaml,
                    "    match: {{ host: {host}, path_prefix: /, headers: {{ x-tenant: t{service} }} }}"
                );
            }
        }
    }
    yaml
}

fn config_compile(c: &mut Criterion) {
    let yaml = config_yaml(1_000);
    let config = portcullis::Config::from_yaml(&yaml, "bench.yaml").unwrap_or_else(|error| {
        panic!("the generated configuration must be valid: {error}\n{yaml}")
    });
    assert_eq!(config.routes.len(), 1_000);

    let mut group = c.benchmark_group("config");
    group.sample_size(10);
    group.bench_function("from_yaml_1000_routes", |b| {
        b.iter(|| portcullis::Config::from_yaml(black_box(&yaml), "bench.yaml"))
    });
    group.finish();
}

/// Short warm-up and measurement so the whole file runs in about a minute on two cores.
/// The policy step of a route without policies, and of one whose policy has a local
/// rate limit keyed by client address and API key that never triggers (65,536 clients
/// in turn, each well within its burst of 200 while the benchmark runs): the difference is what a limit costs a
/// request, `RateLimit` fields included.
fn rate_limit(c: &mut Criterion) {
    use futures_util::FutureExt as _;
    use portcullis::policy::rate_limit::RateLimits;
    use portcullis::policy::{Admission, Facts, Policies};

    let yaml = r#"
listeners: [ { name: public, address: "127.0.0.1:0" } ]
policies:
  api: { rate_limit: [ { key: [client_ip, header.x-api-key], rate: 100/s, burst: 200 } ] }
upstreams: { app: { endpoints: ["http://127.0.0.1:9"] } }
routes:
  - { name: plain, match: { path_prefix: /plain }, upstream: app }
  - { name: limited, match: { path_prefix: /limited }, upstream: app, policies: [api] }
"#;
    let config = portcullis::Config::from_yaml(yaml, "bench.yaml").expect("valid");
    let metrics = portcullis::metrics::Metrics::new();
    let limits = RateLimits::build(&config.policies, &[], &metrics, None);
    let plain = Policies::for_route(
        &config.routes[0],
        &config.policies,
        &limits,
        &Default::default(),
        &metrics,
    );
    let limited = Policies::for_route(
        &config.routes[1],
        &config.policies,
        &limits,
        &Default::default(),
        &metrics,
    );
    let mut original = browser_headers();
    original.insert("x-api-key", HeaderValue::from_static("k-0123456789abcdef"));
    let (peer_ip, proto, id) = (
        HeaderValue::from_static("127.0.0.1"),
        HeaderValue::from_static("http"),
        HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
    );
    // The upstream's response headers, which the admission's fields are added to.
    let mut response = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("content-length", "42"),
        ("date", "Mon, 07 Dec 2026 12:00:00 GMT"),
        ("x-request-id", "0123456789abcdef0123456789abcdef"),
    ] {
        response.insert(name, HeaderValue::from_static(value));
    }
    let mut group = c.benchmark_group("policy_step");
    for (name, policies) in [("no_policy", &plain), ("local_rate_limit", &limited)] {
        let mut client = 0u16;
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || (original.clone(), response.clone()),
                |(map, answer)| {
                    client = client.wrapping_add(1);
                    let facts = Facts {
                        client_ip: std::net::IpAddr::from(std::net::Ipv4Addr::from(
                            0x0a00_0000 | u32::from(client),
                        )),
                        peer_ip: &peer_ip,
                        forwarded_proto: &proto,
                        client_host: map.get(HOST).cloned(),
                        request_id: &id,
                        method: &Method::GET,
                        path: "/limited/x",
                        query: None,
                        params: &[],
                        client_headers: None,
                    };
                    let mut admission = Admission::default();
                    let verdict = policies
                        .admit(map, facts, &mut admission)
                        .now_or_never()
                        .expect("a local store never waits");
                    policies.finish(admission, answer);
                    black_box(verdict.is_ok())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// Three call results shaped like a dashboard's (a user, their orders, their team),
/// merged as an aggregate route does once all calls are in: keyed (one member per call)
/// and flat (the calls' members side by side).
fn aggregate_merge(c: &mut Criterion) {
    let user = serde_json::json!({
        "id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "team_id": 7,
        "roles": ["admin", "author"], "created": "2026-01-02T03:04:05Z",
    });
    let orders = serde_json::json!({
        "orders": (0..20).map(|i| serde_json::json!({"id": i, "total": 12.5 * f64::from(i), "items": i % 4 + 1}))
            .collect::<Vec<_>>(),
    });
    let team = serde_json::json!({"team": {"id": 7, "name": "Analytical Engines", "members": 12}});
    let names: Vec<String> = ["user", "orders", "team"].map(String::from).to_vec();
    let results = vec![Ok(user), Ok(orders), Ok(team)];
    let describe =
        portcullis::proxy::respond::describe_calls(portcullis::config::ErrorDetail::Brief);
    let mut group = c.benchmark_group("aggregate_merge");
    group.bench_function("keyed_3_calls", |b| {
        b.iter(|| {
            merge::merge(
                MergeMode::Keyed,
                black_box(&names),
                black_box(&results),
                describe,
            )
        });
    });
    group.bench_function("flat_3_calls", |b| {
        b.iter(|| {
            merge::merge(
                MergeMode::Flat,
                black_box(&names),
                black_box(&results),
                describe,
            )
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = quick();
    targets = route_lookup, header_rules, aggregate_merge, rate_limit, config_compile
}
criterion_main!(benches);
