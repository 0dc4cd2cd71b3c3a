//! Which addresses a URL preview may connect to.
//!
//! A preview makes the server fetch a URL a user chose, so without a filter any user could make
//! it reach the loopback interface, the private network it sits in or a cloud metadata service
//! (SSRF). Like Synapse's `url_preview_ip_range_blacklist`, every address a fetch would connect
//! to is checked: literal IPs in URLs and redirects, and every address a host name resolves to.
//! The operator's allowlist wins over the blocked ranges (tests allow `127.0.0.1`).

use std::net::IpAddr;

/// An address range in CIDR notation (`10.0.0.0/8`, `fe80::/10`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
        };
        Ok(IpRange { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The ranges Synapse's sample config blocks: nothing a public web page can live on.
pub const DEFAULT_BLOCKED: &[&str] = &[
    "0.0.0.0/8",       // "this network", unspecified
    "10.0.0.0/8",      // RFC 1918
    "100.64.0.0/10",   // carrier-grade NAT
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local (cloud metadata services)
    "172.16.0.0/12",   // RFC 1918
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation
    "192.88.99.0/24",  // 6to4 relay anycast
    "192.168.0.0/16",  // RFC 1918
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation
    "203.0.113.0/24",  // documentation
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, broadcast
    "::/128",          // unspecified
    "::1/128",         // loopback
    "64:ff9b::/96",    // NAT64 (reaches IPv4 space)
    "100::/64",        // discard
    "2001:db8::/32",   // documentation
    "fc00::/7",        // unique local
    "fe80::/10",       // link-local
    "fec0::/10",       // site-local (deprecated)
    "ff00::/8",        // multicast
];

/// The blocked ranges minus the allowed ones.
#[derive(Debug, Clone)]
pub struct IpFilter {
    blocked: Vec<IpRange>,
    allowed: Vec<IpRange>,
}

impl IpFilter {
    /// The built-in blocked ranges plus `extra_blocked`, with `allowed` as exceptions.
    pub fn new(extra_blocked: &[String], allowed: &[String]) -> Result<Self, String> {
        let parse = |list: &[String]| -> Result<Vec<IpRange>, String> {
            list.iter().map(|r| IpRange::parse(r)).collect()
        };
        let mut blocked: Vec<IpRange> = DEFAULT_BLOCKED
            .iter()
            .map(|r| IpRange::parse(r).expect("built-in ranges parse"))
            .collect();
        blocked.extend(parse(extra_blocked)?);
        Ok(IpFilter {
            blocked,
            allowed: parse(allowed)?,
        })
    }

    /// Exactly the `blocked` ranges, none built in (`[federation] ip_range_blocklist`, whose
    /// default is [`DEFAULT_BLOCKED`] and which a test empties to federate on loopback).
    pub fn exactly(blocked: &[String]) -> Result<Self, String> {
        Ok(IpFilter {
            blocked: blocked
                .iter()
                .map(|r| IpRange::parse(r))
                .collect::<Result<_, _>>()?,
            allowed: Vec::new(),
        })
    }

    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.blocked.iter().any(|r| r.contains(ip)) && !self.allowed.iter().any(|r| r.contains(ip))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it carries: checking
/// it as IPv6 would let `[::ffff:127.0.0.1]` through.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_internal_addresses_and_allows_public_ones() {
        let f = IpFilter::new(&[], &[]).unwrap();
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(f.is_blocked(ip(blocked)), "{blocked} must be blocked");
        }
        for allowed in ["93.184.216.34", "172.32.0.1", "2606:4700::1111", "8.8.8.8"] {
            assert!(!f.is_blocked(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn allowlist_wins_and_extra_blocks_add() {
        let f = IpFilter::new(&["8.8.8.0/24".into()], &["127.0.0.1".into()]).unwrap();
        assert!(!f.is_blocked(ip("127.0.0.1")));
        assert!(f.is_blocked(ip("127.0.0.2")));
        assert!(f.is_blocked(ip("8.8.8.8")));
        assert!(!f.is_blocked(ip("8.8.9.8")));
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(IpRange::parse("10.0.0.0/33").is_err());
        assert!(IpRange::parse("example.com").is_err());
        assert!(IpRange::parse("::/129").is_err());
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
    }
}
