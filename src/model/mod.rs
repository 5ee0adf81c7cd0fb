//! The container model: networks, containers, their endpoints, and the name rules that decide
//! which names an endpoint answers to.
//!
//! A [`Catalog`] is the plain description of everything one source (the static config or the
//! Docker daemon) knows; its containers are shared (`Arc`) between successive catalogs, so a
//! source derives the next catalog without copying a container, and a change is found by
//! pointer before any comparison of contents. Sources build catalogs; [`Publisher`] merges them and compiles the
//! result into an immutable [`Snapshot`] that the DNS listeners read without locks. Nothing on the
//! query path ever touches a `Catalog`: the model flows one way, sources → catalog → snapshot.

mod names;
mod publish;
mod snapshot;
mod zone;

pub use names::{endpoint_names, normalize_name, ptr_name, reverse_name};
pub use publish::{Publisher, SnapshotHandle};
pub use snapshot::{
    BuildSettings, NameEntry, Resolution, Snapshot, Unanswered, View, ViewId, DOCKER_RESOLVER,
    MAX_CLIENT_SERVERS,
};
pub use zone::REVERSE_AUTHORITY_LEN;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Health of a container as far as answers are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No health check configured: counts as healthy.
    #[default]
    None,
    /// Health check passing.
    Healthy,
    /// Health check not yet decided.
    Starting,
    /// Health check failing.
    Unhealthy,
}

impl Health {
    /// Whether a container with this health is preferred in answers.
    pub fn is_serving(self) -> bool {
        matches!(self, Health::None | Health::Healthy)
    }
}

/// A network whose names dockns serves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Network {
    /// The network's exact name (used for `name.network`).
    pub name: String,
    /// Docker network ID (empty for static networks).
    pub id: String,
    /// Internal networks never forward questions upstream.
    pub internal: bool,
    /// Addresses that belong to the network itself (gateways, or the sidecar's own address):
    /// a query arriving on one of them is scoped to this network.
    pub listen_addrs: Vec<std::net::IpAddr>,
    /// Subnets: clients inside them may use the server (see `dns::guard`).
    pub subnets: Vec<ipnet::IpNet>,
}

/// One container's attachment to one network.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// Name of the network (key into [`Catalog::networks`]).
    pub network: String,
    /// IPv4 addresses on that network.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses on that network.
    pub ipv6: Vec<Ipv6Addr>,
    /// Extra names valid on this network only (network aliases, compose service names,
    /// and on old daemons the short ID and hostname, which are deduplicated later).
    pub aliases: Vec<String>,
    /// Links made on this network (`docker run --link target:alias`, compose `links:`,
    /// `docker network connect --link`): names that only this container resolves, and only
    /// through this network. Empty for almost every endpoint.
    pub links: Vec<Link>,
}

/// One link of an endpoint: `alias` answers what `target` answers on the endpoint's network,
/// for the linking container only (libnetwork's endpoint aliases; see docs/docker.md).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Link {
    /// The name the linking container uses (`--link target:alias`; the target itself when no
    /// alias is given).
    pub alias: String,
    /// The name it stands for, looked up on the link's network when the snapshot is built (a
    /// container name, alias or short ID), so it follows the target across restarts.
    pub target: String,
}

impl Link {
    /// Parses Docker's link notation `target:alias` (or `target`), as stored in
    /// `EndpointSettings.Links`. A leading `/` on either side (the legacy `/target:/me/alias`
    /// form) is dropped, and so is the linking container's path in the alias. `None` for an
    /// empty target.
    pub fn parse(text: &str) -> Option<Link> {
        let (target, alias) = text.split_once(':').unwrap_or((text, text));
        let target = target.trim_start_matches('/');
        let alias = alias.rsplit('/').next().unwrap_or(alias);
        let alias = if alias.is_empty() { target } else { alias };
        (!target.is_empty()).then(|| Link {
            alias: alias.to_string(),
            target: target.to_string(),
        })
    }
}

