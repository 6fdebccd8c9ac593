//! Who is on the other end of the connection. `X-Forwarded-For` is believed only
//! when the connection comes from a configured trusted proxy, and then only the
//! addresses our own proxies appended: walking from the right, the first address
//! that is not a trusted proxy is the client. Anything a client wrote further
//! left is ignored, so a spoofed header cannot pick the rate-limit key.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use ipnet::IpNet;

/// The client's address as far as Gatehouse can prove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// `forwarded_for` holds every `X-Forwarded-For` field line in order: several
/// lines are one comma-joined list (RFC 9110), and a proxy may add its own line
/// after the client's.
pub fn resolve_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    // IPv4 clients of a dual-stack listener arrive as ::ffff:a.b.c.d.
    let peer = peer.to_canonical();
    let trusted_hop = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !trusted_hop(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = forwarded_for.iter().rev().flat_map(|line| line.rsplit(','));
    for hop in hops {
        match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) if trusted_hop(&ip) => client = ip,
            Ok(ip) => return ip,
            // An unreadable entry ends what can be believed.
            Err(_) => return client,
        }
    }
    client
}

/// Whether a connection comes from one of the operator's proxies.
pub fn is_trusted_proxy(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// Records the request's [`ClientIp`] for the layers and handlers after it.
pub fn assign(request: &mut Request, trusted: &[IpNet]) {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if let Some(peer) = peer {
        let forwarded: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let ip = resolve_ip(peer, &forwarded, trusted);
        request.extensions_mut().insert(ClientIp(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| panic!())];
        // Straight from the internet: the header is the client's own claim.
        assert_eq!(
            resolve_ip(ip("203.0.113.7"), &["1.2.3.4"], &trusted),
            ip("203.0.113.7")
        );
        // Through our proxy: the address it appended.
        assert_eq!(
            resolve_ip(ip("10.0.0.2"), &["1.2.3.4, 198.51.100.9"], &trusted),
            ip("198.51.100.9")
        );
        // The proxy added its own line after the client's forged one.
        assert_eq!(
            resolve_ip(ip("10.0.0.2"), &["1.2.3.4", "198.51.100.9"], &trusted),
            ip("198.51.100.9")
        );
        // Through two of our proxies.
        assert_eq!(
            resolve_ip(ip("10.0.0.2"), &["198.51.100.9, 10.0.0.3"], &trusted),
            ip("198.51.100.9")
        );
        // Garbage on the right stops the walk at the last address we believe.
        assert_eq!(
            resolve_ip(ip("10.0.0.2"), &["1.2.3.4, nonsense"], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(resolve_ip(ip("10.0.0.2"), &[], &trusted), ip("10.0.0.2"));
        // A dual-stack listener's view of an IPv4 proxy still matches.
        assert_eq!(
            resolve_ip(ip("::ffff:10.0.0.2"), &["198.51.100.9"], &trusted),
            ip("198.51.100.9")
        );
        // No trusted proxies configured: the header never counts.
        assert_eq!(
            resolve_ip(ip("10.0.0.2"), &["1.2.3.4"], &[]),
            ip("10.0.0.2")
        );
    }
}
