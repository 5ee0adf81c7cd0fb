//! What the watcher knows about its daemon ([`State`]) and the catalog it publishes from it:
//! served networks, the node's running containers, and on swarm networks the service records
//! of every node (see `swarm`), with listener addresses (gateways, the sidecar's own) filled
//! in and dockns's own addresses taken out of containers' DNS servers.
//!
//! Containers are held as `Arc`s in a persistent map and the catalog shares them: deriving the
//! catalog after an event costs in proportion to the change, not to the containers. The state
//! keeps what it derived last (the served networks with their listeners, the filtered
//! containers) and redoes only what the change touched; a container rewritten for the catalog
//! (its DNS servers that name dockns itself, a swarm trim) is copied only when something
//! changes.
//!
//! Pure: no I/O except reading this host's addresses for a wildcard listener. It must not talk
//! to the daemon (that is `sync`) nor decide when to publish (that is `watch`).

use super::convert::NetInfo;
use super::listeners::local_addresses;
use super::peers::Told;
use super::swarm::{self, ClusterInfo, SwarmView};
use super::watch::WatchOptions;
use crate::model::{Catalog, Container, ContainerMap, NetworkMap};
use crate::room::Room;
use imbl::ordmap::DiffItem;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Everything known about the daemon, keyed for deterministic output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Served networks by name. Shared with what [`State::catalog`] derived from them, so that
    /// telling whether they changed since is one pointer comparison while they have not
    /// (changed only through [`State::add_network`] and [`State::remove_network_id`]).
    pub networks: Arc<HashMap<String, NetInfo>>,
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
    /// What [`State::catalog`] derived last (see there).
    derived: DerivedCache,
    /// When the network tables give their room back (see [`State::remove_network_id`]).
    networks_room: Room,
}

impl State {
    /// Serves a network (replacing what was known of it).
    pub fn add_network(&mut self, ni: NetInfo) {
        self.net_ids
            .insert(ni.network.id.clone(), ni.network.name.clone());
        self.unserved.remove(&ni.network.name);
        if self.networks.get(&ni.network.name) != Some(&ni) {
            Arc::make_mut(&mut self.networks).insert(ni.network.name.clone(), ni);
        }
        self.networks_room.grew(self.networks.len());
    }

