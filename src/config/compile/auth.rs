//! `consumers` and a policy's `auth`: API keys hashed (or read from the environment or
//! a file and hashed at load), password hashes parsed, consumers and upstreams resolved,
//! with did-you-mean. A secret never appears in a message: only the key path, the
//! variable's or file's name.

use std::path::Path;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};

use super::{check_name, unknown_name, Problems};
use crate::config::auth::{
    sha256, ApiKeyConfig, AuthConfig, BasicConfig, BasicCredential, CacheConfig, ConsumerConfig,
    CredentialSource, ForwardAuthConfig, KeyDigest, PasswordHash, RawApiKey, RawAuth, RawConsumers,
    RawCredentialCache, RawSources,
};
use crate::config::defaults;

/// What a policy's `auth` may refer to.
pub(super) struct AuthNames<'a> {
    pub consumers: &'a [&'a str],
    pub upstreams: &'a [&'a str],
    /// The configuration file's directory (secret files are relative to it).
    pub base: &'a Path,
}

/// The consumers, sorted by name (as the map is).
pub(super) fn compile_consumers(
    raw: &RawConsumers,
    base: &Path,
    problems: &mut Problems,
) -> Vec<ConsumerConfig> {
    let mut users: Vec<(&str, &str)> = Vec::new();
    let mut digests: Vec<([u8; 32], String)> = Vec::new();
    let consumers = raw
        .iter()
        .map(|(name, consumer)| {
            let at = format!("consumers.{name}");
            check_name("consumer", name, at.clone(), problems);
            if consumer.api_keys.is_empty() && consumer.basic.is_none() {
                problems.warn(
                    at.clone(),
                    "has no credentials (`api_keys`, `basic`): nothing can identify it",
                );
            }
            let mut api_keys = Vec::with_capacity(consumer.api_keys.len());
            for (i, key) in consumer.api_keys.iter().enumerate() {
                let key_at = format!("{at}.api_keys[{i}]");
                let Some(digest) = api_key_digest(&key_at, key, base, problems) else {
                    continue;
                };
                if let Some((_, other)) = digests.iter().find(|(d, _)| *d == digest) {
                    problems.add(
                        key_at,
                        format!("the same key is also {other}: a key identifies one consumer"),
                    );
                    continue;
                }
                digests.push((digest, key_at));
                api_keys.push(KeyDigest(digest));
            }
            let basic = consumer.basic.as_ref().and_then(|basic| {
                let user_at = format!("{at}.basic.user");
                if basic.user.is_empty() || basic.user.contains(':') {
                    problems.add(&user_at, "must be non-empty and contain no `:`");
                }
                if let Some((other, _)) = users.iter().find(|(_, u)| *u == basic.user) {
                    problems.add(
                        &user_at,
                        format!("consumer {other:?} has the same basic user"),
                    );
                }
                users.push((name, &basic.user));
                let hash = parse_password_hash(&basic.password_hash)
                    .map_err(|message| problems.add(format!("{at}.basic.password_hash"), message))
                    .ok()?;
                Some(BasicCredential {
                    user: basic.user.clone(),
                    password_hash: hash,
                })
            });
            ConsumerConfig {
                name: name.clone(),
                api_keys,
                basic,
            }
        })
        .collect();
    consumers
}

fn api_key_digest(
    at: &str,
    raw: &RawApiKey,
    base: &Path,
    problems: &mut Problems,
) -> Option<[u8; 32]> {
    match raw {
        RawApiKey::Sha256(text) => parse_sha256(text)
            .map_err(|message| problems.add(format!("{at}.sha256"), message))
            .ok(),
        RawApiKey::Env(variable) => match std::env::var(variable) {
            Ok(key) if !key.trim().is_empty() => Some(sha256(key.trim().as_bytes())),
            Ok(_) => {
                problems.add(
                    format!("{at}.env"),
                    format!("environment variable {variable} is empty"),
                );
                None
            }
            Err(std::env::VarError::NotPresent) => {
                problems.add(
                    format!("{at}.env"),
                    format!("environment variable {variable} is not set"),
                );
                None
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                problems.add(
                    format!("{at}.env"),
                    format!("environment variable {variable} is not valid UTF-8"),
                );
                None
            }
        },
        RawApiKey::File(path) => {
            let full = base.join(path);
            match std::fs::read(&full) {
                Ok(bytes) if !bytes.trim_ascii().is_empty() => Some(sha256(bytes.trim_ascii())),
                Ok(_) => {
                    problems.add(format!("{at}.file"), format!("{} is empty", full.display()));
                    None
                }
                Err(error) => {
                    problems.add(
                        format!("{at}.file"),
                        format!("cannot read {}: {error}", full.display()),
                    );
                    None
                }
            }
        }
    }
}

