//! The one place where a failure becomes what the client sees. Every layer's error
//! (the HTTP/1.1 server's refusals, the proxy's checks, the upstream client's and the
//! aggregate calls' failures) arrives here as a [`ProxyError`] or a [`CallError`] and is
//! rescued into a [`Rescued`]: a status, a stable code, a short message safe for any
//! client, the full cause, and whether the connection must close.
//!
//! The full cause (upstream addresses, library error text) goes to the log; a client
//! reads it only on a listener with `error_detail: verbose`. Requests with a
//! `content-type` of `application/grpc…` get a gRPC trailers-only answer
//! (`grpc-status`, `grpc-message`) instead of a JSON body.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};

use super::error::ProxyError;
use crate::aggregate::{AggregateError, CallError, CallFailure, Describe};
use crate::config::ErrorDetail;
use crate::policy::PolicyError;
use crate::request_id::X_REQUEST_ID;
use crate::upstream::{ResponseBody, UpstreamError};

/// Marks a gateway answer after which the client's connection must close (HTTP/1.1):
/// the request's framing is in doubt, or its body was left unread on purpose.
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection;

/// A failure as the client is told it.
#[derive(Debug)]
pub struct Rescued {
    pub status: StatusCode,
    /// Stable and machine-readable: the `error` field.
    pub code: &'static str,
    /// Safe for any client: no upstream address, no library error text.
    pub message: Cow<'static, str>,
    /// The whole cause, for the log and for listeners with `error_detail: verbose`.
    pub detail: String,
    /// The connection must close after this answer.
    pub close: bool,
}

/// How the client asked: JSON answers, or gRPC ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Json,
    Grpc,
}

impl Dialect {
    /// gRPC when the request's `content-type` is `application/grpc` or one of its
    /// `+proto`, `+json`… variants.
    pub fn of(headers: &HeaderMap) -> Dialect {
        let grpc = headers
            .get(CONTENT_TYPE)
            .map(HeaderValue::as_bytes)
            .is_some_and(|value| {
                value.len() >= 16
                    && value[..16].eq_ignore_ascii_case(b"application/grpc")
                    && matches!(value.get(16), None | Some(b'+' | b';'))
            });
        if grpc {
            Dialect::Grpc
        } else {
            Dialect::Json
        }
    }
}

/// The status, code, messages and connection fate of `error`.
pub fn rescue(error: &ProxyError) -> Rescued {
    let (status, code, close) = match error {
        ProxyError::NoRoute => (StatusCode::NOT_FOUND, "no_route", false),
        ProxyError::MethodNotAllowed(_) => {
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", false)
        }
        ProxyError::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "uri_too_long", false),
        ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", false),
        ProxyError::HeadTooLarge { .. } => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_head_too_large",
            true,
        ),
        ProxyError::TooManyHeaders { .. } => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too_many_headers",
            true,
        ),
        ProxyError::UnsupportedTransferCoding => (
            StatusCode::NOT_IMPLEMENTED,
            "unsupported_transfer_coding",
            true,
        ),
        ProxyError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", true),
        ProxyError::ExpectationFailed => {
            (StatusCode::EXPECTATION_FAILED, "expectation_failed", true)
        }
        ProxyError::Overloaded { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_overloaded",
            false,
        ),
        ProxyError::WebSocketLimit { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "websocket_limit", false)
        }
        ProxyError::Policy(error) => {
            let (status, code) = policy_status(error);
            (status, code, false)
        }
        ProxyError::Upstream { error, .. } => {
            let (status, code) = upstream_status(error);
            let close = matches!(
                error,
                UpstreamError::BodyTooLarge { .. } | UpstreamError::ClientBody(_)
            );
            (status, code, close)
        }
        ProxyError::Aggregate { error, .. } => {
            let AggregateError::Call { error: call, .. } = error;
            let code = match call {
                CallError::RouteTimeout(_) => "aggregate_timeout",
                other => call_status(other).1,
            };
            (call_status(call).0, code, false)
        }
    };
    Rescued {
        status,
        code,
        message: public_message(error),
        detail: error.to_string(),
        close,
    }
}

