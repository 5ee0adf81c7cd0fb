//! The Docker watcher: one task that keeps dockns's view of the daemon current and publishes it.
//!
//! A session subscribes to the event stream first (with `since` a little in the past, so an
//! event that happens while the listing runs is delivered, never lost), then lists and inspects
//! every network and running container, publishes the whole catalog, and applies events from
//! then on. Events are only triggers: the object they name is inspected again and its current
//! state replaces the old one, so replayed, duplicated or reordered events are harmless. When the
//! daemon goes away the last tables keep being served; the watcher reconnects with backoff and a
//! fresh full sync replaces the state, dropping whatever vanished. A periodic sweep compares the
//! state with a fresh listing and repairs (and logs) any drift.
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
//! It owns the Docker connection and the `docker` source of the [`Publisher`]; it must not
//! touch other sources, and it never blocks the query path (publishing swaps a snapshot).

use super::convert::{self, NetInfo, ServeRules};
use super::listeners::{local_addresses, ListenerSync};
use super::DockerConfig;
use crate::dns::listen::ListenerSet;
use crate::metrics::ServerMetrics;
use crate::model::{Catalog, Container, Publisher, ServiceRecord};
use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{
    EventsOptions, InspectNetworkOptions, ListContainersOptions, ListNetworksOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Name of the Docker source in the publisher.
pub const DOCKER_SOURCE: &str = "docker";

/// Seconds a request to the daemon may take before it counts as a failure.
const REQUEST_TIMEOUT_S: u64 = 20;
/// How far back the event subscription starts, to cover the listing that follows it.
const EVENTS_LOOKBACK: Duration = Duration::from_secs(2);
/// Container inspections in flight at once during a full sync.
const INSPECT_CONCURRENCY: usize = 16;
/// Reconnect backoff bounds. The cap is what bounds the resync delay after a long outage
/// (the backoff never grows past it), so it stays well under a second; see the module docs.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// After a swarm change, services are re-read this often for this long (VIPs and task
/// addresses settle asynchronously after the event).
const SERVICE_SETTLE_TICK: Duration = Duration::from_millis(500);
const SERVICE_SETTLE_FOR: Duration = Duration::from_secs(10);
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
            status: status.clone(),
            metrics,
            up: None,
            state_dir: None,
            anonymous_notice: false,
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

/// Everything known about the daemon, keyed for deterministic output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    /// Served networks by name.
    networks: HashMap<String, NetInfo>,
    /// Network ID → name, for served networks.
    net_ids: HashMap<String, String>,
    /// Names of networks seen but not served (so they are not inspected again and again).
    unserved: HashSet<String>,
    /// Running, visible containers by ID.
    containers: BTreeMap<String, Container>,
    /// IDs of running swarm task containers.
    tasks: HashSet<String>,
    /// Swarm services (managers only).
    services: Vec<ServiceRecord>,
    /// Whether the daemon is a swarm manager.
    manager: bool,
}

impl State {
    fn add_network(&mut self, ni: NetInfo) {
        self.net_ids
            .insert(ni.network.id.clone(), ni.network.name.clone());
        self.unserved.remove(&ni.network.name);
        self.networks.insert(ni.network.name.clone(), ni);
    }

    fn remove_network_id(&mut self, id: &str) -> bool {
        match self.net_ids.remove(id) {
            Some(name) => {
                self.networks.remove(&name);
                self.services.retain(|s| s.network != name);
                true
            }
            None => false,
        }
    }

    /// Whether two states publish the same tables (networks, containers, services).
    fn same_tables(&self, other: &State) -> bool {
        self.networks == other.networks
            && self.containers == other.containers
            && self.services == other.services
    }

