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
//! [`Publisher`](crate::model::Publisher) and the server's listener set. It must not import the
//! configuration or the server either: `config` builds its [`DockerConfig`] and
//! [`WatchOptions`], and `Server::watch_docker` starts it.

pub mod convert;
pub mod listeners;
pub mod watch;

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
