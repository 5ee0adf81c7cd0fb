//! The Docker watcher: one task that keeps dockns's view of the daemon current and publishes it.
//!
//! A session subscribes to the event stream first (with `since` a little in the past, so an
//! event that happens while the listing runs is delivered, never lost), then lists and inspects
//! every network and running container, publishes the whole catalog, and applies events from
//! then on. Events are only triggers: the object they name is inspected again and its current
//! state replaces the old one, so replayed, duplicated or reordered events are harmless. When the
//! daemon goes away the last tables keep being served; the watcher reconnects with backoff and a
//! fresh full sync replaces the state, dropping whatever vanished. A periodic sweep compares the
//! state with a fresh listing and repairs (and logs) any drift that survives the events queued
//! meanwhile and a re-inspection of what differs.
//!
//! Swarm: no event reaches a node for a task or container on another node, so the service
//! records of each served overlay network (see `swarm`) are read every second and after every
//! batch of events, together with what a manager's `/services` and `/tasks` add and, in
//! sidecar mode, what the dockns on the other nodes tell (see `peers`).
//!
//! Reconnecting: attempts start 200 ms apart and back off to at most 500 ms apart, however long
//! the daemon stays away, so the tables are resynced within about a second of its return (the
//! Docker tests hold a 30 s outage to a 2 s bound). That is not a hot loop: an attempt against
//! an absent daemon is one refused connection, two a second. Only changes of state are logged
//! (a warning when the daemon is lost, one info line when it is back, with the sync's duration);
//! the failed attempts in between are debug lines. The full listing inspects up to 16 containers
//! at once, so the resync of a host with hundreds of containers costs a few round trips per
//! hundred rather than one per container.
//!
//! Every request is bounded by 20 s as a whole (bollard bounds only the headers), and a request
//! still pending when the event stream ends is abandoned at once, so a daemon that hangs or
//! restarts under a request never delays the resync. On daemons older than API 1.44, which
//! containers are anonymous (no `--name`) is read from the daemon's state directory when it is
//! readable (see `convert::anonymous_in_config`); the Engine API does not say.
//!
//! Publishing hands the catalog (an `Arc` sharing the state's containers) to the publisher and
//! returns: the compile runs on the publisher's own thread, never on a tokio worker, and the
//! change is answered as soon as it is compiled. Only the first sync of a session waits for its
//! publication (asynchronously), so that "synced" (and `/readyz`) means answerable.
//!
//! It owns the Docker connection and the `docker` source of the [`Publisher`]; it must not
//! touch other sources, and it never blocks the query path (publishing swaps a snapshot).

use super::connect::{
    client, endpoint_text, next_backoff, parse_rfc3339, pooled_client, socket_diagnosis,
    BACKOFF_MIN,
};
use super::convert::ServeRules;
use super::error::{is_not_found, timed, WatchError};
use super::listeners::{local_addresses, ListenerSync};
use super::peers::{self, PeerDoc, PeerServer, Told};
use super::state::State;
use super::sync::needed_inspections;
use super::DockerConfig;
use crate::dns::listen::ListenerSet;
use crate::metrics::ServerMetrics;
use crate::model::{Catalog, ContainerMap, Publisher};
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, InspectNetworkOptions};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Name of the Docker source in the publisher.
pub const DOCKER_SOURCE: &str = "docker";

/// How far back the event subscription starts, to cover the listing that follows it.
const EVENTS_LOOKBACK: Duration = Duration::from_secs(2);
/// How often the service records of served swarm networks are read again (see `swarm`): what
/// bounds how late a change on another node is answered, after Docker's own gossip.
const SWARM_POLL: Duration = Duration::from_secs(1);
/// How often, and for how long at most, the records are read again while a node-local
/// container on an overlay is not listed yet (Docker lists it a moment after its event).
const QUICK_POLL: Duration = Duration::from_millis(50);
const QUICK_FOR: Duration = Duration::from_secs(2);
/// Within a burst of events, the tables are published at least this often.
const BURST_PUBLISH: Duration = Duration::from_millis(20);
/// How often listener addresses that failed to bind are tried again.
const LISTENER_RETRY: Duration = Duration::from_secs(2);

