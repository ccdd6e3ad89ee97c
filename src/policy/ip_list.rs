//! IP access lists: a named policy's `ip: { allow, deny }` ranges, checked against the
//! client's address ([`super::client_ip`]). A denied address is refused with 403.

use std::net::IpAddr;

use super::client_ip::canonical;
use crate::config::IpListConfig;

/// Whether `list` lets `address` in: not denied, and allowed when there is an allow list.
pub fn permits(list: &IpListConfig, address: IpAddr) -> bool {
    let address = canonical(address);
    if list.deny.iter().any(|range| range.contains(&address)) {
        return false;
    }
    list.allow.is_empty() || list.allow.iter().any(|range| range.contains(&address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], deny: &[&str]) -> IpListConfig {
        let ranges = |r: &[&str]| r.iter().map(|t| t.parse().expect("range")).collect();
        IpListConfig {
            allow: ranges(allow),
            deny: ranges(deny),
        }
    }

    #[test]
    fn deny_wins_and_an_allow_list_shuts_out_the_rest() {
        let ip = |t: &str| t.parse::<IpAddr>().expect("address");
        let deny_only = list(&[], &["203.0.113.0/24"]);
        assert!(!permits(&deny_only, ip("203.0.113.9")));
        assert!(permits(&deny_only, ip("198.51.100.1")));
        let both = list(&["10.0.0.0/8", "2001:db8::/32"], &["10.0.9.0/24"]);
        assert!(permits(&both, ip("10.1.2.3")));
        assert!(!permits(&both, ip("10.0.9.1")));
        assert!(!permits(&both, ip("192.0.2.1")));
        assert!(permits(&both, ip("2001:db8::1")));
        assert!(
            permits(&both, ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
    }
}
