//! `policies` (named checks that routes apply): their IP lists (and the address ranges
//! they and a listener's `client_ip.trusted_proxies` are written in) and their rate
//! limits (rates, keys, stores).

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;

use super::{check_name, Problems};
use crate::config::raw::{RawClientIp, RawIpList, RawPolicy, RawRateLimit, RawRateLimitKey};
use crate::config::{
    defaults, ClientIpConfig, IpListConfig, PolicyConfig, RateLimitConfig, RateLimitKeyPart,
    RateLimitStoreRef, LOCAL_STORE,
};

/// The named policies, sorted by name (as the map is).
pub(super) fn compile_policies(
    raw: &BTreeMap<String, RawPolicy>,
    stores: &[&str],
    auth_names: &super::auth::AuthNames,
    problems: &mut Problems,
) -> Vec<PolicyConfig> {
    raw.iter()
        .map(|(name, policy)| {
            let key = |field: &str| format!("policies.{name}.{field}");
            check_name("policy", name, format!("policies.{name}"), problems);
            let ip = policy
                .ip
                .as_ref()
                .map(|list| compile_ip_list(&key("ip"), list, problems));
            let cors = policy
                .cors
                .as_ref()
                .map(|cors| super::cors::compile_cors(&key("cors"), cors, problems));
            let headers = policy.headers.as_ref().map(|headers| {
                super::header_transforms::compile_header_transforms(
                    &key("headers"),
                    headers,
                    problems,
                )
            });
            let rate_limits = policy
                .rate_limit
                .as_deref()
                .map_or_else(Vec::new, |limits| {
                    compile_rate_limits(name, &key("rate_limit"), limits, stores, problems)
                });
            let auth = policy.auth.as_ref().and_then(|auth| {
                super::auth::compile_auth(name, &key("auth"), auth, auth_names, problems)
            });
            if ip.is_none()
                && cors.is_none()
                && headers.is_none()
                && policy.rate_limit.is_none()
                && policy.auth.is_none()
            {
                problems.warn(
                    format!("policies.{name}"),
                    "has no effect: it sets no check (e.g. `ip`, `cors`, `headers`, `rate_limit`, `auth`)",
                );
            }
            PolicyConfig {
                name: name.clone(),
                ip,
                cors,
                headers,
                rate_limits,
                auth,
            }
        })
        .collect()
}

/// A policy's `rate_limit` list.
fn compile_rate_limits(
    policy: &str,
    key: &str,
    raw: &[RawRateLimit],
    stores: &[&str],
    problems: &mut Problems,
) -> Vec<RateLimitConfig> {
    if raw.is_empty() {
        problems.add(key, "list at least one limit, or leave `rate_limit` out");
    }
    let mut names: Vec<&str> = Vec::new();
    raw.iter()
        .enumerate()
        .filter_map(|(i, limit)| {
            let at = format!("{key}[{i}]");
            if let Some(name) = &limit.name {
                check_name("rate limit", name, format!("{at}.name"), problems);
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    problems.add(
                        format!("{at}.name"),
                        "must not be a number: unnamed limits are labelled by their index",
                    );
                }
                if names.contains(&name.as_str()) {
                    problems.add(
                        format!("{at}.name"),
                        format!("another limit of this policy is called {name:?}"),
                    );
                }
                names.push(name);
            }
            compile_rate_limit(policy, &at, i, raw.len(), limit, stores, problems)
        })
        .collect()
}

