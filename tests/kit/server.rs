//! dockns inside the test process, on its own runtime, listening on 127.0.0.1 port 0 (dockns
//! binds the UDP/TCP pair itself and reports it), with the static tables the tests serve.
//!
//! It must not configure a non-loopback upstream or a fixed port.

use super::dns::WAIT;
use dockns::config::{Config, Overrides};
use dockns::server::Server;
use std::net::SocketAddr;

/// The static tables the reliability tests and the fuzz targets serve (`networks.toml`).
pub const NETWORKS: &str = include_str!("networks.toml");

/// A config text: listen on 127.0.0.1:0, one UDP worker, the given keys, [`NETWORKS`] and
/// `extra` (more TOML tables).
pub fn config_text(
    server_keys: &str,
    upstreams: &[SocketAddr],
    upstream_keys: &str,
    extra: &str,
) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n{server_keys}\n\n[upstream]\nservers = [{}]\n{upstream_keys}\n{NETWORKS}\n{extra}",
        ups.join(", ")
    )
}

/// A dockns running in this process, with its own runtime.
pub struct TestServer {
    /// The server.
    pub server: Server,
    /// Its UDP/TCP address.
    pub addr: SocketAddr,
    /// The runtime it runs on (kept alive with it).
    pub rt: tokio::runtime::Runtime,
}

impl TestServer {
    /// Starts a server from `[server]` extra keys, an upstream list, and [`NETWORKS`].
    pub fn start(server_keys: &str, upstreams: &[SocketAddr], upstream_keys: &str) -> TestServer {
        let cfg = Config::from_toml(
            &config_text(server_keys, upstreams, upstream_keys, ""),
            &Overrides::default(),
        )
        .expect("test config is valid");
        TestServer::from_config(cfg)
    }

    /// Starts a server from a validated config.
    pub fn from_config(cfg: Config) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = {
            let _g = rt.enter();
            Server::start(cfg).expect("server starts")
        };
        let addr = server.bound()[0];
        TestServer { server, addr, rt }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.rt
            .block_on(async { tokio::time::timeout(WAIT, self.server.shutdown()).await })
            .ok();
    }
}

/// Parses a TOML config with the listener forced to 127.0.0.1:0.
pub fn config(toml: &str) -> Config {
    Config::from_toml(
        toml,
        &Overrides {
            listen: vec!["127.0.0.1:0".into()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("test config invalid: {e}"))
}

/// The demo network used by most tests (like config/demo.toml, plus a big replica set).
pub fn demo_toml(upstreams: &[SocketAddr], extra_server: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    let mut s = format!(
        r#"
[server]
ttl = 5
domain = "docker"
{extra_server}

[upstream]
servers = [{}]
timeout_ms = 300
budget_ms = 900

[[network]]
name = "demo"
subnet = "10.89.0.0/16"

[[network.container]]
name = "db"
ipv4 = ["10.89.0.2"]
ipv6 = ["fd00:89::2"]
aliases = ["postgres"]

[[network.container]]
name = "web"
ipv4 = ["10.89.0.3"]
aliases = ["www"]
"#,
        ups.join(", ")
    );
    for i in 1..=3 {
        s.push_str(&format!(
            "\n[[network.container]]\nname = \"api-{i}\"\nipv4 = [\"10.89.0.1{i}\"]\naliases = [\"api\"]\n"
        ));
    }
    for i in 0..40 {
        s.push_str(&format!(
            "\n[[network.container]]\nname = \"many-{i}\"\nipv4 = [\"10.89.1.{}\"]\naliases = [\"many\"]\n",
            i + 1
        ));
    }
    s.push_str(
        "\n[[network]]\nname = \"backoffice\"\ninternal = true\n\n[[network.container]]\nname = \"vault\"\nipv4 = [\"10.90.0.2\"]\n",
    );
    s
}
