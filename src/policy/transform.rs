//! Header transforms, the last policy of the step: a named policy's `headers` removes,
//! sets and adds fields on the request (after the gateway's forwarding headers and
//! request id, so a transform may remove `X-Forwarded-Host`, say) and on every answer
//! of the route ([`Transform::finish`]: the upstream's, a gateway error, a policy's own
//! answer), in that order: `remove`, `set`, `add`.
//!
//! Values are built once per configuration and route (`{route}` filled in then); a
//! value with per-request placeholders is rendered into one buffer per field. A value
//! that would not be a valid header value (a path parameter with a control character,
//! say) is left out and counted in `portcullis_header_transform_skipped_total`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus::IntCounter;

use crate::config::header_transforms::{HeaderEdits, HeaderTransformsConfig, Piece, ValueTemplate};

/// A named policy's `headers` on one route.
#[derive(Debug, Clone)]
pub struct Transform {
    pub(super) policy: Arc<str>,
    request: Arc<Edits>,
    response: Arc<Edits>,
    skipped: IntCounter,
    uses_params: bool,
}

#[derive(Debug, Default)]
struct Edits {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, Value)]>,
    add: Box<[(HeaderName, Value)]>,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// A field value, ready for one route.
#[derive(Debug)]
enum Value {
    Static(HeaderValue),
    /// The request id alone: its value is cloned, nothing is built.
    RequestId,
    Rendered(Box<[Part]>),
}

#[derive(Debug)]
enum Part {
    Literal(Box<[u8]>),
    ClientIp,
    RequestId,
    Consumer,
    JwtClaim(Box<str>),
    Param(Box<str>),
}

