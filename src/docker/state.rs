//! What the watcher knows about its daemon ([`State`]) and the catalog it publishes from it:
//! served networks, the node's running containers, and on swarm networks the service records
//! of every node (see `swarm`), with listener addresses (gateways, the sidecar's own) filled
//! in and dockns's own addresses taken out of containers' DNS servers.
//!
//! Containers are held as `Arc`s and the catalog shares them: deriving the catalog after an
//! event copies pointers, never a container, and a container rewritten for the catalog (its
//! DNS servers that name dockns itself, a swarm trim) is copied only when something changes.
//!
//! Pure: no I/O except reading this host's addresses for a wildcard listener. It must not talk
//! to the daemon (that is `sync`) nor decide when to publish (that is `watch`).

use super::convert::NetInfo;
use super::listeners::local_addresses;
use super::peers::Told;
use super::swarm::{self, ClusterInfo, SwarmView};
use super::watch::WatchOptions;
use crate::model::{Catalog, ContainerMap};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// Everything known about the daemon, keyed for deterministic output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Served networks by name.
    pub networks: HashMap<String, NetInfo>,
    /// Network ID → name, for served networks.
    pub net_ids: HashMap<String, String>,
    /// Names of networks seen but not served (so they are not inspected again and again).
    pub unserved: HashSet<String>,
    /// Running, visible containers by ID, shared with the catalogs published from them (a
    /// container that did not change keeps its `Arc` from one catalog to the next).
    pub containers: ContainerMap,
    /// The service records of each served swarm network, by network name (every node).
    pub swarm: BTreeMap<String, SwarmView>,
    /// Service aliases and task containers (managers only; empty on workers).
    pub cluster: ClusterInfo,
    /// Whether the daemon is a swarm manager.
    pub manager: bool,
}

impl State {
    /// Serves a network (replacing what was known of it).
    pub fn add_network(&mut self, ni: NetInfo) {
        self.net_ids
            .insert(ni.network.id.clone(), ni.network.name.clone());
        self.unserved.remove(&ni.network.name);
        self.networks.insert(ni.network.name.clone(), ni);
    }

    /// Stops serving the network with Docker ID `id` (and drops its swarm records); whether it
    /// was served.
    pub fn remove_network_id(&mut self, id: &str) -> bool {
        match self.net_ids.remove(id) {
            Some(name) => {
                self.networks.remove(&name);
                self.swarm.remove(&name);
                // Tables that held hundreds of networks give their room back when most are
                // gone (a hash map never shrinks by itself).
                if self.networks.capacity() > 4 * self.networks.len().max(8) {
                    self.networks.shrink_to_fit();
                    self.net_ids.shrink_to_fit();
                }
                true
            }
            None => false,
        }
    }

    /// Whether two states hold the same node-local tables (networks, containers). The swarm
    /// part is left out: it is polled, and a newer poll is not drift.
    pub fn same_tables(&self, other: &State) -> bool {
        self.networks == other.networks && self.containers == other.containers
    }

    /// Served swarm networks (name, ID), by name.
    pub fn swarm_networks(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .networks
            .values()
            .filter(|n| n.swarm)
            .map(|n| (n.network.name.clone(), n.network.id.clone()))
            .collect();
        out.sort();
        out
    }

    /// The catalog to publish; `local` are this host's addresses (sidecar mode), `peers` what
    /// the dockns of other swarm nodes told (see `peers`). The containers are shared with the
    /// state, not copied: only those whose DNS servers name dockns itself, and those a swarm
    /// network's records trim, are rewritten.
    pub fn catalog(&self, opts: &WatchOptions, local: &[IpAddr], peers: &Told) -> Catalog {
        let mut cat = Catalog::default();
        // Sidecar: the container addresses that are this host's own, by network, in container
        // order (one pass over the containers, not one per network).
        let mut own: HashMap<&str, Vec<IpAddr>> = HashMap::new();
        if opts.sidecar && !local.is_empty() {
            for c in self.containers.values() {
                for ep in &c.endpoints {
                    let ips = ep
                        .ipv4
                        .iter()
                        .map(|a| IpAddr::V4(*a))
                        .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)));
                    for ip in ips.filter(|ip| local.contains(ip)) {
                        own.entry(ep.network.as_str()).or_default().push(ip);
                    }
                }
            }
        }
        for (name, ni) in &self.networks {
            let mut n = ni.network.clone();
            if opts.gateways && ni.driver == "bridge" {
                n.listen_addrs.extend(ni.gateways.iter().copied());
            }
            for ip in own.get(name.as_str()).into_iter().flatten() {
                if !n.listen_addrs.contains(ip) {
                    n.listen_addrs.push(*ip);
                }
            }
            cat.networks.insert(name.clone(), n);
        }
        cat.containers = self.containers.clone();
        let ids: HashMap<String, String> = self
            .networks
            .iter()
            .map(|(name, ni)| (name.clone(), ni.network.id.clone()))
            .collect();
        let mut retired = self.cluster.retired(&self.swarm);
        retired.extend(peers.retired.iter().cloned());
        swarm::merge(
            &mut cat,
            &self.swarm,
            &ids,
            &self.cluster,
            &peers.networks,
            &retired,
        );
        drop_own_dns_servers(&mut cat, opts, local);
        cat
    }
}