/// What the watcher needs to know beyond `[docker]`.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// `[docker]` settings.
    pub docker: DockerConfig,
    /// Listen on each served bridge network's gateway address.
    pub gateways: bool,
    /// Listen on dockns's own address on each network its container is attached to.
    pub sidecar: bool,
    /// Port of gateway and sidecar listeners.
    pub port: u16,
    /// The fixed `[server] listen` addresses: a container DNS server that is one of them (or one
    /// of the gateway/sidecar listeners) is dockns itself and is dropped from its list.
    pub own: Vec<std::net::SocketAddr>,
}

/// Counters and state a caller (tests, `/readyz`) can read.
#[derive(Debug, Default)]
pub struct WatchStatus {
    connected: AtomicBool,
    syncs: AtomicU64,
    events: AtomicU64,
    drift_repairs: AtomicU64,
}

impl WatchStatus {
    /// Whether the event stream is currently up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// Completed full synchronisations (one per (re)connection).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
    /// Events applied.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    /// Sweeps that found and repaired drift.
    pub fn drift_repairs(&self) -> u64 {
        self.drift_repairs.load(Ordering::Relaxed)
    }
}

/// A running watcher. Dropping it stops the watcher (its listeners are left to the server's
/// shutdown).
pub struct DockerWatcher {
    task: tokio::task::JoinHandle<()>,
    status: Arc<WatchStatus>,
}

impl DockerWatcher {
    /// Starts watching in the background. Never fails: an unreachable daemon is logged once and
    /// retried with backoff while the other sources keep being served.
    pub fn spawn(
        opts: WatchOptions,
        publisher: Arc<Publisher>,
        listeners: Arc<ListenerSet>,
        metrics: Arc<ServerMetrics>,
    ) -> DockerWatcher {
        DockerWatcher::spawn_adopting(opts, publisher, listeners, metrics, &[])
    }

    /// Like [`spawn`](Self::spawn), taking over listeners already bound on the watcher's behalf
    /// (a sidecar's own addresses, bound before any Docker call): the first sync keeps those a
    /// served network lists and unbinds the rest.
    pub fn spawn_adopting(
        opts: WatchOptions,
        publisher: Arc<Publisher>,
        listeners: Arc<ListenerSet>,
        metrics: Arc<ServerMetrics>,
        prebound: &[std::net::SocketAddr],
    ) -> DockerWatcher {
        let status = Arc::new(WatchStatus::default());
        let mut sync = ListenerSync::new(listeners, opts.port);
        sync.adopt(prebound);
        let watcher = Watcher {
            listeners: sync,
            rules: ServeRules {
                default_bridge: opts.docker.default_bridge,
            },
            opts,
            publisher,
            state: State::default(),
            last: None,
            ticket: 0,
            status: status.clone(),
            metrics,
            up: None,
            state_dir: None,
            anonymous_notice: false,
            reread: HashSet::new(),
            peer_docs: BTreeMap::new(),
            peers: Told::default(),
            peer_server: PeerServer::default(),
        };
        let task = tokio::spawn(watcher.run());
        DockerWatcher { task, status }
    }

    /// Live counters.
    pub fn status(&self) -> Arc<WatchStatus> {
        self.status.clone()
    }

