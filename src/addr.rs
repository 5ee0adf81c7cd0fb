//! DNS server addresses as people write them, shared by the configuration, both sources of names
//! and the load generator: `ADDR[:PORT]` (port 53 when absent) and the loop check that keeps
//! dockns from forwarding to its own listeners.
//!
//! Pure functions on addresses: this module must not read files, sockets or any other dockns
//! module.

use std::net::{IpAddr, SocketAddr};

/// Parses `ADDR[:PORT]` for upstreams (port 53 when absent).
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    // Drop an IPv6 zone ("fe80::1%eth0") the way resolv.conf may write it.
    let ip = ip.split('%').next().unwrap_or(ip);
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// Whether `upstream` is one of our own listeners (forwarding there would loop).
pub fn is_own(upstream: SocketAddr, listen: &[SocketAddr]) -> bool {
    is_own_listener(upstream, listen, &[])
}

/// Whether `upstream` is one of the listeners `listen` (forwarding there would loop): the same
/// address and port, or a wildcard listener on that port and an address that is loopback,
/// unspecified or one of this host's `local` addresses.
pub fn is_own_listener(upstream: SocketAddr, listen: &[SocketAddr], local: &[IpAddr]) -> bool {
    listen.iter().any(|l| {
        l.port() == upstream.port()
            && (l.ip() == upstream.ip()
                || (l.ip().is_unspecified()
                    && (upstream.ip().is_loopback()
                        || upstream.ip().is_unspecified()
                        || local.contains(&upstream.ip()))))
    })
}
