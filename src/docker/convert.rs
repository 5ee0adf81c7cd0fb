//! Conversion of Docker API objects into the model: which networks are served, which names a
//! container answers to on each, in which order its networks are searched, and its health.
//!
//! Everything here is a pure function of what the daemon returned (no I/O, no logging), so the
//! rules are unit-tested without a daemon. It must not decide *when* things change (that is
//! `watch`) nor bind anything (that is `listeners`).

use crate::model::{Container, Endpoint, Health, Link, Network};
use bollard::models::{
    ContainerInspectResponse, EndpointSettings, HealthStatusEnum, Network as DockerNetwork,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Label that adds names on every network of a container (`dockns.alias=a,b`).
pub const LABEL_ALIAS: &str = "dockns.alias";
/// Label that hides a container from dockns (`dockns.enable=false`).
pub const LABEL_ENABLE: &str = "dockns.enable";
/// Label Docker puts on swarm task containers.
pub const LABEL_SWARM_SERVICE: &str = "com.docker.swarm.service.name";

/// A Docker network as dockns keeps it: the model's [`Network`] plus what the watcher needs to
/// bind listeners and order a container's networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInfo {
    /// The model view of the network (listen addresses are filled in by the watcher).
    pub network: Network,
    /// Driver name (`bridge`, `overlay`, `macvlan`, ...).
    pub driver: String,
    /// Gateway addresses from the IPAM configuration.
    pub gateways: Vec<IpAddr>,
    /// Swarm-scoped network (services and tasks may live on it).
    pub swarm: bool,
}

/// Settings that change which networks are served.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeRules {
    /// Serve the default `bridge` network (Docker gives it no DNS).
    pub default_bridge: bool,
}

/// Why a network is not served, or `None` when it is.
pub fn unserved_reason(net: &DockerNetwork, rules: ServeRules) -> Option<&'static str> {
    let name = net.name.as_deref().unwrap_or("");
    let driver = net.driver.as_deref().unwrap_or("");
    if name.is_empty() || net.id.as_deref().unwrap_or("").is_empty() {
        return Some("no name or ID");
    }
    if driver == "host" || driver == "null" || name == "host" || name == "none" {
        return Some("host/none networks have no addresses of their own");
    }
    if name == "bridge" && driver == "bridge" && !rules.default_bridge {
        return Some("the default bridge is off unless [docker] default_bridge = true");
    }
    if net.ingress == Some(true) || name == "docker_gwbridge" {
        return Some("swarm plumbing network");
    }
    if net.config_only == Some(true) {
        return Some("config-only network");
    }
    None
}

/// Converts a listed or inspected network; `None` when it is not served.
pub fn network(net: &DockerNetwork, rules: ServeRules) -> Option<NetInfo> {
    if unserved_reason(net, rules).is_some() {
        return None;
    }
    let name = net.name.clone().unwrap_or_default();
    let mut subnets = Vec::new();
    let mut gateways = Vec::new();
    // Docker's default IPAM gives a bridge network without an explicit gateway the first
    // address of each subnet, and then does not list it in the IPAM configuration.
    let default_ipam = net
        .ipam
        .as_ref()
        .and_then(|i| i.driver.as_deref())
        .is_none_or(|d| d.is_empty() || d == "default");
    let implicit_gateway = default_ipam && net.driver.as_deref() == Some("bridge");
    for cfg in net
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .into_iter()
        .flatten()
    {
        let subnet: Option<ipnet::IpNet> = cfg.subnet.as_deref().and_then(|s| s.parse().ok());
        if let Some(sn) = subnet {
            subnets.push(sn);
        }
        // Gateways are written "10.0.0.1" (or, by some IPAM drivers, "10.0.0.1/24").
        let explicit = cfg
            .gateway
            .as_deref()
            .filter(|g| !g.is_empty())
            .and_then(|g| g.split('/').next())
            .and_then(|g| g.parse::<IpAddr>().ok());
        let implicit = subnet.filter(|_| implicit_gateway).and_then(first_host);
        if let Some(gw) = explicit.or(implicit) {
            if !gateways.contains(&gw) {
                gateways.push(gw);
            }
        }
    }
    Some(NetInfo {
        network: Network {
            name,
            id: net.id.clone().unwrap_or_default(),
            internal: net.internal.unwrap_or(false),
            listen_addrs: Vec::new(),
            subnets,
        },
        driver: net.driver.clone().unwrap_or_default(),
        gateways,
        swarm: net.scope.as_deref() == Some("swarm"),
    })
}

