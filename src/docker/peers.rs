//! Swarm peers: the names of a node's containers that no other node's API shows, handed from
//! one dockns sidecar to the others over the overlay network.
//!
//! A node's service records (see `swarm`) name every task and container of an overlay network
//! on every node, but not their network aliases, hostnames or short IDs, and a worker cannot
//! read service aliases at all. Docker's resolver has them from its gossip; dockns has them from
//! the dockns on the node that runs the container. Each sidecar serves, on its own address on
//! each overlay network and TCP port [`PEER_PORT`], one JSON document ([`PeerDoc`]) with the
//! extra names of its node's endpoints on that network (and, on a manager, the service
//! aliases), then closes the connection. Only clients inside the network's subnets are served,
//! and only that network's names: what any container on the network could resolve anyway.
//!
//! A manager's dockns also lists the tasks the manager is shutting down, which the records keep
//! until their containers are gone but Docker's resolver drops at once.
//!
//! Peers are found without configuration: the other tasks of the sidecar's own service (a
//! global service), or the remote containers with the sidecar's own container name (per-node
//! sidecars named alike). This module must not decide when to fetch (that is `sync`) nor
//! touch the catalog (that is `swarm::merge`).

use super::error::WatchError;
use super::swarm::{SwarmEndpoint, SwarmView};
use crate::model::Container;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// TCP port on which sidecars hand their node's names to each other.
pub const PEER_PORT: u16 = 5380;
/// How long one fetch from a peer may take.
const FETCH_TIMEOUT: Duration = Duration::from_millis(800);
/// Peer connections being written to at once, per listener.
const MAX_WRITERS: usize = 32;
/// The largest document read from a peer.
const MAX_DOC: u64 = 4 << 20;

/// What one node's dockns tells the others, per overlay network.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerDoc {
    /// Network name → that network's extra names.
    pub networks: BTreeMap<String, PeerNet>,
    /// Tasks the records list that a manager is shutting down (a manager's dockns only): a
    /// worker's own API cannot tell them from running ones.
    #[serde(default)]
    pub retired: BTreeSet<String>,
}

/// The extra names on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerNet {
    /// Address of each node-local endpoint → its names besides the container name (aliases,
    /// hostname, short ID). Every node-local endpoint is listed, with no names if it has none.
    pub endpoints: BTreeMap<IpAddr, Vec<String>>,
    /// Service → its aliases on this network (from a manager; empty on workers).
    pub service_aliases: BTreeMap<String, Vec<String>>,
}

/// The document this node serves: its containers' endpoints on the swarm networks `views`
/// lists, and the service aliases a manager knows (`aliases`: service → aliases, per network).
pub fn local_doc<'a>(
    containers: impl Iterator<Item = &'a Container>,
    views: &BTreeMap<String, SwarmView>,
    aliases: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
    retired: BTreeSet<String>,
) -> PeerDoc {
    let mut doc = PeerDoc {
        retired,
        ..Default::default()
    };
    for net in views.keys() {
        doc.networks.insert(
            net.clone(),
            PeerNet {
                service_aliases: aliases.get(net).cloned().unwrap_or_default(),
                ..Default::default()
            },
        );
    }
    for c in containers {
        for ep in &c.endpoints {
            let Some(pn) = doc.networks.get_mut(&ep.network) else {
                continue;
            };
            let names: Vec<String> = ep
                .aliases
                .iter()
                .chain(c.extra_names.iter())
                .filter(|a| !a.eq_ignore_ascii_case(&c.name))
                .cloned()
                .collect();
            let ips = ep
                .ipv4
                .iter()
                .map(|a| IpAddr::V4(*a))
                .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)));
            for ip in ips {
                pn.endpoints.insert(ip, names.clone());
            }
        }
    }
    doc
}