    /// Stops serving the network with Docker ID `id` (and drops its swarm records); whether it
    /// was served.
    pub fn remove_network_id(&mut self, id: &str) -> bool {
        match self.net_ids.remove(id) {
            Some(name) => {
                let networks = Arc::make_mut(&mut self.networks);
                networks.remove(&name);
                self.swarm.remove(&name);
                // Tables that held hundreds of networks give their room back when most are
                // gone (see `room`).
                if self.networks_room.shrink_now(networks.len()) {
                    networks.shrink_to_fit();
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
    ///
    /// Derived from the last catalog, in proportion to the change: the served networks (with
    /// their listener addresses) are reused as long as the networks, the options and `local`
    /// are the same, and only the containers that changed since (a diff of the persistent
    /// maps, which skips what they share) have their DNS servers filtered again. Swarm
    /// networks, a wildcard listener that needs this host's addresses, or any other change of
    /// the inputs derive everything afresh, as a first call does.
    pub fn catalog(&mut self, opts: &WatchOptions, local: &[IpAddr], peers: &Told) -> Catalog {
        let key = DeriveKey {
            gateways: opts.gateways,
            sidecar: opts.sidecar,
            port: opts.port,
            own: opts.own.clone(),
            local: local.to_vec(),
        };
        let prev = self.derived.0.take().filter(|d| d.key == key);
        // Sidecar: the container addresses that are this host's own, by network, in container
        // order; walked again only when a container that changed has one of them.
        let own = match (&prev, opts.sidecar && !local.is_empty()) {
            (_, false) => HashMap::new(),
            (Some(d), true) => {
                let touched = d.containers_in.diff(&self.containers).any(|item| {
                    let (a, b) = diff_sides(&item);
                    a.into_iter().chain(b).any(|c| has_address_in(c, local))
                });
                if touched {
                    own_addresses(&self.containers, local)
                } else {
                    d.own.clone()
                }
            }
            (None, true) => own_addresses(&self.containers, local),
        };
        // The served networks: the last ones while nothing they come from changed.
        let reused = prev
            .as_ref()
            .is_some_and(|d| d.own == own && same_map(&d.networks_in, &self.networks));
        let (networks, networks_in) = match &prev {
            Some(d) if reused => (d.networks.clone(), None),
            _ => (
                served_networks(&self.networks, opts, &own),
                Some(self.networks.clone()),
            ),
        };
        let mut cat = Catalog {
            networks,
            containers: self.containers.clone(),
            services: Vec::new(),
        };
        let swarm_part = !self.swarm.is_empty();
        if swarm_part {
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
        }
        // Containers: the last catalog's, with only the changed ones filtered again, when
        // the filter's inputs (the networks' listeners, the options) are the same and no swarm
        // part rewrote them; else every container (see `drop_own_dns_servers`).
        let carried = match prev {
            Some(d) if reused && !swarm_part && d.swarm_free => {
                carry_containers(d, &self.containers, &cat, opts, local)
            }
            Some(d) => Err(Some(d)),
            None => Err(None),
        };
        let (containers_out, with_dns, prev) = match carried {
            Ok((out, with_dns, prev)) => (out, with_dns, Some(prev)),
            Err(prev) => {
                let with_dns = self
                    .containers
                    .values()
                    .filter(|c| !c.dns.is_empty())
                    .count();
                if with_dns > 0 {
                    drop_own_dns_servers(&mut cat, opts, local);
                }
                (cat.containers.clone(), with_dns, prev)
            }
        };
        cat.containers = containers_out.clone();
        let networks_in = match (networks_in, prev) {
            (Some(n), _) => n,
            (None, Some(d)) => d.networks_in,
            (None, None) => self.networks.clone(),
        };
        self.derived.0 = Some(Box::new(Derived {
            key,
            own,
            networks_in,
            networks: cat.networks.clone(),
            swarm_free: !swarm_part,
            containers_in: self.containers.clone(),
            containers_out,
            with_dns,
        }));
        cat
    }
}

/// Whether two network tables are the same: the same allocation (nothing changed them since
/// one was cloned from the other), else compared by value.
fn same_map(a: &Arc<HashMap<String, NetInfo>>, b: &Arc<HashMap<String, NetInfo>>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// The catalog's containers from the last derivation `d`: the containers that changed since
/// (a diff of the persistent maps) are filtered again, the others kept. With their count of
/// containers that have DNS servers of their own, and what is left of `d`. `Err` (giving `d`
/// back) when every container must be filtered afresh: a wildcard listener reads this host's
/// addresses anew, so nothing is carried over once some container has DNS servers.
#[allow(clippy::type_complexity)]
fn carry_containers(
    d: Box<Derived>,
    containers: &ContainerMap,
    cat: &Catalog,
    opts: &WatchOptions,
    local: &[IpAddr],
) -> Result<(ContainerMap, usize, Box<Derived>), Option<Box<Derived>>> {
    let wildcard = local.is_empty()
        && opts
            .own
            .iter()
            .any(|l| l.ip().is_unspecified() && l.port() == 53);
    if wildcard && d.with_dns > 0 {
        return Err(Some(d));
    }
    let mut out = d.containers_out.clone();
    let mut with_dns = d.with_dns;
    let mut filter: Option<OwnFilter> = None;
    for item in d.containers_in.diff(containers) {
        let (old, new) = diff_sides(&item);
        with_dns = with_dns.saturating_sub(usize::from(old.is_some_and(|c| !c.dns.is_empty())));
        with_dns += usize::from(new.is_some_and(|c| !c.dns.is_empty()));
        match item {
            DiffItem::Remove(k, _) => {
                out.remove(k);
            }
            DiffItem::Add(k, c) | DiffItem::Update { new: (k, c), .. } => {
                if c.dns.is_empty() {
                    out.insert(k.clone(), c.clone());
                    continue;
                }
                if wildcard {
                    return Err(Some(d));
                }
                let f = filter.get_or_insert_with(|| OwnFilter::new(cat, opts, local));
                out.insert(k.clone(), f.rewrite(c));
            }
        }
    }
    Ok((out, with_dns, d))
}

/// The inputs of [`State::catalog`] besides the state: a cached derivation is reused only for
/// the same ones.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DeriveKey {
    gateways: bool,
    sidecar: bool,
    port: u16,
    own: Vec<SocketAddr>,
    local: Vec<IpAddr>,
}

/// What [`State::catalog`] derived last, and from what.
#[derive(Debug)]
struct Derived {
    key: DeriveKey,
    /// Sidecar: this host's container addresses, by network.
    own: HashMap<String, Vec<IpAddr>>,
    /// The state's networks it was derived from (the same `Arc` while they did not change).
    networks_in: Arc<HashMap<String, NetInfo>>,
    /// The catalog's networks.
    networks: NetworkMap,
    /// No swarm part was merged (the containers are the state's, DNS servers filtered).
    swarm_free: bool,
    /// The state's containers it was derived from (diffed against the next ones).
    containers_in: ContainerMap,
    /// The catalog's containers (DNS servers that name dockns dropped).
    containers_out: ContainerMap,
    /// How many of `containers_in` have DNS servers of their own.
    with_dns: usize,
}

/// The last derivation of [`State::catalog`]; not part of the state's value (a clone starts
/// without one, and two states compare equal whatever they hold).
#[derive(Default)]
struct DerivedCache(Option<Box<Derived>>);

impl Clone for DerivedCache {
    fn clone(&self) -> Self {
        DerivedCache(None)
    }
}

impl PartialEq for DerivedCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DerivedCache {}

impl std::fmt::Debug for DerivedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "DerivedCache(Some)"
        } else {
            "DerivedCache(None)"
        })
    }
}