fn compile_rate_limit(
    policy: &str,
    at: &str,
    index: usize,
    of: usize,
    raw: &RawRateLimit,
    stores: &[&str],
    problems: &mut Problems,
) -> Option<RateLimitConfig> {
    let rate = parse_rate(&raw.rate.0)
        .map_err(|message| problems.add(format!("{at}.rate"), message))
        .ok();
    if raw.burst == Some(0) {
        problems.add(
            format!("{at}.burst"),
            "must be at least 1 (the requests admitted at once)",
        );
    }
    let key = compile_key(&format!("{at}.key"), &raw.key, problems);
    let store = match raw.store.as_deref() {
        None | Some(LOCAL_STORE) => RateLimitStoreRef::Local,
        Some(name) if stores.contains(&name) => {
            if raw.max_keys.is_some() {
                problems.add(
                    format!("{at}.max_keys"),
                    format!("bounds the local store only; shared store {name:?} keeps its keys in Redis"),
                );
            }
            RateLimitStoreRef::Named(name.to_owned())
        }
        Some(name) => {
            problems.add(format!("{at}.store"), unknown_store(name, stores));
            RateLimitStoreRef::Named(name.to_owned())
        }
    };
    if raw.max_keys == Some(0) {
        problems.add(format!("{at}.max_keys"), "must be at least 1");
    }
    let (count, period) = rate?;
    let label = raw.name.clone().unwrap_or_else(|| index.to_string());
    let field_name = match &raw.name {
        Some(name) => name.clone(),
        None if of == 1 => policy.to_owned(),
        None => format!("{policy}.{index}"),
    };
    Some(RateLimitConfig {
        label,
        field_name,
        key: key?,
        count,
        period,
        burst: raw.burst.unwrap_or(count).max(1),
        store,
        shadow: raw.shadow,
        advertise: raw.advertise.unwrap_or(true),
        max_keys: raw.max_keys.unwrap_or(defaults::RATE_LIMIT_MAX_KEYS).max(1),
    })
}

/// What a `store` naming neither `local` nor a `rate_limit_stores` entry is told.
fn unknown_store(name: &str, stores: &[&str]) -> String {
    let mut known = vec![LOCAL_STORE];
    known.extend_from_slice(stores);
    let message = super::unknown_name("rate-limit store", name, &known);
    if stores.is_empty() {
        format!("{message} (shared stores are defined under `rate_limit_stores`)")
    } else {
        message
    }
}

/// `100/s`, `1000/min`: a count of at least 1 per second (`s`, `sec`, `second`), minute
/// (`m`, `min`, `minute`), hour (`h`, `hour`) or day (`d`, `day`).
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    const EXAMPLE: &str = "write e.g. 100/s, 1000/min, 50000/h or 1000000/d";
    let Some((count, unit)) = text.trim().split_once('/') else {
        return Err(format!("invalid rate {text:?}: {EXAMPLE}"));
    };
    let count: u32 = count.trim().parse().map_err(|_| {
        format!("invalid rate {text:?}: the count must be a whole number; {EXAMPLE}")
    })?;
    if count == 0 {
        return Err(format!(
            "rate {text:?} admits nothing: the count must be at least 1 (to refuse every \
             request, use an `ip` list)"
        ));
    }
    let seconds = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3_600,
        "d" | "day" => 86_400,
        other => {
            return Err(format!(
                "unknown rate unit {other:?} in {text:?}: use s, m (or min), h or d"
            ))
        }
    };
    Ok((count, Duration::from_secs(seconds)))
}

/// The kinds of key part, as written (`header.`, `query.`, `param.` take a name).
const KEY_KINDS: &[&str] = &[
    "client_ip",
    "route",
    "consumer",
    "header.",
    "query.",
    "param.",
    "jwt.",
];

fn compile_key(
    key: &str,
    raw: &RawRateLimitKey,
    problems: &mut Problems,
) -> Option<Vec<RateLimitKeyPart>> {
    let parts: Vec<(String, &String)> = match raw {
        RawRateLimitKey::One(part) => vec![(key.to_owned(), part)],
        RawRateLimitKey::Many(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| (format!("{key}[{i}]"), part))
            .collect(),
    };
    if parts.is_empty() {
        problems.add(
            key,
            "list at least one key part (client_ip, route, consumer, header.NAME, query.NAME, param.NAME, jwt.CLAIM)",
        );
        return None;
    }
    let mut compiled = Vec::with_capacity(parts.len());
    let mut ok = true;
    for (at, part) in parts {
        match parse_key_part(part) {
            Ok(part) if compiled.contains(&part) => {
                problems.add(at, "this part is already in the key");
                ok = false;
            }
            Ok(part) => compiled.push(part),
            Err(message) => {
                problems.add(at, message);
                ok = false;
            }
        }
    }
    ok.then_some(compiled)
}

