//! The static source: the `[[network]]` tables of the configuration file, checked and turned
//! into the `static` catalog. It sits beside the Docker source (`docker`): both only describe
//! networks and containers as a [`Catalog`] for the [`Publisher`](crate::model::Publisher).
//!
//! This module takes the tables as the file parser read them and the fixed listeners (to drop
//! a container `dns` entry that would loop back to dockns); reading the file and checking every
//! other key is `config`'s job, publishing is the server's. It must not touch the network, Docker
//! or the answer path. Every error names the table entry, the value and what to write instead.

use crate::addr::{is_own, parse_upstream};
use crate::model::{normalize_name, Catalog, Container, Endpoint, Health, Network};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Name of the static source in the publisher.
pub const SOURCE: &str = "static";

/// `[[network]]`
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Network name (answers `name.<network>`).
    pub name: String,
    /// Internal: clients that only see internal networks get no forwarding.
    #[serde(default)]
    pub internal: bool,
    /// Optional subnet; container addresses must lie inside it.
    pub subnet: Option<String>,
    /// `[[network.container]]`
    #[serde(default)]
    pub container: Vec<ContainerSection>,
}

/// `[[network.container]]`
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ContainerSection {
    /// Container name.
    pub name: String,
    /// IPv4 addresses.
    #[serde(default)]
    pub ipv4: Vec<String>,
    /// IPv6 addresses.
    #[serde(default)]
    pub ipv6: Vec<String>,
    /// Extra names on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Health, for testing health-aware answers: none, healthy, starting, unhealthy.
    #[serde(default)]
    pub health: Health,
    /// The container's own DNS servers (`ADDR[:PORT]`, port 53 when absent), like Docker's
    /// `--dns`: questions from its addresses go there, in this order (at most the first 3);
    /// dockns's own listeners are left out. Empty: `[upstream] servers`.
    #[serde(default)]
    pub dns: Vec<String>,
}

/// A problem in the static tables. `at` says which entry, e.g.
/// `[[network]] #1 (name = "demo"), container #2 (name = "db")`.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    /// A network name that is not one DNS label.
    #[error("{at}: name must be a non-empty DNS label without dots, e.g. \"demo\"")]
    NetworkName {
        /// The entry.
        at: String,
    },
    /// Two `[[network]]` entries with one name.
    #[error("{at}: a network named \"{name}\" is defined twice")]
    DuplicateNetwork {
        /// The entry.
        at: String,
        /// The name.
        name: String,
    },
    /// A subnet that is not a CIDR.
    #[error("{at}: subnet = \"{subnet}\" is not a CIDR; write e.g. \"10.89.0.0/24\"")]
    Subnet {
        /// The entry.
        at: String,
        /// The value as written.
        subnet: String,
        /// Why it does not parse.
        source: ipnet::AddrParseError,
    },
    /// A container name that is not a DNS name.
    #[error("{at}: name must be a DNS name (labels of 1-63 characters), e.g. \"db\"")]
    ContainerName {
        /// The entry.
        at: String,
    },
    /// Two containers with one name on one network.
    #[error("{at}: two containers named \"{name}\" on one network; give them distinct names and a shared alias")]
    DuplicateContainer {
        /// The entry.
        at: String,
        /// The name.
        name: String,
    },
    /// An alias that is not a DNS name.
    #[error("{at}: alias \"{alias}\" is not a DNS name")]
    Alias {
        /// The entry.
        at: String,
        /// The alias as written.
        alias: String,
    },
    /// An `ipv4` entry that is not an IPv4 address.
    #[error("{at}: ipv4 entry \"{value}\" is not an IPv4 address; write e.g. \"10.89.0.2\"")]
    Ipv4 {
        /// The entry.
        at: String,
        /// The value as written.
        value: String,
        /// Why it does not parse.
        source: std::net::AddrParseError,
    },
    /// An `ipv6` entry that is not an IPv6 address.
    #[error("{at}: ipv6 entry \"{value}\" is not an IPv6 address; write e.g. \"fd00::2\"")]
    Ipv6 {
        /// The entry.
        at: String,
        /// The value as written.
        value: String,
        /// Why it does not parse.
        source: std::net::AddrParseError,
    },
    /// A container without any address.
    #[error("{at}: give it at least one address in ipv4 or ipv6")]
    NoAddress {
        /// The entry.
        at: String,
    },
    /// An address outside the network's subnet.
    #[error("{at}: address {ip} is outside the network's subnet {subnet}")]
    OutsideSubnet {
        /// The entry.
        at: String,
        /// The address.
        ip: IpAddr,
        /// The network's subnet.
        subnet: ipnet::IpNet,
    },
    /// One address given to two containers of a network.
    #[error("{at}: address {ip} is already used by another container on this network")]
    DuplicateAddress {
        /// The entry.
        at: String,
        /// The address.
        ip: IpAddr,
    },
    /// A `dns` entry that is not `ADDRESS[:PORT]`.
    #[error("{at}: dns[{index}] = \"{value}\" is not ADDRESS[:PORT]; write e.g. \"10.89.0.53\" or \"127.0.0.1:5399\"")]
    Dns {
        /// The entry.
        at: String,
        /// Index in the list.
        index: usize,
        /// The value as written.
        value: String,
    },
}

/// The static tables, checked: the catalog to publish and the network names, in file order.
#[derive(Debug, Default, Clone)]
pub struct StaticTables {
    /// Networks and containers.
    pub catalog: Catalog,
    /// Network names, in file order.
    pub networks: Vec<String>,
}