type ContainerDiff<'a> = DiffItem<'a, 'a, Arc<str>, Arc<Container>>;

/// The old and the new container of a diff item (`None`: absent on that side).
fn diff_sides<'a>(item: &ContainerDiff<'a>) -> (Option<&'a Container>, Option<&'a Container>) {
    match item {
        DiffItem::Add(_, c) => (None, Some(&***c)),
        DiffItem::Remove(_, c) => (Some(&***c), None),
        DiffItem::Update {
            old: (_, a),
            new: (_, b),
        } => (Some(&***a), Some(&***b)),
    }
}

/// All addresses of an endpoint.
fn endpoint_ips(ep: &crate::model::Endpoint) -> impl Iterator<Item = IpAddr> + '_ {
    ep.ipv4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)))
}

/// Whether a container has one of `local`'s addresses on some endpoint.
fn has_address_in(c: &Container, local: &[IpAddr]) -> bool {
    c.endpoints
        .iter()
        .any(|ep| endpoint_ips(ep).any(|ip| local.contains(&ip)))
}

/// The container addresses that are this host's own, by network, in container order (one pass
/// over the containers, not one per network).
fn own_addresses(containers: &ContainerMap, local: &[IpAddr]) -> HashMap<String, Vec<IpAddr>> {
    let mut own: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for c in containers.values() {
        for ep in &c.endpoints {
            for ip in endpoint_ips(ep).filter(|ip| local.contains(ip)) {
                own.entry(ep.network.clone()).or_default().push(ip);
            }
        }
    }
    own
}

/// The served networks as the catalog shows them: gateway listeners on bridges (with
/// `gateways`), the sidecar's own addresses.
fn served_networks(
    networks: &HashMap<String, NetInfo>,
    opts: &WatchOptions,
    own: &HashMap<String, Vec<IpAddr>>,
) -> NetworkMap {
    let mut out = NetworkMap::new();
    for (name, ni) in networks {
        let mut n = ni.network.clone();
        if opts.gateways && ni.driver == "bridge" {
            n.listen_addrs.extend(ni.gateways.iter().copied());
        }
        for ip in own.get(name.as_str()).into_iter().flatten() {
            if !n.listen_addrs.contains(ip) {
                n.listen_addrs.push(*ip);
            }
        }
        out.insert(name.clone(), n);
    }
    out
}

/// Which container DNS servers are dockns itself: a gateway or sidecar listener of any served
/// network, or a fixed listener (a wildcard one covers this host's addresses).
struct OwnFilter {
    own: Vec<SocketAddr>,
    local: Vec<IpAddr>,
}

impl OwnFilter {
    fn new(cat: &Catalog, opts: &WatchOptions, local: &[IpAddr]) -> OwnFilter {
        let mut own: Vec<SocketAddr> = opts.own.clone();
        for n in cat.networks.values() {
            own.extend(
                n.listen_addrs
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, opts.port)),
            );
        }
        // A wildcard listener on the servers' port answers on every local address.
        let wildcard = opts
            .own
            .iter()
            .any(|l| l.ip().is_unspecified() && l.port() == 53);
        let local = if wildcard && local.is_empty() {
            local_addresses()
        } else {
            local.to_vec()
        };
        OwnFilter { own, local }
    }

    fn is_own(&self, s: &SocketAddr) -> bool {
        crate::addr::is_own_listener(*s, &self.own, &self.local)
    }

    /// The container with dockns's own addresses taken out of its DNS servers; the same `Arc`
    /// (copy-on-write) when it lists none.
    fn rewrite(&self, c: &Arc<Container>) -> Arc<Container> {
        if c.dns.iter().any(|s| self.is_own(s)) {
            let mut c = Container::clone(c);
            c.dns.retain(|s| !self.is_own(s));
            Arc::new(c)
        } else {
            c.clone()
        }
    }
}