/// `client_ip`, `route`, `header.x-api-key`, `query.api_key`, `param.id`.
pub fn parse_key_part(text: &str) -> Result<RateLimitKeyPart, String> {
    match text {
        "client_ip" => return Ok(RateLimitKeyPart::ClientIp),
        "route" => return Ok(RateLimitKeyPart::Route),
        "consumer" => return Ok(RateLimitKeyPart::Consumer),
        _ => {}
    }
    if let Some((kind, name)) = text.split_once('.') {
        let named = |what: &str| {
            if name.is_empty() {
                Err(format!("{text:?} needs a {what} name after `{kind}.`"))
            } else {
                Ok(name)
            }
        };
        match kind {
            "header" => {
                let name = named("header")?;
                return http::HeaderName::from_bytes(name.as_bytes())
                    .map(RateLimitKeyPart::Header)
                    .map_err(|_| format!("{name:?} is not a valid header name"));
            }
            "query" => return named("query parameter").map(|n| RateLimitKeyPart::Query(n.into())),
            "param" => return named("path parameter").map(|n| RateLimitKeyPart::Param(n.into())),
            "jwt" => return named("claim").map(|n| RateLimitKeyPart::JwtClaim(n.into())),
            _ => {}
        }
    }
    let written = text.split_once('.').map_or(text, |(kind, _)| kind);
    let suggestion = KEY_KINDS
        .iter()
        .map(|k| {
            (
                strsim::damerau_levenshtein(written, k.trim_end_matches('.')),
                *k,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min();
    let kinds = "client_ip, route, consumer, header.NAME, query.NAME, param.NAME or jwt.CLAIM";
    Err(match suggestion {
        Some((_, k)) if k.ends_with('.') => {
            format!("unknown key part {text:?} (did you mean \"{k}NAME\"?); use {kinds}")
        }
        Some((_, k)) => format!("unknown key part {text:?} (did you mean {k:?}?); use {kinds}"),
        None => format!("unknown key part {text:?}; use {kinds}"),
    })
}

fn compile_ip_list(key: &str, raw: &RawIpList, problems: &mut Problems) -> IpListConfig {
    if raw.allow.is_empty() && raw.deny.is_empty() {
        problems.add(key, "list addresses under `allow`, `deny` or both");
    }
    IpListConfig {
        allow: ranges(&format!("{key}.allow"), &raw.allow, problems),
        deny: ranges(&format!("{key}.deny"), &raw.deny, problems),
    }
}

/// A listener's `client_ip`.
pub(super) fn compile_client_ip(
    key: &str,
    raw: Option<&RawClientIp>,
    problems: &mut Problems,
) -> ClientIpConfig {
    ClientIpConfig {
        trusted_proxies: raw.map_or_else(Vec::new, |raw| {
            ranges(
                &format!("{key}.trusted_proxies"),
                &raw.trusted_proxies,
                problems,
            )
        }),
        // Compiled with the rest of the listener: `super::listeners`.
        proxy_protocol: None,
    }
}

/// Each entry as a range: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`).
fn ranges(key: &str, raw: &[String], problems: &mut Problems) -> Vec<IpNet> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, text)| {
            parse_range(text)
                .map_err(|message| problems.add(format!("{key}[{i}]"), message))
                .ok()
        })
        .collect()
}

fn parse_range(text: &str) -> Result<IpNet, String> {
    if let Ok(range) = text.parse::<IpNet>() {
        if range.trunc() != range {
            return Err(format!(
                "{text:?} has bits set past its prefix length; write {}",
                range.trunc()
            ));
        }
        return Ok(range);
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an IP address or a CIDR range such as 10.0.0.0/8"))
}

/// The policies a route names, as indexes into the compiled list.
pub(super) fn resolve_route_policies(
    route: usize,
    names: &[String],
    known: &[&str],
    problems: &mut Problems,
) -> Vec<usize> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let found = known.iter().position(|k| k == name);
            if found.is_none() {
                problems.add(
                    format!("routes[{route}].policies[{i}]"),
                    super::unknown_name("policy", name, known),
                );
            }
            found
        })
        .collect()
}

