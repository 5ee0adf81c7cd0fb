//! Swarm: what Docker's resolver answers on an overlay network across every node, read from this
//! node's own daemon.
//!
//! Docker's resolver answers swarm names from the network's service records, which the nodes
//! gossip to each other. The verbose network inspection (`/networks/{id}?verbose=true`) is the
//! only API view of that table, and every node (worker or manager) returns it for each overlay
//! network it is attached to: per service its VIP (`<nil>` in dnsrr mode) and its tasks (name,
//! address, node) on every node, and under the service `""` the standalone containers attached
//! to the network on every node. It carries no aliases, short IDs or hostnames; a manager adds
//! the service aliases (`TaskTemplate.Networks[].Aliases`, answered like the service name) and
//! the container ID of every service task (its short ID) from `/services` and `/tasks`.
//!
//! Everything here is a pure function of what the daemon returned: [`view`] reads one
//! inspection, [`cluster`] the manager's listings, and [`merge`] turns them and the node's own
//! containers into the catalog's swarm part. Remote containers answer their name, their
//! `name.network`, their PTR and (managers, service tasks) their short ID; a node-local
//! container on an overlay network answers all its names, and only while the network's service
//! records list its address, as Docker's own resolver does (a stopping task leaves at once).
//! This module must not do I/O or decide when to poll (that is `watch`).

use super::convert::parse_addr;
use super::peers::PeerNet;
use crate::model::{Catalog, Container, Endpoint, Health, ServiceRecord};
use bollard::models::{NetworkInspect, Service, Task, TaskState};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// One entry of a network's service records: a task of a service, or (service `""`) a
/// standalone container attached to the network, on any node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SwarmEndpoint {
    /// Task or container name (`web.1.<task id>`, `c1`).
    pub name: String,
    /// Its address on the network.
    pub ip: IpAddr,
    /// The service it is a task of; empty for a standalone container.
    pub service: String,
}

impl SwarmEndpoint {
    /// The task ID of a service task (the name's last label), `None` for a container.
    pub fn task_id(&self) -> Option<&str> {
        if self.service.is_empty() {
            return None;
        }
        self.name.rsplit('.').next().filter(|t| !t.is_empty())
    }
}

/// The service records of one overlay network as this node's daemon sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmView {
    /// Services (VIP or dnsrr) with their running tasks, by name.
    pub services: BTreeMap<String, ServiceRecord>,
    /// Every task and standalone container of the network, sorted.
    pub endpoints: Vec<SwarmEndpoint>,
}

/// What only a manager knows: service aliases per network ID, the container of each task, and
/// which tasks are meant to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Whether this was read from a manager (otherwise every field is empty).
    pub known: bool,
    /// (network ID, service name) → the service's aliases on that network.
    pub aliases: BTreeMap<(String, String), Vec<String>>,
    /// Task ID → container ID.
    pub task_containers: HashMap<String, String>,
    /// Tasks whose desired state is `running` (or `complete`: a job's task). A task the records still list but the manager
    /// is shutting down (rolling update, scale down, removal) is not here: Docker's resolver
    /// stops answering it at once, while the records keep it until its container is gone.
    pub running: HashSet<String>,
}

impl ClusterInfo {
    /// The tasks `views` lists that the manager is shutting down.
    pub fn retired(&self, views: &BTreeMap<String, SwarmView>) -> BTreeSet<String> {
        if !self.known {
            return BTreeSet::new();
        }
        views
            .values()
            .flat_map(|v| v.endpoints.iter())
            .filter_map(SwarmEndpoint::task_id)
            .filter(|t| !self.running.contains(*t))
            .map(str::to_string)
            .collect()
    }
}

