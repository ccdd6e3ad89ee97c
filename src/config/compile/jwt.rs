//! A policy's `auth: { jwt: ... }` checked and compiled (see [`crate::config::jwt`]):
//! issuers and their keys (the JWKS upstream must exist, a secret must be readable and
//! long enough), algorithms that fit the kind of key, where the token is read from,
//! `claims_to_headers`, `require` and the token cache.

use std::path::Path;

use http::uri::PathAndQuery;
use http::HeaderName;

use super::Problems;
use crate::config::jwt::{
    defaults, IssuerKeys, JwksConfig, JwtConfig, JwtIssuerConfig, JwtSecret, RawJwks, RawJwt,
    RawJwtIssuer, RawSecret, TokenSource,
};

/// `key` is where the `jwt` mapping is (`policies.NAME.auth.jwt`); `upstreams` the
/// names of the file's upstreams; relative secret files are relative to `base`.
pub(crate) fn compile_jwt(
    key: &str,
    raw: &RawJwt,
    upstreams: &[&str],
    base: &Path,
    problems: &mut Problems,
) -> Option<JwtConfig> {
    let before = problems.error_count();
    if raw.issuers.is_empty() {
        problems.add(
            format!("{key}.issuers"),
            "list at least one issuer (its `issuer`, `algorithms` and `jwks` or `secret`)",
        );
    }
    let mut issuers = Vec::with_capacity(raw.issuers.len());
    for (i, issuer) in raw.issuers.iter().enumerate() {
        let at = format!("{key}.issuers[{i}]");
        if raw.issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
            problems.add(
                format!("{at}.issuer"),
                format!("issuer {:?} is listed twice", issuer.issuer),
            );
        }
        if let Some(issuer) = compile_issuer(&at, issuer, upstreams, base, problems) {
            issuers.push(issuer);
        }
    }
    let from = compile_from(key, raw, problems);
    let mut claims_to_headers: Vec<(String, HeaderName)> = Vec::new();
    for (claim, header) in &raw.claims_to_headers {
        let at = format!("{key}.claims_to_headers.{claim}");
        if claim.is_empty() {
            problems.add(&at, "the claim name must not be empty");
        }
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) if claims_to_headers.iter().any(|(_, h)| *h == name) => {
                problems.add(at, format!("another claim is already copied to {name}"));
            }
            Ok(name) if is_reserved(&name) => problems.add(
                at,
                format!("{name} is a header the gateway manages; copy the claim to another one"),
            ),
            Ok(name) => claims_to_headers.push((claim.clone(), name)),
            Err(_) => problems.add(at, format!("{header:?} is not a valid header name")),
        }
    }
    let mut require = Vec::with_capacity(raw.require.len());
    for (claim, values) in &raw.require {
        let values: Vec<String> = values.as_slice().iter().map(|v| v.0.clone()).collect();
        if values.is_empty() || values.iter().any(String::is_empty) {
            problems.add(
                format!("{key}.require.{claim}"),
                "list the value (or values) the claim must carry; empty values never match",
            );
        }
        require.push((claim.clone(), values));
    }
    let token_cache = match &raw.token_cache {
        None => Some(defaults::TOKEN_CACHE_ENTRIES),
        Some(cache) if !cache.enabled => None,
        Some(cache) => {
            if cache.max_entries == Some(0) {
                problems.add(
                    format!("{key}.token_cache.max_entries"),
                    "must be at least 1 (to turn the cache off, write `enabled: false`)",
                );
            }
            Some(cache.max_entries.unwrap_or(defaults::TOKEN_CACHE_ENTRIES))
        }
    };
    (problems.error_count() == before).then(|| JwtConfig {
        issuers,
        from,
        leeway: raw.leeway.map_or(defaults::LEEWAY, |d| d.0),
        claims_to_headers,
        require,
        token_cache,
        keep_credentials: raw.keep_credentials,
    })
}

/// Headers a claim may not be copied to: the credentials and the gateway's own.
fn is_reserved(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "cookie"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "upgrade"
            | "te"
            | "x-request-id"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
    )
}