/// The response for `error`: JSON (or gRPC), the request id, and the headers its status
/// calls for (`Allow`, `Retry-After`).
pub fn response(
    error: &ProxyError,
    rescued: &Rescued,
    request_id: &HeaderValue,
    detail: ErrorDetail,
    dialect: Dialect,
) -> Response<ResponseBody> {
    let message = match detail {
        ErrorDetail::Brief => rescued.message.as_ref(),
        ErrorDetail::Verbose => rescued.detail.as_str(),
    };
    let mut response = match dialect {
        Dialect::Json => {
            let mut body = serde_json::json!({
                "error": rescued.code,
                "message": message,
                "request_id": request_id.to_str().unwrap_or_default(),
            });
            if let ProxyError::Aggregate {
                error: AggregateError::Call { call, .. },
                ..
            } = error
            {
                body["call"] = serde_json::Value::from(call.as_str());
            }
            let mut response = Response::new(ResponseBody::full(body.to_string()));
            *response.status_mut() = rescued.status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Dialect::Grpc => grpc_response(grpc_status(rescued), rescued.code, message),
    };
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID, request_id.clone());
    match error {
        ProxyError::MethodNotAllowed(allowed) => {
            headers.insert(ALLOW, allowed.allow_header());
        }
        ProxyError::Overloaded { .. } | ProxyError::WebSocketLimit { .. } => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        ProxyError::Policy(PolicyError::RateLimited {
            retry_after_secs, ..
        }) => {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        ProxyError::Policy(PolicyError::Unauthorized { challenges, .. }) => {
            for challenge in challenges {
                headers.append(WWW_AUTHENTICATE, challenge.clone());
            }
        }
        _ => {}
    }
    if rescued.close {
        response.extensions_mut().insert(CloseConnection);
    }
    response
}

/// A gRPC trailers-only answer: HTTP 200, the status in `grpc-status`, the message
/// percent-encoded in `grpc-message`, no body (RFC: gRPC over HTTP/2, "Responses").
fn grpc_response(status: u8, code: &str, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(status)));
    let text = format!("{code}: {message}");
    if let Ok(value) = HeaderValue::from_str(&grpc_percent_encode(&text)) {
        headers.insert("grpc-message", value);
    }
    response
}

/// The gRPC status code for a gateway failure (grpc/doc/statuscodes.md).
fn grpc_status(rescued: &Rescued) -> u8 {
    const INVALID_ARGUMENT: u8 = 3;
    const PERMISSION_DENIED: u8 = 7;
    const DEADLINE_EXCEEDED: u8 = 4;
    const RESOURCE_EXHAUSTED: u8 = 8;
    const FAILED_PRECONDITION: u8 = 9;
    const UNIMPLEMENTED: u8 = 12;
    const INTERNAL: u8 = 13;
    const UNAVAILABLE: u8 = 14;
    const UNKNOWN: u8 = 2;
    const UNAUTHENTICATED: u8 = 16;
    match rescued.code {
        "no_route" | "method_not_allowed" | "unsupported_transfer_coding" => UNIMPLEMENTED,
        "uri_too_long" | "bad_request" | "client_body_error" => INVALID_ARGUMENT,
        "request_head_too_large" | "too_many_headers" | "body_too_large" | "rate_limited" => {
            RESOURCE_EXHAUSTED
        }
        "expectation_failed" => FAILED_PRECONDITION,
        "ip_denied" | "forbidden" => PERMISSION_DENIED,
        "unauthorized" => UNAUTHENTICATED,
        "upstream_timeout" | "upstream_connect_timeout" | "aggregate_timeout" | "timeout" => {
            DEADLINE_EXCEEDED
        }
        "upstream_overloaded"
        | "websocket_limit"
        | "upstream_unavailable"
        | "gateway_out_of_descriptors"
        | "upstream_connect_failed"
        | "upstream_bad_response"
        | "rate_limit_store_unavailable"
        | "auth_unavailable" => UNAVAILABLE,
        _ if rescued.status.is_server_error() => INTERNAL,
        _ => UNKNOWN,
    }
}

