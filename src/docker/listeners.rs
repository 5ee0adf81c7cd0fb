//! Gateway and sidecar listeners: which addresses dockns should listen on for the Docker networks
//! it serves, and keeping the server's [`ListenerSet`] in step with that list.
//!
//! The watcher computes the wanted addresses from its catalog (each network's `listen_addrs`) and
//! calls [`ListenerSync::apply`]; this module binds what is new, unbinds what is gone, and reports
//! each bind failure once. It never decides which networks exist (that is `watch`) and never
//! touches a listener it did not start (the fixed `[server] listen` ones).
//!
//! It also reads this machine's interface addresses, and tells when they change
//! ([`AddressChanges`], netlink notices instead of a timer: a host with hundreds of Docker
//! bridges must not re-read them all every few seconds while idle).

use crate::dns::listen::ListenerSet;
use crate::model::Catalog;
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The listeners the Docker source owns.
pub struct ListenerSync {
    set: Arc<ListenerSet>,
    port: u16,
    bound: BTreeSet<SocketAddr>,
    failed: BTreeSet<SocketAddr>,
    warned: BTreeSet<SocketAddr>,
    /// Something besides the networks changed what [`apply`](Self::apply) would do (failures
    /// forgotten, listeners adopted) since it last ran.
    stale: bool,
}

impl ListenerSync {
    /// Manages listeners on `port` inside `set`.
    pub fn new(set: Arc<ListenerSet>, port: u16) -> ListenerSync {
        ListenerSync {
            set,
            port,
            bound: BTreeSet::new(),
            failed: BTreeSet::new(),
            warned: BTreeSet::new(),
            stale: true,
        }
    }

    /// Forget past bind failures, so the next [`apply`](Self::apply) tries them again (an
    /// address may have appeared meanwhile, e.g. an IPv6 gateway after duplicate address
    /// detection). Each failing address is still only logged once.
    pub fn retry_failed(&mut self) {
        self.failed.clear();
        self.stale = true;
    }

    /// Whether [`apply`](Self::apply) may do something for a catalog whose networks are the
    /// ones it was last applied with: it does only after [`retry_failed`](Self::retry_failed)
    /// or [`adopt`](Self::adopt) (a failed address is not tried again until then).
    pub fn stale(&self) -> bool {
        self.stale
    }

    /// Whether some wanted address could not be bound.
    pub fn has_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Binds every network listen address of `catalog` not yet bound and unbinds the ones no
    /// network lists any more.
    pub fn apply(&mut self, catalog: &Catalog) {
        self.stale = false;
        let wanted: BTreeSet<SocketAddr> = catalog
            .networks
            .values()
            .flat_map(|n| n.listen_addrs.iter())
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect();
        let gone: Vec<SocketAddr> = self.bound.difference(&wanted).copied().collect();
        for addr in gone {
            self.set.remove(addr);
            self.bound.remove(&addr);
        }
        self.failed.retain(|a| wanted.contains(a));
        self.warned.retain(|a| wanted.contains(a));
        for addr in wanted {
            if self.bound.contains(&addr) || self.failed.contains(&addr) {
                continue;
            }
            match self.set.add(addr) {
                Ok(_) => {
                    self.bound.insert(addr);
                    if self.warned.remove(&addr) {
                        tracing::info!(%addr, "network listener started after all");
                    }
                }
                Err(e) => {
                    if self.warned.insert(addr) {
                        tracing::warn!("network listener not started (retrying): {e}");
                    }
                    self.failed.insert(addr);
                }
            }
        }
    }

    /// Takes over listeners bound before the first sync (a sidecar's own addresses, bound at
    /// start): the next [`apply`](Self::apply) keeps the ones a served network lists and unbinds
    /// the others.
    pub fn adopt(&mut self, addrs: &[SocketAddr]) {
        self.bound.extend(addrs.iter().copied());
        self.stale = true;
    }

    /// The addresses currently bound by this source.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.bound.iter().copied().collect()
    }

    /// Unbinds everything this source bound.
    pub fn clear(&mut self) {
        for addr in std::mem::take(&mut self.bound) {
            self.set.remove(addr);
        }
        self.stale = true;
    }
}

/// The addresses configured on this machine's (or this container's) interfaces. Used by sidecar
/// mode to find which container dockns itself runs in. Empty if the kernel will not say.
pub fn local_addresses() -> Vec<IpAddr> {
    local_interfaces().into_iter().map(|n| n.addr()).collect()
}

