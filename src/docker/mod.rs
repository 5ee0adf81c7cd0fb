//! The Docker source: watches a Docker daemon through its API (bollard) and publishes what it
//! sees as the `docker` catalog, live.
//!
//! - `convert`: the rules that turn API objects into the model (served networks, names, network
//!   order, health, labels); pure and unit-tested.
//! - `watch`: the long-running watcher (subscribe, list, inspect, follow events, reconnect,
//!   resync, sweep) that owns the connection and the `docker` publisher source.
//! - `listeners`: gateway and sidecar listeners that follow the served networks.
//! - `swarm`: the service records of overlay networks (every node's tasks and containers,
//!   services, aliases), read from the node's own verbose network inspection; pure.
//! - `state`, `sync`, `connect`, `error`: the watcher's parts (what it knows and the catalog
//!   made from it; reading the daemon into it; reaching the daemon; typed errors).
//!
//! This module must not answer queries or touch other sources: it only feeds the
//! [`Publisher`](crate::model::Publisher) and the server's listener set.

mod connect;
pub mod convert;
mod error;
pub mod listeners;
pub mod peers;
mod state;
pub mod swarm;
mod sync;
pub mod watch;

pub use error::WatchError;
pub use watch::{DockerWatcher, WatchOptions, WatchStatus, DOCKER_SOURCE};

use crate::config::Config;
use crate::server::Server;

impl WatchOptions {
    /// The watcher options a configuration asks for, or `None` when Docker is not watched.
    pub fn from_config(cfg: &Config) -> Option<WatchOptions> {
        cfg.docker.as_ref().map(|d| WatchOptions {
            docker: d.clone(),
            gateways: cfg.gateways,
            sidecar: cfg.sidecar,
            port: cfg.gateway_port,
            own: cfg.listen.clone(),
        })
    }
}

/// Starts watching Docker for a running server when its configuration asks for it.
///
/// In sidecar mode the container's own addresses are bound first, before any Docker call, and
/// clients on their subnets are admitted until the first sync is published: forwarded names and
/// the static tables are answered from the moment the process runs, and a sidecar that cannot
/// reach Docker still forwards (while `/readyz` says why it is not ready).
pub fn watch(server: &Server) -> Option<DockerWatcher> {
    let opts = WatchOptions::from_config(&server.config())?;
    let mut prebound = Vec::new();
    if opts.sidecar {
        let nets = listeners::sidecar_addresses();
        for n in &nets {
            let addr = std::net::SocketAddr::new(n.addr(), opts.port);
            match server.listeners.add(addr) {
                Ok(_) => prebound.push(addr),
                Err(e) => {
                    tracing::warn!("sidecar listener not started before the Docker sync: {e}")
                }
            }
        }
        server
            .guard
            .set_provisional(nets.iter().map(|n| n.trunc()).collect());
        let (guard, metrics) = (server.guard.clone(), server.metrics.clone());
        tokio::spawn(async move {
            while !metrics.is_synced() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            guard.end_provisional();
        });
    }
    Some(DockerWatcher::spawn_adopting(
        opts,
        server.publisher.clone(),
        server.listeners.clone(),
        server.metrics.clone(),
        &prebound,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn example_config_watches_docker_with_gateways() {
        let cfg = Config::load(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/docker.toml")),
            &Overrides::default(),
        )
        .unwrap();
        let opts = WatchOptions::from_config(&cfg).unwrap();
        assert!(opts.gateways && !opts.sidecar);
        assert_eq!(opts.port, 53);
        assert!(cfg.build.host_sees_all_qualified);
    }

    #[test]
    fn bare_serve_and_docker_flag() {
        let cfg = Config::docker_default(&Overrides::default()).unwrap();
        let opts = WatchOptions::from_config(&cfg).unwrap();
        assert!(opts.gateways);
        assert_eq!(opts.docker.endpoint, None);
        let cfg = Config::docker_default(&Overrides {
            docker: Some("tcp://127.0.0.1:2375".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            WatchOptions::from_config(&cfg)
                .unwrap()
                .docker
                .endpoint
                .as_deref(),
            Some("tcp://127.0.0.1:2375")
        );
        let statics = Config::from_toml(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n",
            &Overrides::default(),
        )
        .unwrap();
        assert!(
            WatchOptions::from_config(&statics).is_none(),
            "no [docker]: never watched"
        );
    }
}