    /// The catalog to publish; `local` are this host's addresses (sidecar mode).
    fn catalog(&self, opts: &WatchOptions, local: &[IpAddr]) -> Catalog {
        let mut cat = Catalog::default();
        for (name, ni) in &self.networks {
            let mut n = ni.network.clone();
            if opts.gateways && ni.driver == "bridge" {
                n.listen_addrs.extend(ni.gateways.iter().copied());
            }
            if opts.sidecar {
                for c in self.containers.values() {
                    for ep in c.endpoints.iter().filter(|e| &e.network == name) {
                        let ips = ep
                            .ipv4
                            .iter()
                            .map(|a| IpAddr::V4(*a))
                            .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)));
                        for ip in ips {
                            if local.contains(&ip) && !n.listen_addrs.contains(&ip) {
                                n.listen_addrs.push(ip);
                            }
                        }
                    }
                }
            }
            cat.networks.insert(name.clone(), n);
        }
        cat.containers = self.containers.clone();
        drop_own_dns_servers(&mut cat, opts, local);
        cat.services = self.services.clone();
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
    for c in cat.containers.values_mut() {
        c.dns
            .retain(|s| !crate::addr::is_own_listener(*s, &own, local));
    }
}

/// Why a session ended.
enum SessionEnd {
    /// Could not reach the daemon at all.
    Unreachable(String),
    /// Was connected, then lost it.
    Lost(String),
}

struct Watcher {
    opts: WatchOptions,
    rules: ServeRules,
    publisher: Arc<Publisher>,
    listeners: ListenerSync,
    state: State,
    last: Option<Catalog>,
    status: Arc<WatchStatus>,
    /// Server-wide readiness and Docker counters (admin API, /metrics).
    metrics: Arc<ServerMetrics>,
    /// Last logged connection state (None before the first attempt): each change is logged once.
    up: Option<bool>,
    /// The daemon's state directory (`DockerRootDir`), when the daemon predates API 1.44 and
    /// its per-container `config.v2.json` is readable here: the only place such a daemon says
    /// which containers are anonymous. `None` otherwise.
    state_dir: Option<std::path::PathBuf>,
    /// Whether the "cannot tell anonymous containers" notice was logged already.
    anonymous_notice: bool,
}

fn endpoint_text(opts: &WatchOptions) -> String {
    opts.docker.endpoint.clone().unwrap_or_else(|| {
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
    })
}

/// Opens a client for the configured endpoint (no I/O yet).
fn client(endpoint: &str) -> Result<Docker, BollardError> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION)
    } else if endpoint.starts_with('/') {
        Docker::connect_with_unix(endpoint, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION)
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(endpoint, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_host(endpoint)
    }
}

/// For a Unix-socket endpoint, why connecting fails, in words a user can act on (bollard's
/// own error says only "client error (Connect)"). `None` for other endpoints, or when a plain
/// connect works (the failure is then further up, e.g. the API).
fn socket_diagnosis(endpoint: &str) -> Option<String> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.starts_with('/').then_some(endpoint))?;
    let e = std::os::unix::net::UnixStream::connect(path).err()?;
    Some(match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no socket at {path} (is dockerd running? in a container: mount it with -v /var/run/docker.sock:{path}:ro)"
        ),
        std::io::ErrorKind::PermissionDenied => permission_text(path),
        std::io::ErrorKind::ConnectionRefused => {
            format!("nothing listens on {path} (dockerd stopped, or a stale socket file)")
        }
        _ => format!("{path}: {e}"),
    })
}

