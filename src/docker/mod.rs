//! The Docker source: watches a Docker daemon through its API (bollard) and publishes what it
//! sees as the `docker` catalog, live.
//!
//! - `convert`: the rules that turn API objects into the model (served networks, names, network
//!   order, health, labels); pure and unit-tested.
//! - `watch`: the long-running watcher (subscribe, list, inspect, follow events, reconnect,
//!   resync, sweep) that owns the connection and the `docker` publisher source.
//! - `listeners`: gateway and sidecar listeners that follow the served networks.
//!
//! This module must not answer queries or touch other sources: it only feeds the
//! [`Publisher`](crate::model::Publisher) and the server's listener set.

pub mod convert;
pub mod listeners;
pub mod watch;

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
        })
    }
}

/// Starts watching Docker for a running server when its configuration asks for it.
pub fn watch(server: &Server) -> Option<DockerWatcher> {
    let opts = WatchOptions::from_config(&server.config())?;
    Some(DockerWatcher::spawn(
        opts,
        server.publisher.clone(),
        server.listeners.clone(),
        server.metrics.clone(),
    ))
}