/// Warns where a route lists a policy whose rate limit is keyed by a path parameter
/// the route's path does not bind: every request of that route would share one bucket.
pub(super) fn check_route_params(
    routes: &[crate::config::RouteConfig],
    policies: &[PolicyConfig],
    problems: &mut Problems,
) {
    for (r, route) in routes.iter().enumerate() {
        let params = route.spec.path.params();
        for (p, &index) in route.policies.iter().enumerate() {
            let Some(policy) = policies.get(index) else {
                continue;
            };
            let missing =
                policy
                    .rate_limits
                    .iter()
                    .flat_map(|l| &l.key)
                    .find_map(|part| match part {
                        RateLimitKeyPart::Param(name) if !params.contains(name) => Some(name),
                        _ => None,
                    });
            if let Some(name) = missing {
                problems.warn(
                    format!("routes[{r}].policies[{p}]"),
                    format!(
                        "policy {:?} limits by path parameter {name:?}, which this route's \
                         path does not bind: all its requests share one bucket",
                        policy.name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_units() {
        let minute = Duration::from_secs(60);
        assert_eq!(parse_rate("100/s"), Ok((100, Duration::from_secs(1))));
        assert_eq!(parse_rate("1000/min"), Ok((1000, minute)));
        assert_eq!(parse_rate("1000/m"), Ok((1000, minute)));
        assert_eq!(parse_rate(" 5 / h "), Ok((5, Duration::from_secs(3600))));
        assert_eq!(parse_rate("7/d"), Ok((7, Duration::from_secs(86_400))));
        let fortnight = parse_rate("100/fortnight").expect_err("no such unit");
        assert!(
            fortnight.contains("unknown rate unit \"fortnight\""),
            "{fortnight}"
        );
        assert!(parse_rate("0/s").expect_err("zero").contains("at least 1"));
        assert!(parse_rate("100").is_err());
        assert!(parse_rate("-1/s").is_err());
        assert!(parse_rate("1.5/s").is_err());
        assert!(parse_rate("99999999999/s").is_err());
    }

    #[test]
    fn key_parts_parse_and_unknown_ones_get_a_suggestion() {
        assert_eq!(parse_key_part("client_ip"), Ok(RateLimitKeyPart::ClientIp));
        assert_eq!(parse_key_part("route"), Ok(RateLimitKeyPart::Route));
        assert_eq!(
            parse_key_part("header.X-Api-Key"),
            Ok(RateLimitKeyPart::Header(http::HeaderName::from_static(
                "x-api-key"
            )))
        );
        assert_eq!(
            parse_key_part("query.api_key"),
            Ok(RateLimitKeyPart::Query("api_key".into()))
        );
        assert_eq!(
            parse_key_part("param.id"),
            Ok(RateLimitKeyPart::Param("id".into()))
        );
        let typo = parse_key_part("client-ip").expect_err("a typo");
        assert!(typo.contains("did you mean \"client_ip\""), "{typo}");
        let typo = parse_key_part("headers.x-api-key").expect_err("a typo");
        assert!(typo.contains("did you mean \"header.NAME\""), "{typo}");
        assert!(parse_key_part("header.").is_err());
        assert!(parse_key_part("header.bad name").is_err());
        assert_eq!(parse_key_part("consumer"), Ok(RateLimitKeyPart::Consumer));
        assert_eq!(
            parse_key_part("jwt.sub"),
            Ok(RateLimitKeyPart::JwtClaim("sub".into()))
        );
        assert!(parse_key_part("jwt.").is_err());
    }

    #[test]
    fn ranges_and_single_addresses_parse() {
        assert_eq!(
            parse_range("10.0.0.0/8"),
            Ok("10.0.0.0/8".parse().expect("range"))
        );
        assert_eq!(
            parse_range("203.0.113.7"),
            Ok("203.0.113.7/32".parse().expect("range"))
        );
        assert_eq!(
            parse_range("2001:db8::/32"),
            Ok("2001:db8::/32".parse().expect("range"))
        );
        assert!(parse_range("10.0.0.1/8")
            .expect_err("host bits")
            .contains("10.0.0.0/8"));
        assert!(parse_range("10.0.0.0/33").is_err());
        assert!(parse_range("example.com").is_err());
    }
}