/// Reads a verbose network inspection of the network called `network`.
pub fn view(network: &str, inspected: &NetworkInspect) -> SwarmView {
    let mut out = SwarmView::default();
    for (service, entry) in inspected.services.iter().flatten() {
        let tasks: Vec<(String, IpAddr)> = entry
            .get("Tasks")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let ip = t.get("EndpointIP").and_then(|v| v.as_str())?;
                let name = t.get("Name").and_then(|v| v.as_str()).unwrap_or("");
                Some((name.to_string(), parse_addr(ip)?))
            })
            .collect();
        for (name, ip) in &tasks {
            if !name.is_empty() {
                out.endpoints.push(SwarmEndpoint {
                    name: name.clone(),
                    ip: *ip,
                    service: service.clone(),
                });
            }
        }
        if service.is_empty() {
            continue;
        }
        let vips: Vec<IpAddr> = entry
            .get("VIP")
            .and_then(|v| v.as_str())
            .and_then(parse_addr)
            .into_iter()
            .collect();
        let mut addrs: Vec<IpAddr> = tasks.into_iter().map(|(_, ip)| ip).collect();
        addrs.sort();
        addrs.dedup();
        out.services.insert(
            service.clone(),
            ServiceRecord {
                name: service.clone(),
                network: network.to_string(),
                vips,
                tasks: addrs,
            },
        );
    }
    out.endpoints.sort();
    out.endpoints.dedup();
    out
}

/// Reads a manager's service and task listings.
pub fn cluster(services: &[Service], tasks: &[Task]) -> ClusterInfo {
    let mut out = ClusterInfo {
        known: true,
        ..Default::default()
    };
    for s in services {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let Some(name) = spec.name.as_deref() else {
            continue;
        };
        let nets = spec
            .task_template
            .as_ref()
            .and_then(|t| t.networks.as_ref());
        for n in nets.into_iter().flatten() {
            let aliases: Vec<String> = n.aliases.iter().flatten().cloned().collect();
            if let (Some(target), false) = (n.target.as_deref(), aliases.is_empty()) {
                out.aliases
                    .insert((target.to_string(), name.to_string()), aliases);
            }
        }
    }
    for t in tasks {
        // Job-mode services run their tasks towards `complete`.
        let meant = matches!(
            t.desired_state,
            Some(TaskState::RUNNING | TaskState::COMPLETE)
        );
        if let (Some(id), true) = (t.id.as_deref(), meant) {
            out.running.insert(id.to_string());
        }
        let cid = t
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.as_deref())
            .filter(|c| !c.is_empty());
        if let (Some(id), Some(cid)) = (t.id.as_deref(), cid) {
            out.task_containers.insert(id.to_string(), cid.to_string());
        }
    }
    out
}

/// Adds the swarm part to a catalog of this node's containers: `views` by network name,
/// `ids` network name → ID, `cluster` what a manager knows (empty on workers), `peers` what the
/// other nodes' dockns told (see `peers`), by network name.
///
/// Tasks being shut down (`retired`: by the manager's word, or a peer's) are left out first, as
/// Docker's resolver leaves them out. Then, on a network with a view, a local endpoint stays only
/// while the view lists its address; every listed address that is not a local endpoint becomes
/// a remote container; services and their aliases become service records.
pub fn merge(
    cat: &mut Catalog,
    views: &BTreeMap<String, SwarmView>,
    ids: &HashMap<String, String>,
    cluster: &ClusterInfo,
    peers: &BTreeMap<String, PeerNet>,
    retired: &BTreeSet<String>,
) {
    if views.is_empty() {
        return;
    }
    let trimmed;
    let views = if retired.is_empty() {
        views
    } else {
        trimmed = views
            .iter()
            .map(|(n, v)| (n.clone(), without(v, retired)))
            .collect::<BTreeMap<_, _>>();
        &trimmed
    };
    let local = keep_listed_local(cat, views);
    let mut remote: Vec<(Arc<str>, Arc<Container>)> = Vec::new();
    let none = PeerNet::default();
    for (net, v) in views {
        let here = &local[net.as_str()];
        let told = peers.get(net).unwrap_or(&none);
        for ep in v.endpoints.iter().filter(|e| !here.contains(&e.ip)) {
            let cid = ep
                .task_id()
                .and_then(|t| cluster.task_containers.get(t))
                .cloned();
            let names = told.endpoints.get(&ep.ip).map(Vec::as_slice).unwrap_or(&[]);
            remote.push((
                Arc::from(format!("swarm/{net}/{}/{}", ep.ip, ep.name)),
                Arc::new(remote_container(net, ep, cid, names)),
            ));
        }
        let id = ids.get(net).map(String::as_str).unwrap_or("");
        for svc in v.services.values() {
            let aliases = cluster
                .aliases
                .get(&(id.to_string(), svc.name.clone()))
                .or_else(|| told.service_aliases.get(&svc.name));
            push_service(cat, svc, aliases.map(Vec::as_slice).unwrap_or(&[]));
        }
    }
    cat.containers.extend(remote);
    cat.services
        .sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
}