/// The first host address of a subnet (network address + 1), if the subnet has room for one.
fn first_host(net: ipnet::IpNet) -> Option<IpAddr> {
    match net {
        ipnet::IpNet::V4(n) if n.prefix_len() <= 30 => {
            Some(IpAddr::from((u32::from(n.network()) + 1).to_be_bytes()))
        }
        ipnet::IpNet::V6(n) if n.prefix_len() <= 126 => {
            Some(IpAddr::from((u128::from(n.network()) + 1).to_be_bytes()))
        }
        _ => None,
    }
}

/// The health the model uses for a Docker health status.
pub fn health(status: Option<&HealthStatusEnum>) -> Health {
    match status {
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    }
}

/// Parses "10.0.0.2" or "10.0.0.2/24".
pub fn parse_addr(s: &str) -> Option<IpAddr> {
    s.split('/').next().and_then(|a| a.parse().ok())
}

/// Splits a label value "a, b,c" into names.
fn label_names(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a `dockns.enable` label value hides the container.
fn disabled(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "false" | "0" | "no" | "off"
    )
}

/// Sort key of one endpoint in a container's network order, as libnetwork orders a sandbox's
/// endpoints (moby `Endpoint.Less`): higher `GwPriority` first, then non-internal networks
/// before internal ones, then endpoints that provide a gateway (dual-stack, then IPv6, then
/// IPv4) before those that do not, then network name ascending. Docker's resolver walks the
/// endpoints in this order, so the first network in it wins when two networks have a name.
fn order_key<'a>(
    net_name: &'a str,
    ep: &EndpointSettings,
    net: &NetInfo,
) -> (i64, bool, i32, &'a str) {
    let prio = ep.gw_priority.unwrap_or(0);
    let has = |s: &Option<String>| s.as_deref().is_some_and(|g| !g.is_empty());
    let join = i32::from(has(&ep.gateway)) + 2 * i32::from(has(&ep.ipv6_gateway));
    (-prio, net.network.internal, -join, net_name)
}

/// Converts an inspected container into the model, keeping only endpoints on served networks
/// (`networks` is keyed by network name). `None` when the container is not running, hidden by
/// `dockns.enable=false`, or has no endpoint on a served network.
pub fn container(
    info: &ContainerInspectResponse,
    networks: &HashMap<String, NetInfo>,
) -> Option<Container> {
    let state = info.state.as_ref()?;
    if state.running != Some(true) {
        return None;
    }
    let id = info.id.clone()?;
    let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
    if labels
        .and_then(|l| l.get(LABEL_ENABLE))
        .is_some_and(|v| disabled(v))
    {
        return None;
    }
    let name = info
        .name
        .as_deref()
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let hostname = info
        .config
        .as_ref()
        .and_then(|c| c.hostname.clone())
        .filter(|h| !h.is_empty());
    let short_id = id.get(..12).map(str::to_string);
    let extra_names = labels
        .and_then(|l| l.get(LABEL_ALIAS))
        .map(|v| label_names(v))
        .unwrap_or_default();
    let endpoints: Vec<Endpoint> = ordered_endpoints(info, networks)
        .into_iter()
        .filter_map(|(net, ep)| endpoint(net, ep, [short_id.as_ref(), hostname.as_ref()]))
        .collect();
    if endpoints.is_empty() {
        return None;
    }
    Some(Container {
        id,
        name,
        hostname,
        health: health(state.health.as_ref().and_then(|h| h.status.as_ref())),
        extra_names,
        endpoints,
        dns: own_dns_servers(info),
        // Decided by the watcher (`anonymous_in_config`): the API does not say.
        anonymous: false,
    })
}