/// Why this process may not open the socket at `path`, and the fix: who owns it, who we are,
/// and the `--group-add` that grants access.
fn permission_text(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail; getgroups writes at most `buf.len()` entries.
    let uid = unsafe { libc::geteuid() };
    let mut buf = [0 as libc::gid_t; 64];
    let n = unsafe { libc::getgroups(buf.len() as libc::c_int, buf.as_mut_ptr()) };
    let mut groups: Vec<String> = buf[..n.max(0) as usize]
        .iter()
        .map(|g| g.to_string())
        .collect();
    let egid = unsafe { libc::getegid() }.to_string();
    if !groups.contains(&egid) {
        groups.insert(0, egid);
    }
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "permission denied on {path} (owner {}:{}, mode {:o}) for uid {uid} (groups {}): give dockns the socket's group, e.g. `docker run --group-add {}` (compose: group_add: [\"{}\"]), or run it as uid 0",
            m.uid(),
            m.gid(),
            m.mode() & 0o777,
            groups.join(","),
            m.gid(),
            m.gid()
        ),
        Err(_) => format!(
            "permission denied on {path} for uid {uid} (groups {}): give dockns the socket's group (`docker run --group-add $(stat -c %g {path})`) or run it as uid 0",
            groups.join(",")
        ),
    }
}

/// The wait before the next reconnect attempt: doubling, capped at [`BACKOFF_MAX`].
fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Runs one request under [`REQUEST_TIMEOUT_S`] as a whole. bollard's own timeout covers only
/// the response headers, so a daemon that sends headers and then stalls the body would hold
/// the watcher forever.
async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, BollardError>>,
) -> Result<T, BollardError> {
    match tokio::time::timeout(Duration::from_secs(REQUEST_TIMEOUT_S), fut).await {
        Ok(r) => r,
        Err(_) => Err(BollardError::IOError {
            err: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{what}: no complete answer within {REQUEST_TIMEOUT_S} s"),
            ),
        }),
    }
}

/// Runs `fut` unless the event stream ends first. A request stuck on a daemon that went away
/// (or hangs) must not hold up the reconnect for the whole request timeout: the stream's end
/// is the sign to start over at once.
async fn unless_stream_ends<T>(
    ended: &mut tokio::sync::watch::Receiver<bool>,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::select! {
        r = fut => r,
        _ = ended.wait_for(|e| *e) => {
            Err("the event stream ended while a request to the daemon was pending".to_string())
        }
    }
}

/// Whether a negotiated API version predates `DNSNames` (1.44, Docker 25), the versions on
/// which Docker keeps anonymous containers' generated names out of DNS.
fn before_dns_names(v: &bollard::ClientVersion) -> bool {
    (v.major_version, v.minor_version) < (1, 44)
}