    /// Stops the watcher.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for DockerWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a session ended.
enum SessionEnd {
    /// Could not reach the daemon at all.
    Unreachable(WatchError),
    /// Was connected, then lost it.
    Lost(WatchError),
}

/// The event stream of one session: events (or the error that ended the stream) in order,
/// and a flag set when it ends, so a pending request does not hold up the reconnect.
struct Events {
    rx: mpsc::UnboundedReceiver<Result<EventMessage, WatchError>>,
    ended: tokio::sync::watch::Receiver<bool>,
    _reader: AbortOnDrop,
}

impl Events {
    /// Runs `fut` unless the event stream ends first. A request stuck on a daemon that went
    /// away (or hangs) must not hold up the reconnect for the whole request timeout: the
    /// stream's end is the sign to start over at once.
    async fn unless_ended<T>(
        &mut self,
        fut: impl std::future::Future<Output = Result<T, WatchError>>,
    ) -> Result<T, WatchError> {
        tokio::select! {
            r = fut => r,
            _ = self.ended.wait_for(|e| *e) => Err(WatchError::StreamEnded),
        }
    }
}

/// The watcher's task: its options, its view of the daemon and where it publishes it.
pub(super) struct Watcher {
    pub(super) opts: WatchOptions,
    pub(super) rules: ServeRules,
    publisher: Arc<Publisher>,
    listeners: ListenerSync,
    pub(super) state: State,
    /// The catalog last handed to the publisher (shares its containers with `state`).
    last: Option<Arc<Catalog>>,
    /// The publisher's ticket for `last` (see [`Publisher::submit_source`]).
    ticket: u64,
    status: Arc<WatchStatus>,
    /// Server-wide readiness and Docker counters (admin API, /metrics).
    metrics: Arc<ServerMetrics>,
    /// Last logged connection state (None before the first attempt): each change is logged once.
    up: Option<bool>,
    /// The daemon's state directory (`DockerRootDir`), when the daemon predates API 1.44 and
    /// its per-container `config.v2.json` is readable here: the only place such a daemon says
    /// which containers are anonymous. `None` otherwise.
    pub(super) state_dir: Option<std::path::PathBuf>,
    /// Whether the "cannot tell anonymous containers" notice was logged already.
    pub(super) anonymous_notice: bool,
    /// Containers whose anonymous flag is read again at their next inspection (with
    /// `state_dir` only): renamed since they were last inspected (a rename is what clears the
    /// flag), or found different by a sweep (see `sync`'s `reinspect`).
    pub(super) reread: HashSet<String>,
    /// Swarm: the last document of each peer dockns, by its address (see `peers`).
    pub(super) peer_docs: BTreeMap<IpAddr, PeerDoc>,
    /// Swarm: those documents combined.
    pub(super) peers: Told,
    /// Swarm (sidecar mode): serves this node's names to the peers.
    peer_server: PeerServer,
}

impl Watcher {
    async fn run(mut self) {
        let endpoint = endpoint_text(&self.opts);
        let mut backoff = BACKOFF_MIN;
        loop {
            let end = self.session(&endpoint).await;
            self.status.connected.store(false, Ordering::Relaxed);
            self.metrics.docker.set_connected(false);
            // A session that got connected starts the backoff again from the bottom.
            if self.up == Some(true) {
                backoff = BACKOFF_MIN;
            }
            match end {
                SessionEnd::Unreachable(e) => {
                    let diagnosis = socket_diagnosis(&endpoint);
                    let (e, hint) = match diagnosis {
                        Some(d) => (d, ""),
                        None => (
                            e.to_string(),
                            " (is dockerd running? set [docker] endpoint or --docker)",
                        ),
                    };
                    if self.up != Some(false) {
                        tracing::error!(
                            "Docker is unreachable at {endpoint}: {e}; not ready, serving the last known tables and retrying in the background{hint}"
                        );
                        self.up = Some(false);
                    } else {
                        tracing::debug!("Docker still unreachable at {endpoint}: {e}");
                    }
                    self.metrics
                        .set_docker_problem(Some(format!("Docker unreachable at {endpoint}: {e}")));
                }
                SessionEnd::Lost(e) => {
                    self.metrics
                        .set_docker_problem(Some(format!("lost Docker at {endpoint}: {e}")));
                    if self.up != Some(false) {
                        tracing::warn!(
                            "lost the Docker event stream at {endpoint}: {e}; serving the last known tables and reconnecting"
                        );
                        self.up = Some(false);
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = next_backoff(backoff);
        }
    }

    /// Connects, syncs and follows events until something breaks.
    async fn session(&mut self, endpoint: &str) -> SessionEnd {
        let (docker, pooled, since) = match self.connect(endpoint).await {
            Ok(c) => c,
            Err(e) => return SessionEnd::Unreachable(e),
        };
        let mut events = subscribe(&docker, since);
        if let Err(e) = self.initial_sync(&docker, &mut events, endpoint).await {
            return if self.up == Some(true) {
                SessionEnd::Lost(e)
            } else {
                SessionEnd::Unreachable(e)
            };
        }
        self.up = Some(true);
        let e = self.follow(&docker, &pooled, &mut events).await;
        self.publish();
        SessionEnd::Lost(e)
    }

    /// Opens the client, negotiates the API version and reads the daemon's clock: the moment
    /// (in the daemon's clock, which may differ from ours on a tcp:// endpoint) the event
    /// subscription starts from, a little in the past to cover the listing that follows.
    ///
    /// Returns two clients for the same daemon and API version: one that opens a connection
    /// per request (the event stream, the listings) and one that keeps its connections open
    /// (the requests each event triggers; see [`pooled_client`]).
    async fn connect(&mut self, endpoint: &str) -> Result<(Docker, Docker, Duration), WatchError> {
        let docker = client(endpoint).map_err(WatchError::Daemon)?;
        let docker = timed("/version", docker.negotiate_version())
            .await
            .map_err(WatchError::Daemon)?;
        let pooled =
            pooled_client(endpoint, &docker.client_version()).map_err(WatchError::Daemon)?;
        let info = timed("/info", docker.info())
            .await
            .map_err(WatchError::Daemon)?;
        self.find_state_dir(endpoint, &docker, info.docker_root_dir.as_deref());
        let now = info
            .system_time
            .as_deref()
            .and_then(parse_rfc3339)
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
            });
        Ok((docker, pooled, now.saturating_sub(EVENTS_LOOKBACK)))
    }

    /// Lists everything, replaces the state, publishes it and logs the sync once.
    async fn initial_sync(
        &mut self,
        docker: &Docker,
        events: &mut Events,
        endpoint: &str,
    ) -> Result<(), WatchError> {
        let sync_started = Instant::now();
        let fresh = events.unless_ended(self.fetch_all(docker)).await?;
        let dropped = self
            .state
            .containers
            .keys()
            .filter(|id| !fresh.containers.contains_key(*id))
            .count();
        self.state = fresh;
        self.reread.clear();
        self.listeners.retry_failed();
        self.publish();
        // Synced means answerable: wait (without blocking a worker) for the compile.
        self.publisher.published(self.ticket).await;
        if self.status.syncs.fetch_add(1, Ordering::Relaxed) > 0 {
            self.metrics.docker.reconnected();
        }
        self.status.connected.store(true, Ordering::Relaxed);
        self.metrics.docker.set_connected(true);
        self.metrics.set_docker_problem(None);
        self.metrics.set_synced();
        let version = docker.client_version();
        tracing::info!(
            networks = self.state.networks.len(),
            containers = self.state.containers.len(),
            swarm_networks = self.state.swarm.len(),
            dropped,
            sync_ms = sync_started.elapsed().as_millis() as u64,
            listeners = ?self.listeners.bound(),
            "Docker connected at {endpoint} (API {}.{}): tables synced",
            version.major_version,
            version.minor_version
        );
        Ok(())
    }

    /// Applies events, sweeps and swarm polls until the stream or a request fails.
    ///
    /// Events are applied and the swarm polled through `pooled` (kept-open connections:
    /// see [`pooled_client`]); the sweep lists through `docker`, which opens a connection per
    /// request, so that a connection that stalls (as a stuck event stream does) cannot hold
    /// up the drift repair.
    async fn follow(
        &mut self,
        docker: &Docker,
        pooled: &Docker,
        events: &mut Events,
    ) -> WatchError {
        let sweep_every = self.opts.docker.sweep_interval;
        let mut sweep = ticker(sweep_every.unwrap_or(Duration::from_secs(3600)));
        sweep.tick().await;
        let mut poll = ticker(SWARM_POLL);
        let mut rebind = ticker(LISTENER_RETRY);
        // Until when a node-local container the records do not list yet is polled for quickly.
        let mut quick_until: Option<Instant> = None;
        loop {
            let swarm = self.state.networks.values().any(|n| n.swarm);
            let step = tokio::select! {
                _ = rebind.tick(), if self.opts.sidecar || self.listeners.has_failed() => {
                    self.retry_listeners();
                    Ok(())
                }
                ev = events.rx.recv() => match ev {
                    Some(first) => self.apply_batch(pooled, events, first).await,
                    None => Err(WatchError::ReaderStopped),
                },
                _ = sweep.tick(), if sweep_every.is_some() => {
                    self.sweep(docker, events).await
                }
                _ = poll.tick(), if swarm => self.poll_and_publish(pooled, events).await,
                _ = tokio::time::sleep(QUICK_POLL), if quick_until.is_some() => {
                    self.poll_and_publish(pooled, events).await
                }
            };
            if let Err(e) = step {
                return e;
            }
            // A container that just started here is in the records a moment after its event.
            quick_until = match self.state.unlisted_local() {
                true => quick_until
                    .or_else(|| Some(Instant::now() + QUICK_FOR))
                    .filter(|until| Instant::now() < *until),
                false => None,
            };
        }
    }

    /// Binds listener addresses that failed before. Sidecar: an address of our own container
    /// that was not configured yet when its event was applied shows up here.
    fn retry_listeners(&mut self) {
        self.listeners.retry_failed();
        self.publish();
        if let Some(cat) = &self.last {
            self.listeners.apply(cat);
        }
    }

    /// Applies `first` and every event already queued behind it, then reads the swarm's
    /// records (a local change on an overlay is answered once Docker lists it) and publishes.
    async fn apply_batch(
        &mut self,
        docker: &Docker,
        events: &mut Events,
        first: Result<EventMessage, WatchError>,
    ) -> Result<(), WatchError> {
        let mut batch = vec![first];
        while let Ok(more) = events.rx.try_recv() {
            batch.push(more);
        }
        // The events up to the first error (which ends the session where it stands).
        let ok: Vec<&EventMessage> = batch.iter().map_while(|r| r.as_ref().ok()).collect();
        let needed = needed_inspections(&ok);
        let mut since_publish = Instant::now();
        for (i, item) in batch.into_iter().enumerate() {
            // A long burst (compose up) publishes as it goes, not only at its end.
            if since_publish.elapsed() > BURST_PUBLISH {
                self.publish();
                since_publish = Instant::now();
            }
            let ev = item?;
            let kind = ev.typ.as_ref().map_or("", |t| t.as_ref());
            let inspect = needed.get(i).copied().unwrap_or(true);
            events
                .unless_ended(self.apply_event(docker, &ev, inspect))
                .await?;
            self.metrics.docker.event_applied(kind);
            self.status.events.fetch_add(1, Ordering::Relaxed);
        }
        self.poll_and_publish(docker, events).await
    }

    /// Reads the swarm's records again and publishes.
    async fn poll_and_publish(
        &mut self,
        docker: &Docker,
        events: &mut Events,
    ) -> Result<(), WatchError> {
        if self.state.networks.values().any(|n| n.swarm) {
            events.unless_ended(self.poll_swarm(docker)).await?;
        }
        self.publish();
        Ok(())
    }

    /// Publishes the catalog (and follows it with the listeners) when it changed. The catalog
    /// shares the state's containers (no copy), the comparison with the last one reads only
    /// the containers whose `Arc` differs, and the compile runs on the publisher's thread:
    /// this returns without waiting for it (the change is visible as soon as it is compiled).
    /// The listeners are compared with the networks only when those changed (the catalog's
    /// network map is the last one's, shared, while none did) or failed addresses are to be
    /// tried again ([`ListenerSync::stale`]): a container event does not walk the networks.
    fn publish(&mut self) {
        let local = if self.opts.sidecar {
            local_addresses()
        } else {
            Vec::new()
        };
        let catalog = self.state.catalog(&self.opts, &local, &self.peers);
        if self.opts.sidecar {
            self.serve_peers(&catalog);
        }
        if self.last.as_deref() == Some(&catalog) {
            return;
        }
        let same_networks = self
            .last
            .as_ref()
            .is_some_and(|last| last.networks.ptr_eq(&catalog.networks));
        if !same_networks || self.listeners.stale() {
            self.listeners.apply(&catalog);
        }
        let catalog = Arc::new(catalog);
        self.ticket = self.publisher.submit_source(DOCKER_SOURCE, catalog.clone());
        self.last = Some(catalog);
    }

    /// Serves this node's names to the dockns of the other swarm nodes, on this sidecar's own
    /// address on each swarm network.
    fn serve_peers(&mut self, catalog: &Catalog) {
        let mut addrs = Vec::new();
        let mut subnets = BTreeMap::new();
        for (name, _) in self.state.swarm_networks() {
            if let Some(n) = catalog.networks.get(&name) {
                addrs.extend(n.listen_addrs.iter().copied());
                subnets.insert(name, n.subnets.clone());
            }
        }
        let doc = peers::local_doc(
            self.state.containers.values().map(|c| &**c),
            &self.state.swarm,
            &self.state.service_aliases(),
            self.state.cluster.retired(&self.state.swarm),
        );
        self.peer_server.set(doc, subnets);
        self.peer_server.listen_on(&addrs);
    }

    /// The sweep: compares a fresh listing with the state. A difference is drift only when it
    /// survives the events that were queued while the listing ran and a fresh inspection of
    /// what differs (a change that lands during the listing is not drift); drift is logged,
    /// counted and repaired.
    async fn sweep(&mut self, docker: &Docker, events: &mut Events) -> Result<(), WatchError> {
        let fresh = events.unless_ended(self.fetch_all(docker)).await?;
        if !fresh.same_tables(&self.state) {
            while let Ok(item) = events.rx.try_recv() {
                let ev = item?;
                events.unless_ended(self.apply(docker, &ev)).await?;
                self.status.events.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut ids: Vec<String> = fresh
            .containers
            .iter()
            .filter(|(id, c)| self.state.containers.get(*id) != Some(*c))
            .map(|(id, _)| id.to_string())
            .collect();
        ids.extend(
            self.state
                .containers
                .keys()
                .filter(|id| !fresh.containers.contains_key(*id))
                .map(|id| id.to_string()),
        );
        let before = self.state.containers.clone();
        if self.state_dir.is_some() {
            self.reread.extend(ids.iter().cloned());
        }
        for id in &ids {
            events.unless_ended(self.reinspect(docker, id)).await?;
        }
        let nets_before: Vec<String> = sorted_keys(&self.state.networks);
        self.confirm_networks(docker, events, &fresh).await?;
        let nets_now: Vec<String> = sorted_keys(&self.state.networks);
        let drift = Drift::between(&before, &self.state.containers, &ids);
        // Bookkeeping (unserved names, manager flag) and the swarm's records (polled every
        // second: a newer reading is not drift) come from the listing.
        let State {
            unserved,
            swarm,
            cluster,
            manager,
            ..
        } = fresh;
        self.state.unserved = unserved;
        (self.state.swarm, self.state.cluster, self.state.manager) = (swarm, cluster, manager);
        let net_diff = nets_now.iter().filter(|n| !nets_before.contains(n)).count()
            + nets_before.iter().filter(|n| !nets_now.contains(n)).count();
        let count = drift.count() + net_diff;
        self.metrics.docker.resynced(count as u64);
        if count == 0 {
            tracing::debug!("Docker sweep: tables match the daemon");
        } else {
            tracing::warn!(
                missing = ?drift.missing,
                stale = ?drift.stale,
                changed = ?drift.changed,
                networks_before = ?nets_before,
                networks_now = ?nets_now,
                "Docker sweep found drift between the tables and the daemon; repaired"
            );
            self.status.drift_repairs.fetch_add(1, Ordering::Relaxed);
            self.listeners.retry_failed();
        }
        self.publish();
        Ok(())
    }
}

impl Watcher {
    /// The sweep's check of networks that differ from a fresh listing: one the listing has is
    /// inspected and adopted, one it lacks is removed when the daemon no longer knows it.
    async fn confirm_networks(
        &mut self,
        docker: &Docker,
        events: &mut Events,
        fresh: &State,
    ) -> Result<(), WatchError> {
        let new: Vec<String> = fresh
            .net_ids
            .iter()
            .filter(|(id, _)| !self.state.net_ids.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in new {
            events
                .unless_ended(self.inspect_network(docker, &id))
                .await?;
        }
        let gone: Vec<String> = self
            .state
            .net_ids
            .keys()
            .filter(|id| !fresh.net_ids.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            let r = events
                .unless_ended(async {
                    timed(
                        "/networks/{id}",
                        docker.inspect_network(&id, None::<InspectNetworkOptions>),
                    )
                    .await
                    .map_err(WatchError::api(format!("inspecting network {id}")))
                })
                .await;
            match r {
                Ok(_) => {}
                Err(WatchError::Api { source, .. }) if is_not_found(&source) => {
                    self.state.remove_network_id(&id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What a sweep's re-inspection changed: container names by kind of difference.
struct Drift {
    missing: Vec<String>,
    stale: Vec<String>,
    changed: Vec<String>,
}

impl Drift {
    /// The differences between the containers before and after re-inspecting `ids`.
    fn between(before: &ContainerMap, after: &ContainerMap, ids: &[String]) -> Drift {
        let mut d = Drift {
            missing: Vec::new(),
            stale: Vec::new(),
            changed: Vec::new(),
        };
        for id in ids {
            match (before.get(id.as_str()), after.get(id.as_str())) {
                (None, Some(c)) => d.missing.push(c.name.clone()),
                (Some(c), None) => d.stale.push(c.name.clone()),
                (Some(a), Some(b)) if a != b => d.changed.push(b.name.clone()),
                _ => {}
            }
        }
        d
    }

    fn count(&self) -> usize {
        self.missing.len() + self.stale.len() + self.changed.len()
    }
}

fn sorted_keys<V>(m: &HashMap<String, V>) -> Vec<String> {
    let mut k: Vec<String> = m.keys().cloned().collect();
    k.sort();
    k
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Subscribes to the daemon's container, network and service events from `since` on. The
/// reader runs in its own task so the stream is consumed while the listing runs.
fn subscribe(docker: &Docker, since: Duration) -> Events {
    let options = EventsOptions {
        since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
        until: None,
        filters: Some(HashMap::from([(
            "type".to_string(),
            vec![
                "container".to_string(),
                "network".to_string(),
                "service".to_string(),
            ],
        )])),
    };
    let (tx, rx) = mpsc::unbounded_channel::<Result<EventMessage, WatchError>>();
    let (ended_tx, ended) = tokio::sync::watch::channel(false);
    let mut stream = docker.events(Some(options));
    let reader = tokio::spawn(async move {
        let end = loop {
            match stream.next().await {
                Some(Ok(ev)) => {
                    if tx.send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => break WatchError::Daemon(e),
                None => break WatchError::StreamClosed,
            }
        };
        let _ = ended_tx.send(true);
        let _ = tx.send(Err(end));
    });
    Events {
        rx,
        ended,
        _reader: AbortOnDrop(reader),
    }
}

/// An interval whose missed ticks are delayed, not burst.
fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}