/// `sha256:` and 64 hex digits (the prefix may be left out).
fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    let expected =
        "must be a SHA-256 digest: 64 hex digits (e.g. `printf %s \"$KEY\" | sha256sum`)";
    if hex.len() != 64 {
        return Err(format!("has {} characters; {expected}", hex.len()));
    }
    let mut out = [0; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => out[i] = (high * 16 + low) as u8,
            _ => return Err(format!("is not hexadecimal; {expected}")),
        }
    }
    Ok(out)
}

/// An argon2 PHC string or a bcrypt hash, checked well-formed.
fn parse_password_hash(text: &str) -> Result<PasswordHash, String> {
    if text.starts_with("$argon2") {
        let parsed = argon2::PasswordHash::new(text)
            .map_err(|e| format!("is not a valid argon2 PHC string: {e}"))?;
        argon2::Algorithm::try_from(parsed.algorithm)
            .map_err(|e| format!("names an unknown argon2 variant: {e}"))?;
        argon2::Params::try_from(&parsed)
            .map_err(|e| format!("has invalid argon2 parameters: {e}"))?;
        if parsed.hash.is_none() {
            return Err("is an argon2 PHC string without its hash".into());
        }
        return Ok(PasswordHash::Argon2(text.to_owned()));
    }
    if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
    {
        let cost = rest.get(..2).and_then(|c| c.parse::<u32>().ok());
        let well_formed = text.len() == 60
            && rest.as_bytes().get(2) == Some(&b'$')
            && cost.is_some_and(|c| (4..=31).contains(&c))
            && rest[3..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
        if !well_formed {
            return Err("is not a valid bcrypt hash (`$2b$COST$` and 53 characters)".into());
        }
        return Ok(PasswordHash::Bcrypt(text.to_owned()));
    }
    Err("must be an argon2 (`$argon2id$...`) or bcrypt (`$2b$...`) hash, not a password".into())
}

/// A policy's `auth`.
pub(super) fn compile_auth(
    policy: &str,
    key: &str,
    raw: &RawAuth,
    names: &AuthNames,
    problems: &mut Problems,
) -> Option<AuthConfig> {
    match raw {
        RawAuth::ApiKey(api_key) => {
            let at = format!("{key}.api_key");
            let from = match &api_key.from {
                None => vec![CredentialSource::Header(HeaderName::from_static(
                    "x-api-key",
                ))],
                Some(sources) => compile_sources(&format!("{at}.from"), sources, problems)?,
            };
            let consumers = consumer_list(&at, api_key.consumers.as_deref(), names, problems);
            if names.consumers.is_empty() {
                problems.add(
                    &at,
                    "no `consumers` are defined: an API key identifies a consumer",
                );
            }
            Some(AuthConfig::ApiKey(ApiKeyConfig {
                from,
                consumers,
                keep_credentials: api_key.keep_credentials,
                challenge: challenge("ApiKey", policy, &at, problems),
            }))
        }
        RawAuth::Basic(basic) => {
            let at = format!("{key}.basic");
            let consumers = consumer_list(&at, basic.consumers.as_deref(), names, problems);
            let realm = basic.realm.as_deref().unwrap_or(policy);
            let cache = compile_cache(&format!("{at}.cache"), basic.cache.as_ref(), problems);
            Some(AuthConfig::Basic(BasicConfig {
                challenge: challenge("Basic", realm, &format!("{at}.realm"), problems),
                consumers,
                keep_credentials: basic.keep_credentials,
                cache: cache.unwrap_or(CacheConfig {
                    max_entries: defaults::AUTH_CACHE_MAX_ENTRIES,
                    ttl: defaults::AUTH_CACHE_TTL,
                }),
            }))
        }
        RawAuth::Forward(forward) => {
            let at = format!("{key}.forward");
            problems.add(&at, "forward auth is not available in this build yet");
            let upstream = names.upstreams.iter().position(|u| *u == forward.upstream);
            if upstream.is_none() {
                problems.add(
                    format!("{at}.upstream"),
                    super::unknown_upstream(&forward.upstream, names.upstreams),
                );
            }
            let path = if forward.path.starts_with('/') {
                PathAndQuery::try_from(forward.path.as_str()).ok()
            } else {
                None
            };
            if path.is_none() {
                problems.add(
                    format!("{at}.path"),
                    format!("{:?} is not a path starting with `/`", forward.path),
                );
            }
            let headers = match &forward.headers {
                None => vec![http::header::AUTHORIZATION, http::header::COOKIE],
                Some(list) => header_names(&format!("{at}.headers"), list, problems),
            };
            let copy_headers = header_names(
                &format!("{at}.copy_headers"),
                &forward.copy_headers,
                problems,
            );
            let timeout = problems.positive_duration(
                format!("{at}.timeout"),
                forward.timeout,
                defaults::FORWARD_AUTH_TIMEOUT,
            );
            let cache = compile_cache(&format!("{at}.cache"), forward.cache.as_ref(), problems);
            Some(AuthConfig::Forward(ForwardAuthConfig {
                upstream: upstream?,
                path: path?,
                headers,
                copy_headers,
                timeout,
                max_body_size: forward
                    .max_body_size
                    .map_or(defaults::FORWARD_AUTH_MAX_BODY, |b| b.0),
                cache,
                keep_credentials: forward.keep_credentials,
            }))
        }
        RawAuth::Jwt(jwt) => super::jwt::compile_jwt(
            &format!("{key}.jwt"),
            jwt,
            names.upstreams,
            names.base,
            problems,
        )
        .map(AuthConfig::Jwt),
        RawAuth::AnyOf(list) | RawAuth::AllOf(list) => {
            let (word, any) = match raw {
                RawAuth::AnyOf(_) => ("any_of", true),
                _ => ("all_of", false),
            };
            let at = format!("{key}.{word}");
            if list.len() < 2 {
                problems.add(
                    &at,
                    "list at least two methods (one alone needs no combination)",
                );
            }
            let methods: Vec<AuthConfig> = list
                .iter()
                .enumerate()
                .filter_map(|(i, method)| {
                    compile_auth(policy, &format!("{at}[{i}]"), method, names, problems)
                })
                .collect();
            (methods.len() == list.len()).then_some(if any {
                AuthConfig::AnyOf(methods)
            } else {
                AuthConfig::AllOf(methods)
            })
        }
    }
}

/// `Scheme realm="..."` (and `, charset="UTF-8"` for basic), the realm checked
/// printable and unquoted.
fn challenge(scheme: &str, realm: &str, at: &str, problems: &mut Problems) -> HeaderValue {
    let printable = realm
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if !printable {
        problems.add(
            at,
            "the realm may hold printable ASCII only, without `\"` or `\\`",
        );
    }
    let charset = if scheme == "Basic" {
        ", charset=\"UTF-8\""
    } else {
        ""
    };
    // Checked printable above; an invalid realm is reported as an error of its own.
    HeaderValue::from_str(&format!("{scheme} realm=\"{realm}\"{charset}"))
        .unwrap_or(HeaderValue::from_static("Basic"))
}

fn compile_sources(
    at: &str,
    raw: &RawSources,
    problems: &mut Problems,
) -> Option<Vec<CredentialSource>> {
    let list: Vec<(String, &String)> = match raw {
        RawSources::One(one) => vec![(at.to_owned(), one)],
        RawSources::Many(many) => many
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("{at}[{i}]"), s))
            .collect(),
    };
    if list.is_empty() {
        problems.add(
            at,
            "list at least one source (header.NAME, query.NAME, cookie.NAME)",
        );
        return None;
    }
    let mut ok = true;
    let sources = list
        .into_iter()
        .filter_map(|(at, text)| {
            parse_source(text)
                .map_err(|message| {
                    ok = false;
                    problems.add(at, message)
                })
                .ok()
        })
        .collect();
    ok.then_some(sources)
}