/// What a request's values are built from.
pub struct Inputs<'a> {
    pub client_ip: IpAddr,
    pub request_id: &'a HeaderValue,
    pub params: &'a [(String, String)],
    /// The consumer an auth policy identified, if one did.
    pub consumer: Option<&'a str>,
    /// The claims of the token a `jwt` method verified, if one did.
    pub claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl Transform {
    /// `config` for route `route`.
    pub fn new(
        policy: &str,
        route: &str,
        config: &HeaderTransformsConfig,
        skipped: IntCounter,
    ) -> Self {
        let uses_params = config
            .request
            .set
            .iter()
            .chain(&config.request.add)
            .any(|(_, value)| value.params().next().is_some());
        Transform {
            policy: policy.into(),
            request: Arc::new(Edits::new(&config.request, route)),
            response: Arc::new(Edits::new(&config.response, route)),
            skipped,
            uses_params,
        }
    }

    /// Whether a request value names a path parameter.
    pub fn uses_params(&self) -> bool {
        self.uses_params
    }

    /// Changes the request's `headers` (on their way upstream).
    pub fn apply_to_request(&self, headers: &mut HeaderMap, inputs: &Inputs<'_>) {
        let edits = &*self.request;
        if edits.is_empty() {
            return;
        }
        for name in edits.remove.iter() {
            headers.remove(name);
        }
        for (name, value) in edits.set.iter() {
            match self.value(value, inputs) {
                Some(value) => {
                    headers.insert(name.clone(), value);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
        for (name, value) in edits.add.iter() {
            if let Some(value) = self.value(value, inputs) {
                headers.append(name.clone(), value);
            }
        }
    }

    /// Changes an answer's `headers` (on their way to the client).
    pub fn finish(&self, headers: &mut HeaderMap) {
        let edits = &*self.response;
        for name in edits.remove.iter() {
            headers.remove(name);
        }
        for (name, value) in edits.set.iter() {
            if let Value::Static(value) = value {
                headers.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in edits.add.iter() {
            if let Value::Static(value) = value {
                headers.append(name.clone(), value.clone());
            }
        }
    }

    fn value(&self, value: &Value, inputs: &Inputs<'_>) -> Option<HeaderValue> {
        let built = match value {
            Value::Static(value) => return Some(value.clone()),
            Value::RequestId => return Some(inputs.request_id.clone()),
            Value::Rendered(parts) => render(parts, inputs),
        };
        if built.is_none() {
            self.skipped.inc();
            tracing::debug!(
                policy = &*self.policy,
                "a header transform's value is not a valid header value for this request; left out"
            );
        }
        built
    }
}

/// The value of `parts` for this request; `None` when it is not a valid header value.
fn render(parts: &[Part], inputs: &Inputs<'_>) -> Option<HeaderValue> {
    let mut out = BytesMut::with_capacity(64);
    for part in parts {
        match part {
            Part::Literal(bytes) => out.extend_from_slice(bytes),
            Part::RequestId => out.extend_from_slice(inputs.request_id.as_bytes()),
            Part::ClientIp => write!(out, "{}", inputs.client_ip).ok()?,
            Part::Consumer => out.extend_from_slice(inputs.consumer?.as_bytes()),
            // A string claim as it is, a number or boolean written out; other claims
            // (and a request without the claim) leave the field out.
            Part::JwtClaim(name) => match inputs.claims?.get(&**name)? {
                serde_json::Value::String(text) => out.extend_from_slice(text.as_bytes()),
                value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                    write!(out, "{value}").ok()?
                }
                _ => return None,
            },
            Part::Param(name) => {
                let (_, value) = inputs.params.iter().find(|(n, _)| **n == **name)?;
                out.extend_from_slice(value.as_bytes());
            }
        }
    }
    HeaderValue::from_maybe_shared(out.freeze()).ok()
}

impl Edits {
    fn new(config: &HeaderEdits, route: &str) -> Self {
        let values = |list: &[(HeaderName, ValueTemplate)]| -> Box<[(HeaderName, Value)]> {
            list.iter()
                .filter_map(|(name, template)| Some((name.clone(), Value::new(template, route)?)))
                .collect()
        };
        Edits {
            remove: config.remove.clone().into_boxed_slice(),
            set: values(&config.set),
            add: values(&config.add),
        }
    }
}

impl Value {
    /// `template` with `{route}` filled in; `None` only if the route's name does not
    /// make a valid value (route names are checked, so never).
    fn new(template: &ValueTemplate, route: &str) -> Option<Self> {
        let pieces = match template {
            ValueTemplate::Static(value) => return Some(Value::Static(value.clone())),
            ValueTemplate::Pieces(pieces) => pieces,
        };
        if let [Piece::RequestId] = pieces.as_slice() {
            return Some(Value::RequestId);
        }
        // Literal text and `{route}` next to each other become one literal.
        let mut parts: Vec<Part> = Vec::with_capacity(pieces.len());
        let mut literal: Vec<u8> = Vec::new();
        for piece in pieces {
            let part = match piece {
                Piece::Literal(text) => {
                    literal.extend_from_slice(text.as_bytes());
                    continue;
                }
                Piece::Route => {
                    literal.extend_from_slice(route.as_bytes());
                    continue;
                }
                Piece::ClientIp => Part::ClientIp,
                Piece::RequestId => Part::RequestId,
                Piece::Consumer => Part::Consumer,
                Piece::JwtClaim(name) => Part::JwtClaim(name.as_str().into()),
                Piece::Param(name) => Part::Param(name.as_str().into()),
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(
                    std::mem::take(&mut literal).into_boxed_slice(),
                ));
            }
            parts.push(part);
        }
        if parts.is_empty() {
            return HeaderValue::from_bytes(&literal).ok().map(Value::Static);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into_boxed_slice()));
        }
        Some(Value::Rendered(parts.into_boxed_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn transform(request: HeaderEdits, response: HeaderEdits) -> Transform {
        let config = HeaderTransformsConfig { request, response };
        Transform::new(
            "p",
            "users",
            &config,
            Metrics::new().header_transform_skipped("users", "p"),
        )
    }

    fn template(text: &str) -> ValueTemplate {
        ValueTemplate::parse(text).expect("template")
    }

    fn name(text: &'static str) -> HeaderName {
        HeaderName::from_static(text)
    }

    #[test]
    fn request_edits_remove_then_set_then_add_with_placeholders_filled() {
        let policy = transform(
            HeaderEdits {
                remove: vec![name("x-internal"), name("x-forwarded-host")],
                set: vec![
                    (name("x-client-ip"), template("{client_ip}")),
                    (name("x-trace"), template("{route}/{id}/{request_id}")),
                    (name("x-id"), template("{request_id}")),
                    (name("x-route"), template("r={route}")),
                ],
                add: vec![(name("x-tag"), template("b"))],
            },
            HeaderEdits::default(),
        );
        assert!(policy.uses_params());
        let mut headers = HeaderMap::new();
        headers.insert("x-internal", HeaderValue::from_static("secret"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("h"));
        headers.insert("x-client-ip", HeaderValue::from_static("spoofed"));
        headers.insert("x-tag", HeaderValue::from_static("a"));
        let params = [("id".to_owned(), "42".to_owned())];
        let id = HeaderValue::from_static("req-1");
        let inputs = Inputs {
            client_ip: IpAddr::from([192, 0, 2, 7]),
            request_id: &id,
            params: &params,
            consumer: None,
            claims: None,
        };
        policy.apply_to_request(&mut headers, &inputs);
        assert!(!headers.contains_key("x-internal"));
        assert!(!headers.contains_key("x-forwarded-host"));
        assert_eq!(headers["x-client-ip"], "192.0.2.7");
        assert_eq!(headers["x-trace"], "users/42/req-1");
        assert_eq!(headers["x-id"], "req-1");
        assert_eq!(headers["x-route"], "r=users");
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
    }

    #[test]
    fn jwt_claims_fill_their_placeholders_and_a_missing_claim_leaves_the_field_out() {
        let metrics = Metrics::new();
        let config = HeaderTransformsConfig {
            request: HeaderEdits {
                set: vec![
                    (name("x-user"), template("u={jwt.sub}")),
                    (name("x-level"), template("{jwt.level}")),
                    (name("x-tenant"), template("{jwt.tenant}")),
                ],
                ..HeaderEdits::default()
            },
            response: HeaderEdits::default(),
        };
        let skipped = metrics.header_transform_skipped("users", "p");
        let policy = Transform::new("p", "users", &config, skipped);
        let claims = match serde_json::json!({"sub": "alice", "level": 3}) {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("spoofed"));
        let id = HeaderValue::from_static("req-1");
        let inputs = Inputs {
            client_ip: IpAddr::from([192, 0, 2, 7]),
            request_id: &id,
            params: &[],
            consumer: None,
            claims: Some(&claims),
        };
        policy.apply_to_request(&mut headers, &inputs);
        assert_eq!(headers["x-user"], "u=alice");
        assert_eq!(headers["x-level"], "3");
        assert!(!headers.contains_key("x-tenant"), "no such claim: left out");
        assert!(ValueTemplate::parse("{jwt.}").is_err());
    }

    #[test]
    fn a_value_that_is_not_a_header_value_is_left_out_and_counted() {
        let metrics = Metrics::new();
        let skipped = metrics.header_transform_skipped("users", "p");
        let config = HeaderTransformsConfig {
            request: HeaderEdits {
                set: vec![(name("x-user"), template("{id}"))],
                ..HeaderEdits::default()
            },
            response: HeaderEdits::default(),
        };
        let policy = Transform::new("p", "users", &config, skipped.clone());
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("from the client"));
        let params = [("id".to_owned(), "a\r\nb".to_owned())];
        let id = HeaderValue::from_static("req-1");
        let inputs = Inputs {
            client_ip: IpAddr::from([192, 0, 2, 7]),
            request_id: &id,
            params: &params,
            consumer: None,
            claims: None,
        };
        policy.apply_to_request(&mut headers, &inputs);
        assert!(
            !headers.contains_key("x-user"),
            "the client's value does not survive"
        );
        assert_eq!(skipped.get(), 1);
    }

    #[test]
    fn answer_edits_are_static() {
        let policy = transform(
            HeaderEdits::default(),
            HeaderEdits {
                remove: vec![name("server")],
                set: vec![(name("x-served-by"), template("{route}"))],
                add: vec![(name("cache-control"), template("no-store"))],
            },
        );
        let mut headers = HeaderMap::new();
        headers.insert("server", HeaderValue::from_static("nginx"));
        policy.finish(&mut headers);
        assert!(!headers.contains_key("server"));
        assert_eq!(headers["x-served-by"], "users");
        assert_eq!(headers["cache-control"], "no-store");
    }
}
