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
//! [`Publisher`](crate::model::Publisher) and the server's listener set. It must not import the
//! configuration or the server either: `config` builds its [`DockerConfig`] and
//! [`WatchOptions`], and `Server::watch_docker` starts it.

mod connect;
pub mod convert;
mod error;
pub mod listeners;
pub mod peers;
pub mod state;
pub mod swarm;
mod sync;
pub mod watch;

pub use error::WatchError;
pub use watch::{DockerWatcher, WatchOptions, WatchStatus, DOCKER_SOURCE};

/// Docker settings after validation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DockerConfig {
    /// Endpoint URI, or `None` for bollard's defaults (DOCKER_HOST, then the local socket).
    pub endpoint: Option<String>,
    /// Serve the default bridge network.
    pub default_bridge: bool,
    /// Health-aware answers.
    pub health_aware: bool,
    /// Consistency sweep period.
    pub sweep_interval: Option<std::time::Duration>,
}