fn compile_issuer(
    at: &str,
    raw: &RawJwtIssuer,
    upstreams: &[&str],
    base: &Path,
    problems: &mut Problems,
) -> Option<JwtIssuerConfig> {
    let before = problems.error_count();
    if raw.issuer.is_empty() {
        problems.add(
            format!("{at}.issuer"),
            "must not be empty: it is compared with the token's `iss`",
        );
    }
    if raw.algorithms.is_empty() {
        problems.add(
            format!("{at}.algorithms"),
            "list the algorithms this issuer signs with, e.g. [RS256]",
        );
    }
    for (i, algorithm) in raw.algorithms.iter().enumerate() {
        if raw.algorithms[..i].contains(algorithm) {
            problems.add(
                format!("{at}.algorithms[{i}]"),
                format!("{algorithm:?} is listed twice"),
            );
        }
    }
    if raw.audiences.iter().any(String::is_empty) {
        problems.add(format!("{at}.audiences"), "an audience must not be empty");
    }
    let keys = match (&raw.jwks, &raw.secret) {
        (Some(jwks), None) => {
            for (i, algorithm) in raw.algorithms.iter().enumerate() {
                if algorithm.is_hmac() {
                    problems.add(
                        format!("{at}.algorithms[{i}]"),
                        format!(
                            "{algorithm:?} is verified with a shared secret, not with a JWKS \
                             document's public keys (accepting it would let anyone who has \
                             the public key sign tokens); use `secret` for HMAC issuers"
                        ),
                    );
                }
            }
            compile_jwks(&format!("{at}.jwks"), jwks, upstreams, problems).map(IssuerKeys::Jwks)
        }
        (None, Some(secret)) => {
            for (i, algorithm) in raw.algorithms.iter().enumerate() {
                if !algorithm.is_hmac() {
                    problems.add(
                        format!("{at}.algorithms[{i}]"),
                        format!(
                            "{algorithm:?} is verified with a public key; an issuer with a \
                             `secret` signs with HS256, HS384 or HS512"
                        ),
                    );
                }
            }
            let min_len = raw
                .algorithms
                .iter()
                .map(|a| a.min_secret_len())
                .max()
                .unwrap_or(32);
            read_secret(&format!("{at}.secret"), secret, min_len, base, problems)
                .map(IssuerKeys::Secret)
        }
        (Some(_), Some(_)) => {
            problems.add(
                at,
                "has both `jwks` and `secret`: an issuer signs with public keys (`jwks`) or \
                 with a shared secret (`secret`), not both",
            );
            None
        }
        (None, None) => {
            problems.add(
                at,
                "needs its keys: `jwks: { upstream, path }` for public keys, or `secret` for HMAC",
            );
            None
        }
    };
    let keys = keys?;
    (problems.error_count() == before).then(|| JwtIssuerConfig {
        issuer: raw.issuer.clone(),
        audiences: raw.audiences.clone(),
        algorithms: raw.algorithms.clone(),
        keys,
    })
}

fn compile_jwks(
    at: &str,
    raw: &RawJwks,
    upstreams: &[&str],
    problems: &mut Problems,
) -> Option<JwksConfig> {
    let before = problems.error_count();
    if !upstreams.contains(&raw.upstream.as_str()) {
        problems.add(
            format!("{at}.upstream"),
            super::unknown_upstream(&raw.upstream, upstreams),
        );
    }
    let path = if raw.path.starts_with('/') {
        PathAndQuery::try_from(raw.path.as_str())
            .map_err(|e| problems.add(format!("{at}.path"), format!("invalid path: {e}")))
            .ok()
    } else {
        problems.add(
            format!("{at}.path"),
            format!(
                "{:?} must be a path starting with `/` (the scheme and host are the upstream's \
                 endpoints'), e.g. /.well-known/jwks.json",
                raw.path
            ),
        );
        None
    };
    let min_age =
        problems.positive_duration(format!("{at}.min_age"), raw.min_age, defaults::JWKS_MIN_AGE);
    let max_age =
        problems.positive_duration(format!("{at}.max_age"), raw.max_age, defaults::JWKS_MAX_AGE);
    if min_age > max_age {
        problems.add(
            format!("{at}.min_age"),
            format!("{min_age:?} is longer than max_age ({max_age:?})"),
        );
    }
    let refetch_interval = problems.positive_duration(
        format!("{at}.refetch_interval"),
        raw.refetch_interval,
        defaults::JWKS_REFETCH_INTERVAL,
    );
    let max_size = raw.max_size.map_or(defaults::JWKS_MAX_SIZE, |s| s.0);
    if max_size == 0 {
        problems.add(format!("{at}.max_size"), "must be at least 1 byte");
    }
    let path = path?;
    (problems.error_count() == before).then(|| JwksConfig {
        upstream: raw.upstream.clone(),
        path,
        min_age,
        max_age,
        refetch_interval,
        max_size,
    })
}