/// Removes dockns itself from every container's own DNS servers: a gateway or sidecar listener
/// of any served network, or a fixed listener (a wildcard one covers this host's addresses), so
/// that `--dns <gateway>` (the usual way to point a container at dockns) never loops. What is
/// left stays in the container's order; an emptied list means the default servers.
fn drop_own_dns_servers(cat: &mut Catalog, opts: &WatchOptions, local: &[IpAddr]) {
    if cat.containers.values().all(|c| c.dns.is_empty()) {
        return;
    }
    let mut own: Vec<std::net::SocketAddr> = opts.own.clone();
    for n in cat.networks.values() {
        own.extend(
            n.listen_addrs
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, opts.port)),
        );
    }
    // A wildcard listener on the servers' port answers on every local address.
    let wildcard = opts
        .own
        .iter()
        .any(|l| l.ip().is_unspecified() && l.port() == 53);
    let fetched;
    let local = if wildcard && local.is_empty() {
        fetched = local_addresses();
        &fetched[..]
    } else {
        local
    };
    let is_own = |s: &std::net::SocketAddr| crate::addr::is_own_listener(*s, &own, local);
    for c in cat.containers.values_mut() {
        // Copy-on-write: a container that lists none of dockns's addresses stays shared.
        if c.dns.iter().any(is_own) {
            std::sync::Arc::make_mut(c).dns.retain(|s| !is_own(s));
        }
    }
}

