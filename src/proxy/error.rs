//! Every way a request can fail at the gateway, and the one place where a failure
//! becomes a status code and a JSON body carrying the request id.

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::aggregate::AggregateError;
use crate::routing::MethodSet;
use crate::upstream::{Rejection, ResponseBody, UpstreamError};

use crate::request_id::X_REQUEST_ID;

/// Why the gateway answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("method not allowed on this path")]
    MethodNotAllowed(MethodSet),
    #[error("the request target is longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("the request head is larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("the request's transfer coding is not supported; only `chunked` is")]
    UnsupportedTransferCoding,
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request's Expect header asks for something other than `100-continue`")]
    ExpectationFailed,
    #[error("upstream {upstream:?} is overloaded: {reason}")]
    Overloaded { upstream: String, reason: Rejection },
    #[error("upstream {upstream:?}: {error}")]
    Upstream {
        upstream: String,
        error: UpstreamError,
    },
    #[error("route {route:?} has {limit} WebSocket connections open, its limit")]
    WebSocketLimit { route: String, limit: usize },
    #[error("aggregate route {route:?}: {error}")]
    Aggregate {
        route: String,
        error: AggregateError,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge { .. } | ProxyError::TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            ProxyError::Overloaded { .. } | ProxyError::WebSocketLimit { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream { error, .. } => error.status(),
            ProxyError::Aggregate { error, .. } => error.status(),
        }
    }

    /// A stable, machine-readable name for the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::HeadTooLarge { .. } => "request_head_too_large",
            ProxyError::TooManyHeaders { .. } => "too_many_headers",
            ProxyError::UnsupportedTransferCoding => "unsupported_transfer_coding",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::ExpectationFailed => "expectation_failed",
            ProxyError::Overloaded { .. } => "upstream_overloaded",
            ProxyError::WebSocketLimit { .. } => "websocket_limit",
            ProxyError::Upstream { error, .. } => error.code(),
            ProxyError::Aggregate { error, .. } => error.code(),
        }
    }

    /// The response the client gets: the status, a JSON body, the request id.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<ResponseBody> {
        let status = self.status();
        let mut body = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "request_id": request_id.to_str().unwrap_or_default(),
        });
        if let ProxyError::Aggregate { error, .. } = &self {
            body["call"] = serde_json::Value::from(error.call());
        }
        let mut response = Response::new(ResponseBody::full(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(X_REQUEST_ID, request_id.clone());
        match &self {
            ProxyError::MethodNotAllowed(allowed) => {
                headers.insert(ALLOW, allowed.allow_header());
            }
            ProxyError::Overloaded { .. } | ProxyError::WebSocketLimit { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
