//! `policies` (named checks that routes apply) and the address ranges they and a
//! listener's `client_ip.trusted_proxies` are written in.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::{check_name, Problems};
use crate::config::raw::{RawClientIp, RawIpList, RawPolicy};
use crate::config::{ClientIpConfig, IpListConfig, PolicyConfig};

/// The named policies, sorted by name (as the map is).
pub(super) fn compile_policies(
    raw: &BTreeMap<String, RawPolicy>,
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
            if ip.is_none() && cors.is_none() && headers.is_none() {
                problems.warn(
                    format!("policies.{name}"),
                    "has no effect: it sets no check (e.g. `ip`, `cors`, `headers`)",
                );
            }
            PolicyConfig {
                name: name.clone(),
                ip,
                cors,
                headers,
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

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
