//! A rate limit's key: the parts its `key` names, taken from the request and hashed
//! into one `u64`, so that a key costs the store the same few bytes however long the
//! values a client sends.
//!
//! Each part is hashed with a tag saying which part it is and whether it was present,
//! and with its length, so that `[header.a, header.b]` of `("xy", "z")` and `("x",
//! "yz")` are different keys, and an absent header is not the same as an empty one.
//!
//! - **Absent parts**: a request without the header (query parameter, path parameter)
//!   is keyed with an explicit *absent* marker, so all requests lacking it share one
//!   bucket. Envoy skips the limit when a descriptor's header is missing, which lets a
//!   client escape the limit by leaving the header out; Kong falls back to the
//!   client's address. Sharing one bucket means leaving a value out never buys a client
//!   more than sending one; a deployment that wants keyless clients apart keys a
//!   second limit by `client_ip`.
//! - **Bounds**: at most [`MAX_PART_BYTES`] of each value are hashed; values that
//!   agree on those share a bucket. Query and path parameters are percent-decoded
//!   first (`%61` and `a` are one key), so encoding variants are not fresh buckets.
//! - **Hash**: SipHash-1-3, keyed by the store ([`super::Store::key_hasher`]): the local
//!   store draws its keys at random when it is created (and keeps them with its buckets
//!   across reloads), so a client cannot compute which keys collide or share a shard,
//!   and the store's maps can use the result as their own hash; a shared store needs
//!   the same key in every gateway process and uses fixed keys.

use std::hash::Hasher;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::config::RateLimitKeyPart;

/// Bytes of one value hashed at most.
pub const MAX_PART_BYTES: usize = 4096;

/// The parts of one limit's key, compiled for a route.
#[derive(Debug, Clone)]
pub struct KeySpec {
    parts: Box<[Part]>,
}

#[derive(Debug, Clone)]
enum Part {
    ClientIp,
    /// The route's name, known when the route's policies are compiled.
    Route(Box<str>),
    Header(HeaderName),
    Query(Box<str>),
    Param(Box<str>),
    Consumer,
    JwtClaim(Box<str>),
}

/// What a key is built from, besides the spec.
#[derive(Clone, Copy)]
pub struct KeySource<'a> {
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub params: &'a [(String, String)],
    /// The consumer an auth policy identified, if one did.
    pub consumer: Option<&'a str>,
    /// The claims of the token a `jwt` method verified, if one did.
    pub claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

// Tags: which part, present or absent.
const CLIENT_IP: u8 = 1;
const ROUTE: u8 = 2;
const HEADER: u8 = 3;
const QUERY: u8 = 4;
const PARAM: u8 = 5;
const CONSUMER: u8 = 6;
const JWT_CLAIM: u8 = 7;
const ABSENT: u8 = 0x80;

impl KeySpec {
    /// The spec of `parts` on the route called `route`.
    pub fn new(parts: &[RateLimitKeyPart], route: &str) -> KeySpec {
        let parts = parts
            .iter()
            .map(|part| match part {
                RateLimitKeyPart::ClientIp => Part::ClientIp,
                RateLimitKeyPart::Route => Part::Route(route.into()),
                RateLimitKeyPart::Header(name) => Part::Header(name.clone()),
                RateLimitKeyPart::Query(name) => Part::Query(name.as_str().into()),
                RateLimitKeyPart::Param(name) => Part::Param(name.as_str().into()),
                RateLimitKeyPart::Consumer => Part::Consumer,
                RateLimitKeyPart::JwtClaim(name) => Part::JwtClaim(name.as_str().into()),
            })
            .collect();
        KeySpec { parts }
    }

    /// Whether a part is a path parameter (the proxy then keeps the route's).
    pub fn needs_params(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Param(_)))
    }

    /// The request's key, hashed with `hasher` (fresh, from the store).
    pub fn key<H: Hasher>(&self, source: &KeySource<'_>, hasher: H) -> u64 {
        let mut key = KeyBytes::new(hasher);
        for part in self.parts.iter() {
            match part {
                Part::ClientIp => match source.client_ip {
                    IpAddr::V4(v4) => key.raw(CLIENT_IP, &v4.octets()),
                    IpAddr::V6(v6) => key.raw(CLIENT_IP, &v6.octets()),
                },
                Part::Route(name) => key.raw(ROUTE, name.as_bytes()),
                Part::Header(name) => match source.headers.get(name) {
                    Some(value) => key.raw(HEADER, value.as_bytes()),
                    None => key.absent(HEADER),
                },
                Part::Query(name) => match source.query.and_then(|q| query_value(q, name)) {
                    Some(value) => key.decoded(QUERY, value.as_bytes(), true),
                    None => key.absent(QUERY),
                },
                Part::Consumer => match source.consumer {
                    Some(name) => key.raw(CONSUMER, name.as_bytes()),
                    None => key.absent(CONSUMER),
                },
                Part::JwtClaim(name) => {
                    match source.claims.and_then(|claims| claims.get(&**name)) {
                        Some(serde_json::Value::String(text)) => {
                            key.raw(JWT_CLAIM, text.as_bytes())
                        }
                        // Numbers and booleans as written; arrays, objects and nulls
                        // are no key, and share the absent bucket.
                        Some(
                            value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)),
                        ) => key.raw(JWT_CLAIM, value.to_string().as_bytes()),
                        _ => key.absent(JWT_CLAIM),
                    }
                }
                Part::Param(name) => {
                    let value = source.params.iter().find(|(n, _)| **n == **name);
                    match value {
                        Some((_, value)) => key.decoded(PARAM, value.as_bytes(), false),
                        None => key.absent(PARAM),
                    }
                }
            }
        }
        key.finish()
    }
}

