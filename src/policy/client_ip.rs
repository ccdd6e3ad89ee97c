//! The client's address: the TCP peer, or, when the peer is a trusted proxy, the first
//! address in `X-Forwarded-For` that is not one, walking from the right. The leftmost
//! entries are whatever the client wrote, so they are never believed by position.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use super::forwarded::X_FORWARDED_FOR;

/// How many `X-Forwarded-For` entries are looked at, at most: more proxies than this in
/// a row are not a deployment but an attack on the walk.
const MAX_HOPS: usize = 32;

/// The client's address as seen through `trusted` proxies. An entry that is not an
/// address ends the walk at the last proxy that was trusted.
pub fn client_ip(peer: IpAddr, trusted: &[IpNet], headers: &HeaderMap) -> IpAddr {
    let mut client = canonical(peer);
    if trusted.is_empty() || !is_trusted(client, trusted) {
        return client;
    }
    let entries = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|value| value.to_str().unwrap_or("?").rsplit(','));
    for entry in entries.take(MAX_HOPS) {
        let Some(address) = parse_entry(entry.trim()) else {
            return client;
        };
        client = canonical(address);
        if !is_trusted(client, trusted) {
            return client;
        }
    }
    client
}

fn is_trusted(address: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|range| range.contains(&address))
}

/// `192.0.2.1`, `2001:db8::1`, or either with a port (`192.0.2.1:4711`, `[2001:db8::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// An IPv4 address as itself, also when it arrived IPv4-mapped over IPv6.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn walk(peer: &str, trusted: &[&str], forwarded: &[&'static str]) -> String {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().expect("range")).collect();
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_static(value));
        }
        client_ip(peer.parse().expect("peer"), &trusted, &headers).to_string()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        assert_eq!(walk("192.0.2.1", &[], &["203.0.113.9"]), "192.0.2.1");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            walk("192.0.2.1", &["10.0.0.0/8"], &["203.0.113.9"]),
            "192.0.2.1"
        );
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_address_from_the_right() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(walk("10.0.0.1", &trusted, &["203.0.113.9"]), "203.0.113.9");
        // The client wrote the leftmost entry itself: never believed by position.
        assert_eq!(
            walk("10.0.0.1", &trusted, &["1.1.1.1, 198.51.100.7, 10.0.0.2"]),
            "198.51.100.7"
        );
        // Several header fields are one list.
        assert_eq!(
            walk("10.0.0.1", &trusted, &["1.1.1.1", "198.51.100.7, 10.0.0.2"]),
            "198.51.100.7"
        );
    }

    #[test]
    fn garbage_ends_the_walk_at_the_last_trusted_hop() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            walk("10.0.0.1", &trusted, &["unknown, 10.0.0.2"]),
            "10.0.0.2"
        );
        assert_eq!(walk("10.0.0.1", &trusted, &[]), "10.0.0.1");
        assert_eq!(
            walk("10.0.0.1", &trusted, &["10.0.0.3, 10.0.0.2"]),
            "10.0.0.3"
        );
    }

    #[test]
    fn ports_and_mapped_addresses_are_understood() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            walk("10.0.0.1", &trusted, &["198.51.100.7:4711"]),
            "198.51.100.7"
        );
        assert_eq!(
            walk("10.0.0.1", &trusted, &["[2001:db8::7]:80"]),
            "2001:db8::7"
        );
        assert_eq!(
            walk("::ffff:10.0.0.1", &trusted, &["198.51.100.7"]),
            "198.51.100.7"
        );
    }

    #[test]
    fn the_walk_is_bounded() {
        let long: &'static str = Box::leak(vec!["10.0.0.9"; 100].join(", ").into_boxed_str());
        assert_eq!(
            walk("10.0.0.1", &["10.0.0.0/8"], &[long, "10.0.0.2"]),
            "10.0.0.9"
        );
    }
}
