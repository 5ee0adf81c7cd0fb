//! Wiring: builds the publisher, the forwarder and the listeners from a [`Config`], applies
//! reloads, and shuts everything down in order.
//!
//! `main.rs` owns signals and exit codes; tests start a [`Server`] in-process on ephemeral
//! loopback ports. Sources of names (`statics` from the config file, `docker` from the daemon,
//! started by [`Server::watch_docker`]) feed the [`Publisher`]; the listeners only read what it
//! publishes.

use crate::admin::{AdminAccess, AdminServer, AdminState};
use crate::config::Config;
use crate::dns::guard::Guard;
use crate::dns::listen::{BindError, ListenerDeps, ListenerSet};
use crate::docker::DockerWatcher;
use crate::forward::{ForwardSettings, Forwarder};
use crate::metrics::ServerMetrics;
use crate::model::Publisher;
use crate::stats::Stats;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// How often this machine's own addresses are re-read for [`Guard::admit`] when the kernel's
/// address change notices cannot be had.
const HOST_ADDRS_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// A running dockns.
pub struct Server {
    /// Snapshot publisher (sources write here).
    pub publisher: Arc<Publisher>,
    /// Upstream pool.
    pub forwarder: Arc<Forwarder>,
    /// Listeners (fixed ones from the config, plus any a source adds).
    pub listeners: Arc<ListenerSet>,
    /// Query counters.
    pub stats: Arc<Stats>,
    /// Access control and forward rate limits.
    pub guard: Arc<Guard>,
    /// Readiness and Docker counters (the Docker source records here and calls
    /// `metrics.set_synced()` after its initial sync).
    pub metrics: Arc<ServerMetrics>,
    admin: Mutex<Option<AdminServer>>,
    host_addrs: tokio::task::JoinHandle<()>,
    admin_access: Arc<arc_swap::ArcSwap<AdminAccess>>,
    config: Mutex<Config>,
    fixed: Mutex<Vec<SocketAddr>>,
}

impl Server {
    /// Builds everything and binds the configured listeners. Must be called within a tokio
    /// runtime.
    pub fn start(config: Config) -> Result<Server, BindError> {
        let publisher = Publisher::new(config.build.clone());
        publisher.set_source(crate::statics::SOURCE, config.static_catalog.clone());
        let forwarder = Forwarder::new(&forward_settings(&config));
        let stats = Arc::new(Stats::default());
        let guard = Guard::new(config.guard.clone());
        let listeners = Arc::new(ListenerSet::new(ListenerDeps {
            snapshot: publisher.handle(),
            forwarder: forwarder.clone(),
            stats: stats.clone(),
            runtime: tokio::runtime::Handle::current(),
            tcp_idle_timeout: config.tcp_idle_timeout,
            tcp_connections: Arc::new(Semaphore::new(config.max_tcp_connections)),
            workers: config.workers,
            guard: guard.clone(),
        }));
        let fixed = bind_all(&listeners, &config.listen)?;
        let metrics = Arc::new(ServerMetrics::new(config.docker.is_some()));
        let admin_access = Arc::new(arc_swap::ArcSwap::from_pointee(config.admin_access.clone()));
        let admin = match config.admin {
            Some(addr) => {
                let state = AdminState {
                    publisher: publisher.clone(),
                    forwarder: forwarder.clone(),
                    stats: stats.clone(),
                    listeners: listeners.clone(),
                    server: metrics.clone(),
                    access: admin_access.clone(),
                    guard: guard.clone(),
                };
                Some(crate::admin::start(addr, state).inspect_err(|_| stop_all(&listeners))?)
            }
            None => None,
        };
        let host_addrs = follow_host_addresses(guard.clone());
        if config.upstreams.is_empty() {
            tracing::warn!("no upstream servers (none configured, none usable in /etc/resolv.conf): names not answered locally get SERVFAIL");
        }
        Ok(Server {
            publisher,
            forwarder,
            listeners,
            stats,
            guard,
            metrics,
            admin: Mutex::new(admin),
            host_addrs,
            admin_access,
            config: Mutex::new(config),
            fixed: Mutex::new(fixed),
        })
    }

