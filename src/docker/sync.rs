//! Reading the daemon into the watcher's [`State`]: the full listing (networks, running
//! containers, and on swarm networks the service records of every node), the re-inspection an
//! event triggers, and the swarm poll.
//!
//! Every read replaces what it read with the daemon's current answer, so replayed or reordered
//! events are harmless. It must not publish, log drift or decide when to read (that is `watch`).

use super::connect::before_dns_names;
use super::convert;
use super::error::{is_not_found, timed, WatchError};
use super::listeners::local_addresses;
use super::peers;
use super::state::State;
use super::swarm::{self, ClusterInfo, SwarmView};
use super::watch::Watcher;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{
    InspectNetworkOptions, ListContainersOptions, ListNetworksOptions, ListServicesOptions,
    ListTasksOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Container inspections in flight at once during a full sync.
const INSPECT_CONCURRENCY: usize = 16;

impl Watcher {
    /// Finds where a daemon older than API 1.44 records which containers are anonymous (see
    /// [`convert::anonymous_in_config`]); logs once when that is not readable from here.
    pub(super) fn find_state_dir(&mut self, endpoint: &str, docker: &Docker, root: Option<&str>) {
        self.state_dir = None;
        if !before_dns_names(&docker.client_version()) {
            return;
        }
        let local = endpoint.starts_with("unix://") || endpoint.starts_with('/');
        let dir = root
            .filter(|_| local)
            .map(|r| std::path::Path::new(r).to_path_buf());
        match dir.filter(|d| std::fs::read_dir(d.join("containers")).is_ok()) {
            Some(d) => self.state_dir = Some(d),
            None if !self.anonymous_notice => {
                self.anonymous_notice = true;
                tracing::info!(
                    "this Docker (API older than 1.44) does not say through its API which containers were started without --name, and its state directory ({}) is not readable here: their generated names are answered, where Docker leaves them out (run dockns on the Docker host as root to match)",
                    root.unwrap_or("unknown")
                );
            }
            None => {}
        }
    }

    /// Whether a container was created without `--name`, as its daemon recorded it (daemons
    /// before API 1.44 only; later ones answer every container by name). A small local file
    /// read: once per container in a full listing; after an event only for a container not
    /// known yet, renamed, whose name changed or that a sweep found different (see [`Watcher::reinspect`]).
    fn is_anonymous(&self, id: &str) -> bool {
        let Some(dir) = &self.state_dir else {
            return false;
        };
        // Container IDs are hex: anything else is never used as a path component.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        std::fs::read(dir.join("containers").join(id).join("config.v2.json"))
            .ok()
            .and_then(|b| convert::anonymous_in_config(&b))
            .unwrap_or(false)
    }

    /// Lists and inspects everything into a fresh state.
    pub(super) async fn fetch_all(&self, docker: &Docker) -> Result<State, WatchError> {
        let mut st = State::default();
        let nets = timed(
            "/networks",
            docker.list_networks(None::<ListNetworksOptions>),
        )
        .await
        .map_err(WatchError::api("listing networks failed"))?;
        for n in &nets {
            match convert::network(n, self.rules) {
                Some(ni) => st.add_network(ni),
                None => {
                    if let Some(name) = &n.name {
                        st.unserved.insert(name.clone());
                    }
                }
            }
        }
        self.fetch_containers(docker, &mut st).await?;
        st.manager = match timed("/info", docker.info()).await {
            Ok(info) => info
                .swarm
                .and_then(|s| s.control_available)
                .unwrap_or(false),
            Err(e) => return Err(WatchError::api("reading daemon info failed")(e)),
        };
        st.swarm = read_views(docker, &st).await?;
        if st.manager && !st.swarm.is_empty() {
            st.cluster = read_cluster(docker).await?;
        }
        Ok(st)
    }

    /// Lists the running containers and inspects them into `st`, several at a time: a full
    /// sync of a busy host (a resync after an outage) takes one round trip per
    /// [`INSPECT_CONCURRENCY`] containers, not one per container.
    async fn fetch_containers(&self, docker: &Docker, st: &mut State) -> Result<(), WatchError> {
        let list = timed(
            "/containers/json",
            docker.list_containers(Some(ListContainersOptions {
                all: false,
                ..Default::default()
            })),
        )
        .await
        .map_err(WatchError::api("listing containers failed"))?;
        let mut inspected = futures_util::stream::iter(list.into_iter().filter_map(|s| s.id))
            .map(|id| async move {
                let r = timed("/containers/{id}/json", docker.inspect_container(&id, None)).await;
                (id, r)
            })
            .buffer_unordered(INSPECT_CONCURRENCY);
        while let Some((id, result)) = inspected.next().await {
            match result {
                Ok(info) => {
                    if let Some(mut c) = convert::container(&info, &st.networks) {
                        c.anonymous = self.is_anonymous(&id);
                        st.containers.insert(id.into(), Arc::new(c));
                    }
                }
                // Gone between the listing and the inspect: its destroy event follows.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(WatchError::api(format!("inspecting container {id}"))(e)),
            }
        }
        Ok(())
    }

    /// Reads the service records of every served swarm network again (and, on a manager, the
    /// services and tasks: aliases, containers, which tasks are shutting down; in sidecar mode
    /// what the peer dockns tell). Returns whether anything changed.
    pub(super) async fn poll_swarm(&mut self, docker: &Docker) -> Result<bool, WatchError> {
        let views = read_views(docker, &self.state).await?;
        let mut changed = views != self.state.swarm;
        self.state.swarm = views;
        if self.state.manager && !self.state.swarm.is_empty() {
            let cluster = read_cluster(docker).await?;
            changed |= cluster != self.state.cluster;
            self.state.cluster = cluster;
        }
        if self.opts.sidecar {
            changed |= self.ask_peers().await;
        }
        Ok(changed)
    }

    /// Reads the document of every peer dockns (see `peers`). Returns whether what they told
    /// changed. A peer that does not answer keeps its last document until it leaves the
    /// records.
    async fn ask_peers(&mut self) -> bool {
        let found = peers::find(&self.state.swarm, &local_addresses());
        self.peer_docs.retain(|ip, _| found.contains(ip));
        let fetched =
            futures_util::future::join_all(found.iter().map(|ip| peers::fetch(*ip))).await;
        for (ip, r) in found.iter().zip(fetched) {
            match r {
                Ok(doc) => {
                    self.peer_docs.insert(*ip, doc);
                }
                Err(e) => tracing::debug!("{e}"),
            }
        }
        let told = peers::combine(&self.peer_docs);
        let changed = told != self.peers;
        self.peers = told;
        changed
    }

    /// Applies one event; `inspect` false skips the container inspection it would trigger
    /// (a later event of the same batch inspects the same container, see [`inspected_by`]).
    pub(super) async fn apply_event(
        &mut self,
        docker: &Docker,
        ev: &EventMessage,
        inspect: bool,
    ) -> Result<(), WatchError> {
        if self.state_dir.is_some() && is_rename(ev) {
            if let Some(id) = ev.actor.as_ref().and_then(|a| a.id.as_deref()) {
                self.reread.insert(id.to_string());
            }
        }
        match inspect || inspected_by(ev).is_none() {
            true => self.apply(docker, ev).await,
            false => Ok(()),
        }
    }

    /// Applies one event.
    pub(super) async fn apply(
        &mut self,
        docker: &Docker,
        ev: &EventMessage,
    ) -> Result<(), WatchError> {
        let action = ev.action.as_deref().unwrap_or("");
        // "health_status: healthy" → "health_status"; "exec_start: sh -c ..." → "exec_start".
        let verb = action.split(':').next().unwrap_or("").trim();
        let actor = ev.actor.as_ref();
        let id = actor.and_then(|a| a.id.as_deref()).unwrap_or("");
        let attr = |k: &str| {
            actor
                .and_then(|a| a.attributes.as_ref())
                .and_then(|m| m.get(k))
                .map(String::as_str)
        };
        match ev.typ {
            Some(EventMessageTypeEnum::CONTAINER) => match verb {
                "destroy" => {
                    self.state.containers.remove(id);
                    Ok(())
                }
                "start" | "restart" | "die" | "stop" | "kill" | "rename" | "health_status"
                | "pause" | "unpause" | "update" | "oom" => self.reinspect(docker, id).await,
                _ => Ok(()),
            },
            Some(EventMessageTypeEnum::NETWORK) => match verb {
                "create" => self.inspect_network(docker, id).await,
                "destroy" | "remove" => {
                    self.state.remove_network_id(id);
                    Ok(())
                }
                "connect" | "disconnect" => match attr("container") {
                    Some(cid) => {
                        let cid = cid.to_string();
                        self.reinspect(docker, &cid).await
                    }
                    None => Ok(()),
                },
                _ => Ok(()),
            },
            // Only managers see service events; the records follow in the swarm poll.
            Some(EventMessageTypeEnum::SERVICE) => {
                self.state.manager = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Inspects a network by ID and adopts it (or remembers that it is not served).
    pub(super) async fn inspect_network(
        &mut self,
        docker: &Docker,
        id: &str,
    ) -> Result<(), WatchError> {
        let n = match timed(
            "/networks/{id}",
            docker.inspect_network(id, None::<InspectNetworkOptions>),
        )
        .await
        {
            Ok(n) => n,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(WatchError::api(format!("inspecting network {id}"))(e)),
        };
        let as_listed = bollard::models::Network {
            name: n.name.clone(),
            id: n.id.clone(),
            scope: n.scope.clone(),
            driver: n.driver.clone(),
            ipam: n.ipam.clone(),
            internal: n.internal,
            attachable: n.attachable,
            ingress: n.ingress,
            config_only: n.config_only,
            ..Default::default()
        };
        match convert::network(&as_listed, self.rules) {
            Some(ni) => self.state.add_network(ni),
            None => {
                if let Some(name) = n.name {
                    self.state.unserved.insert(name);
                }
            }
        }
        Ok(())
    }

    /// Inspects a container again and replaces (or removes) it.
    pub(super) async fn reinspect(&mut self, docker: &Docker, id: &str) -> Result<(), WatchError> {
        if id.is_empty() {
            return Ok(());
        }
        let info = match timed("/containers/{id}/json", docker.inspect_container(id, None)).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => {
                self.state.containers.remove(id);
                return Ok(());
            }
            Err(e) => return Err(WatchError::api(format!("inspecting container {id}"))(e)),
        };
        // A network this container is on that we have never seen (its create event may still be
        // queued behind this one): read it first so the endpoint is not dropped.
        let unknown: Vec<String> = info
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .into_iter()
            .flatten()
            .filter(|(name, _)| {
                !self.state.networks.contains_key(*name) && !self.state.unserved.contains(*name)
            })
            .filter_map(|(_, ep)| ep.network_id.clone())
            .collect();
        for nid in unknown {
            self.inspect_network(docker, &nid).await?;
        }
        let id = info.id.clone().unwrap_or_else(|| id.to_string());
        let reread = self.reread.remove(id.as_str());
        match convert::container(&info, &self.state.networks) {
            Some(mut c) => {
                // The daemon sets the flag when it creates the container and clears it on a
                // rename, nothing else: a container known under the same name, and not renamed
                // meanwhile (and back), keeps the flag it was read with, without a file read.
                let old = self.state.containers.get(id.as_str());
                c.anonymous = match old {
                    Some(old) if old.name == c.name && !reread => old.anonymous,
                    _ => self.is_anonymous(&id),
                };
                // An unchanged container keeps its `Arc`: the next compile does not even
                // compare it (a health probe or a restart that changes nothing is free).
                match old {
                    Some(old) if **old == c => {}
                    _ => {
                        self.state.containers.insert(id.into(), Arc::new(c));
                    }
                }
            }
            None => {
                self.state.containers.remove(id.as_str());
            }
        }
        Ok(())
    }
}

/// Whether an event is a container's rename.
fn is_rename(ev: &EventMessage) -> bool {
    ev.typ == Some(EventMessageTypeEnum::CONTAINER)
        && ev.action.as_deref().is_some_and(|a| a.trim() == "rename")
}

/// The container an event makes the watcher inspect again (its current state replaces what
/// was known), if any: the container of a container event other than `create` and `destroy`
/// (and the few verbs that change nothing DNS sees), the container a network `connect` or
/// `disconnect` names. Kept in step with [`Watcher::apply`].
pub(super) fn inspected_by(ev: &EventMessage) -> Option<&str> {
    let action = ev.action.as_deref().unwrap_or("");
    let verb = action.split(':').next().unwrap_or("").trim();
    let actor = ev.actor.as_ref()?;
    let id = match ev.typ {
        Some(EventMessageTypeEnum::CONTAINER) => match verb {
            "start" | "restart" | "die" | "stop" | "kill" | "rename" | "health_status"
            | "pause" | "unpause" | "update" | "oom" => actor.id.as_deref(),
            _ => None,
        },
        Some(EventMessageTypeEnum::NETWORK) => match verb {
            "connect" | "disconnect" => actor
                .attributes
                .as_ref()
                .and_then(|m| m.get("container"))
                .map(String::as_str),
            _ => None,
        },
        _ => None,
    };
    id.filter(|id| !id.is_empty())
}

/// For each event of a batch (in order), whether the container inspection it triggers is
/// needed: not when a later event of the same batch inspects the same container, since that
/// inspection reads the daemon's state after both events (an inspection always replaces what
/// was known with the current state, so the later one alone gives the same result). Docker
/// 20.10 sends `create`, a `network connect` per network and `start` for one `docker run`:
/// queued together, they cost one inspection instead of one per event. Events are never
/// delayed to be coalesced: only those already queued behind the first are looked at, and
/// nothing else is skipped (`destroy`, network events and every event of another container
/// keep their place).
pub(super) fn needed_inspections(batch: &[&EventMessage]) -> Vec<bool> {
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, ev) in batch.iter().enumerate() {
        if let Some(id) = inspected_by(ev) {
            last.insert(id, i);
        }
    }
    batch
        .iter()
        .enumerate()
        .map(|(i, ev)| inspected_by(ev).is_none_or(|id| last.get(id) == Some(&i)))
        .collect()
}

/// Reads the service records of every served swarm network from its verbose inspection: the
/// table Docker's resolver answers from, with the tasks and attached containers of every node.
/// Workers and managers alike return it for the overlays they are attached to.
async fn read_views(
    docker: &Docker,
    st: &State,
) -> Result<BTreeMap<String, SwarmView>, WatchError> {
    let mut out = BTreeMap::new();
    for (name, id) in st.swarm_networks() {
        let opts = InspectNetworkOptions {
            verbose: true,
            scope: Some("swarm".to_string()),
        };
        match timed("/networks/{id}", docker.inspect_network(&id, Some(opts))).await {
            Ok(n) => {
                out.insert(name.clone(), swarm::view(&name, &n));
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(WatchError::api(format!("inspecting swarm network {name}"))(
                    e,
                ));
            }
        }
    }
    Ok(out)
}

/// Reads a manager's services (their aliases) and tasks (their containers). A node that is no
/// longer a manager answers 503: it then knows only the service records.
async fn read_cluster(docker: &Docker) -> Result<ClusterInfo, WatchError> {
    let services = timed(
        "/services",
        docker.list_services(None::<ListServicesOptions>),
    )
    .await;
    let tasks = timed("/tasks", docker.list_tasks(None::<ListTasksOptions>)).await;
    match (services, tasks) {
        (Ok(s), Ok(t)) => Ok(swarm::cluster(&s, &t)),
        (Err(e), _) | (_, Err(e)) if not_a_manager(&e) => Ok(ClusterInfo::default()),
        (Err(e), _) => Err(WatchError::api("listing swarm services")(e)),
        (_, Err(e)) => Err(WatchError::api("listing swarm tasks")(e)),
    }
}

fn not_a_manager(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 503,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;
    use std::collections::HashMap;

    fn ev(
        typ: EventMessageTypeEnum,
        action: &str,
        actor: &str,
        container: Option<&str>,
    ) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(actor.into()),
                attributes: container.map(|c| HashMap::from([("container".into(), c.into())])),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_last_inspection_of_a_container_in_a_batch_is_made() {
        use EventMessageTypeEnum::{CONTAINER, NETWORK};
        let batch = [
            ev(CONTAINER, "create", "x", None),
            ev(NETWORK, "connect", "net1", Some("x")),
            ev(CONTAINER, "health_status: healthy", "y", None),
            ev(NETWORK, "connect", "net2", Some("x")),
            ev(CONTAINER, "start", "x", None),
            ev(NETWORK, "create", "net3", None),
            ev(CONTAINER, "die", "y", None),
            ev(CONTAINER, "destroy", "z", None),
            ev(CONTAINER, "start", "y", None),
        ];
        let refs: Vec<&EventMessage> = batch.iter().collect();
        assert_eq!(
            needed_inspections(&refs),
            [true, false, false, false, true, true, false, true, true]
        );
        // Events that inspect nothing are never skipped; a lone event is applied.
        assert_eq!(inspected_by(&batch[0]), None);
        assert_eq!(inspected_by(&batch[1]), Some("x"));
        assert_eq!(inspected_by(&batch[5]), None);
        assert_eq!(inspected_by(&batch[7]), None);
        assert_eq!(needed_inspections(&refs[6..7]), [true]);
    }
}