/// The addresses a sidecar listens on before it knows anything from Docker: every interface
/// address of its container except loopback, link-local and multicast ones (Docker gives a
/// container one address per network; the first sync then keeps those of served networks).
pub fn sidecar_addresses() -> Vec<IpNet> {
    local_interfaces()
        .into_iter()
        .filter(|n| {
            let ip = n.addr();
            !ip.is_loopback()
                && !ip.is_multicast()
                && !ip.is_unspecified()
                && match ip {
                    IpAddr::V4(v4) => !v4.is_link_local(),
                    IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
                }
        })
        .collect()
}

/// Notice of changes to this machine's interface addresses: a netlink route socket subscribed
/// to the IPv4 and IPv6 address groups (`RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`, see
/// rtnetlink(7)), so whoever follows the addresses sleeps until one is added or removed.
pub struct AddressChanges {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl AddressChanges {
    /// Subscribes. Must be called on a tokio runtime with I/O enabled.
    pub fn subscribe() -> std::io::Result<AddressChanges> {
        use nix::sys::socket::{socket, AddressFamily, NetlinkAddr, SockFlag, SockProtocol};
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Netlink,
            nix::sys::socket::SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        let groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        nix::sys::socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it until it is dropped: the
        // descriptor stays open and is never replaced meanwhile.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }?;
        Ok(AddressChanges { fd })
    }

    /// Waits for the next change, then reads every notice already queued (a burst, such as
    /// Docker creating many networks, is one change). A notice lost to a full socket buffer
    /// (`ENOBUFS`) also counts as a change. Errors only when the socket itself fails.
    pub async fn changed(&self) -> std::io::Result<()> {
        use nix::errno::Errno;
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 4096];
        loop {
            let mut ready = self.fd.readable().await?;
            let mut seen = false;
            loop {
                match recv(
                    self.fd.get_ref().as_raw_fd(),
                    &mut buf,
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(_) | Err(Errno::ENOBUFS) => seen = true,
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => {
                        ready.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if seen {
                return Ok(());
            }
        }
    }
}

/// Interface addresses with their prefix lengths (from the netmask; a host prefix when the
/// netmask is missing).
pub fn local_interfaces() -> Vec<IpNet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let ip = sockaddr_ip(ifa.address.as_ref()?)?;
            let prefix = ifa
                .netmask
                .as_ref()
                .and_then(sockaddr_ip)
                .and_then(|mask| ipnet::ip_mask_to_prefix(mask).ok());
            Some(prefix.map_or(IpNet::from(ip), |len| {
                IpNet::new(ip, len).unwrap_or(IpNet::from(ip))
            }))
        })
        .collect()
}

/// The IP address of an IPv4 or IPv6 socket address (`None` for other families).
fn sockaddr_ip(sa: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = sa.as_sockaddr_in() {
        Some(IpAddr::V4(v4.ip()))
    } else {
        sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local() {
        let addrs = local_addresses();
        assert!(
            addrs.contains(&IpAddr::from([127, 0, 0, 1])),
            "getifaddrs did not list 127.0.0.1: {addrs:?}"
        );
        let nets = local_interfaces();
        assert!(
            nets.contains(&"127.0.0.1/8".parse().unwrap()),
            "loopback's netmask is /8: {nets:?}"
        );
        assert!(sidecar_addresses().iter().all(|n| !n.addr().is_loopback()));
    }

    /// An address added to loopback is noticed (rtnetlink(7): RTM_NEWADDR goes to the
    /// RTMGRP_IPV4_IFADDR group), and getifaddrs lists it by then. Needs root.
    #[tokio::test]
    async fn address_changes_are_noticed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("address_changes_are_noticed: skipped, needs root to add an address");
            return;
        }
        let changes = AddressChanges::subscribe().expect("netlink route socket");
        let addr = "127.77.12.34/32";
        let ip = |op: &str| {
            std::process::Command::new("ip")
                .args(["addr", op, addr, "dev", "lo"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        assert!(ip("add"), "ip addr add {addr} dev lo failed");
        let added =
            tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed()).await;
        let seen = local_addresses().contains(&IpAddr::from([127, 77, 12, 34]));
        ip("del");
        assert!(
            matches!(added, Ok(Ok(()))),
            "adding {addr} was not noticed: {added:?}"
        );
        assert!(seen, "getifaddrs did not list {addr} after the notice");
    }
}