/// A container (or a static host entry) and its endpoints, in the container's network order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    /// Full container ID (empty for static entries).
    pub id: String,
    /// Container name without the leading `/`.
    pub name: String,
    /// Hostname, answered as given (may contain dots). `None` for static entries.
    pub hostname: Option<String>,
    /// Health as last reported.
    pub health: Health,
    /// Names added on every network (from the `dockns.alias` label).
    pub extra_names: Vec<String>,
    /// Endpoints in the container's network order (first wins when two networks share a name).
    pub endpoints: Vec<Endpoint>,
    /// The container's own DNS servers (Docker: `HostConfig.Dns`, i.e. `docker run --dns`,
    /// compose `dns:`; static config: `dns = [...]`), in its order, with dockns's own listening
    /// addresses already removed by the source. Empty: the default `[upstream] servers`.
    /// The snapshot turns them into per-client upstream lists
    /// ([`Snapshot::client_servers`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::SocketAddr>,
    /// Created without `--name` on a daemon older than Docker 25 (API < 1.44): Docker keeps its
    /// generated name out of DNS, and the first alias of each endpoint names its address in PTR.
    pub anonymous: bool,
}

impl Container {
    /// The first 12 hex characters of the ID, as Docker answers it.
    pub fn short_id(&self) -> Option<&str> {
        (self.id.len() >= 12).then(|| &self.id[..12])
    }
}

/// A swarm service's presence on one network.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceRecord {
    /// Service name.
    pub name: String,
    /// Network name.
    pub network: String,
    /// Virtual IPs (VIP mode); empty for dnsrr services.
    pub vips: Vec<std::net::IpAddr>,
    /// Addresses of the running tasks on this network.
    pub tasks: Vec<std::net::IpAddr>,
}

/// Containers by key, shared: a persistent ordered map ([`imbl::OrdMap`], a B-tree whose nodes
/// are shared between copies), so cloning it is O(1), changing a copy copies only the path to
/// the changed key, dropping it frees only what no other copy holds, and comparing two copies
/// ([`imbl::OrdMap::diff`], `==`) skips the subtrees they share: successive catalogs and the
/// watcher's state share every container and every node that did not change, and deriving,
/// comparing and freeing a catalog after one event costs O(change · log n), not O(containers).
/// The containers themselves are `Arc`s too (the snapshot compiler recognises an unchanged one
/// by pointer, see [`same_container`]).
pub type ContainerMap = imbl::OrdMap<Arc<str>, Arc<Container>>;

/// Networks by name, persistent like [`ContainerMap`] (O(1) clone, comparison that skips
/// what two copies share): the watcher keeps the map it derived last and changes only the
/// networks an event touches.
pub type NetworkMap = imbl::OrdMap<String, Network>;

/// Whether two shared containers are the same: the same allocation (the common case between
/// two catalogs, decided without reading them), else equal contents.
#[inline]
pub fn same_container(a: &Arc<Container>, b: &Arc<Container>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Everything one source knows, keyed for deterministic iteration. Cloning and comparing it
/// is cheap: its maps are persistent and share what did not change (see [`ContainerMap`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Catalog {
    /// Networks by name.
    pub networks: NetworkMap,
    /// Containers by ID (static entries: by name).
    pub containers: ContainerMap,
    /// Swarm services.
    pub services: Vec<ServiceRecord>,
}

#[cfg(test)]
mod tests {
    use super::Link;

    #[test]
    fn link_notation() {
        let l = |a: &str, t: &str| {
            Some(Link {
                alias: a.into(),
                target: t.into(),
            })
        };
        assert_eq!(Link::parse("db:database"), l("database", "db"));
        assert_eq!(Link::parse("db"), l("db", "db"));
        assert_eq!(Link::parse("/db:/web/database"), l("database", "db"));
        assert_eq!(Link::parse("db:"), l("db", "db"));
        assert_eq!(Link::parse(""), None);
        assert_eq!(Link::parse(":x"), None);
    }
}