/// A container's endpoints on served networks, in the order Docker's resolver walks them
/// (see [`order_key`]).
fn ordered_endpoints<'a>(
    info: &'a ContainerInspectResponse,
    networks: &'a HashMap<String, NetInfo>,
) -> Vec<(&'a str, &'a EndpointSettings)> {
    let mut eps: Vec<(&str, &EndpointSettings, &NetInfo)> = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|(net_name, ep)| {
            networks
                .get(net_name)
                .map(|net| (net_name.as_str(), ep, net))
        })
        .collect();
    eps.sort_by(|a, b| order_key(a.0, a.1, a.2).cmp(&order_key(b.0, b.1, b.2)));
    eps.into_iter().map(|(n, ep, _)| (n, ep)).collect()
}

/// One endpoint in the model; `None` when it has no address. `own` are the container's short
/// ID and hostname, answered on every network.
fn endpoint(net_name: &str, ep: &EndpointSettings, own: [Option<&String>; 2]) -> Option<Endpoint> {
    let ipv4: Vec<Ipv4Addr> = ep
        .ip_address
        .as_deref()
        .and_then(|a| a.parse().ok())
        .into_iter()
        .collect();
    let ipv6: Vec<Ipv6Addr> = ep
        .global_ipv6_address
        .as_deref()
        .and_then(|a| a.parse().ok())
        .into_iter()
        .collect();
    if ipv4.is_empty() && ipv6.is_empty() {
        return None;
    }
    // DNSNames (API 1.44+) is the daemon's own list; 20.10 keeps aliases, the short ID and
    // the hostname in Aliases. Take both, plus the short ID and hostname ourselves (the
    // default bridge, when served, gets neither list): names are deduplicated later.
    let mut aliases: Vec<String> = Vec::new();
    for n in ep
        .dns_names
        .iter()
        .flatten()
        .chain(ep.aliases.iter().flatten())
        .chain(own.into_iter().flatten())
    {
        if !n.is_empty() && !aliases.iter().any(|a| a.eq_ignore_ascii_case(n)) {
            aliases.push(n.clone());
        }
    }
    Some(Endpoint {
        network: net_name.to_string(),
        ipv4,
        ipv6,
        aliases,
        links: endpoint_links(ep),
    })
}

/// The container's own DNS servers (`HostConfig.Dns`: `docker run --dns`, compose `dns:`), in
/// its order, on port 53, as Docker's resolver uses them for this container's questions:
/// entries that are not addresses are skipped, and Docker's own 127.0.0.11 is dropped (Docker
/// never forwards to itself). dockns's own listening addresses are removed later, by the
/// watcher, which knows them; an empty list means the default servers.
pub fn own_dns_servers(info: &ContainerInspectResponse) -> Vec<std::net::SocketAddr> {
    info.host_config
        .as_ref()
        .and_then(|h| h.dns.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|s| parse_addr(s.trim()))
        .filter(|ip| *ip != crate::model::DOCKER_RESOLVER)
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .collect()
}

/// The links of an endpoint (`EndpointSettings.Links`, `target:alias` each), as the daemon
/// stores them for `docker run --network net --link`, compose `links:` and
/// `docker network connect --link`. Unparsable entries are skipped.
pub fn endpoint_links(ep: &EndpointSettings) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    for link in ep.links.iter().flatten().filter_map(|l| Link::parse(l)) {
        if !out.contains(&link) {
            out.push(link);
        }
    }
    out
}

/// Whether Docker created a container as anonymous (no `--name`), from the container's
/// `config.v2.json` in the daemon's state directory (`<DockerRootDir>/containers/<id>/`):
/// `NetworkSettings.IsAnonymousEndpoint`, which daemons before 25 (API < 1.44) record but do
/// not return through the Engine API. `None` when the document does not say.
pub fn anonymous_in_config(config_v2: &[u8]) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_slice(config_v2).ok()?;
    v.get("NetworkSettings")?
        .get("IsAnonymousEndpoint")?
        .as_bool()
}

