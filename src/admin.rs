//! The admin listener, apart from client traffic: `GET /` (the status page,
//! [`page`]), `GET /status` (the same as JSON, [`status`]), `GET /metrics` (Prometheus
//! text), `GET /healthz` (the process is alive), `GET /ready` (configuration loaded
//! and listeners bound; 503 once shutdown has begun, so load balancers stop sending),
//! `GET /config` (the configuration in use and the last reload attempt) and
//! `POST /reload` (reload the configuration file now).

mod page;
pub mod status;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::LoadError;
use crate::listeners::ListenerSet;
use crate::metrics::Metrics;
use crate::proxy::{ResponseBody, Snapshot};
use crate::reload::{Outcome, ReloadError, Reloader, Trigger};

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the admin endpoints report on.
pub struct AdminState {
    pub metrics: Metrics,
    pub ready: Arc<AtomicBool>,
    /// Present when the gateway was started from a file.
    pub reloader: Option<Arc<Reloader>>,
    /// The configuration serving now, for the status page.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The running listeners, for their bound addresses.
    pub listeners: Arc<ListenerSet>,
}

/// The page may run its own inline script and style and fetch from this listener;
/// nothing else (no other origin, no frames, no forms).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve(listener: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    let state = Arc::new(state);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("admin accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shutdown::signalled(&mut stop) => return,
        };
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&request, &state).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = crate::shutdown::signalled(&mut stop) => {}
            }
        });
    }
}

async fn answer(request: &Request<Incoming>, state: &AdminState) -> Response<ResponseBody> {
    let (metrics, ready) = (&state.metrics, &state.ready);
    if request.uri().path() == "/reload" {
        return if request.method() == Method::POST {
            reload(state.reloader.as_deref()).await
        } else {
            text(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload\n")
        };
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match request.uri().path() {
        "/" => {
            let mut response = Response::new(ResponseBody::full(page::render(&take_status(state))));
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(
                HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static(PAGE_POLICY),
            );
            headers.insert(
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        "/status" => {
            let body = serde_json::to_vec(&take_status(state)).unwrap_or_default();
            let mut response = Response::new(ResponseBody::full(body));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        "/config" => config_status(state.reloader.as_deref()),
        "/metrics" => {
            let mut response = Response::new(ResponseBody::full(metrics.encode()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/ready" if ready.load(Ordering::Acquire) => ready_text(&state.snapshot.load()),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: / /status /metrics /healthz /ready /config, POST /reload\n",
        ),
    }
}

/// The status document now: read from the snapshot, the listeners, the reloader and
/// the counters, each briefly, no lock held across an `.await`.
fn take_status(state: &AdminState) -> status::Status {
    let snapshot = state.snapshot.load();
    status::Status::take(status::Sources {
        snapshot: &snapshot,
        bound: &state.listeners.addresses(),
        reload: state.reloader.as_ref().map(|reloader| reloader.status()),
        totals: state.metrics.totals(),
    })
}

/// `ready`, then a line for each JWT issuer that has no keys yet: the gateway serves
/// (its other routes and issuers work), but that issuer's tokens are answered 503.
fn ready_text(snapshot: &Snapshot) -> Response<ResponseBody> {
    let missing = snapshot.jwt.issuers_without_keys();
    if missing.is_empty() {
        return text(StatusCode::OK, "ready\n");
    }
    let mut body = String::from("ready\n");
    for (policy, issuer) in missing {
        body.push_str(&format!(
            "jwt issuer without keys: policy={policy} issuer={issuer}\n"
        ));
    }
    let mut response = Response::new(ResponseBody::full(body));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn reload(reloader: Option<&Reloader>) -> Response<ResponseBody> {
    let Some(reloader) = reloader else {
        let body = serde_json::json!({
            "result": "failure",
            "errors": ["this gateway was not started from a file"],
        });
        return json(StatusCode::CONFLICT, &body);
    };
    match reloader.reload(Trigger::Admin).await {
        Ok(Outcome::Applied { hash }) => json(
            StatusCode::OK,
            &serde_json::json!({"result": "success", "hash": hash}),
        ),
        Ok(Outcome::Unchanged) => json(StatusCode::OK, &serde_json::json!({"result": "unchanged"})),
        Err(error) => {
            let errors: Vec<String> = match &error {
                ReloadError::Load(LoadError::Invalid(errors)) => {
                    errors.iter().map(ToString::to_string).collect()
                }
                other => vec![other.to_string()],
            };
            let body = serde_json::json!({"result": "failure", "errors": errors});
            json(StatusCode::UNPROCESSABLE_ENTITY, &body)
        }
    }
}

fn config_status(reloader: Option<&Reloader>) -> Response<ResponseBody> {
    let Some(reloader) = reloader else {
        return json(
            StatusCode::OK,
            &serde_json::json!({"source": null, "reloadable": false}),
        );
    };
    let status = reloader.status();
    let unix = |at: std::time::SystemTime| {
        at.duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let last = status.last_attempt.as_ref().map(|attempt| {
        serde_json::json!({
            "at": unix(attempt.at),
            "trigger": format!("{:?}", attempt.trigger).to_lowercase(),
            "result": attempt.result(),
            "errors": attempt.errors,
        })
    });
    let body = serde_json::json!({
        "source": status.source.display().to_string(),
        "hash": status.hash,
        "loaded_at": unix(status.loaded_at),
        "reloadable": true,
        "last_reload": last,
    });
    json(StatusCode::OK, &body)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(format!("{value}\n")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