/// `grpc-message` is percent-encoded UTF-8: everything outside printable ASCII, and `%`.
fn grpc_percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// What any client may read: the messages that carry no upstream address or library
/// error text are the errors' own; the others are said without their cause.
fn public_message(error: &ProxyError) -> Cow<'static, str> {
    match error {
        ProxyError::Upstream { upstream, error } => {
            format!("upstream {upstream:?}: {}", public_upstream_message(error)).into()
        }
        ProxyError::Aggregate {
            route,
            error: AggregateError::Call { call, error },
        } => format!(
            "aggregate route {route:?}: required call `{call}` failed: {}",
            public_call_message(error)
        )
        .into(),
        ProxyError::BadRequest(text) => Cow::Borrowed(*text),
        // Which check failed is not said; the cause of an auth failure is for the log.
        ProxyError::Policy(PolicyError::Unauthorized { .. }) => {
            "authentication is required (the credentials are missing or not valid)".into()
        }
        ProxyError::Policy(PolicyError::Forbidden { .. }) => {
            "the authenticated identity may not use this route".into()
        }
        ProxyError::Policy(PolicyError::AuthUnavailable { .. }) => {
            "authentication could not be decided; try again later".into()
        }
        // The store's error names its address: for the log only.
        ProxyError::Policy(PolicyError::RateLimitStoreFailed { policy, limit, .. }) => {
            format!("rate limit {limit:?} of policy {policy:?} could not be decided").into()
        }
        other => other.to_string().into(),
    }
}

fn public_upstream_message(error: &UpstreamError) -> Cow<'static, str> {
    match error {
        UpstreamError::Connect { .. } => "could not connect".into(),
        UpstreamError::ConnectTimeout { .. } => "connecting timed out".into(),
        UpstreamError::TlsVerify { .. } => "its TLS certificate failed verification".into(),
        UpstreamError::Timeout { timeout, .. } => {
            format!("no response headers within {timeout:?}").into()
        }
        UpstreamError::Protocol { reset: true, .. } => {
            "the connection broke before a response arrived".into()
        }
        UpstreamError::Protocol { reset: false, .. } => {
            "the response was malformed or cut short".into()
        }
        UpstreamError::ClientBody(_) => "the client's request body could not be read".into(),
        UpstreamError::OutOfDescriptors { .. } => {
            "the gateway has no file descriptor free for a connection".into()
        }
        UpstreamError::BodyTooLarge { .. } | UpstreamError::NoHealthyEndpoint => {
            error.to_string().into()
        }
    }
}

fn public_call_message(error: &CallError) -> Cow<'static, str> {
    match error {
        CallError::Upstream(error) => public_upstream_message(error),
        CallError::InvalidJson(_) => "the response body is not JSON".into(),
        CallError::Body(_) => "reading the response body failed".into(),
        other => other.to_string().into(),
    }
}

fn policy_status(error: &PolicyError) -> (StatusCode, &'static str) {
    match error {
        PolicyError::IpDenied { .. } => (StatusCode::FORBIDDEN, "ip_denied"),
        PolicyError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        PolicyError::RateLimitStoreFailed { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limit_store_unavailable",
        ),
        PolicyError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
        PolicyError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        PolicyError::AuthUnavailable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable")
        }
    }
}

fn upstream_status(error: &UpstreamError) -> (StatusCode, &'static str) {
    match error {
        UpstreamError::Connect { .. } | UpstreamError::TlsVerify { .. } => {
            (StatusCode::BAD_GATEWAY, "upstream_connect_failed")
        }
        UpstreamError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "upstream_bad_response"),
        UpstreamError::ConnectTimeout { .. } => {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_connect_timeout")
        }
        UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        UpstreamError::NoHealthyEndpoint => {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable")
        }
        UpstreamError::OutOfDescriptors { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway_out_of_descriptors",
        ),
        UpstreamError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        UpstreamError::ClientBody(_) => (StatusCode::BAD_REQUEST, "client_body_error"),
    }
}

/// The status a failed aggregate call maps to when it fails the route, and its code.
fn call_status(error: &CallError) -> (StatusCode, &'static str) {
    match error {
        CallError::Status(_) => (StatusCode::BAD_GATEWAY, "upstream_status"),
        CallError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "upstream_overloaded"),
        CallError::Upstream(UpstreamError::Timeout { .. }) | CallError::Timeout(_) => {
            (StatusCode::GATEWAY_TIMEOUT, "timeout")
        }
        CallError::Upstream(error) => upstream_status(error),
        CallError::RouteTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "route_timeout"),
        CallError::TooLarge(_) => (StatusCode::BAD_GATEWAY, "body_too_large"),
        CallError::InvalidJson(_) | CallError::Body(_) => (StatusCode::BAD_GATEWAY, "invalid_body"),
        CallError::DependencyFailed(_) => (StatusCode::BAD_GATEWAY, "dependency_failed"),
        CallError::Missing(_) => (StatusCode::BAD_GATEWAY, "missing_value"),
    }
}