/// One line for a bollard error (its Display can span several lines).
fn one_line(e: &BollardError) -> String {
    e.to_string().replace('\n', " ")
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
                            e,
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
        let docker = match client(endpoint) {
            Ok(d) => d,
            Err(e) => return SessionEnd::Unreachable(one_line(&e)),
        };
        let docker = match timed("/version", docker.negotiate_version()).await {
            Ok(d) => d,
            Err(e) => return SessionEnd::Unreachable(one_line(&e)),
        };

        // 1. Subscribe first. The reader runs in its own task so the stream is being consumed
        // while the listing below runs; `since` (in the daemon's clock, which may differ from
        // ours on a tcp:// endpoint) covers the moment before the subscription.
        let daemon_now = match timed("/info", docker.info()).await {
            Ok(info) => {
                self.find_state_dir(endpoint, &docker, info.docker_root_dir.as_deref());
                info.system_time.as_deref().and_then(parse_rfc3339)
            }
            Err(e) => return SessionEnd::Unreachable(one_line(&e)),
        };
        let now = daemon_now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        });
        let since = now.saturating_sub(EVENTS_LOOKBACK);
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
        let (tx, mut rx) = mpsc::unbounded_channel::<Result<EventMessage, String>>();
        // Set when the stream ends, so a pending request does not hold up the reconnect.
        let (ended_tx, mut ended) = tokio::sync::watch::channel(false);
        let mut stream = docker.events(Some(options));
        let reader = tokio::spawn(async move {
            let end = loop {
                match stream.next().await {
                    Some(Ok(ev)) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => break one_line(&e),
                    None => break "the daemon closed the event stream".to_string(),
                }
            };
            let _ = ended_tx.send(true);
            let _ = tx.send(Err(end));
        });
        let _reader = AbortOnDrop(reader);

        // 2. Full listing.
        let sync_started = Instant::now();
        let fresh = match unless_stream_ends(&mut ended, self.fetch_all(&docker)).await {
            Ok(s) => s,
            Err(e) => {
                return if self.up == Some(true) {
                    SessionEnd::Lost(e)
                } else {
                    SessionEnd::Unreachable(e)
                }
            }
        };
        let dropped = self
            .state
            .containers
            .keys()
            .filter(|id| !fresh.containers.contains_key(*id))
            .count();
        self.state = fresh;
        self.listeners.retry_failed();
        self.publish();
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
            services = self.state.services.len(),
            dropped,
            sync_ms = sync_started.elapsed().as_millis() as u64,
            listeners = ?self.listeners.bound(),
            "Docker connected at {endpoint} (API {}.{}): tables synced",
            version.major_version,
            version.minor_version
        );
        self.up = Some(true);

        // 3. Events, sweeps and swarm settling.
        let sweep_every = self.opts.docker.sweep_interval;
        let mut sweep = tokio::time::interval(sweep_every.unwrap_or(Duration::from_secs(3600)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.tick().await;
        let mut settle = tokio::time::interval(SERVICE_SETTLE_TICK);
        settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut settle_until: Option<Instant> = None;
        let mut rebind = tokio::time::interval(LISTENER_RETRY);
        rebind.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = rebind.tick(), if self.opts.sidecar || self.listeners.has_failed() => {
                    self.listeners.retry_failed();
                    // Sidecar: an address of our own container that was not configured yet
                    // when its event was applied shows up here.
                    self.publish();
                    if let Some(cat) = &self.last {
                        self.listeners.apply(cat);
                    }
                }
                ev = rx.recv() => {
                    let Some(first) = ev else {
                        return SessionEnd::Lost("event reader stopped".to_string());
                    };
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let mut swarm_changed = false;
                    let mut since_publish = Instant::now();
                    for item in batch {
                        // A long burst (compose up) publishes as it goes, not only at its end.
                        if since_publish.elapsed() > BURST_PUBLISH {
                            self.publish();
                            since_publish = Instant::now();
                        }
                        let ev = match item {
                            Ok(ev) => ev,
                            Err(e) => {
                                self.publish();
                                return SessionEnd::Lost(e);
                            }
                        };
                        let kind = ev.typ.map(|t| t.to_string()).unwrap_or_default();
                        match unless_stream_ends(&mut ended, self.apply(&docker, &ev)).await {
                            Ok(swarm) => {
                                swarm_changed |= swarm;
                                self.metrics.docker.event_applied(&kind);
                            }
                            Err(e) => {
                                self.publish();
                                return SessionEnd::Lost(e);
                            }
                        }
                        self.status.events.fetch_add(1, Ordering::Relaxed);
                    }
                    if swarm_changed {
                        if let Err(e) =
                            unless_stream_ends(&mut ended, self.refresh_services(&docker)).await
                        {
                            self.publish();
                            return SessionEnd::Lost(e);
                        }
                        settle_until = Some(Instant::now() + SERVICE_SETTLE_FOR);
                    }
                    self.publish();
                }
                _ = sweep.tick(), if sweep_every.is_some() => {
                    match unless_stream_ends(&mut ended, self.fetch_all(&docker)).await {
                        Ok(fresh) => self.repair_drift(fresh),
                        Err(e) => return SessionEnd::Lost(e),
                    }
                }
                _ = settle.tick(), if settle_until.is_some() => {
                    if settle_until.is_some_and(|t| Instant::now() > t) {
                        settle_until = None;
                    }
                    if let Err(e) =
                        unless_stream_ends(&mut ended, self.refresh_services(&docker)).await
                    {
                        return SessionEnd::Lost(e);
                    }
                    self.publish();
                }
            }
        }
    }

    /// Publishes the catalog (and follows it with the listeners) when it changed.
    fn publish(&mut self) {
        let local = if self.opts.sidecar {
            local_addresses()
        } else {
            Vec::new()
        };
        let catalog = self.state.catalog(&self.opts, &local);
        if self.last.as_ref() == Some(&catalog) {
            return;
        }
        self.listeners.apply(&catalog);
        self.publisher.set_source(DOCKER_SOURCE, catalog.clone());
        self.last = Some(catalog);
    }

    /// Compares a fresh listing with the state, logs any difference and adopts the listing.
    fn repair_drift(&mut self, fresh: State) {
        if fresh.same_tables(&self.state) {
            // Bookkeeping (unserved names, task IDs, manager flag) is adopted silently.
            self.state = fresh;
            self.metrics.docker.resynced(0);
            tracing::debug!("Docker sweep: tables match the daemon");
            return;
        }
        let names = |s: &State, ids: &mut dyn Iterator<Item = &String>| -> Vec<String> {
            ids.filter_map(|id| s.containers.get(id).map(|c| c.name.clone()))
                .collect()
        };
        let missing = names(
            &fresh,
            &mut fresh
                .containers
                .keys()
                .filter(|id| !self.state.containers.contains_key(*id)),
        );
        let stale = names(
            &self.state,
            &mut self
                .state
                .containers
                .keys()
                .filter(|id| !fresh.containers.contains_key(*id)),
        );
        let changed = names(
            &fresh,
            &mut fresh.containers.keys().filter(|id| {
                self.state
                    .containers
                    .get(*id)
                    .is_some_and(|c| Some(c) != fresh.containers.get(*id))
            }),
        );
        let mut nets_fresh: Vec<&String> = fresh.networks.keys().collect();
        let mut nets_old: Vec<&String> = self.state.networks.keys().collect();
        nets_fresh.sort();
        nets_old.sort();
        tracing::warn!(
            ?missing,
            ?stale,
            ?changed,
            networks_before = ?nets_old,
            networks_now = ?nets_fresh,
            services_changed = fresh.services != self.state.services,
            "Docker sweep found drift between the tables and the daemon; repaired"
        );
        self.status.drift_repairs.fetch_add(1, Ordering::Relaxed);
        let net_diff = nets_fresh.iter().filter(|n| !nets_old.contains(n)).count()
            + nets_old.iter().filter(|n| !nets_fresh.contains(n)).count();
        let drift = missing.len()
            + stale.len()
            + changed.len()
            + net_diff
            + usize::from(fresh.services != self.state.services);
        self.metrics.docker.resynced(drift.max(1) as u64);
        self.state = fresh;
        self.listeners.retry_failed();
        self.publish();
    }

    /// Finds where a daemon older than API 1.44 records which containers are anonymous (see
    /// [`convert::anonymous_in_config`]); logs once when that is not readable from here.
    fn find_state_dir(&mut self, endpoint: &str, docker: &Docker, root: Option<&str>) {
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
    /// read, once per inspection.
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
    async fn fetch_all(&self, docker: &Docker) -> Result<State, String> {
        let mut st = State::default();
        let nets = timed(
            "/networks",
            docker.list_networks(None::<ListNetworksOptions>),
        )
        .await
        .map_err(|e| format!("listing networks failed: {}", one_line(&e)))?;
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
        let list = timed(
            "/containers/json",
            docker.list_containers(Some(ListContainersOptions {
                all: false,
                ..Default::default()
            })),
        )
        .await
        .map_err(|e| format!("listing containers failed: {}", one_line(&e)))?;
        // Several inspections in flight: a full sync of a busy host (a resync after an outage)
        // takes one round trip per INSPECT_CONCURRENCY containers, not one per container.
        let mut inspected = futures_util::stream::iter(list.into_iter().filter_map(|s| s.id))
            .map(|id| async move {
                let r = timed("/containers/{id}/json", docker.inspect_container(&id, None)).await;
                (id, r)
            })
            .buffer_unordered(INSPECT_CONCURRENCY);
        while let Some((id, result)) = inspected.next().await {
            match result {
                Ok(info) => {
                    if convert::is_swarm_task(&info) {
                        st.tasks.insert(id.clone());
                    }
                    if let Some(mut c) = convert::container(&info, &st.networks) {
                        c.anonymous = self.is_anonymous(&id);
                        st.containers.insert(id, c);
                    }
                }
                // Gone between the listing and the inspect: its destroy event follows.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(format!("inspecting container {id}: {}", one_line(&e))),
            }
        }
        st.manager = match timed("/info", docker.info()).await {
            Ok(info) => info
                .swarm
                .and_then(|s| s.control_available)
                .unwrap_or(false),
            Err(e) => return Err(format!("reading daemon info failed: {}", one_line(&e))),
        };
        if st.manager {
            st.services = services(docker, &st).await?;
        }
        Ok(st)
    }

    async fn refresh_services(&mut self, docker: &Docker) -> Result<(), String> {
        if self.state.manager {
            self.state.services = services(docker, &self.state).await?;
        }
        Ok(())
    }

    /// Applies one event. Returns whether swarm services may have changed.
    async fn apply(&mut self, docker: &Docker, ev: &EventMessage) -> Result<bool, String> {
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
                    let was_task = self.state.tasks.remove(id);
                    self.state.containers.remove(id);
                    Ok(was_task)
                }
                "start" | "restart" | "die" | "stop" | "kill" | "rename" | "health_status"
                | "pause" | "unpause" | "update" | "oom" => self.reinspect(docker, id).await,
                _ => Ok(false),
            },
            Some(EventMessageTypeEnum::NETWORK) => match verb {
                "create" => {
                    self.inspect_network(docker, id).await?;
                    Ok(false)
                }
                "destroy" | "remove" => Ok(self.state.remove_network_id(id)),
                "connect" | "disconnect" => match attr("container") {
                    Some(cid) => {
                        let cid = cid.to_string();
                        self.reinspect(docker, &cid).await
                    }
                    None => Ok(false),
                },
                _ => Ok(false),
            },
            // Only managers see service events.
            Some(EventMessageTypeEnum::SERVICE) => {
                self.state.manager = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Inspects a network by ID and adopts it (or remembers that it is not served).
    async fn inspect_network(&mut self, docker: &Docker, id: &str) -> Result<(), String> {
        match timed(
            "/networks/{id}",
            docker.inspect_network(id, None::<InspectNetworkOptions>),
        )
        .await
        {
            Ok(n) => {
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
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(format!("inspecting network {id}: {}", one_line(&e))),
        }
    }

    /// Inspects a container again and replaces (or removes) it. Returns whether it is a swarm
    /// task (whose change moves `tasks.<service>`).
    async fn reinspect(&mut self, docker: &Docker, id: &str) -> Result<bool, String> {
        if id.is_empty() {
            return Ok(false);
        }
        let info = match timed("/containers/{id}/json", docker.inspect_container(id, None)).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => {
                self.state.containers.remove(id);
                return Ok(self.state.tasks.remove(id));
            }
            Err(e) => return Err(format!("inspecting container {id}: {}", one_line(&e))),
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
        let task = convert::is_swarm_task(&info);
        if task {
            self.state.tasks.insert(id.clone());
        }
        match convert::container(&info, &self.state.networks) {
            Some(mut c) => {
                c.anonymous = self.is_anonymous(&id);
                self.state.containers.insert(id, c);
            }
            None => {
                self.state.containers.remove(&id);
                if info.state.as_ref().is_none_or(|s| s.running != Some(true)) {
                    self.state.tasks.remove(&id);
                }
            }
        }
        Ok(task)
    }
}

/// Reads the swarm services on every served swarm network, from the network's verbose
/// inspection (the same service records Docker's resolver uses, across all nodes).
async fn services(docker: &Docker, st: &State) -> Result<Vec<ServiceRecord>, String> {
    let mut out = Vec::new();
    let mut nets: Vec<&NetInfo> = st.networks.values().filter(|n| n.swarm).collect();
    nets.sort_by(|a, b| a.network.name.cmp(&b.network.name));
    for ni in nets {
        let opts = InspectNetworkOptions {
            verbose: true,
            scope: Some("swarm".to_string()),
        };
        let n = match timed(
            "/networks/{id}",
            docker.inspect_network(&ni.network.id, Some(opts)),
        )
        .await
        {
            Ok(n) => n,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => {
                return Err(format!(
                    "inspecting swarm network {}: {}",
                    ni.network.name,
                    one_line(&e)
                ))
            }
        };
        for (name, svc) in n.services.iter().flatten() {
            if name.is_empty() {
                continue;
            }
            let vips: Vec<IpAddr> = svc
                .get("VIP")
                .and_then(|v| v.as_str())
                .and_then(convert::parse_addr)
                .into_iter()
                .collect();
            let mut tasks: Vec<IpAddr> = svc
                .get("Tasks")
                .and_then(|t| t.as_array())
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("EndpointIP").and_then(|v| v.as_str()))
                .filter_map(convert::parse_addr)
                .collect();
            tasks.sort();
            tasks.dedup();
            out.push(ServiceRecord {
                name: name.clone(),
                network: ni.network.name.clone(),
                vips,
                tasks,
            });
        }
    }
    // Deterministic order (the daemon's map is not), so two listings compare equal.
    out.sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
    Ok(out)
}

