//! Which route answers: precedence, host/method/header matching, 404/405, rewrites.

use http::{Method, StatusCode};

use crate::support::{url, Backend, Client, Gateway, Route};

/// Each route adds its own prefix, so the echoed URI says which route matched.
async fn precedence_gateway(backend: &Backend) -> portcullis::RunningGateway {
    let to_echo = |route: Route, name: &str| route.named(name).to("echo");
    Gateway::new()
        .upstream("echo", backend)
        .route_with(to_echo(Route::prefix("/api"), "prefix-api").add_prefix("/prefix-api"))
        .route_with(
            to_echo(Route::prefix("/api/users"), "prefix-users").add_prefix("/prefix-users"),
        )
        .route_with(
            to_echo(Route::path("/api/users/{id}"), "template").rewrite_path("/template/{id}"),
        )
        .route_with(to_echo(Route::path("/api/users/me"), "exact").add_prefix("/exact"))
        .route_with(
            to_echo(Route::prefix("/api"), "host")
                .host("api.example.com")
                .add_prefix("/host"),
        )
        .route_with(
            to_echo(Route::prefix("/api"), "wildcard")
                .host("*.example.com")
                .add_prefix("/wildcard"),
        )
        .route_with(
            to_echo(Route::path("/api/items"), "header-v2")
                .header("x-version", "2")
                .add_prefix("/v2"),
        )
        .route_with(
            to_echo(Route::path("/api/items"), "post-only")
                .methods(&[Method::POST])
                .add_prefix("/post"),
        )
        .route_with(
            to_echo(Route::path("/writes"), "writes").methods(&[Method::PUT, Method::DELETE]),
        )
        .start()
        .await
}

async fn routed_uri(
    client: &Client,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> String {
    let reply = client.send(method, url, headers, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.text());
    reply.json()["uri"].as_str().expect("uri").to_owned()
}

#[tokio::test]
async fn the_most_specific_route_wins() {
    let backend = Backend::echo().await;
    let gw = precedence_gateway(&backend).await;
    let client = Client::new();
    let cases = [
        ("/api/users/me", "/exact/api/users/me"),
        ("/api/users/7?x=1", "/template/7?x=1"),
        ("/api/users/7/orders", "/prefix-users/api/users/7/orders"),
        ("/api/users", "/prefix-users/api/users"),
        ("/api/usersx", "/prefix-api/api/usersx"),
        ("/api", "/prefix-api/api"),
    ];
    for (path, expected) in cases {
        assert_eq!(
            routed_uri(&client, Method::GET, &url(&gw, path), &[]).await,
            expected,
            "{path}"
        );
    }
}

#[tokio::test]
async fn host_header_and_method_select_routes() {
    let backend = Backend::echo().await;
    let gw = precedence_gateway(&backend).await;
    let client = Client::new();
    let u = url(&gw, "/api/users/7");
    assert_eq!(
        routed_uri(&client, Method::GET, &u, &[("host", "api.example.com")]).await,
        "/host/api/users/7"
    );
    assert_eq!(
        routed_uri(
            &client,
            Method::GET,
            &u,
            &[("host", "API.Example.com:8080")]
        )
        .await,
        "/host/api/users/7"
    );
    assert_eq!(
        routed_uri(&client, Method::GET, &u, &[("host", "a.b.example.com")]).await,
        "/wildcard/api/users/7"
    );
    assert_eq!(
        routed_uri(&client, Method::GET, &u, &[("host", "example.com")]).await,
        "/template/7"
    );

    let items = url(&gw, "/api/items");
    assert_eq!(
        routed_uri(&client, Method::GET, &items, &[("x-version", "2")]).await,
        "/v2/api/items"
    );
    assert_eq!(
        routed_uri(&client, Method::POST, &items, &[]).await,
        "/post/api/items"
    );
    // No header, not POST: falls through to the /api prefix.
    assert_eq!(
        routed_uri(&client, Method::GET, &items, &[]).await,
        "/prefix-api/api/items"
    );
}

#[tokio::test]
async fn unmatched_requests_get_404_and_wrong_methods_405() {
    let backend = Backend::echo().await;
    let gw = precedence_gateway(&backend).await;
    let client = Client::new();

    let missing = client.get(&url(&gw, "/nothing/here")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    let body = missing.json();
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["request_id"].as_str(), missing.header("x-request-id"));

    let wrong = client
        .send(Method::GET, &url(&gw, "/writes"), &[], "")
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), Some("PUT, DELETE"));
    assert_eq!(wrong.json()["error"], "method_not_allowed");
    assert_eq!(backend.state.arrived(), 0, "nothing reached the backend");
}

#[tokio::test]
async fn prefixes_are_stripped_and_templates_rewritten() {
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .upstream("users", &backend)
        .route_with(
            Route::prefix("/api/users")
                .named("strip")
                .to("users")
                .strip_prefix("/api"),
        )
        .route_with(
            Route::prefix("/old")
                .named("replace")
                .to("users")
                .strip_prefix("/old")
                .add_prefix("/new"),
        )
        .route_with(
            Route::path("/v2/users/{id}/files/{*rest}")
                .named("by-id")
                .to("users")
                .rewrite_path("/users/{id}/f/{rest}"),
        )
        .start()
        .await;
    let client = Client::new();
    let cases = [
        ("/api/users/7?page=2", "/users/7?page=2"),
        ("/api/users", "/users"),
        ("/old", "/new"),
        ("/old/thing", "/new/thing"),
        (
            "/v2/users/42/files/a/b.txt?dl=1",
            "/users/42/f/a/b.txt?dl=1",
        ),
    ];
    for (path, expected) in cases {
        assert_eq!(
            routed_uri(&client, Method::GET, &url(&gw, path), &[]).await,
            expected,
            "{path}"
        );
    }
}

#[tokio::test]
async fn dot_segments_are_refused_before_routing() {
    let backend = Backend::echo().await;
    let gw = precedence_gateway(&backend).await;
    let addr = gw.listener_addr("public").expect("listener");
    let raw = crate::support::client::raw_exchange(
        addr,
        b"GET /api/users/../../admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "}",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("\"error\":\"bad_request\""), "{raw}");
    assert_eq!(backend.state.arrived(), 0);
}