/// How an aggregate call's failure is described inside a partial answer, on a listener
/// whose `error_detail` is `detail`. The status is the upstream's own when it answered
/// with an error.
pub fn describe_calls(detail: ErrorDetail) -> Describe {
    fn brief(error: &CallError) -> CallFailure {
        described(error, public_call_message(error).into_owned())
    }
    fn verbose(error: &CallError) -> CallFailure {
        described(error, error.to_string())
    }
    match detail {
        ErrorDetail::Brief => brief,
        ErrorDetail::Verbose => verbose,
    }
}

fn described(error: &CallError, message: String) -> CallFailure {
    let (mut status, code) = call_status(error);
    if let CallError::Status(own) = error {
        status = *own;
    }
    CallFailure {
        status,
        failing_status: call_status(error).0,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised() {
        let dialect = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            Dialect::of(&headers)
        };
        assert_eq!(dialect("application/grpc"), Dialect::Grpc);
        assert_eq!(dialect("application/grpc+proto"), Dialect::Grpc);
        assert_eq!(dialect("Application/GRPC;charset=utf-8"), Dialect::Grpc);
        assert_eq!(dialect("application/grpc-web"), Dialect::Json);
        assert_eq!(dialect("application/json"), Dialect::Json);
        assert_eq!(Dialect::of(&HeaderMap::new()), Dialect::Json);
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }

    #[test]
    fn failed_calls_are_described_with_the_upstream_s_own_status() {
        let describe = describe_calls(ErrorDetail::Brief);
        let timeout = describe(&CallError::Timeout(std::time::Duration::from_millis(300)));
        assert_eq!(timeout.to_json()["status"], 504);
        assert_eq!(timeout.to_json()["error"], "timeout");
        let status = describe(&CallError::Status(StatusCode::NOT_FOUND));
        assert_eq!(status.status, StatusCode::NOT_FOUND);
        assert_eq!(status.failing_status, StatusCode::BAD_GATEWAY);
        assert_eq!(status.code, "upstream_status");
        let invalid = CallError::InvalidJson("expected value at line 1 column 1".into());
        assert!(!describe(&invalid).message.contains("line 1"));
        assert!(describe_calls(ErrorDetail::Verbose)(&invalid)
            .message
            .contains("line 1"));
    }

    #[test]
    fn a_rate_limit_is_429_resource_exhausted_with_retry_after() {
        let error = ProxyError::Policy(PolicyError::RateLimited {
            policy: "api".into(),
            limit: "0".into(),
            retry_after_secs: 7,
        });
        let rescued = rescue(&error);
        assert_eq!(rescued.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rescued.code, "rate_limited");
        assert!(!rescued.close);
        assert_eq!(grpc_status(&rescued), 8, "RESOURCE_EXHAUSTED");
        let id = HeaderValue::from_static("abc");
        for dialect in [Dialect::Json, Dialect::Grpc] {
            let response = response(&error, &rescued, &id, ErrorDetail::Brief, dialect);
            assert_eq!(response.headers()[RETRY_AFTER], "7");
        }
    }

    #[test]
    fn connect_failures_keep_their_cause_out_of_the_public_message() {
        let error = ProxyError::Upstream {
            upstream: "users".into(),
            error: UpstreamError::Connect {
                endpoint: "https://10.1.2.3:8443".into(),
                source: "invalid peer certificate: CaUsedAsEndEntity".into(),
            },
        };
        let rescued = rescue(&error);
        assert_eq!(rescued.status, StatusCode::BAD_GATEWAY);
        assert_eq!(rescued.code, "upstream_connect_failed");
        assert!(!rescued.message.contains("10.1.2.3"), "{}", rescued.message);
        assert!(
            !rescued.message.contains("certificate"),
            "{}",
            rescued.message
        );
        assert!(rescued.message.contains("users"), "{}", rescued.message);
        assert!(
            rescued.detail.contains("10.1.2.3:8443"),
            "{}",
            rescued.detail
        );
        assert!(
            rescued.detail.contains("CaUsedAsEndEntity"),
            "{}",
            rescued.detail
        );
    }
}