/// The key's bytes on their way into the hash, gathered on the stack so that a short
/// key is hashed in one write (each write of a hasher has a cost of its own).
struct KeyBytes<H> {
    buffer: [u8; 128],
    filled: usize,
    hasher: H,
}

impl<H: Hasher> KeyBytes<H> {
    fn new(hasher: H) -> KeyBytes<H> {
        KeyBytes {
            buffer: [0; 128],
            filled: 0,
            hasher,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.filled + bytes.len() > self.buffer.len() {
            self.hasher.write(&self.buffer[..self.filled]);
            self.filled = 0;
            if bytes.len() > self.buffer.len() {
                self.hasher.write(bytes);
                return;
            }
        }
        self.buffer[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    fn byte(&mut self, byte: u8) {
        if self.filled == self.buffer.len() {
            self.hasher.write(&self.buffer);
            self.filled = 0;
        }
        self.buffer[self.filled] = byte;
        self.filled += 1;
    }

    fn absent(&mut self, tag: u8) {
        self.byte(tag | ABSENT);
    }

    /// A value as it is, bounded, after its tag and length.
    fn raw(&mut self, tag: u8, value: &[u8]) {
        let value = &value[..value.len().min(MAX_PART_BYTES)];
        self.byte(tag);
        self.push(&(value.len() as u16).to_le_bytes());
        self.push(value);
    }

    /// A value percent-decoded (and `+` as a space, in a query), bounded by its encoded
    /// length, then its decoded length. Malformed escapes are hashed as written.
    fn decoded(&mut self, tag: u8, value: &[u8], plus_is_space: bool) {
        let value = &value[..value.len().min(MAX_PART_BYTES)];
        self.byte(tag);
        let mut length: u16 = 0;
        let mut i = 0;
        while i < value.len() {
            let escaped = match value.get(i + 1..i + 3) {
                Some(&[high, low]) if value[i] == b'%' => hex(high).zip(hex(low)),
                _ => None,
            };
            let byte = match (escaped, value[i]) {
                (Some((high, low)), _) => {
                    i += 2;
                    high << 4 | low
                }
                (None, b'+') if plus_is_space => b' ',
                (None, other) => other,
            };
            i += 1;
            self.byte(byte);
            length += 1;
        }
        self.push(&length.to_le_bytes());
    }

    fn finish(mut self) -> u64 {
        self.hasher.write(&self.buffer[..self.filled]);
        self.hasher.finish()
    }
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The (first) value of parameter `name` in `query`, still encoded.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use std::hash::DefaultHasher;

    use http::HeaderValue;

    use super::*;

    fn parts(text: &[&str]) -> Vec<RateLimitKeyPart> {
        text.iter()
            .map(|t| crate::config::parse_key_part(t).expect("a part"))
            .collect()
    }

    fn key_of(spec: &KeySpec, headers: &HeaderMap, query: Option<&str>) -> u64 {
        spec.key(
            &KeySource {
                client_ip: IpAddr::from([192, 0, 2, 1]),
                headers,
                query,
                params: &[("id".into(), "a%2Fb".into())],
                consumer: None,
                claims: None,
            },
            DefaultHasher::new(),
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_same_request_gets_the_same_key_and_parts_tell_apart() {
        let spec = KeySpec::new(&parts(&["client_ip", "header.x-api-key"]), "r");
        let a = headers(&[("x-api-key", "alpha")]);
        let b = headers(&[("x-api-key", "beta")]);
        assert_eq!(key_of(&spec, &a, None), key_of(&spec, &a, None));
        assert_ne!(key_of(&spec, &a, None), key_of(&spec, &b, None));
        // Parts do not run into each other.
        let two = KeySpec::new(&parts(&["header.a", "header.b"]), "r");
        assert_ne!(
            key_of(&two, &headers(&[("a", "xy"), ("b", "z")]), None),
            key_of(&two, &headers(&[("a", "x"), ("b", "yz")]), None)
        );
    }

    #[test]
    fn an_absent_part_is_its_own_key_not_an_empty_value() {
        let spec = KeySpec::new(&parts(&["header.x-api-key"]), "r");
        let none = key_of(&spec, &HeaderMap::new(), None);
        assert_eq!(none, key_of(&spec, &headers(&[("other", "x")]), None));
        assert_ne!(none, key_of(&spec, &headers(&[("x-api-key", "")]), None));
        let query = KeySpec::new(&parts(&["query.k"]), "r");
        assert_eq!(
            key_of(&query, &HeaderMap::new(), None),
            key_of(&query, &HeaderMap::new(), Some("other=1"))
        );
        assert_ne!(
            key_of(&query, &HeaderMap::new(), Some("k")),
            key_of(&query, &HeaderMap::new(), None)
        );
    }

    #[test]
    fn the_route_part_is_the_route_s_name() {
        let one = KeySpec::new(&parts(&["route"]), "one");
        let two = KeySpec::new(&parts(&["route"]), "two");
        let map = HeaderMap::new();
        assert_ne!(key_of(&one, &map, None), key_of(&two, &map, None));
        let ip_one = KeySpec::new(&parts(&["client_ip"]), "one");
        let ip_two = KeySpec::new(&parts(&["client_ip"]), "two");
        assert_eq!(key_of(&ip_one, &map, None), key_of(&ip_two, &map, None));
    }

    #[test]
    fn query_and_path_parameters_are_percent_decoded() {
        let spec = KeySpec::new(&parts(&["query.k"]), "r");
        let map = HeaderMap::new();
        let plain = key_of(&spec, &map, Some("a=1&k=abc d"));
        assert_eq!(plain, key_of(&spec, &map, Some("k=%61bc+d&k=other")));
        assert_eq!(plain, key_of(&spec, &map, Some("k=%61%62%63%20d")));
        assert_ne!(plain, key_of(&spec, &map, Some("k=abcd")));
        // A malformed escape is hashed as written, not dropped.
        assert_ne!(
            key_of(&spec, &map, Some("k=%zz")),
            key_of(&spec, &map, Some("k=zz"))
        );
        let param = KeySpec::new(&parts(&["param.id"]), "r");
        assert!(param.needs_params());
        let encoded = key_of(&param, &map, None); // id = a%2Fb
        let decoded = param.key(
            &KeySource {
                client_ip: IpAddr::from([192, 0, 2, 1]),
                headers: &map,
                query: None,
                params: &[("id".into(), "a/b".into())],
                consumer: None,
                claims: None,
            },
            DefaultHasher::new(),
        );
        assert_eq!(encoded, decoded);
    }

    #[test]
    fn jwt_claims_key_by_their_value_and_absent_ones_share_a_bucket() {
        let spec = KeySpec::new(&parts(&["jwt.sub"]), "r");
        let map = HeaderMap::new();
        let key_with = |claims: Option<&serde_json::Map<String, serde_json::Value>>| {
            spec.key(
                &KeySource {
                    client_ip: IpAddr::from([192, 0, 2, 1]),
                    headers: &map,
                    query: None,
                    params: &[],
                    consumer: None,
                    claims,
                },
                DefaultHasher::new(),
            )
        };
        let claims = |value: serde_json::Value| match serde_json::json!({ "sub": value }) {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let (alice, bob) = (claims("alice".into()), claims("bob".into()));
        assert_eq!(
            key_with(Some(&alice)),
            key_with(Some(&claims("alice".into())))
        );
        assert_ne!(key_with(Some(&alice)), key_with(Some(&bob)));
        // A number is keyed as written; no token, no claim and an object share one.
        assert_eq!(
            key_with(Some(&claims(7.into()))),
            key_with(Some(&claims("7".into())))
        );
        let absent = key_with(None);
        assert_eq!(absent, key_with(Some(&serde_json::Map::new())));
        assert_eq!(absent, key_with(Some(&claims(serde_json::json!({"a": 1})))));
        assert_ne!(absent, key_with(Some(&claims("".into()))));
    }

    #[test]
    fn values_are_bounded() {
        let spec = KeySpec::new(&parts(&["header.x-api-key"]), "r");
        let long = "k".repeat(MAX_PART_BYTES);
        let longer = format!("{long}and-then-some");
        let key = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert("x-api-key", HeaderValue::from_str(value).expect("a value"));
            key_of(&spec, &map, None)
        };
        assert_eq!(key(&long), key(&longer), "past the bound, values share");
        assert_ne!(key(&long[1..]), key(&long));
        // Long query values are bounded too (and decoded within the bound).
        let query = KeySpec::new(&parts(&["query.k"]), "r");
        let map = HeaderMap::new();
        assert_eq!(
            key_of(&query, &map, Some(&format!("k={long}"))),
            key_of(&query, &map, Some(&format!("k={longer}")))
        );
    }
}