/// Parses an RFC 3339 timestamp as Docker writes it (`2026-11-22T06:01:22.981698527Z`, or with
/// a `+01:00` offset) into time since the Unix epoch.
fn parse_rfc3339(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    // Split the clock from the zone: "Z", "+hh:mm" or "-hh:mm".
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let offset_s: i64 = match zone {
        "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (hh, mm) = z[1..].split_once(':')?;
            sign * (hh.parse::<i64>().ok()? * 3600 + mm.parse::<i64>().ok()? * 60)
        }
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (hh, mi, ss): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        let n: u32 = digits.parse().ok()?;
        n * 10u32.pow(9 - digits.len() as u32)
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mi * 60 + ss - offset_s;
    u64::try_from(secs).ok().map(|s| Duration::new(s, nanos))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Health, Network};

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
            Container {
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
            },
        );
        st
    }

    #[test]
    fn gateway_listeners_only_on_bridges() {
        let cat = state().catalog(&opts(true, false), &[]);
        assert_eq!(
            cat.networks["app"].listen_addrs,
            vec!["10.5.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(cat.networks["mv"].listen_addrs.is_empty());
        let cat = state().catalog(&opts(false, false), &[]);
        assert!(cat.networks["app"].listen_addrs.is_empty());
    }

    #[test]
    fn sidecar_binds_own_address() {
        let local: Vec<IpAddr> = vec!["10.5.0.7".parse().unwrap()];
        let cat = state().catalog(&opts(false, true), &local);
        assert_eq!(cat.networks["app"].listen_addrs, local);
        let cat = state().catalog(&opts(false, true), &[]);
        assert!(cat.networks["app"].listen_addrs.is_empty());
    }

    /// `--dns <gateway>` (or the sidecar's address, or a fixed listener) is dockns itself: left
    /// out of the container's servers, the others kept in order.
    #[test]
    fn own_addresses_leave_container_dns_lists() {
        let sa = |s: &str| -> std::net::SocketAddr { s.parse().unwrap() };
        let mut st = state();
        st.containers.get_mut("c1").unwrap().dns = vec![
            sa("10.5.0.1:53"),
            sa("192.0.2.53:53"),
            sa("10.5.0.7:53"),
            sa("127.0.0.1:53"),
        ];
        // Gateway listeners on 10.5.0.1:53 and a fixed one on 127.0.0.1:53.
        let mut o = opts(true, false);
        o.own = vec![sa("127.0.0.1:53")];
        let cat = st.catalog(&o, &[]);
        assert_eq!(
            cat.containers["c1"].dns,
            [sa("192.0.2.53:53"), sa("10.5.0.7:53")]
        );
        // Sidecar on 10.5.0.7: that one goes; the gateway is someone else then.
        let local: Vec<IpAddr> = vec!["10.5.0.7".parse().unwrap()];
        let cat = st.catalog(&opts(false, true), &local);
        assert_eq!(
            cat.containers["c1"].dns,
            [sa("10.5.0.1:53"), sa("192.0.2.53:53"), sa("127.0.0.1:53")]
        );
        // A wildcard fixed listener on port 53 is every local address.
        let mut o = opts(false, false);
        o.own = vec![sa("0.0.0.0:53")];
        let cat = st.catalog(&o, &local);
        assert_eq!(
            cat.containers["c1"].dns,
            [sa("10.5.0.1:53"), sa("192.0.2.53:53")]
        );
    }

    #[test]
    fn network_removal_drops_services() {
        let mut st = state();
        st.services.push(ServiceRecord {
            name: "s".into(),
            network: "app".into(),
            vips: vec![],
            tasks: vec![],
        });
        assert!(st.remove_network_id("id-app"));
        assert!(!st.remove_network_id("id-app"));
        assert!(st.services.is_empty());
        assert!(!st.networks.contains_key("app"));
    }

    #[test]
    fn drift_ignores_bookkeeping() {
        let a = state();
        let mut b = state();
        b.unserved.insert("bridge".into());
        b.tasks.insert("t1".into());
        b.manager = true;
        assert!(a.same_tables(&b));
        b.containers.clear();
        assert!(!a.same_tables(&b));
    }

    #[test]
    fn daemon_clock_parsing() {
        let t = parse_rfc3339("2026-11-22T06:01:22.981698527Z").unwrap();
        assert_eq!(t.as_secs(), 1_795_327_282);
        assert_eq!(t.subsec_nanos(), 981_698_527);
        let t = parse_rfc3339("1970-01-01T01:00:00.5+01:00").unwrap();
        assert_eq!((t.as_secs(), t.subsec_nanos()), (0, 500_000_000));
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z").unwrap().as_secs(),
            951_868_800
        );
        assert!(parse_rfc3339("yesterday").is_none());
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_none());
        assert!(parse_rfc3339("").is_none());
    }

    #[test]
    fn reconnect_backoff_stays_short_however_long_the_outage() {
        let mut waits = vec![BACKOFF_MIN];
        for _ in 0..100 {
            waits.push(next_backoff(*waits.last().unwrap()));
        }
        assert_eq!(
            &waits[..4],
            &[
                Duration::from_millis(200),
                Duration::from_millis(400),
                Duration::from_millis(500),
                Duration::from_millis(500)
            ]
        );
        // 30 s of outage is about 60 attempts; the wait never exceeds half a second.
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(500)));
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
    }

    #[test]
    fn unreachable_endpoint_is_an_error_not_a_panic() {
        assert!(client("unix:///nonexistent/docker.sock").is_err());
    }

    #[test]
    fn socket_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.sock");
        let d = socket_diagnosis(&format!("unix://{}", missing.display())).unwrap();
        assert!(d.starts_with("no socket at"), "{d}");
        // A socket file nobody listens on (bound, then the listener dropped).
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let d = socket_diagnosis(stale.to_str().unwrap()).unwrap();
        assert!(d.starts_with("nothing listens on"), "{d}");
        // A live socket: no diagnosis (the problem is elsewhere).
        let live = dir.path().join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        assert_eq!(socket_diagnosis(live.to_str().unwrap()), None);
        assert_eq!(socket_diagnosis("tcp://127.0.0.1:2375"), None);
    }
}