/// The secret's bytes, from its environment variable or file (never in a message).
fn read_secret(
    at: &str,
    raw: &RawSecret,
    min_len: usize,
    base: &Path,
    problems: &mut Problems,
) -> Option<JwtSecret> {
    let bytes = match (&raw.env, &raw.file) {
        (Some(name), None) => match std::env::var_os(name) {
            Some(value) => value.into_encoded_bytes(),
            None => {
                problems.add(
                    format!("{at}.env"),
                    format!("environment variable {name} is not set"),
                );
                return None;
            }
        },
        (None, Some(file)) => {
            let path = base.join(file);
            match std::fs::read(&path) {
                // A trailing newline is what editors and `echo` add, not part of the key.
                Ok(mut bytes) => {
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    bytes
                }
                Err(e) => {
                    problems.add(
                        format!("{at}.file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        _ => {
            problems.add(
                at,
                "write exactly one of `env: VARIABLE` or `file: PATH` (the secret itself \
                 never goes in the file)",
            );
            return None;
        }
    };
    if bytes.len() < min_len {
        problems.add(
            at,
            format!(
                "the secret has {} bytes; its algorithms need at least {min_len}",
                bytes.len()
            ),
        );
        return None;
    }
    Some(JwtSecret::new(bytes))
}

/// Where tokens are read from, default `header.authorization`.
fn compile_from(key: &str, raw: &RawJwt, problems: &mut Problems) -> Vec<TokenSource> {
    let Some(from) = &raw.from else {
        return vec![TokenSource::Bearer];
    };
    let written = from.as_slice();
    if written.is_empty() {
        problems.add(
            format!("{key}.from"),
            "list at least one place (header.authorization, header.NAME, cookie.NAME)",
        );
    }
    let mut sources = Vec::with_capacity(written.len());
    for (i, text) in written.iter().enumerate() {
        let at = match from {
            crate::config::jwt::RawOneOrMany::One(_) => format!("{key}.from"),
            crate::config::jwt::RawOneOrMany::Many(_) => format!("{key}.from[{i}]"),
        };
        match parse_token_source(text) {
            Ok(source) if sources.contains(&source) => {
                problems.add(at, "this place is already listed")
            }
            Ok(source) => sources.push(source),
            Err(message) => problems.add(at, message),
        }
    }
    sources
}

/// `header.authorization` (a `Bearer` token), `header.NAME`, `cookie.NAME`.
pub(crate) fn parse_token_source(text: &str) -> Result<TokenSource, String> {
    let kinds = "header.authorization (Bearer), header.NAME or cookie.NAME";
    let Some((kind, name)) = text.split_once('.') else {
        return Err(format!("unknown token place {text:?}; use {kinds}"));
    };
    match kind {
        "header" => {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid header name"))?;
            Ok(if name == http::header::AUTHORIZATION {
                TokenSource::Bearer
            } else {
                TokenSource::Header(name)
            })
        }
        "cookie" => {
            if name.is_empty() || !name.bytes().all(is_cookie_name_byte) {
                return Err(format!("{name:?} is not a valid cookie name"));
            }
            Ok(TokenSource::Cookie(name.to_owned()))
        }
        other => {
            let close = ["header", "cookie"]
                .into_iter()
                .find(|k| strsim::damerau_levenshtein(other, k) <= 2);
            Err(match close {
                Some(k) => format!(
                    "unknown token place {text:?} (did you mean \"{k}.NAME\"?); use {kinds}"
                ),
                None => format!("unknown token place {text:?}; use {kinds}"),
            })
        }
    }
}

/// RFC 6265's cookie-name: an RFC 7230 token.
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::locate::LocationIndex;

    fn compile(text: &str) -> Result<JwtConfig, Vec<String>> {
        let raw: RawJwt = serde_yaml::from_str(text).expect("valid yaml");
        let mut problems = Problems {
            file: "test.yaml",
            index: LocationIndex::build(text),
            found: Vec::new(),
            warnings: Vec::new(),
        };
        let compiled = compile_jwt("jwt", &raw, &["idp"], Path::new(""), &mut problems);
        match compiled {
            Some(config) if problems.found.is_empty() => Ok(config),
            _ => Err(problems
                .found
                .iter()
                .map(|e| format!("{}: {}", e.key, e.message))
                .collect()),
        }
    }

    #[test]
    fn a_jwks_issuer_compiles_with_defaults() {
        let config = compile(
            "issuers:\n  - issuer: https://login.example.com/\n    jwks: { upstream: idp, path: /jwks.json }\n    audiences: [api]\n    algorithms: [RS256, ES256]\n",
        )
        .expect("valid");
        assert_eq!(config.from, vec![TokenSource::Bearer]);
        assert_eq!(config.leeway, defaults::LEEWAY);
        assert_eq!(config.token_cache, Some(defaults::TOKEN_CACHE_ENTRIES));
        let IssuerKeys::Jwks(jwks) = &config.issuers[0].keys else {
            panic!("a jwks issuer");
        };
        assert_eq!(jwks.path, "/jwks.json");
        assert_eq!(jwks.refetch_interval, defaults::JWKS_REFETCH_INTERVAL);
    }

    #[test]
    fn hmac_algorithms_are_refused_with_public_keys_and_the_other_way_round() {
        let errors = compile(
            "issuers:\n  - issuer: a\n    jwks: { upstream: idp, path: /k }\n    algorithms: [RS256, HS256]\n",
        )
        .expect_err("HS256 with a JWKS");
        assert!(
            errors[0].starts_with("jwt.issuers[0].algorithms[1]"),
            "{errors:?}"
        );
        std::env::set_var(
            "PORTCULLIS_TEST_JWT_SECRET",
            "0123456789abcdef0123456789abcdef",
        );
        let errors = compile(
            "issuers:\n  - issuer: a\n    secret: { env: PORTCULLIS_TEST_JWT_SECRET }\n    algorithms: [HS256, RS256]\n",
        )
        .expect_err("RS256 with a secret");
        assert!(errors[0].contains("algorithms[1]"), "{errors:?}");
        let config = compile(
            "issuers:\n  - issuer: a\n    secret: { env: PORTCULLIS_TEST_JWT_SECRET }\n    algorithms: [HS256]\n",
        )
        .expect("a 32-byte secret");
        assert!(matches!(config.issuers[0].keys, IssuerKeys::Secret(_)));
        let errors = compile(
            "issuers:\n  - issuer: a\n    secret: { env: PORTCULLIS_TEST_JWT_SECRET }\n    algorithms: [HS512]\n",
        )
        .expect_err("too short for HS512");
        assert!(errors[0].contains("at least 64"), "{errors:?}");
        assert!(
            !errors[0].contains("0123456789"),
            "the secret is never shown"
        );
    }

    #[test]
    fn references_places_and_bounds_are_checked() {
        let errors = compile(
            "issuers:\n  - issuer: a\n    jwks: { upstream: ipd, path: jwks.json, min_age: 2h, max_age: 1h }\n    algorithms: [ES256]\nfrom: [header.authorization, cookies.session, cookie.session, cookie.session]\nclaims_to_headers: { sub: x-user, email: x-user }\n",
        )
        .expect_err("several problems");
        let all = errors.join("\n");
        assert!(all.contains("jwt.issuers[0].jwks.upstream"), "{all}");
        assert!(all.contains("did you mean \"idp\""), "{all}");
        assert!(all.contains("jwt.issuers[0].jwks.path"), "{all}");
        assert!(all.contains("jwt.issuers[0].jwks.min_age"), "{all}");
        assert!(all.contains("jwt.from[1]: unknown token place \"cookies.session\" (did you mean \"cookie.NAME\"?)"), "{all}");
        assert!(
            all.contains("jwt.from[3]: this place is already listed"),
            "{all}"
        );
        assert!(all.contains("jwt.claims_to_headers.sub"), "{all}");
    }

    #[test]
    fn token_places_parse() {
        assert_eq!(
            parse_token_source("header.Authorization"),
            Ok(TokenSource::Bearer)
        );
        assert_eq!(
            parse_token_source("header.x-token"),
            Ok(TokenSource::Header(HeaderName::from_static("x-token")))
        );
        assert_eq!(
            parse_token_source("cookie.session"),
            Ok(TokenSource::Cookie("session".into()))
        );
        assert!(parse_token_source("cookie.a b").is_err());
        assert!(parse_token_source("query.token").is_err());
    }

    #[test]
    fn an_issuer_needs_exactly_one_kind_of_key() {
        let errors =
            compile("issuers:\n  - issuer: a\n    algorithms: [RS256]\n").expect_err("no keys");
        assert!(errors[0].contains("needs its keys"), "{errors:?}");
        let errors = compile(
            "issuers:\n  - issuer: a\n    algorithms: [RS256]\n    jwks: { upstream: idp, path: /k }\n    secret: { env: X }\n",
        )
        .expect_err("both");
        assert!(errors[0].contains("both"), "{errors:?}");
    }
}