/// Whether an inspected container is a swarm task (its start/stop changes `tasks.<service>`).
pub fn is_swarm_task(info: &ContainerInspectResponse) -> bool {
    info.config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .is_some_and(|l| l.contains_key(LABEL_SWARM_SERVICE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> HashMap<String, NetInfo> {
        let mk = |name: &str, internal: bool| -> DockerNetwork {
            serde_json::from_value(serde_json::json!({
                "Name": name, "Id": format!("id-{name}"), "Driver": "bridge", "Scope": "local",
                "Internal": internal,
                "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]}
            }))
            .unwrap()
        };
        ["zeta", "alpha", "priv"]
            .iter()
            .map(|n| {
                let ni = network(&mk(n, *n == "priv"), ServeRules::default()).unwrap();
                (n.to_string(), ni)
            })
            .collect()
    }

    fn inspect(v: serde_json::Value) -> ContainerInspectResponse {
        serde_json::from_value(v).unwrap()
    }

    fn base(networks: serde_json::Value, labels: serde_json::Value) -> ContainerInspectResponse {
        inspect(serde_json::json!({
            "Id": "0123456789abcdef0123456789abcdef",
            "Name": "/web",
            "State": {"Running": true, "Health": {"Status": "unhealthy"}},
            "Config": {"Hostname": "web.example", "Labels": labels},
            "NetworkSettings": {"Networks": networks}
        }))
    }

    #[test]
    fn served_networks() {
        let n = |name: &str, driver: &str| -> DockerNetwork {
            serde_json::from_value(serde_json::json!({"Name": name, "Id": "x", "Driver": driver}))
                .unwrap()
        };
        let r = ServeRules::default();
        assert!(network(&n("host", "host"), r).is_none());
        assert!(network(&n("none", "null"), r).is_none());
        assert!(network(&n("bridge", "bridge"), r).is_none());
        assert!(network(
            &n("bridge", "bridge"),
            ServeRules {
                default_bridge: true
            }
        )
        .is_some());
        assert!(network(&n("docker_gwbridge", "bridge"), r).is_none());
        let ni = network(&n("app", "bridge"), r).unwrap();
        assert_eq!(ni.network.name, "app");
        assert!(ni.gateways.is_empty());
    }

    #[test]
    fn implicit_gateways_of_user_subnets() {
        let net: DockerNetwork = serde_json::from_value(serde_json::json!({
            "Name": "v6", "Id": "x", "Driver": "bridge",
            "IPAM": {"Driver": "default", "Config": [
                {"Subnet": "10.231.0.0/24"},
                {"Subnet": "fd5a:e1:7::/64"},
                {"Subnet": "10.232.0.0/24", "Gateway": "10.232.0.254"}
            ]}
        }))
        .unwrap();
        let ni = network(&net, ServeRules::default()).unwrap();
        let want: Vec<IpAddr> = ["10.231.0.1", "fd5a:e1:7::1", "10.232.0.254"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ni.gateways, want);
        // Another IPAM driver or network driver: no guessing.
        let mut other = net.clone();
        other.driver = Some("macvlan".into());
        let ni = network(&other, ServeRules::default()).unwrap();
        assert_eq!(ni.gateways, vec![want[2]]);
    }

    #[test]
    fn names_order_and_labels() {
        let c = container(
            &base(
                serde_json::json!({
                    "zeta": {"IPAddress": "10.9.0.5", "Gateway": "10.9.0.1", "Aliases": ["api", "0123456789ab"]},
                    "priv": {"IPAddress": "10.8.0.5", "Aliases": null},
                    "alpha": {"IPAddress": "10.7.0.5", "Gateway": "10.7.0.1", "DNSNames": ["web", "api2"]},
                    "unserved": {"IPAddress": "10.6.0.5"}
                }),
                serde_json::json!({"dockns.alias": "x, y,,"}),
            ),
            &nets(),
        )
        .unwrap();
        let order: Vec<&str> = c.endpoints.iter().map(|e| e.network.as_str()).collect();
        // Non-internal networks with a gateway first, by name; the internal one last.
        assert_eq!(order, vec!["alpha", "zeta", "priv"]);
        assert_eq!(c.name, "web");
        assert_eq!(c.health, Health::Unhealthy);
        assert_eq!(c.extra_names, vec!["x", "y"]);
        assert_eq!(
            c.endpoints[1].aliases,
            vec!["api", "0123456789ab", "web.example"]
        );
        assert_eq!(
            c.endpoints[0].aliases,
            vec!["web", "api2", "0123456789ab", "web.example"]
        );
        assert_eq!(c.endpoints[2].ipv4, vec![Ipv4Addr::new(10, 8, 0, 5)]);
    }

    #[test]
    fn priority_beats_name() {
        let c = container(
            &base(
                serde_json::json!({
                    "zeta": {"IPAddress": "10.9.0.5", "Gateway": "10.9.0.1", "GwPriority": 10},
                    "alpha": {"IPAddress": "10.7.0.5", "Gateway": "10.7.0.1"}
                }),
                serde_json::json!({}),
            ),
            &nets(),
        )
        .unwrap();
        assert_eq!(c.endpoints[0].network, "zeta");
    }

    #[test]
    fn hidden_stopped_and_unattached() {
        let nets = nets();
        let eps = serde_json::json!({"alpha": {"IPAddress": "10.7.0.5"}});
        assert!(container(
            &base(eps.clone(), serde_json::json!({"dockns.enable": "false"})),
            &nets
        )
        .is_none());
        assert!(container(
            &base(eps.clone(), serde_json::json!({"dockns.enable": "true"})),
            &nets
        )
        .is_some());
        let mut stopped = base(eps, serde_json::json!({}));
        if let Some(s) = stopped.state.as_mut() {
            s.running = Some(false);
        }
        assert!(container(&stopped, &nets).is_none());
        assert!(container(
            &base(
                serde_json::json!({"unserved": {"IPAddress": "10.6.0.5"}}),
                serde_json::json!({})
            ),
            &nets
        )
        .is_none());
    }

    /// HostConfig.Dns as Docker's resolver uses it: in order, port 53, its own 127.0.0.11 out.
    #[test]
    fn own_dns_servers_from_host_config() {
        let mut info = base(
            serde_json::json!({"alpha": {"IPAddress": "10.7.0.5"}}),
            serde_json::json!({}),
        );
        assert!(own_dns_servers(&info).is_empty());
        info.host_config = Some(
            serde_json::from_value(serde_json::json!({
                "Dns": ["10.7.0.53", "127.0.0.11", "fd00::53", "not-an-address", "192.0.2.1"]
            }))
            .unwrap(),
        );
        let want: Vec<std::net::SocketAddr> = ["10.7.0.53:53", "[fd00::53]:53", "192.0.2.1:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(own_dns_servers(&info), want);
        assert_eq!(container(&info, &nets()).unwrap().dns, want);
    }

    #[test]
    fn endpoint_links_and_the_anonymous_flag() {
        let c = container(
            &base(
                serde_json::json!({
                    "alpha": {"IPAddress": "10.7.0.5", "Links": ["db:database", "cache", "db:database", ""]},
                    "zeta": {"IPAddress": "10.9.0.5", "Links": null}
                }),
                serde_json::json!({}),
            ),
            &nets(),
        )
        .unwrap();
        let alpha = c.endpoints.iter().find(|e| e.network == "alpha").unwrap();
        let names: Vec<(&str, &str)> = alpha
            .links
            .iter()
            .map(|l| (l.alias.as_str(), l.target.as_str()))
            .collect();
        assert_eq!(names, vec![("database", "db"), ("cache", "cache")]);
        assert!(c
            .endpoints
            .iter()
            .find(|e| e.network == "zeta")
            .unwrap()
            .links
            .is_empty());
        assert!(!c.anonymous);
        // config.v2.json as Docker 20.10 writes it.
        let doc = br#"{"ID":"4c99","Name":"/interesting_murdock","NetworkSettings":{"Bridge":"","IsAnonymousEndpoint":true,"HasSwarmEndpoint":false}}"#;
        assert_eq!(anonymous_in_config(doc), Some(true));
        assert_eq!(
            anonymous_in_config(br#"{"NetworkSettings":{"IsAnonymousEndpoint":false}}"#),
            Some(false)
        );
        assert_eq!(anonymous_in_config(br#"{"NetworkSettings":{}}"#), None);
        assert_eq!(anonymous_in_config(b"not json"), None);
    }

    #[test]
    fn health_mapping() {
        assert_eq!(health(None), Health::None);
        assert_eq!(health(Some(&HealthStatusEnum::HEALTHY)), Health::Healthy);
        assert_eq!(health(Some(&HealthStatusEnum::STARTING)), Health::Starting);
        assert_eq!(health(Some(&HealthStatusEnum::NONE)), Health::None);
        assert_eq!(parse_addr("10.0.0.2/24"), Some("10.0.0.2".parse().unwrap()));
    }
}