/// The peers on each network: the remote endpoints that are dockns too, recognised by this
/// sidecar's own entry in the records (`own`: its addresses). Sorted, without duplicates.
pub fn find(views: &BTreeMap<String, SwarmView>, own: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for v in views.values() {
        let Some(me) = v.endpoints.iter().find(|e| own.contains(&e.ip)) else {
            continue;
        };
        let same = |e: &SwarmEndpoint| {
            if me.service.is_empty() {
                e.service.is_empty() && e.name == me.name
            } else {
                e.service == me.service
            }
        };
        out.extend(
            v.endpoints
                .iter()
                .filter(|e| !own.contains(&e.ip) && same(e))
                .map(|e| e.ip),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// What every peer told, combined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Told {
    /// Extra names per network name.
    pub networks: BTreeMap<String, PeerNet>,
    /// Tasks a manager's dockns says are being shut down.
    pub retired: BTreeSet<String>,
}

/// Combines the documents of every peer.
pub fn combine(docs: &BTreeMap<IpAddr, PeerDoc>) -> Told {
    let mut out = Told::default();
    for doc in docs.values() {
        out.retired.extend(doc.retired.iter().cloned());
        for (net, pn) in &doc.networks {
            let o = out.networks.entry(net.clone()).or_default();
            for (ip, names) in &pn.endpoints {
                o.endpoints.insert(*ip, names.clone());
            }
            for (svc, a) in &pn.service_aliases {
                o.service_aliases.insert(svc.clone(), a.clone());
            }
        }
    }
    out
}

/// Reads one peer's document.
pub async fn fetch(ip: IpAddr) -> Result<PeerDoc, WatchError> {
    let peer = SocketAddr::new(ip, PEER_PORT);
    let read = async {
        let stream = tokio::net::TcpStream::connect(peer).await?;
        let mut buf = Vec::new();
        stream.take(MAX_DOC).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let fail = |source| WatchError::Peer { peer, source };
    let buf = match tokio::time::timeout(FETCH_TIMEOUT, read).await {
        Ok(r) => r.map_err(fail)?,
        Err(_) => {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {FETCH_TIMEOUT:?}"),
            )))
        }
    };
    serde_json::from_slice(&buf).map_err(|e| fail(std::io::Error::other(e)))
}

/// What the peer listeners serve: the document and each network's subnets (a client is served
/// the networks whose subnets hold its address).
type Served = (PeerDoc, BTreeMap<String, Vec<ipnet::IpNet>>);

/// The peer listeners of one sidecar: one per own address on a swarm network.
#[derive(Default)]
pub struct PeerServer {
    served: Arc<ArcSwap<Served>>,
    listeners: HashMap<SocketAddr, tokio::task::JoinHandle<()>>,
}

impl PeerServer {
    /// Replaces the served document.
    pub fn set(&self, doc: PeerDoc, subnets: BTreeMap<String, Vec<ipnet::IpNet>>) {
        if self.served.load().0 != doc || self.served.load().1 != subnets {
            self.served.store(Arc::new((doc, subnets)));
        }
    }

    /// Listens on exactly `addrs` (port [`PEER_PORT`]); an address that cannot be bound now is
    /// tried again on the next call.
    pub fn listen_on(&mut self, addrs: &[IpAddr]) {
        let want: Vec<SocketAddr> = addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, PEER_PORT))
            .collect();
        self.listeners.retain(|a, task| {
            let keep = want.contains(a);
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in want {
            if self.listeners.contains_key(&addr) {
                continue;
            }
            let std_listener = match std::net::TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("swarm peer listener {addr} not bound yet: {e}");
                    continue;
                }
            };
            let listener = match std_listener
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("swarm peer listener {addr}: {e}");
                    continue;
                }
            };
            tracing::info!("serving this node's names to swarm peers on {addr}");
            let served = self.served.clone();
            self.listeners
                .insert(addr, tokio::spawn(serve(listener, served)));
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}