/// Checks the `[[network]]` tables and builds their catalog; `listen` are dockns's fixed
/// listeners (container `dns` entries naming one are left out: forwarding there would loop).
pub fn build(
    sections: &[NetworkSection],
    listen: &[SocketAddr],
) -> Result<StaticTables, StaticError> {
    let mut t = StaticTables::default();
    for (ni, net) in sections.iter().enumerate() {
        let at = format!("[[network]] #{} (name = \"{}\")", ni + 1, net.name);
        let network = network(&at, net, &t.catalog)?;
        let subnet = network.subnets.first().copied();
        let mut seen = Seen::default();
        for (ci, c) in net.container.iter().enumerate() {
            let at = format!("{at}, container #{} (name = \"{}\")", ci + 1, c.name);
            let container = container(&at, &net.name, c, subnet, &mut seen, listen)?;
            t.catalog.containers.insert(
                format!("{}/{}", net.name, c.name).into(),
                std::sync::Arc::new(container),
            );
        }
        t.catalog.networks.insert(net.name.clone(), network);
        t.networks.push(net.name.clone());
    }
    Ok(t)
}

/// Names and addresses already used on one network.
#[derive(Default)]
struct Seen {
    names: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
}

/// One `[[network]]` entry without its containers.
fn network(at: &str, net: &NetworkSection, catalog: &Catalog) -> Result<Network, StaticError> {
    let at = || at.to_string();
    if net.name.is_empty() || net.name.contains('.') || normalize_name(&net.name).is_none() {
        return Err(StaticError::NetworkName { at: at() });
    }
    if catalog.networks.contains_key(&net.name) {
        return Err(StaticError::DuplicateNetwork {
            at: at(),
            name: net.name.clone(),
        });
    }
    let subnet = match &net.subnet {
        None => None,
        Some(sn) => Some(
            sn.parse::<ipnet::IpNet>()
                .map_err(|source| StaticError::Subnet {
                    at: at(),
                    subnet: sn.clone(),
                    source,
                })?,
        ),
    };
    Ok(Network {
        name: net.name.clone(),
        id: String::new(),
        internal: net.internal,
        listen_addrs: Vec::new(),
        subnets: subnet.into_iter().collect(),
    })
}

/// One `[[network.container]]` entry of network `network`.
fn container(
    at: &str,
    network: &str,
    c: &ContainerSection,
    subnet: Option<ipnet::IpNet>,
    seen: &mut Seen,
    listen: &[SocketAddr],
) -> Result<Container, StaticError> {
    let at_ = || at.to_string();
    if normalize_name(&c.name).is_none() {
        return Err(StaticError::ContainerName { at: at_() });
    }
    if !seen.names.insert(c.name.to_ascii_lowercase()) {
        return Err(StaticError::DuplicateContainer {
            at: at_(),
            name: c.name.clone(),
        });
    }
    if let Some(alias) = c.aliases.iter().find(|a| normalize_name(a).is_none()) {
        return Err(StaticError::Alias {
            at: at_(),
            alias: alias.clone(),
        });
    }
    let (ipv4, ipv6) = addresses(at, c, subnet, &mut seen.ips)?;
    Ok(Container {
        id: String::new(),
        name: c.name.clone(),
        hostname: None,
        health: c.health,
        extra_names: Vec::new(),
        dns: dns_servers(at, &c.dns, listen)?,
        endpoints: vec![Endpoint {
            network: network.to_string(),
            ipv4,
            ipv6,
            aliases: c.aliases.clone(),
            links: Vec::new(),
        }],
        anonymous: false,
    })
}

/// A container's addresses: parsed, at least one, inside the subnet (of the same family) and
/// not used by another container of the network.
fn addresses(
    at: &str,
    c: &ContainerSection,
    subnet: Option<ipnet::IpNet>,
    seen: &mut BTreeSet<IpAddr>,
) -> Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>), StaticError> {
    let at_ = || at.to_string();
    let ipv4 = c
        .ipv4
        .iter()
        .map(|a| {
            a.parse::<Ipv4Addr>().map_err(|source| StaticError::Ipv4 {
                at: at_(),
                value: a.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ipv6 = c
        .ipv6
        .iter()
        .map(|a| {
            a.parse::<Ipv6Addr>().map_err(|source| StaticError::Ipv6 {
                at: at_(),
                value: a.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ipv4.is_empty() && ipv6.is_empty() {
        return Err(StaticError::NoAddress { at: at_() });
    }
    let all = ipv4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(ipv6.iter().map(|a| IpAddr::V6(*a)));
    for ip in all {
        if let Some(sn) = subnet {
            let same_family = matches!(
                (sn, ip),
                (ipnet::IpNet::V4(_), IpAddr::V4(_)) | (ipnet::IpNet::V6(_), IpAddr::V6(_))
            );
            if same_family && !sn.contains(&ip) {
                return Err(StaticError::OutsideSubnet {
                    at: at_(),
                    ip,
                    subnet: sn,
                });
            }
        }
        if !seen.insert(ip) {
            return Err(StaticError::DuplicateAddress { at: at_(), ip });
        }
    }
    Ok((ipv4, ipv6))
}

/// A container's own DNS servers, in order, without dockns's own listeners.
fn dns_servers(
    at: &str,
    list: &[String],
    listen: &[SocketAddr],
) -> Result<Vec<SocketAddr>, StaticError> {
    let mut dns = Vec::new();
    for (index, d) in list.iter().enumerate() {
        let sa = parse_upstream(d).ok_or_else(|| StaticError::Dns {
            at: at.to_string(),
            index,
            value: d.clone(),
        })?;
        if !is_own(sa, listen) {
            dns.push(sa);
        }
    }
    Ok(dns)
}