/// `header.x-api-key`, `query.api_key`, `cookie.session`.
pub fn parse_source(text: &str) -> Result<CredentialSource, String> {
    const KINDS: &[&str] = &["header", "query", "cookie"];
    let (kind, name) = text.split_once('.').unwrap_or((text, ""));
    if name.is_empty() && KINDS.contains(&kind) {
        return Err(format!("{text:?} needs a name after `{kind}.`"));
    }
    match kind {
        "header" => HeaderName::from_bytes(name.as_bytes())
            .map(CredentialSource::Header)
            .map_err(|_| format!("{name:?} is not a valid header name")),
        "query" => Ok(CredentialSource::Query(name.to_owned())),
        "cookie" => {
            if name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) {
                Ok(CredentialSource::Cookie(name.to_owned()))
            } else {
                Err(format!("{name:?} is not a valid cookie name"))
            }
        }
        other => Err(match super::closest(other, KINDS) {
            Some(k) => format!(
                "unknown credential source {text:?} (did you mean \"{k}.NAME\"?); use header.NAME, query.NAME or cookie.NAME"
            ),
            None => format!(
                "unknown credential source {text:?}; use header.NAME, query.NAME or cookie.NAME"
            ),
        }),
    }
}

fn consumer_list(
    at: &str,
    raw: Option<&[String]>,
    names: &AuthNames,
    problems: &mut Problems,
) -> Option<Vec<usize>> {
    let raw = raw?;
    if raw.is_empty() {
        problems.add(
            format!("{at}.consumers"),
            "list at least one consumer, or leave `consumers` out to admit every consumer",
        );
    }
    Some(
        raw.iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let found = names.consumers.iter().position(|c| c == name);
                if found.is_none() {
                    problems.add(
                        format!("{at}.consumers[{i}]"),
                        unknown_name("consumer", name, names.consumers),
                    );
                }
                found
            })
            .collect(),
    )
}