/// Drops the node-local endpoints on the views' networks that the records do not list (and
/// containers left without endpoints); returns the addresses of those kept, per network.
fn keep_listed_local<'v>(
    cat: &mut Catalog,
    views: &'v BTreeMap<String, SwarmView>,
) -> HashMap<&'v str, HashSet<IpAddr>> {
    let mut local: HashMap<&str, HashSet<IpAddr>> = HashMap::new();
    for (net, v) in views {
        let listed: HashSet<IpAddr> = v.endpoints.iter().map(|e| e.ip).collect();
        let keep =
            |ep: &Endpoint| ep.network != *net || endpoint_ips(ep).any(|ip| listed.contains(&ip));
        // Copy-on-write: a container whose endpoints all stay is still shared.
        let trim: Vec<Arc<str>> = cat
            .containers
            .iter()
            .filter(|(_, c)| c.endpoints.is_empty() || !c.endpoints.iter().all(keep))
            .map(|(k, _)| k.clone())
            .collect();
        for k in trim {
            if let Some(c) = cat.containers.get_mut(&k) {
                if !c.endpoints.iter().all(keep) {
                    Arc::make_mut(c).endpoints.retain(keep);
                }
                // A container left without endpoints goes.
                if c.endpoints.is_empty() {
                    cat.containers.remove(&k);
                }
            }
        }
        local.insert(net.as_str(), HashSet::new());
    }
    for c in cat.containers.values() {
        for ep in &c.endpoints {
            if let Some(set) = local.get_mut(ep.network.as_str()) {
                set.extend(endpoint_ips(ep));
            }
        }
    }
    local
}

/// A service's record, and one per alias (an alias answers what the service name answers,
/// `tasks.<alias>` included, as Docker does).
fn push_service(cat: &mut Catalog, svc: &ServiceRecord, aliases: &[String]) {
    cat.services.push(svc.clone());
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for a in aliases {
        if a.eq_ignore_ascii_case(&svc.name) || !seen.insert(a) {
            continue;
        }
        cat.services.push(ServiceRecord {
            name: a.clone(),
            ..svc.clone()
        });
    }
}

/// A view without the tasks in `retired` (their addresses leave the services too).
fn without(view: &SwarmView, retired: &BTreeSet<String>) -> SwarmView {
    let endpoints: Vec<SwarmEndpoint> = view
        .endpoints
        .iter()
        .filter(|e| e.task_id().is_none_or(|t| !retired.contains(t)))
        .cloned()
        .collect();
    let mut services = view.services.clone();
    for svc in services.values_mut() {
        let gone: Vec<IpAddr> = view
            .endpoints
            .iter()
            .filter(|e| e.service == svc.name && !endpoints.contains(e))
            .map(|e| e.ip)
            .collect();
        svc.tasks.retain(|ip| !gone.contains(ip));
    }
    SwarmView {
        services,
        endpoints,
    }
}