impl State {
    /// Whether a node-local container has an address on a swarm network that the network's
    /// records do not list (yet).
    pub fn unlisted_local(&self) -> bool {
        if self.swarm.is_empty() {
            return false;
        }
        self.containers.values().any(|c| {
            c.endpoints.iter().any(|ep| {
                self.swarm.get(&ep.network).is_some_and(|v| {
                    ep.ipv4
                        .iter()
                        .map(|a| IpAddr::V4(*a))
                        .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)))
                        .any(|ip| !v.endpoints.iter().any(|e| e.ip == ip))
                })
            })
        })
    }

    /// Service aliases a manager knows, by network name then service.
    pub fn service_aliases(&self) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for (name, id) in self.swarm_networks() {
            for ((net_id, svc), aliases) in &self.cluster.aliases {
                if *net_id == id || *net_id == name {
                    out.entry(name.clone())
                        .or_default()
                        .insert(svc.clone(), aliases.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::DockerConfig;
    use crate::model::{Container, Endpoint, Health, Network, ServiceRecord};
    use std::sync::Arc;

    fn opts(gateways: bool, sidecar: bool) -> WatchOptions {
        WatchOptions {
            docker: DockerConfig {
                endpoint: None,
                default_bridge: false,
                health_aware: true,
                sweep_interval: None,
            },
            gateways,
            sidecar,
            port: 53,
            own: vec![],
        }
    }

    fn state() -> State {
        let mut st = State::default();
        for (name, driver, gw) in [("app", "bridge", "10.5.0.1"), ("mv", "macvlan", "10.6.0.1")] {
            st.add_network(NetInfo {
                network: Network {
                    name: name.into(),
                    id: format!("id-{name}"),
                    internal: false,
                    listen_addrs: vec![],
                    subnets: vec![],
                },
                driver: driver.into(),
                gateways: vec![gw.parse().unwrap()],
                swarm: false,
            });
        }
        st.containers.insert(
            "c1".into(),
            Arc::new(Container {
                id: "c1".into(),
                name: "self".into(),
                hostname: None,
                health: Health::None,
                extra_names: vec![],
                dns: Vec::new(),
                endpoints: vec![Endpoint {
                    network: "app".into(),
                    ipv4: vec!["10.5.0.7".parse().unwrap()],
                    ipv6: vec![],
                    aliases: vec![],
                    links: Vec::new(),
                }],
                anonymous: false,
            }),
        );
        st
    }

    #[test]
    fn gateway_listeners_only_on_bridges() {
        let cat = state().catalog(&opts(true, false), &[], &Told::default());
        assert_eq!(
            cat.networks["app"].listen_addrs,
            vec!["10.5.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(cat.networks["mv"].listen_addrs.is_empty());
        let cat = state().catalog(&opts(false, false), &[], &Told::default());
        assert!(cat.networks["app"].listen_addrs.is_empty());
    }

    #[test]
    fn sidecar_binds_own_address() {
        let local: Vec<IpAddr> = vec!["10.5.0.7".parse().unwrap()];
        let cat = state().catalog(&opts(false, true), &local, &Told::default());
        assert_eq!(cat.networks["app"].listen_addrs, local);
        let cat = state().catalog(&opts(false, true), &[], &Told::default());
        assert!(cat.networks["app"].listen_addrs.is_empty());
    }

    #[test]
    fn own_addresses_leave_container_dns_lists() {
        let sa = |s: &str| -> std::net::SocketAddr { s.parse().unwrap() };
        let mut st = state();
        Arc::make_mut(st.containers.get_mut("c1").unwrap()).dns = vec![
            sa("10.5.0.1:53"),
            sa("192.0.2.53:53"),
            sa("10.5.0.7:53"),
            sa("127.0.0.1:53"),
        ];
        // Gateway listeners on 10.5.0.1:53 and a fixed one on 127.0.0.1:53.
        let mut o = opts(true, false);
        o.own = vec![sa("127.0.0.1:53")];
        let cat = st.catalog(&o, &[], &Told::default());
        assert_eq!(
            cat.containers["c1"].dns,
            [sa("192.0.2.53:53"), sa("10.5.0.7:53")]
        );
        // Sidecar on 10.5.0.7: that one goes; the gateway is someone else then.
        let local: Vec<IpAddr> = vec!["10.5.0.7".parse().unwrap()];
        let cat = st.catalog(&opts(false, true), &local, &Told::default());
        assert_eq!(
            cat.containers["c1"].dns,
            [sa("10.5.0.1:53"), sa("192.0.2.53:53"), sa("127.0.0.1:53")]
        );
        // A wildcard fixed listener on port 53 is every local address.
        let mut o = opts(false, false);
        o.own = vec![sa("0.0.0.0:53")];
        let cat = st.catalog(&o, &local, &Told::default());
        assert_eq!(
            cat.containers["c1"].dns,
            [sa("10.5.0.1:53"), sa("192.0.2.53:53")]
        );
    }

    #[test]
    fn network_removal_drops_services() {
        let mut st = state();
        let mut view = SwarmView::default();
        view.services.insert(
            "s".into(),
            ServiceRecord {
                name: "s".into(),
                network: "app".into(),
                vips: vec![],
                tasks: vec![],
            },
        );
        st.swarm.insert("app".into(), view);
        assert!(st.remove_network_id("id-app"));
        assert!(!st.remove_network_id("id-app"));
        assert!(st.swarm.is_empty());
        assert!(!st.networks.contains_key("app"));
    }

    #[test]
    fn a_local_container_the_records_do_not_list_yet() {
        let mut st = state();
        assert!(
            !st.unlisted_local(),
            "no swarm network: nothing to wait for"
        );
        st.swarm.insert("app".into(), SwarmView::default());
        assert!(st.unlisted_local());
        st.swarm
            .get_mut("app")
            .unwrap()
            .endpoints
            .push(crate::docker::swarm::SwarmEndpoint {
                name: "self".into(),
                ip: "10.5.0.7".parse().unwrap(),
                service: String::new(),
            });
        assert!(!st.unlisted_local());
    }

    #[test]
    fn drift_ignores_bookkeeping() {
        let a = state();
        let mut b = state();
        b.unserved.insert("bridge".into());
        b.manager = true;
        // A newer poll of the swarm's records is not drift either.
        b.swarm.insert("ov".into(), SwarmView::default());
        assert!(a.same_tables(&b));
        b.containers.clear();
        assert!(!a.same_tables(&b));
    }

    #[test]
    fn removing_most_networks_gives_their_room_back() {
        // Host mode followed 300 networks, then 280 were removed (issue 14): the tables must
        // not keep room for 300.
        let mut st = State::default();
        for i in 0..300 {
            st.add_network(NetInfo {
                network: Network {
                    name: format!("n{i}"),
                    id: format!("id-n{i}"),
                    internal: false,
                    listen_addrs: vec![],
                    subnets: vec![],
                },
                driver: "bridge".into(),
                gateways: vec![],
                swarm: false,
            });
        }
        for i in 20..300 {
            assert!(st.remove_network_id(&format!("id-n{i}")));
        }
        assert_eq!(st.networks.len(), 20);
        assert!(
            st.networks.capacity() < 4 * 20 && st.net_ids.capacity() < 4 * 20,
            "capacity {} / {} for 20 networks",
            st.networks.capacity(),
            st.net_ids.capacity()
        );
    }
}