    /// The bound addresses of the fixed listeners, in config order.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.fixed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The bound address of the admin API, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|a| a.addr)
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a new configuration: static tables and answer settings at once, listeners added
    /// and removed. Upstream and Docker settings need a restart (logged).
    pub fn reload(&self, new: Config) -> Result<(), BindError> {
        let old = self.config();
        // Bind new listeners first: a failure keeps the old configuration whole.
        let mut added = Vec::new();
        for addr in new.listen.iter().filter(|a| !old.listen.contains(a)) {
            match self.listeners.add(*addr) {
                Ok(_) => added.push(*addr),
                Err(e) => {
                    for a in added {
                        self.listeners.remove(a);
                    }
                    return Err(e);
                }
            }
        }
        for addr in old.listen.iter().filter(|a| !new.listen.contains(a)) {
            self.listeners.remove(*addr);
        }
        let pending = old.restart_only_changes(&new);
        if !pending.is_empty() {
            tracing::warn!(
                keys = %pending.join(", "),
                "reload: these changed settings are read at start only and take effect after a restart"
            );
        }
        self.guard.set(new.guard.clone());
        self.forwarder.set_local_ttl(new.ttl);
        if new.admin_access != old.admin_access {
            self.admin_access.store(Arc::new(new.admin_access.clone()));
        }
        // The upstream list is read at start only: the snapshot keeps describing the running one.
        let mut new = new;
        new.build.default_upstreams = old.build.default_upstreams.clone();
        // Each publish is a full rebuild: skip the settings one when they did not change.
        if new.build != old.build {
            self.publisher.set_settings(new.build.clone());
        }
        self.publisher
            .set_source(crate::statics::SOURCE, new.static_catalog.clone());
        let bound: Vec<SocketAddr> = {
            let map = self.listeners.addresses();
            new.listen
                .iter()
                .filter_map(|a| map.iter().find(|(k, _)| k == a).map(|(_, b)| *b))
                .collect()
        };
        *self.fixed.lock().unwrap_or_else(|e| e.into_inner()) = bound;
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// Starts watching Docker when the configuration asks for it (`None` otherwise).
    ///
    /// In sidecar mode the container's own addresses are bound first, before any Docker call, and
    /// clients on their subnets are admitted until the first sync is published: forwarded names
    /// and the static tables are answered from the moment the process runs, and a sidecar that
    /// cannot reach Docker still forwards (while `/readyz` says why it is not ready).
    pub fn watch_docker(&self) -> Option<DockerWatcher> {
        let opts = self.config().watch_options()?;
        let mut prebound = Vec::new();
        if opts.sidecar {
            let nets = crate::docker::listeners::sidecar_addresses();
            // Admission first: a question that reaches a socket bound below is answered, not
            // REFUSED for a policy not yet in place.
            self.guard
                .set_provisional(nets.iter().map(|n| n.trunc()).collect());
            for n in &nets {
                let addr = SocketAddr::new(n.addr(), opts.port);
                match self.listeners.add(addr) {
                    Ok(_) => prebound.push(addr),
                    Err(e) => {
                        tracing::warn!("sidecar listener not started before the Docker sync: {e}")
                    }
                }
            }
            let (guard, metrics) = (self.guard.clone(), self.metrics.clone());
            tokio::spawn(async move {
                while !metrics.is_synced() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                guard.end_provisional();
            });
        }
        Some(DockerWatcher::spawn_adopting(
            opts,
            self.publisher.clone(),
            self.listeners.clone(),
            self.metrics.clone(),
            &prebound,
        ))
    }

    /// Stops every listener and waits for them.
    pub async fn shutdown(&self) {
        self.host_addrs.abort();
        let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(a) = admin {
            a.stop().await;
        }
        self.listeners.stop_all().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.host_addrs.abort();
    }
}

/// The forwarder's settings from a configuration.
fn forward_settings(config: &Config) -> ForwardSettings {
    ForwardSettings {
        servers: config.upstreams.clone(),
        timeout: config.upstream_timeout,
        budget: config.upstream_budget,
        max_inflight: config.max_inflight,
        cache_size: config.cache_size,
        randomize_case: config.randomize_case,
        cache_bytes: config.cache_bytes,
        serve_stale: config.serve_stale,
        local_ttl: config.ttl,
    }
}

/// Binds the fixed listeners, in order; on a failure stops the ones already bound (no half
/// the listeners running behind an error).
fn bind_all(
    listeners: &Arc<ListenerSet>,
    addrs: &[SocketAddr],
) -> Result<Vec<SocketAddr>, BindError> {
    addrs
        .iter()
        .map(|addr| listeners.add(*addr))
        .collect::<Result<Vec<_>, _>>()
        .inspect_err(|_| stop_all(listeners))
}

/// Stops every listener in the background.
fn stop_all(listeners: &Arc<ListenerSet>) {
    let l = listeners.clone();
    tokio::spawn(async move { l.stop_all().await });
}

/// Keeps the guard's list of this machine's own addresses (admitted like loopback) current: new
/// bridge networks add gateway addresses. Re-read when the kernel announces an address change
/// (no timer while idle: each read walks every interface, hundreds with many Docker networks);
/// polled every [`HOST_ADDRS_REFRESH`] only if the announcements cannot be had.
fn follow_host_addresses(guard: Arc<Guard>) -> tokio::task::JoinHandle<()> {
    use crate::docker::listeners::{local_addresses, AddressChanges};
    guard.set_host_addrs(local_addresses());
    tokio::spawn(async move {
        match AddressChanges::subscribe() {
            Ok(changes) => {
                // What changed between the first read and the subscription.
                guard.set_host_addrs(local_addresses());
                let e = loop {
                    if let Err(e) = changes.changed().await {
                        break e;
                    }
                    guard.set_host_addrs(local_addresses());
                };
                tracing::warn!("address change notices stopped ({e}); re-reading this machine's addresses every {HOST_ADDRS_REFRESH:?}");
            }
            Err(e) => tracing::warn!("cannot follow address changes (netlink: {e}); re-reading this machine's addresses every {HOST_ADDRS_REFRESH:?}"),
        }
        let mut tick = tokio::time::interval(HOST_ADDRS_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            guard.set_host_addrs(local_addresses());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_port_is_a_bind_error_with_its_cause() {
        use std::error::Error;
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let cfg = Config::from_toml(
            &format!("[server]\nlisten = [\"{addr}\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n"),
            &Default::default(),
        )
        .unwrap();
        let e = Server::start(cfg).err().expect("the port is held");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("cannot listen on {addr} (udp): "))
                && msg.ends_with("stop it, or choose another address with --listen"),
            "{msg}"
        );
        let cause = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            cause.map(|c| c.kind()),
            Some(std::io::ErrorKind::AddrInUse),
            "{e:?}"
        );
    }
}