/// Removes dockns itself from every container's own DNS servers (see [`OwnFilter`]), so that
/// `--dns <gateway>` (the usual way to point a container at dockns) never loops. What is left
/// stays in the container's order; an emptied list means the default servers.
fn drop_own_dns_servers(cat: &mut Catalog, opts: &WatchOptions, local: &[IpAddr]) {
    let filter = OwnFilter::new(cat, opts, local);
    // Copy-on-write: a container that lists none of dockns's addresses stays shared.
    let rewrite: Vec<Arc<str>> = cat
        .containers
        .iter()
        .filter(|(_, c)| c.dns.iter().any(|s| filter.is_own(s)))
        .map(|(k, _)| k.clone())
        .collect();
    for k in rewrite {
        if let Some(c) = cat.containers.get_mut(&k) {
            *c = filter.rewrite(c);
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

    /// A local (not swarm) network `name` with id `id-<name>`, one gateway, no subnets.
    fn net_info(name: &str, driver: &str, gateway: &str) -> NetInfo {
        NetInfo {
            network: Network {
                name: name.into(),
                id: format!("id-{name}"),
                internal: false,
                listen_addrs: vec![],
                subnets: vec![],
            },
            driver: driver.into(),
            gateways: vec![gateway.parse().unwrap()],
            swarm: false,
        }
    }

    fn state() -> State {
        let mut st = State::default();
        for (name, driver, gw) in [("app", "bridge", "10.5.0.1"), ("mv", "macvlan", "10.6.0.1")] {
            st.add_network(net_info(name, driver, gw));
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

    /// A catalog derived from the last one (the cache) is exactly what a state without one
    /// derives, over seeded random sequences of container, network, swarm and option changes.
    #[test]
    fn catalog_from_the_last_one_is_a_fresh_derivation() {
        let sa = |s: &str| -> std::net::SocketAddr { s.parse().unwrap() };
        let dns_pool = [
            sa("10.5.0.1:53"),
            sa("192.0.2.53:53"),
            sa("10.5.0.7:53"),
            sa("127.0.0.1:53"),
            sa("10.6.0.1:53"),
            sa("10.9.0.1:53"),
        ];
        let nets = ["app", "mv", "n1", "n2", "gone"];
        for seed in 1..=24u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut rnd = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut st = state();
            let mut o = opts(true, false);
            let mut local: Vec<IpAddr> = Vec::new();
            for step in 0..80 {
                match rnd(12) {
                    0..=3 => {
                        let id = format!("c{}", rnd(12));
                        let mut endpoints = Vec::new();
                        for _ in 0..=rnd(2) {
                            endpoints.push(Endpoint {
                                network: nets[rnd(nets.len() as u64) as usize].into(),
                                ipv4: vec![format!("10.5.0.{}", 5 + rnd(4)).parse().unwrap()],
                                ipv6: vec![],
                                aliases: vec![],
                                links: Vec::new(),
                            });
                        }
                        let dns = (0..rnd(3))
                            .map(|_| dns_pool[rnd(dns_pool.len() as u64) as usize])
                            .collect();
                        st.containers.insert(
                            id.as_str().into(),
                            Arc::new(Container {
                                id: id.clone(),
                                name: id,
                                hostname: None,
                                health: Health::None,
                                extra_names: vec![],
                                dns,
                                endpoints,
                                anonymous: false,
                            }),
                        );
                    }
                    4 | 5 => {
                        let id = format!("c{}", rnd(12));
                        st.containers.remove(id.as_str());
                    }
                    6 => {
                        let name = ["n1", "n2"][rnd(2) as usize];
                        let driver = ["bridge", "macvlan"][rnd(2) as usize];
                        st.add_network(net_info(name, driver, "10.9.0.1"));
                    }
                    7 => {
                        st.remove_network_id(["id-n1", "id-n2"][rnd(2) as usize]);
                    }
                    8 => {
                        if st.swarm.is_empty() && rnd(3) == 0 {
                            st.swarm.insert("app".into(), SwarmView::default());
                        } else {
                            st.swarm.clear();
                        }
                    }
                    9 => {
                        o = opts(rnd(4) != 0, rnd(3) == 0);
                        o.own = match rnd(3) {
                            0 => vec![],
                            1 => vec![sa("127.0.0.1:53")],
                            _ => vec![sa("0.0.0.0:53")],
                        };
                    }
                    10 => {
                        local = if rnd(2) == 0 {
                            vec![]
                        } else {
                            vec!["10.5.0.7".parse().unwrap()]
                        };
                    }
                    _ => {}
                }
                let got = st.catalog(&o, &local, &Told::default());
                let want = st.clone().catalog(&o, &local, &Told::default());
                assert_eq!(got, want, "seed {seed}, step {step}");
            }
        }
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