fn compile_cache(
    at: &str,
    raw: Option<&RawCredentialCache>,
    problems: &mut Problems,
) -> Option<CacheConfig> {
    let raw = raw?;
    if raw.max_entries == Some(0) {
        problems.add(format!("{at}.max_entries"), "must be at least 1");
    }
    let ttl = problems.positive_duration(format!("{at}.ttl"), raw.ttl, defaults::AUTH_CACHE_TTL);
    Some(CacheConfig {
        max_entries: raw
            .max_entries
            .unwrap_or(defaults::AUTH_CACHE_MAX_ENTRIES)
            .max(1),
        ttl,
    })
}

fn header_names(at: &str, raw: &[String], problems: &mut Problems) -> Vec<HeaderName> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, name)| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| {
                    problems.add(
                        format!("{at}[{i}]"),
                        format!("{name:?} is not a valid header name"),
                    )
                })
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_with_or_without_their_prefix() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(parse_sha256(hex), Ok(sha256(b"test")));
        assert_eq!(parse_sha256(&format!("sha256:{hex}")), Ok(sha256(b"test")));
        assert!(parse_sha256("abc")
            .expect_err("short")
            .contains("64 hex digits"));
        assert!(parse_sha256(&hex.replace('9', "z"))
            .expect_err("not hex")
            .contains("not hexadecimal"));
    }

    #[test]
    fn password_hashes_are_checked() {
        let argon = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(matches!(
            parse_password_hash(argon),
            Ok(PasswordHash::Argon2(_))
        ));
        let bcrypt = "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";
        assert!(matches!(
            parse_password_hash(bcrypt),
            Ok(PasswordHash::Bcrypt(_))
        ));
        assert!(parse_password_hash("hunter2")
            .expect_err("plain")
            .contains("not a password"));
        assert!(parse_password_hash("$2b$04$short").is_err());
        assert!(parse_password_hash("$argon2id$v=19$m=x").is_err());
    }

    #[test]
    fn sources_parse_and_suggest() {
        assert_eq!(
            parse_source("header.X-Api-Key"),
            Ok(CredentialSource::Header(HeaderName::from_static(
                "x-api-key"
            )))
        );
        assert_eq!(
            parse_source("query.k"),
            Ok(CredentialSource::Query("k".into()))
        );
        assert_eq!(
            parse_source("cookie.s"),
            Ok(CredentialSource::Cookie("s".into()))
        );
        let typo = parse_source("heder.x").expect_err("typo");
        assert!(typo.contains("did you mean \"header.NAME\""), "{typo}");
        assert!(parse_source("query.").is_err());
    }
}