fn endpoint_ips(ep: &Endpoint) -> impl Iterator<Item = IpAddr> + '_ {
    ep.ipv4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)))
}

/// A task or container on another node, as the service records describe it, with the names
/// its node's dockns told (`told`) and the short ID of its container when a manager knows it.
fn remote_container(
    network: &str,
    ep: &SwarmEndpoint,
    cid: Option<String>,
    told: &[String],
) -> Container {
    let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
    match ep.ip {
        IpAddr::V4(a) => ipv4.push(a),
        IpAddr::V6(a) => ipv6.push(a),
    }
    let mut aliases: Vec<String> = cid
        .as_deref()
        .and_then(|c| c.get(..12))
        .map(str::to_string)
        .into_iter()
        .collect();
    for n in told {
        if !n.is_empty() && !aliases.iter().any(|a| a.eq_ignore_ascii_case(n)) {
            aliases.push(n.clone());
        }
    }
    Container {
        id: cid.unwrap_or_default(),
        name: ep.name.clone(),
        hostname: None,
        health: Health::None,
        extra_names: Vec::new(),
        endpoints: vec![Endpoint {
            network: network.to_string(),
            ipv4,
            ipv6,
            aliases,
            links: Vec::new(),
        }],
        dns: Vec::new(),
        anonymous: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's verbose inspection of an overlay, as Docker 20.10 returned it on the two-node
    /// swarm of `scripts/swarm2.sh` (trimmed to the fields read).
    fn inspected() -> NetworkInspect {
        serde_json::from_value(serde_json::json!({
            "Name": "sw-ov", "Id": "dmzf", "Scope": "swarm", "Driver": "overlay",
            "Services": {
                "": {"VIP": "<nil>", "Ports": [], "LocalLBIndex": 0, "Tasks": [
                    {"Name": "c1", "EndpointID": "32c1", "EndpointIP": "10.210.200.9",
                     "Info": {"Host IP": "10.209.0.1"}},
                    {"Name": "c2", "EndpointID": "5deb", "EndpointIP": "10.210.200.10",
                     "Info": {"Host IP": "10.209.0.2"}}]},
                "rr": {"VIP": "<nil>", "Ports": [], "LocalLBIndex": 257, "Tasks": [
                    {"Name": "rr.2.kmz3gwjrylo2y0wkwalv7q7p8", "EndpointIP": "10.210.200.6"},
                    {"Name": "rr.1.a2w1prp7neew0kruee1ajosk5", "EndpointIP": "10.210.200.5"}]},
                "web": {"VIP": "10.210.200.2", "Ports": [], "LocalLBIndex": 256, "Tasks": [
                    {"Name": "web.2.yjpea9o1yxzfi9ilokzrncvw8", "EndpointIP": "10.210.200.4"},
                    {"Name": "web.1.q2dhnpc9ntbu4udrc7ib7eapq", "EndpointIP": "10.210.200.3"}]}
            }
        }))
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn verbose_inspection_reads_services_tasks_and_containers() {
        let v = view("sw-ov", &inspected());
        assert_eq!(v.services["web"].vips, vec![ip("10.210.200.2")]);
        assert_eq!(
            v.services["web"].tasks,
            vec![ip("10.210.200.3"), ip("10.210.200.4")]
        );
        assert!(v.services["rr"].vips.is_empty(), "<nil> is dnsrr");
        assert!(
            !v.services.contains_key(""),
            "standalone containers are no service"
        );
        let names: Vec<&str> = v.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), 6);
        assert!(names.contains(&"c2") && names.contains(&"web.1.q2dhnpc9ntbu4udrc7ib7eapq"));
        let web1 = v
            .endpoints
            .iter()
            .find(|e| e.name.starts_with("web.1"))
            .unwrap();
        assert_eq!(web1.task_id(), Some("q2dhnpc9ntbu4udrc7ib7eapq"));
        let c2 = v.endpoints.iter().find(|e| e.name == "c2").unwrap();
        assert_eq!(c2.task_id(), None);
    }

    fn local(name: &str, addr: &str, aliases: &[&str]) -> Arc<Container> {
        Arc::new(Container {
            id: format!("{name}0123456789abcdef"),
            name: name.into(),
            hostname: None,
            health: Health::None,
            extra_names: vec![],
            endpoints: vec![Endpoint {
                network: "sw-ov".into(),
                ipv4: vec![addr.parse().unwrap()],
                ipv6: vec![],
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                links: vec![],
            }],
            dns: vec![],
            anonymous: false,
        })
    }

    #[test]
    fn merge_keeps_listed_local_endpoints_and_adds_the_rest() {
        let mut cat = Catalog::default();
        cat.containers
            .insert("c1".into(), local("c1", "10.210.200.9", &["c1a"]));
        // A task that is stopping: Docker dropped it from the records already.
        cat.containers
            .insert("old".into(), local("web.3.zzz", "10.210.200.7", &[]));
        let views = BTreeMap::from([("sw-ov".to_string(), view("sw-ov", &inspected()))]);
        let ids = HashMap::from([("sw-ov".to_string(), "dmzf".to_string())]);
        let cluster = ClusterInfo {
            aliases: BTreeMap::from([(
                ("dmzf".to_string(), "web".to_string()),
                vec!["webalias".to_string(), "web".to_string()],
            )]),
            task_containers: HashMap::from([(
                "yjpea9o1yxzfi9ilokzrncvw8".to_string(),
                "e24289fad4ca3df295abbfa70645166eb2651aaafce031013cdffd7b242ec5f2".to_string(),
            )]),
            ..Default::default()
        };
        merge(
            &mut cat,
            &views,
            &ids,
            &cluster,
            &BTreeMap::new(),
            &BTreeSet::new(),
        );
        assert!(!cat.containers.contains_key("old"));
        assert_eq!(cat.containers["c1"].endpoints[0].aliases, vec!["c1a"]);
        // Five remote entries (c1 is local), one with its short ID.
        let remote: Vec<&Container> = cat
            .containers
            .iter()
            .filter(|(k, _)| k.starts_with("swarm/"))
            .map(|(_, c)| &**c)
            .collect();
        assert_eq!(remote.len(), 5);
        let web2 = remote.iter().find(|c| c.name.starts_with("web.2")).unwrap();
        assert_eq!(web2.endpoints[0].aliases, vec!["e24289fad4ca"]);
        assert_eq!(
            web2.endpoints[0].ipv4,
            vec!["10.210.200.4".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        let names: Vec<&str> = cat.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["rr", "web", "webalias"]);
        assert_eq!(cat.services[2].vips, vec![ip("10.210.200.2")]);
    }

    /// A rolling update: the manager shuts web.2 down; Docker stops answering it at once while
    /// the records still list it until its container is gone.
    #[test]
    fn retired_tasks_leave_names_and_services() {
        let views = BTreeMap::from([("sw-ov".to_string(), view("sw-ov", &inspected()))]);
        let ids = HashMap::from([("sw-ov".to_string(), "dmzf".to_string())]);
        let mut cluster = ClusterInfo {
            known: true,
            ..Default::default()
        };
        for t in [
            "q2dhnpc9ntbu4udrc7ib7eapq",
            "kmz3gwjrylo2y0wkwalv7q7p8",
            "a2w1prp7neew0kruee1ajosk5",
        ] {
            cluster.running.insert(t.to_string());
        }
        let retired = cluster.retired(&views);
        assert_eq!(
            retired,
            BTreeSet::from(["yjpea9o1yxzfi9ilokzrncvw8".to_string()])
        );
        // The retiring task is local here: its container still runs.
        let mut cat = Catalog::default();
        cat.containers.insert(
            "w2".into(),
            local("web.2.yjpea9o1yxzfi9ilokzrncvw8", "10.210.200.4", &[]),
        );
        merge(&mut cat, &views, &ids, &cluster, &BTreeMap::new(), &retired);
        assert!(cat
            .containers
            .values()
            .all(|c| !c.name.starts_with("web.2")));
        let web = cat.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(web.tasks, vec![ip("10.210.200.3")]);
        assert_eq!(web.vips, vec![ip("10.210.200.2")]);
        // A worker knows nothing of it: no manager, no retirement.
        assert!(ClusterInfo::default().retired(&views).is_empty());
    }

    /// A worker knows no aliases itself: the peers' documents give the remote containers' names
    /// and (from the manager's dockns) the service aliases.
    #[test]
    fn merge_on_a_worker_takes_names_from_peers() {
        let mut cat = Catalog::default();
        let views = BTreeMap::from([("sw-ov".to_string(), view("sw-ov", &inspected()))]);
        let ids = HashMap::from([("sw-ov".to_string(), "dmzf".to_string())]);
        let told = PeerNet {
            endpoints: BTreeMap::from([(
                ip("10.210.200.9"),
                vec!["c1a".to_string(), "ae95056aa750".to_string()],
            )]),
            service_aliases: BTreeMap::from([("rr".to_string(), vec!["rralias".to_string()])]),
        };
        let peers = BTreeMap::from([("sw-ov".to_string(), told)]);
        merge(
            &mut cat,
            &views,
            &ids,
            &ClusterInfo::default(),
            &peers,
            &BTreeSet::new(),
        );
        let c1 = cat.containers.values().find(|c| c.name == "c1").unwrap();
        assert_eq!(c1.endpoints[0].aliases, vec!["c1a", "ae95056aa750"]);
        let names: Vec<&str> = cat.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["rr", "rralias", "web"]);
        assert_eq!(cat.services[1].tasks, cat.services[0].tasks);
    }

    #[test]
    fn no_view_no_change() {
        let mut cat = Catalog::default();
        cat.containers
            .insert("c1".into(), local("c1", "10.210.200.9", &[]));
        let before = cat.clone();
        merge(
            &mut cat,
            &BTreeMap::new(),
            &HashMap::new(),
            &ClusterInfo::default(),
            &BTreeMap::new(),
            &BTreeSet::new(),
        );
        assert_eq!(cat, before);
    }

    #[test]
    fn manager_listings() {
        let services: Vec<Service> = serde_json::from_value(serde_json::json!([
            {"ID": "lpe9", "Spec": {"Name": "web", "TaskTemplate": {"Networks": [
                {"Target": "dmzf", "Aliases": ["webalias"]}]}}},
            {"ID": "x", "Spec": {"Name": "plain", "TaskTemplate": {"Networks": [{"Target": "dmzf"}]}}}
        ]))
        .unwrap();
        let tasks: Vec<Task> = serde_json::from_value(serde_json::json!([
            {"ID": "q2dh", "DesiredState": "running", "Status": {"State": "running",
                "ContainerStatus": {"ContainerID": "976e99b59e0d469a"}}},
            {"ID": "old", "DesiredState": "shutdown", "Status": {"State": "running",
                "ContainerStatus": {"ContainerID": "0123456789abcdef"}}},
            {"ID": "job", "DesiredState": "complete", "Status": {"State": "running"}},
            {"ID": "pending", "Status": {"State": "pending"}}
        ]))
        .unwrap();
        let c = cluster(&services, &tasks);
        assert_eq!(
            c.aliases,
            BTreeMap::from([(("dmzf".into(), "web".into()), vec!["webalias".to_string()])])
        );
        assert_eq!(c.task_containers.len(), 2);
        assert_eq!(c.task_containers["q2dh"], "976e99b59e0d469a");
        assert_eq!(
            c.running,
            HashSet::from(["q2dh".to_string(), "job".to_string()])
        );
        assert!(c.known);
    }
}
