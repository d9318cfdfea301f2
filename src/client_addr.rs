//! Who a request comes from, for the budgets kept per client address: the TCP peer, or behind
//! a trusted proxy (`MRM_TRUSTED_PROXIES`) the client that proxy names in `X-Forwarded-For`.
//!
//! Budgets are kept per [`budget_key`]: an IPv4 address (IPv4-mapped IPv6 included) on its own,
//! an IPv6 address by its /64, since anyone with IPv6 holds a whole /64 and could otherwise take
//! a fresh budget for each of its addresses.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use axum::{
    extract::{rejection::ExtensionRejection, ConnectInfo, FromRequestParts},
    http::{request::Parts, HeaderMap, HeaderValue},
};
use ipnet::IpNet;

use crate::state::AppState;

/// The header proxies append the address they received a request from to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The address a per-address budget is kept under: an IPv4 address as it is (an IPv4-mapped
/// IPv6 address as the IPv4 address it maps), an IPv6 address with all but its first 64 bits
/// zeroed.
pub fn budget_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(network))
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`MRM_TRUSTED_PROXIES`): addresses and
/// networks, IPv4 and IPv6. Empty, the default, trusts no one: the header is then ignored, so a
/// client cannot name itself someone else to escape its budget.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Whether `ip` (an IPv4-mapped IPv6 address as its IPv4 address) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client a request from `peer` comes from. From a trusted proxy, it is the right-most
    /// address of `X-Forwarded-For` (several such headers read as one list, in order) that is
    /// not itself a trusted proxy, or the left-most when all are; a proxy appends the address it
    /// received the request from, so everything left of that is what the client claims, and
    /// only the addresses the trusted proxies wrote are believed. An entry may carry a port
    /// (`192.0.2.1:4711`, `[2001:db8::1]:4711`). A header that is missing, or that holds
    /// something other than an address where it is read, leaves the peer as the client. The
    /// result is IPv4 for an IPv4-mapped address.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        self.forwarded_client(headers.get_all(X_FORWARDED_FOR).iter())
            .unwrap_or(peer)
    }

    /// The client named by a trusted proxy's `X-Forwarded-For` values, read right to left; none
    /// when they are empty or malformed where read.
    fn forwarded_client<'a>(
        &self,
        values: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    ) -> Option<IpAddr> {
        let mut left_most = None;
        for value in values.rev() {
            let list = value.to_str().ok()?;
            for entry in list.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
                let ip = forwarded_address(entry)?;
                if !self.contains(ip) {
                    return Some(ip);
                }
                left_most = Some(ip);
            }
        }
        left_most
    }
}

/// One entry of `X-Forwarded-For`: an address, with or without a port.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of addresses (`10.0.0.5`, `::1`) and networks (`10.0.0.0/8`,
    /// `fd00::/8`); blanks around entries and empty entries are ignored. A network written with
    /// host bits (`10.1.2.3/8`) means the network that holds it. Errors: an entry that is
    /// neither, quoted.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        raw.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let net = entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!(
                            "bad entry {entry:?}: expected an IP address or a network such as \
                             10.0.0.0/8 or fd00::/8"
                        )
                    })?;
                Ok(canonical(net.trunc()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// An IPv4-mapped IPv6 address or network as the IPv4 one it maps, as peers are compared.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(ToString::to_string))
            .finish()
    }
}