/// Accepts peers and writes each the document of the networks its address is on. At most
/// [`MAX_WRITERS`] writes are in flight (each bounded by [`FETCH_TIMEOUT`]); a connection beyond
/// that is closed at once, so a flood costs a closed socket each, never memory.
async fn serve(listener: tokio::net::TcpListener, served: Arc<ArcSwap<Served>>) {
    let writers = Arc::new(tokio::sync::Semaphore::new(MAX_WRITERS));
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = writers.clone().try_acquire_owned() else {
            continue;
        };
        let body = {
            let s = served.load();
            let (doc, subnets) = (&s.0, &s.1);
            let mine = PeerDoc {
                networks: doc
                    .networks
                    .iter()
                    .filter(|(net, _)| {
                        subnets
                            .get(*net)
                            .is_some_and(|sn| sn.iter().any(|n| n.contains(&peer.ip())))
                    })
                    .map(|(n, p)| (n.clone(), p.clone()))
                    .collect(),
                retired: doc.retired.clone(),
            };
            serde_json::to_vec(&mine).unwrap_or_default()
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(FETCH_TIMEOUT, stream.write_all(&body)).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Health};

    fn ep(name: &str, ip: &str, service: &str) -> SwarmEndpoint {
        SwarmEndpoint {
            name: name.into(),
            ip: ip.parse().unwrap(),
            service: service.into(),
        }
    }

    fn views(eps: Vec<SwarmEndpoint>) -> BTreeMap<String, SwarmView> {
        BTreeMap::from([(
            "ov".to_string(),
            SwarmView {
                services: BTreeMap::new(),
                endpoints: eps,
            },
        )])
    }

    #[test]
    fn peers_are_the_same_service_or_the_same_name() {
        let own: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap()];
        let v = views(vec![
            ep("dockns", "10.0.0.5", ""),
            ep("dockns", "10.0.0.6", ""),
            ep("other", "10.0.0.7", ""),
            ep("dns.x.abc", "10.0.0.8", "dns"),
        ]);
        assert_eq!(find(&v, &own), vec!["10.0.0.6".parse::<IpAddr>().unwrap()]);
        let v = views(vec![
            ep("dns.a.abc", "10.0.0.5", "dns"),
            ep("dns.b.def", "10.0.0.9", "dns"),
            ep("dockns", "10.0.0.6", ""),
        ]);
        assert_eq!(find(&v, &own), vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        assert!(find(&v, &[]).is_empty(), "not on the network: no peers");
    }

    #[test]
    fn documents_list_local_endpoints_and_combine() {
        let c = Container {
            id: "aaabd6e565c3a685".into(),
            name: "c2".into(),
            hostname: Some("c2host".into()),
            health: Health::None,
            extra_names: vec![],
            endpoints: vec![Endpoint {
                network: "ov".into(),
                ipv4: vec!["10.0.0.10".parse().unwrap()],
                ipv6: vec![],
                aliases: vec!["c2a".into(), "aaabd6e565c3".into(), "c2host".into()],
                links: vec![],
            }],
            dns: vec![],
            anonymous: false,
        };
        let v = views(vec![ep("c2", "10.0.0.10", ""), ep("c9", "10.0.0.11", "")]);
        let aliases = BTreeMap::from([(
            "ov".to_string(),
            BTreeMap::from([("web".to_string(), vec!["webalias".to_string()])]),
        )]);
        let retired = BTreeSet::from(["t1".to_string()]);
        let doc = local_doc([&c].into_iter(), &v, &aliases, retired.clone());
        let ip: IpAddr = "10.0.0.10".parse().unwrap();
        assert_eq!(
            doc.networks["ov"].endpoints[&ip],
            vec!["c2a", "aaabd6e565c3", "c2host"]
        );
        let json = serde_json::to_vec(&doc).unwrap();
        let back: PeerDoc = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, doc);
        let docs = BTreeMap::from([(ip, back)]);
        let all = combine(&docs);
        assert_eq!(all.networks["ov"].service_aliases["web"], vec!["webalias"]);
        assert_eq!(all.retired, retired);
        // A document from an older dockns (no `retired`) still reads.
        let old: PeerDoc = serde_json::from_str(r#"{"networks":{}}"#).unwrap();
        assert!(old.retired.is_empty());
    }

    /// A peer listener serves a client only the networks its address is on, and `fetch` reads
    /// that document back; a listener that is not there is a named error, not a hang.
    #[tokio::test]
    async fn serve_and_fetch_over_tcp() {
        let ip: IpAddr = "127.0.53.80".parse().unwrap();
        let mut server = PeerServer::default();
        let mut doc = PeerDoc::default();
        for net in ["ov", "other"] {
            doc.networks.insert(net.to_string(), PeerNet::default());
        }
        doc.networks
            .get_mut("ov")
            .unwrap()
            .endpoints
            .insert(ip, vec!["c2a".into()]);
        let subnets = BTreeMap::from([
            ("ov".to_string(), vec!["127.0.0.0/8".parse().unwrap()]),
            ("other".to_string(), vec!["10.99.0.0/24".parse().unwrap()]),
        ]);
        server.set(doc, subnets);
        server.listen_on(&[ip]);
        let got = fetch(ip).await.unwrap();
        assert_eq!(got.networks.keys().collect::<Vec<_>>(), vec!["ov"]);
        assert_eq!(got.networks["ov"].endpoints[&ip], vec!["c2a"]);
        server.listen_on(&[]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = fetch(ip).await.unwrap_err().to_string();
        assert!(e.starts_with("swarm peer 127.0.53.80:5380: "), "{e}");
    }
}