/// The extractor of the client's address, as [`TrustedProxies::client`] resolves it from the
/// peer's address (axum's [`ConnectInfo`], which the accept loop sets) and `MRM_TRUSTED_PROXIES`.
/// Use it, never the peer's address, for anything kept per client. Rejection: a 500 when the
/// request has no peer address, as [`ConnectInfo`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ExtensionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await?;
        Ok(Self(
            state
                .config
                .trusted_proxies
                .client(peer.ip(), &parts.headers),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn ipv6_addresses_share_a_budget_per_64_and_ipv4_ones_do_not() {
        assert_eq!(
            budget_key(ip("2001:db8:1:2:aaaa::1")),
            budget_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_eq!(budget_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(
            budget_key(ip("2001:db8:1:2::1")),
            budget_key(ip("2001:db8:1:3::1"))
        );
        assert_ne!(budget_key(ip("192.0.2.1")), budget_key(ip("192.0.2.2")));
        // An IPv4-mapped address is the IPv4 client it maps, not one of a shared /64.
        assert_eq!(budget_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_ne!(
            budget_key(ip("::ffff:192.0.2.1")),
            budget_key(ip("::ffff:192.0.2.2"))
        );
    }

    #[test]
    fn addresses_and_networks_of_both_families_are_read() {
        let proxies = trusted(" 10.0.0.0/8, 192.0.2.7 ,, fd00::/8, ::1, 172.16.5.9/12 ");
        assert!(proxies.contains(ip("10.200.0.1")));
        assert!(proxies.contains(ip("192.0.2.7")));
        assert!(!proxies.contains(ip("192.0.2.8")));
        assert!(proxies.contains(ip("fd12::5")));
        assert!(proxies.contains(ip("::1")));
        assert!(!proxies.contains(ip("::2")));
        // Host bits in a network mean the network that holds them.
        assert!(proxies.contains(ip("172.31.0.1")));
        // An IPv4-mapped peer is compared as IPv4, and a mapped entry means its IPv4 address.
        assert!(proxies.contains(ip("::ffff:10.1.1.1")));
        assert!(trusted("::ffff:192.0.2.1").contains(ip("192.0.2.1")));
        assert!(trusted("").is_empty());
        assert_eq!(
            "10.0.0.0/8, nginx".parse::<TrustedProxies>().unwrap_err(),
            "bad entry \"nginx\": expected an IP address or a network such as 10.0.0.0/8 or \
             fd00::/8"
        );
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_trusted() {
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &headers),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted("10.0.0.1").client(ip("127.0.0.1"), &headers),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted("127.0.0.1").client(ip("127.0.0.1"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_client_is_the_right_most_address_no_trusted_proxy_wrote() {
        let proxies = trusted("10.0.0.0/8, 2001:db8:ffff::/48");
        let peer = ip("10.0.0.1");
        // What the client claimed (left) is passed over; proxies are walked back.
        let headers = forwarded(&["198.51.100.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(proxies.client(peer, &headers), ip("203.0.113.9"));
        // Several headers are one list, in order.
        let headers = forwarded(&["198.51.100.1", "203.0.113.9", "10.0.0.2, 10.0.0.3"]);
        assert_eq!(proxies.client(peer, &headers), ip("203.0.113.9"));
        // IPv6, with ports, bracketed, and IPv4-mapped.
        let headers = forwarded(&["2001:db8::5, [2001:db8:ffff::1]:443"]);
        assert_eq!(proxies.client(peer, &headers), ip("2001:db8::5"));
        let headers = forwarded(&["[2001:db8::6]:5000"]);
        assert_eq!(proxies.client(peer, &headers), ip("2001:db8::6"));
        let headers = forwarded(&["[2001:db8::7]"]);
        assert_eq!(proxies.client(peer, &headers), ip("2001:db8::7"));
        let headers = forwarded(&["203.0.113.10:5000"]);
        assert_eq!(proxies.client(peer, &headers), ip("203.0.113.10"));
        let headers = forwarded(&["::ffff:203.0.113.11"]);
        assert_eq!(proxies.client(peer, &headers), ip("203.0.113.11"));
        // Every hop trusted: the left-most one is the client.
        let headers = forwarded(&["10.9.9.9, 10.0.0.2"]);
        assert_eq!(proxies.client(peer, &headers), ip("10.9.9.9"));
        // An IPv4-mapped peer is trusted as its IPv4 address.
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_missing_or_malformed_header_leaves_the_peer() {
        let proxies = trusted("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        assert_eq!(proxies.client(peer, &HeaderMap::new()), peer);
        assert_eq!(proxies.client(peer, &forwarded(&[""])), peer);
        assert_eq!(proxies.client(peer, &forwarded(&[" , "])), peer);
        assert_eq!(proxies.client(peer, &forwarded(&["unknown"])), peer);
        assert_eq!(
            proxies.client(peer, &forwarded(&["203.0.113.9, garbage"])),
            peer
        );
        assert_eq!(
            proxies.client(peer, &forwarded(&["203.0.113.9, 10.0.0.2/8"])),
            peer
        );
        let mut headers = HeaderMap::new();
        headers.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap(),
        );
        assert_eq!(proxies.client(peer, &headers), peer);
        // Only what is read counts: junk left of the client is the client's own claim.
        assert_eq!(
            proxies.client(peer, &forwarded(&["garbage, 203.0.113.9"])),
            ip("203.0.113.9")
        );
    }
}
