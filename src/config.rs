//! Configuration: the TOML file plus command-line overrides, turned into a validated [`Config`].
//!
//! Every error names the file, the key and what to write instead; nothing here touches the
//! network or Docker. The file format is documented key by key in the README ("Configuration
//! reference"); `dockns check-config FILE` prints the effective result of this module.

use crate::addr::{is_own, parse_upstream};
use crate::dns::guard::{GuardSettings, RefuseMode};
use crate::docker::{DockerConfig, WatchOptions};
use crate::model::{BuildSettings, Catalog};
use crate::statics::{NetworkSection, StaticError};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, with a message meant for the person who wrote the file: one line
/// naming the file or key, the cause and what to write instead. Causes from other crates (I/O,
/// TOML) are kept as [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {source}; check the path (try config/demo.toml)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or has an unknown key or a value of the wrong type.
    #[error("{}{line}: {message}; see the configuration reference in README.md", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// " (line N)", when known.
        line: String,
        /// The parser's message.
        message: String,
        /// The parser's error.
        source: Box<toml::de::Error>,
    },
    /// TOML text (not a file) that does not parse.
    #[error("{message}")]
    Parse {
        /// The parser's message.
        message: String,
        /// The parser's error.
        source: Box<toml::de::Error>,
    },
    /// A value that is malformed, out of range or inconsistent with another key; the message
    /// names the key and the fix.
    #[error("{0}")]
    Invalid(String),
    /// A `[[network]]` table that is wrong.
    #[error(transparent)]
    Static(#[from] StaticError),
    /// A problem found in the file at `path`.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The problem.
        source: Box<ConfigError>,
    },
    /// The file could not be read again to print its effective configuration.
    #[error("cannot read {}: {source}", path.display())]
    Reread {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file no longer parses when read again to print its effective configuration.
    #[error("{}: {source}", path.display())]
    Reparse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: Box<toml::de::Error>,
    },
    /// The effective configuration cannot be written as TOML.
    #[error("cannot print {}: {source}", path.display())]
    Print {
        /// The file.
        path: PathBuf,
        /// The writer's error.
        source: toml::ser::Error,
    },
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(msg.into()))
}

/// The file, as written.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`
    #[serde(default)]
    pub server: ServerSection,
    /// `[upstream]`
    #[serde(default)]
    pub upstream: UpstreamSection,
    /// `[docker]`: present means Docker is watched.
    pub docker: Option<DockerSection>,
    /// `[admin]`
    pub admin: Option<AdminSection>,
    /// `[[network]]` static tables.
    #[serde(default)]
    pub network: Vec<NetworkSection>,
}

/// `[server]`
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Fixed listeners ("ADDR:PORT"), UDP and TCP on each.
    pub listen: Option<Vec<String>>,
    /// Networks whose names a non-container client sees (default: all static networks).
    pub host_view: Option<Vec<String>>,
    /// TTL of local answers, seconds.
    pub ttl: u32,
    /// Optional zone answered authoritatively (`name.docker`, `name.network.docker`).
    pub domain: Option<String>,
    /// UDP worker threads per listener (default: number of CPUs).
    pub workers: Option<usize>,
    /// Bind on every served Docker network's gateway address.
    pub gateways: bool,
    /// Port for gateway and sidecar listeners.
    pub gateway_port: u16,
    /// Bind this container's own address on each network it is attached to.
    pub sidecar: bool,
    /// Close idle TCP connections after this many milliseconds.
    pub tcp_idle_timeout_ms: u64,
    /// Most concurrent TCP connections.
    pub max_tcp_connections: usize,
    /// Most forwarded questions in flight at once; beyond, clients get REFUSED.
    pub max_inflight: usize,
    /// Extra client networks answered besides loopback and the served networks ("CIDR").
    pub allow: Vec<String>,
    /// Answer loopback clients (127.0.0.0/8, ::1).
    pub allow_loopback: bool,
    /// What clients that may not use the server get: "refused" or "drop".
    pub refuse_mode: RefuseMode,
    /// Forwarded questions per second per client (0 = no limit).
    pub forward_rate: u32,
    /// Forwarded questions a client may burst before the rate applies.
    pub forward_burst: u32,
    /// Rate-limit loopback clients too.
    pub rate_limit_loopback: bool,
    /// When started as root: after binding, switch to this user (and its group).
    pub user: Option<String>,
    /// Addresses of the zone's name servers `ns1.<domain>` … (default: the listener addresses).
    pub ns_addresses: Vec<String>,
    /// Forward names that are not local; false: authoritative only (REFUSED, RA clear).
    pub recursion: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: None,
            host_view: None,
            ttl: 5,
            domain: None,
            workers: None,
            gateways: false,
            gateway_port: 53,
            sidecar: false,
            tcp_idle_timeout_ms: 10_000,
            max_tcp_connections: 512,
            max_inflight: 1024,
            allow: Vec::new(),
            allow_loopback: GuardSettings::default().allow_loopback,
            refuse_mode: RefuseMode::default(),
            forward_rate: GuardSettings::default().forward_rate,
            forward_burst: GuardSettings::default().forward_burst,
            rate_limit_loopback: false,
            user: None,
            ns_addresses: Vec::new(),
            recursion: true,
        }
    }
}

/// `[upstream]`
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    /// `ADDR[:PORT]` list; default: the nameservers in /etc/resolv.conf.
    pub servers: Option<Vec<String>>,
    /// Per-try timeout in milliseconds.
    pub timeout_ms: u64,
    /// Total time one client question may spend upstream before it gets SERVFAIL.
    pub budget_ms: u64,
    /// Forwarded responses kept in the cache at most (0 disables the cache).
    pub cache_size: usize,
    /// Randomise the letter case of upstream query names (0x20, as unbound's
    /// `use-caps-for-id`) and accept only replies that echo it exactly.
    pub randomize_case: bool,
    /// Bytes the forward cache may hold at most (0 disables the cache).
    pub cache_bytes: usize,
    /// Seconds past its TTL a cached answer may still be served when every upstream fails
    /// (RFC 8767; 0 disables serve-stale).
    pub serve_stale_secs: u64,
}

/// Default `[upstream] cache_bytes`: 32 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
/// Default `[upstream] serve_stale_secs`: one day (RFC 8767 suggests 1 to 3 days).
pub const DEFAULT_SERVE_STALE_SECS: u64 = 86_400;

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            servers: None,
            timeout_ms: 1500,
            budget_ms: 4000,
            cache_size: 10_000,
            randomize_case: false,
            cache_bytes: DEFAULT_CACHE_BYTES,
            serve_stale_secs: DEFAULT_SERVE_STALE_SECS,
        }
    }
}

/// `[docker]`
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSection {
    /// `unix:///var/run/docker.sock` (default, or `DOCKER_HOST`), or `tcp://host:port`.
    pub endpoint: Option<String>,
    /// Serve the default `bridge` network too.
    pub default_bridge: bool,
    /// Leave unhealthy replicas out while a healthy one shares the name.
    pub health_aware: bool,
    /// Seconds between consistency sweeps against a fresh listing (0 = never).
    pub sweep_interval_s: u64,
}

impl Default for DockerSection {
    fn default() -> Self {
        DockerSection {
            endpoint: None,
            default_bridge: false,
            health_aware: true,
            sweep_interval_s: 300,
        }
    }
}

/// `[admin]`
#[derive(Debug, Deserialize, Serialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// HTTP listen address for /metrics, /healthz, /readyz, /v1/records (default
    /// 127.0.0.1:9153).
    pub listen: Option<String>,
    /// Client networks that may use the admin API, scoped to what they could resolve
    /// (default: loopback).
    pub allow: Option<Vec<String>>,
    /// Client networks that see every network (default: loopback).
    pub full_access: Option<Vec<String>>,
    /// File holding a bearer token that also admits a client (scoped).
    pub token_file: Option<PathBuf>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line overrides for the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen` (replaces `[server] listen`).
    pub listen: Vec<String>,
    /// `--upstream` (replaces `[upstream] servers`).
    pub upstream: Vec<String>,
    /// `--docker URI` (enables Docker).
    pub docker: Option<String>,
}

/// Where the upstream list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum UpstreamSource {
    /// `[upstream] servers` or `--upstream`.
    Config,
    /// /etc/resolv.conf.
    ResolvConf,
}

/// The validated, effective configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// Fixed listeners.
    pub listen: Vec<SocketAddr>,
    /// UDP worker threads per listener.
    pub workers: usize,
    /// Snapshot settings.
    #[serde(skip)]
    pub build: BuildSettings,
    /// TTL of local answers.
    pub ttl: u32,
    /// Zone name, if any.
    pub domain: Option<String>,
    /// Networks a non-container client sees (None = all).
    pub host_view: Option<Vec<String>>,
    /// Gateway listeners.
    pub gateways: bool,
    /// Port for gateway/sidecar listeners.
    pub gateway_port: u16,
    /// Sidecar listeners.
    pub sidecar: bool,
    /// TCP idle timeout.
    pub tcp_idle_timeout: Duration,
    /// TCP connection limit.
    pub max_tcp_connections: usize,
    /// Forwarded questions in flight.
    pub max_inflight: usize,
    /// Access control and forward rate limits.
    pub guard: GuardSettings,
    /// User to switch to after binding, when started as root.
    pub user: Option<String>,
    /// Upstream servers, own listeners removed.
    pub upstreams: Vec<SocketAddr>,
    /// Where they came from.
    pub upstream_source: UpstreamSource,
    /// Per-try timeout.
    pub upstream_timeout: Duration,
    /// Total upstream budget per question.
    pub upstream_budget: Duration,
    /// Forward cache entries (0 = no cache).
    pub cache_size: usize,
    /// 0x20 case randomisation of upstream query names.
    pub randomize_case: bool,
    /// Forward cache bytes (0 = no cache).
    pub cache_bytes: usize,
    /// How long past its TTL an answer may be served when every upstream fails.
    pub serve_stale: Duration,
    /// Docker, when watched.
    pub docker: Option<DockerConfig>,
    /// Admin HTTP listener.
    pub admin: Option<SocketAddr>,
    /// Who may use the admin API, and who sees every network.
    pub admin_access: crate::admin::AdminAccess,
    /// Static tables.
    #[serde(skip)]
    pub static_catalog: Catalog,
    /// Number of static networks and containers (for the printout).
    pub static_networks: Vec<String>,
}

impl Config {
    /// The keys that differ between `self` and `new` but are read at start only (a reload
    /// keeps the running values): what a SIGHUP warns about.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let docker_rest = |c: &Config| {
            c.docker.as_ref().map(|d| DockerConfig {
                health_aware: true,
                ..d.clone()
            })
        };
        [
            ("[server] workers", self.workers != new.workers),
            ("[server] gateways", self.gateways != new.gateways),
            (
                "[server] gateway_port",
                self.gateway_port != new.gateway_port,
            ),
            ("[server] sidecar", self.sidecar != new.sidecar),
            (
                "[server] tcp_idle_timeout_ms",
                self.tcp_idle_timeout != new.tcp_idle_timeout,
            ),
            (
                "[server] max_tcp_connections",
                self.max_tcp_connections != new.max_tcp_connections,
            ),
            (
                "[server] max_inflight",
                self.max_inflight != new.max_inflight,
            ),
            ("[server] user", self.user != new.user),
            ("[upstream] servers", self.upstreams != new.upstreams),
            (
                "[upstream] timeout_ms",
                self.upstream_timeout != new.upstream_timeout,
            ),
            (
                "[upstream] budget_ms",
                self.upstream_budget != new.upstream_budget,
            ),
            ("[upstream] cache_size", self.cache_size != new.cache_size),
            (
                "[upstream] randomize_case",
                self.randomize_case != new.randomize_case,
            ),
            (
                "[upstream] cache_bytes",
                self.cache_bytes != new.cache_bytes,
            ),
            (
                "[upstream] serve_stale_secs",
                self.serve_stale != new.serve_stale,
            ),
            ("[docker]", docker_rest(self) != docker_rest(new)),
            ("[admin] listen", self.admin != new.admin),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

/// Parses "ADDR:PORT" for listeners.
fn parse_listen(s: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    s.parse::<SocketAddr>().or_else(|_| {
        err(format!(
            "{key} = \"{s}\" is not an ADDRESS:PORT; write e.g. \"127.0.0.1:5353\" or \"[::1]:5353\""
        ))
    })
}

/// The nameservers listed in a resolv.conf text, in order; a line that does not parse is
/// skipped, as glibc's resolver skips it. (Hand-written on purpose: the `resolv-conf` crate,
/// which hickory-resolver uses, rejects the whole file for one bad `nameserver` line, and it is
/// not otherwise in our dependency tree.)
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("nameserver"))
                .then(|| it.next())
                .flatten()
                .and_then(parse_upstream)
        })
        .collect()
}

impl Config {
    /// Reads and validates a file, applying overrides.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                message: e.message().to_string(),
                source: Box::new(e),
            }
        })?;
        let mut cfg = Config::from_file(file, overrides).map_err(|e| ConfigError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The effective configuration of the file at `path`, in the file's own keys and units, as
    /// TOML that [`Config::load`] accepts back (what `check-config` prints): every key with the
    /// value in force, defaults included; keys whose default is derived at start are filled in
    /// (`listen`, `workers`, `[upstream] servers` from /etc/resolv.conf, `[admin] listen`, `allow`
    /// and `full_access`). The bearer token's text is never printed, only `token_file`.
    pub fn effective_toml(path: &Path) -> Result<String, ConfigError> {
        let cfg = Config::load(path, &Overrides::default())?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Reread {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file: FileConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Reparse {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        let strings = |v: &[SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        file.server.listen = Some(strings(&cfg.listen));
        file.server.workers = Some(cfg.workers);
        file.upstream.servers = Some(strings(&cfg.upstreams));
        if let (Some(admin), Some(addr)) = (file.admin.as_mut(), cfg.admin) {
            let nets = |v: &[ipnet::IpNet]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
            admin.listen = Some(addr.to_string());
            admin.allow = Some(nets(&cfg.admin_access.allow));
            admin.full_access = Some(nets(&cfg.admin_access.full_access));
        }
        toml::to_string_pretty(&file).map_err(|source| ConfigError::Print {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The configuration of a bare `dockns serve` with no file: Docker at the default endpoint,
    /// gateway listeners, upstreams from /etc/resolv.conf.
    pub fn docker_default(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = FileConfig {
            server: ServerSection {
                gateways: true,
                ..Default::default()
            },
            docker: Some(DockerSection::default()),
            ..Default::default()
        };
        Config::from_file(file, overrides)
    }

    /// Validates a parsed file: each section in turn, the static tables through
    /// [`statics::build`](crate::statics::build).
    pub fn from_file(file: FileConfig, ov: &Overrides) -> Result<Config, ConfigError> {
        let s = &file.server;
        let docker = docker_settings(file.docker.as_ref(), ov)?;
        let listen = listeners(s, ov, docker.is_some())?;
        let workers = server_limits(s)?;
        let guard = guard_settings(s)?;
        let domain = domain(s)?;
        let statics = crate::statics::build(&file.network, &listen)?;
        check_host_view(s, docker.is_some(), &statics)?;
        let (upstreams, upstream_source) = upstreams(&file.upstream, ov, &listen)?;
        check_upstream(&file.upstream)?;
        let (admin, admin_access) = admin_settings(file.admin.as_ref())?;
        let ns_addresses = ns_addresses(s, domain.is_some())?;
        let build = BuildSettings {
            ttl: s.ttl,
            domain: domain.clone(),
            host_view: s.host_view.clone(),
            host_sees_all_qualified: docker.is_some(),
            health_aware: docker.as_ref().is_none_or(|d| d.health_aware),
            ns_addresses,
            listen_addresses: listen.iter().map(|l| l.ip()).collect(),
            recursion: s.recursion,
            default_upstreams: upstreams.clone(),
        };
        let u = &file.upstream;
        Ok(Config {
            path: None,
            listen,
            workers,
            build,
            ttl: s.ttl,
            domain,
            host_view: s.host_view.clone(),
            gateways: s.gateways,
            gateway_port: s.gateway_port,
            sidecar: s.sidecar,
            tcp_idle_timeout: Duration::from_millis(s.tcp_idle_timeout_ms),
            max_tcp_connections: s.max_tcp_connections,
            max_inflight: s.max_inflight,
            guard,
            user: s.user.clone(),
            upstreams,
            upstream_source,
            upstream_timeout: Duration::from_millis(u.timeout_ms),
            upstream_budget: Duration::from_millis(u.budget_ms),
            cache_size: u.cache_size,
            randomize_case: u.randomize_case,
            cache_bytes: u.cache_bytes,
            serve_stale: Duration::from_secs(u.serve_stale_secs),
            docker,
            admin,
            admin_access,
            static_catalog: statics.catalog,
            static_networks: statics.networks,
        })
    }

    /// The Docker watcher's options, or `None` when Docker is not watched.
    pub fn watch_options(&self) -> Option<WatchOptions> {
        self.docker.as_ref().map(|d| WatchOptions {
            docker: d.clone(),
            gateways: self.gateways,
            sidecar: self.sidecar,
            port: self.gateway_port,
            own: self.listen.clone(),
        })
    }

    /// Problems worth a warning that are not errors (printed by `check-config`, logged by
    /// `serve`).
    pub fn warnings(&self) -> Vec<String> {
        self.admin
            .and_then(|listen| self.admin_access.exposure_warning(listen))
            .into_iter()
            .collect()
    }

    /// Parses a config from TOML text (tests and tools).
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            message: e.message().to_string(),
            source: Box::new(e),
        })?;
        Config::from_file(file, overrides)
    }
}

/// `[docker]` (or `--docker URI`, which enables it): the endpoint checked.
fn docker_settings(
    section: Option<&DockerSection>,
    ov: &Overrides,
) -> Result<Option<DockerConfig>, ConfigError> {
    let d = match (section, &ov.docker) {
        (_, Some(uri)) => DockerSection {
            endpoint: Some(uri.clone()),
            ..section.cloned().unwrap_or_default()
        },
        (Some(d), None) => d.clone(),
        (None, None) => return Ok(None),
    };
    if let Some(ep) = &d.endpoint {
        if !(ep.starts_with("unix://")
            || ep.starts_with("tcp://")
            || ep.starts_with("http://")
            || ep.starts_with('/'))
        {
            return err(format!(
                "[docker] endpoint = \"{ep}\" is not a Docker endpoint; write \"unix:///var/run/docker.sock\" or \"tcp://HOST:2375\""
            ));
        }
    }
    Ok(Some(DockerConfig {
        endpoint: d.endpoint.clone(),
        default_bridge: d.default_bridge,
        health_aware: d.health_aware,
        sweep_interval: (d.sweep_interval_s > 0).then(|| Duration::from_secs(d.sweep_interval_s)),
    }))
}

/// The fixed listeners (`--listen`, else `[server] listen`, else 127.0.0.1:53 unless gateway or
/// sidecar listeners replace it), and the check that there is something to listen on.
fn listeners(
    s: &ServerSection,
    ov: &Overrides,
    docker: bool,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let listen_src: Vec<String> = if !ov.listen.is_empty() {
        ov.listen.clone()
    } else if let Some(l) = &s.listen {
        l.clone()
    } else if s.gateways || s.sidecar {
        Vec::new()
    } else {
        vec!["127.0.0.1:53".to_string()]
    };
    let mut listen = Vec::new();
    for (i, l) in listen_src.iter().enumerate() {
        let sa = parse_listen(l, &format!("[server] listen[{i}]"))?;
        if sa.port() != 0 && listen.contains(&sa) {
            return err(format!(
                "[server] listen lists {sa} twice; remove the duplicate"
            ));
        }
        listen.push(sa);
    }
    if listen.is_empty() && !s.gateways && !s.sidecar {
        return err(
            "nothing to listen on: set [server] listen = [\"127.0.0.1:53\"], or gateways = true / sidecar = true with [docker]",
        );
    }
    if (s.gateways || s.sidecar) && !docker {
        return err(
            "[server] gateways/sidecar need Docker: add a [docker] section or pass --docker unix:///var/run/docker.sock",
        );
    }
    Ok(listen)
}

/// `[server]` ttl, workers and the connection limits; returns the worker count.
fn server_limits(s: &ServerSection) -> Result<usize, ConfigError> {
    if s.ttl > 86_400 {
        return err(format!(
            "[server] ttl = {} is over one day; use a small value such as 5",
            s.ttl
        ));
    }
    let workers = match s.workers {
        Some(0) => {
            return err("[server] workers = 0: use at least 1, or leave it out for one per CPU")
        }
        Some(n) if n > 256 => {
            return err(format!(
                "[server] workers = {n} is too many; use at most 256"
            ))
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if s.max_tcp_connections == 0 || s.max_inflight == 0 {
        return err("[server] max_tcp_connections and max_inflight must be at least 1");
    }
    if s.tcp_idle_timeout_ms == 0 {
        return err("[server] tcp_idle_timeout_ms must be at least 1");
    }
    Ok(workers)
}

/// `[server]` access control and forward rate limits, and `user`.
fn guard_settings(s: &ServerSection) -> Result<GuardSettings, ConfigError> {
    let mut allow = Vec::new();
    for (i, a) in s.allow.iter().enumerate() {
        let net = a
            .parse::<ipnet::IpNet>()
            .or_else(|_| a.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                ConfigError::Invalid(format!(
                    "[server] allow[{i}] = \"{a}\" is not a CIDR; write e.g. \"192.168.1.0/24\" or \"192.0.2.7\""
                ))
            })?;
        allow.push(net);
    }
    if s.forward_rate > 0 && s.forward_burst == 0 {
        return err(
            "[server] forward_burst = 0 with a forward_rate: use at least 1 (e.g. twice the rate), or forward_rate = 0 for no limit",
        );
    }
    if s.user.as_deref() == Some("") {
        return err("[server] user = \"\": name a user such as \"nobody\", or leave the key out");
    }
    Ok(GuardSettings {
        allow,
        allow_loopback: s.allow_loopback,
        refuse_mode: s.refuse_mode,
        forward_rate: s.forward_rate,
        forward_burst: s.forward_burst,
        rate_limit_loopback: s.rate_limit_loopback,
    })
}

/// `[server] domain`, lower-cased without the trailing dot.
fn domain(s: &ServerSection) -> Result<Option<String>, ConfigError> {
    let Some(d) = &s.domain else {
        return Ok(None);
    };
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    if crate::model::normalize_name(&d).is_none() {
        return err(format!(
            "[server] domain = \"{d}\" is not a valid DNS name; write e.g. \"docker\""
        ));
    }
    Ok(Some(d))
}

/// Without Docker, every `[server] host_view` network must be a static one.
fn check_host_view(
    s: &ServerSection,
    docker: bool,
    statics: &crate::statics::StaticTables,
) -> Result<(), ConfigError> {
    for n in s.host_view.iter().flatten() {
        if !docker && !statics.catalog.networks.contains_key(n) {
            return err(format!(
                "[server] host_view names network \"{n}\", which no [[network]] defines; known: {:?}",
                statics.networks
            ));
        }
    }
    Ok(())
}

/// The upstream servers (`--upstream`, else `[upstream] servers`, else /etc/resolv.conf), own
/// listeners and duplicates in a row removed, and where they came from.
fn upstreams(
    u: &UpstreamSection,
    ov: &Overrides,
    listen: &[SocketAddr],
) -> Result<(Vec<SocketAddr>, UpstreamSource), ConfigError> {
    let (servers, source) = if !ov.upstream.is_empty() {
        (ov.upstream.clone(), UpstreamSource::Config)
    } else if let Some(list) = &u.servers {
        (list.clone(), UpstreamSource::Config)
    } else {
        (Vec::new(), UpstreamSource::ResolvConf)
    };
    let mut upstreams = Vec::new();
    for (i, u) in servers.iter().enumerate() {
        let sa = parse_upstream(u).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "[upstream] servers[{i}] = \"{u}\" is not ADDRESS[:PORT]; write e.g. \"192.0.2.53\" or \"127.0.0.1:5399\""
            ))
        })?;
        upstreams.push(sa);
    }
    if source == UpstreamSource::ResolvConf {
        upstreams = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| resolv_conf_servers(&t))
            .unwrap_or_default();
    }
    upstreams.retain(|u| !is_own(*u, listen));
    upstreams.dedup();
    Ok((upstreams, source))
}

/// `[upstream]` cache sizes, serve-stale and timeouts.
fn check_upstream(u: &UpstreamSection) -> Result<(), ConfigError> {
    if u.cache_size > 10_000_000 {
        return err(format!(
            "[upstream] cache_size = {} is too large; use at most 10000000 entries (0 disables the cache)",
            u.cache_size
        ));
    }
    if u.cache_bytes > 1 << 32 {
        return err(format!(
            "[upstream] cache_bytes = {} is too large; use at most 4294967296 (4 GiB), e.g. 33554432 for 32 MiB (0 disables the cache)",
            u.cache_bytes
        ));
    }
    if u.serve_stale_secs > 7 * 86_400 {
        return err(format!(
            "[upstream] serve_stale_secs = {} is too long; use at most 604800 (7 days; RFC 8767 suggests 1 to 3 days), or 0 to never serve stale answers",
            u.serve_stale_secs
        ));
    }
    if u.timeout_ms == 0 || u.budget_ms == 0 {
        return err("[upstream] timeout_ms and budget_ms must be at least 1");
    }
    if u.budget_ms < u.timeout_ms {
        return err(format!(
            "[upstream] budget_ms = {} is below timeout_ms = {}; the budget covers all tries, make it at least the per-try timeout",
            u.budget_ms, u.timeout_ms
        ));
    }
    Ok(())
}

/// `[server] ns_addresses`: addresses a client can reach, and only with a domain.
fn ns_addresses(s: &ServerSection, domain: bool) -> Result<Vec<IpAddr>, ConfigError> {
    let mut ns_addresses = Vec::new();
    for (i, a) in s.ns_addresses.iter().enumerate() {
        match a.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ns_addresses.push(ip),
            _ => {
                return err(format!(
                    "[server] ns_addresses[{i}] = \"{a}\" is not an IP address a client can reach; write e.g. \"172.18.0.1\""
                ))
            }
        }
    }
    if !ns_addresses.is_empty() && !domain {
        return err(
            "[server] ns_addresses without domain: they are the addresses of ns1.<domain> …; set domain = \"docker\" or remove them",
        );
    }
    Ok(ns_addresses)
}

/// `[admin]`: the listen address (default 127.0.0.1:9153 when the section is present) and the
/// access rules, reading the token file now (at start and on every reload).
fn admin_settings(
    a: Option<&AdminSection>,
) -> Result<(Option<SocketAddr>, crate::admin::AdminAccess), ConfigError> {
    let mut access = crate::admin::AdminAccess::default();
    let Some(a) = a else {
        return Ok((None, access));
    };
    let listen = parse_listen(
        a.listen.as_deref().unwrap_or(crate::admin::DEFAULT_LISTEN),
        "[admin] listen",
    )?;
    let nets = |list: &[String], key: &str| -> Result<Vec<ipnet::IpNet>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "[admin] {key}[{i}] = \"{s}\" is not a CIDR or an address; write e.g. \"10.53.0.0/24\" or \"127.0.0.1\""
                        ))
                    })
            })
            .collect()
    };
    if let Some(list) = &a.allow {
        access.allow = nets(list, "allow")?;
    }
    if let Some(list) = &a.full_access {
        access.full_access = nets(list, "full_access")?;
    }
    if let Some(path) = &a.token_file {
        access.token = Some(crate::admin::read_token(path).map_err(ConfigError::Invalid)?);
        access.token_file = Some(path.clone());
    }
    Ok((Some(listen), access))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, &Overrides::default())
    }

    #[test]
    fn demo_config_is_valid() {
        let cfg = Config::load(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert!(cfg.static_catalog.networks.contains_key("demo"));
    }

    #[test]
    fn reload_warns_about_exactly_the_start_only_keys() {
        let base = "[server]\nlisten = [\"127.0.0.1:5353\"]\nworkers = 2\nttl = 5\n[upstream]\nservers = [\"127.0.0.1:5399\"]\n[docker]\nhealth_aware = true\n";
        let a = load(base).unwrap();
        assert!(a.restart_only_changes(&load(base).unwrap()).is_empty());
        // ttl, listen and health_aware are applied by a reload: no warning.
        let applied = base
            .replace("ttl = 5", "ttl = 9")
            .replace("5353", "5354")
            .replace("health_aware = true", "health_aware = false");
        assert!(a.restart_only_changes(&load(&applied).unwrap()).is_empty());
        let later = base
            .replace("workers = 2", "workers = 3")
            .replace("5399", "5398")
            .replace("[docker]\n", "[docker]\nsweep_interval_s = 7\n");
        assert_eq!(
            a.restart_only_changes(&load(&later).unwrap()),
            ["[server] workers", "[upstream] servers", "[docker]"]
        );
        // [admin]: the access keys are applied by a reload, the listen address is not.
        let adm = format!("{base}[admin]\nlisten = \"127.0.0.1:9153\"\n");
        let a = load(&adm).unwrap();
        let allowed = adm.replace("9153\"\n", "9153\"\nallow = [\"10.0.0.0/8\"]\n");
        assert!(a.restart_only_changes(&load(&allowed).unwrap()).is_empty());
        assert_eq!(
            a.restart_only_changes(&load(&adm.replace("9153", "9154")).unwrap()),
            ["[admin] listen"]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[server]\nlisten = [\"127.0.0.1:99999\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[server] listen[0]"), "{e}");
        let e = load("[server]\nlsten = []").unwrap_err().to_string();
        assert!(e.contains("lsten"), "{e}");
        let e = load("[server]\nlisten = [\"127.0.0.1:53\", \"127.0.0.1:53\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = load("[upstream]\nservers = [\"nope\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("servers[0]"), "{e}");
        let e = load(
            "[[network]]\nname = \"n\"\nsubnet = \"10.0.0.0/24\"\n[[network.container]]\nname = \"a\"\nipv4 = [\"10.1.0.1\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("outside"), "{e}");
        let e =
            load("[[network]]\nname = \"n\"\n[[network.container]]\nname = \"a\"\nipv4 = [\"x\"]")
                .unwrap_err()
                .to_string();
        assert!(e.contains("ipv4 entry \"x\""), "{e}");
    }

    #[test]
    fn upstream_cache_size() {
        let up =
            "[server]\nlisten = [\"127.0.0.1:5353\"]\n[upstream]\nservers = [\"127.0.0.1:5399\"]\n";
        assert_eq!(load(up).unwrap().cache_size, 10_000);
        assert_eq!(load(&format!("{up}cache_size = 0")).unwrap().cache_size, 0);
        let e = load(&format!("{up}cache_size = 99999999"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[upstream] cache_size"), "{e}");
        let c = load(up).unwrap();
        assert_eq!(c.cache_bytes, 32 << 20, "default 32 MiB");
        assert_eq!(c.serve_stale, Duration::from_secs(86_400));
        let c = load(&format!("{up}cache_bytes = 1048576\nserve_stale_secs = 0")).unwrap();
        assert_eq!((c.cache_bytes, c.serve_stale), (1 << 20, Duration::ZERO));
        let e = load(&format!("{up}cache_bytes = 99999999999"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[upstream] cache_bytes"), "{e}");
        let e = load(&format!("{up}serve_stale_secs = 99999999"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[upstream] serve_stale_secs"), "{e}");
    }

    #[test]
    fn own_listeners_are_not_upstreams() {
        let cfg = load(
            "[server]\nlisten = [\"127.0.0.1:5353\"]\n[upstream]\nservers = [\"127.0.0.1:5353\", \"127.0.0.1:5399\"]",
        )
        .unwrap();
        assert_eq!(cfg.upstreams, vec!["127.0.0.1:5399".parse().unwrap()]);
        let cfg =
            load("[server]\nlisten = [\"0.0.0.0:53\"]\n[upstream]\nservers = [\"127.0.0.1\"]")
                .unwrap();
        assert!(cfg.upstreams.is_empty());
    }

    /// A static container's own `dns` servers: parsed like upstreams, own listeners left out.
    #[test]
    fn static_container_dns() {
        let cfg = load(
            "[server]\nlisten = [\"127.0.0.1:5353\"]\n[upstream]\nservers = [\"127.0.0.1:5399\"]\n\
             [[network]]\nname = \"n\"\n[[network.container]]\nname = \"a\"\nipv4 = [\"10.0.0.2\"]\n\
             dns = [\"10.0.0.53\", \"127.0.0.1:5353\", \"127.0.0.1:5400\"]\n",
        )
        .unwrap();
        let a = cfg.static_catalog.containers.values().next().unwrap();
        let want: Vec<SocketAddr> = vec![
            "10.0.0.53:53".parse().unwrap(),
            "127.0.0.1:5400".parse().unwrap(),
        ];
        assert_eq!(a.dns, want);
        assert_eq!(
            cfg.build.default_upstreams,
            vec!["127.0.0.1:5399".parse::<SocketAddr>().unwrap()]
        );
        let e = load(
            "[server]\nlisten = [\"127.0.0.1:5353\"]\n[[network]]\nname = \"n\"\n\
             [[network.container]]\nname = \"a\"\nipv4 = [\"10.0.0.2\"]\ndns = [\"nope\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dns[0]") && e.contains("\"nope\""), "{e}");
    }

    #[test]
    fn guard_keys() {
        let cfg = load(
            "[server]\nallow = [\"192.0.2.0/24\", \"198.51.100.7\"]\nallow_loopback = false\nrefuse_mode = \"drop\"\nforward_rate = 5\nforward_burst = 9\nuser = \"nobody\"",
        )
        .unwrap();
        assert_eq!(cfg.guard.allow.len(), 2);
        assert!(cfg.guard.allow[1].contains(&"198.51.100.7".parse::<IpAddr>().unwrap()));
        assert!(!cfg.guard.allow_loopback);
        assert_eq!(cfg.guard.refuse_mode, RefuseMode::Drop);
        assert_eq!((cfg.guard.forward_rate, cfg.guard.forward_burst), (5, 9));
        assert_eq!(cfg.user.as_deref(), Some("nobody"));
        let d = load("").unwrap();
        assert!(d.guard.allow_loopback && d.guard.forward_rate > 0 && d.user.is_none());
        let e = load("[server]\nallow = [\"10.0.0.0/33\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow[0]"), "{e}");
        let e = load("[server]\nrefuse_mode = \"ignore\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ignore"), "{e}");
        let e = load("[server]\nforward_burst = 0").unwrap_err().to_string();
        assert!(e.contains("forward_burst"), "{e}");
    }

    #[test]
    fn resolv_conf_parsing() {
        let s = resolv_conf_servers(
            "# c\nnameserver 192.0.2.1\nsearch x\nnameserver fe80::1%eth0\nnameserver bogus\n",
        );
        assert_eq!(
            s,
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn example_config_watches_docker_with_gateways() {
        let cfg = Config::load(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/docker.toml")),
            &Overrides::default(),
        )
        .unwrap();
        let opts = cfg.watch_options().unwrap();
        assert!(opts.gateways && !opts.sidecar);
        assert_eq!(opts.port, 53);
        assert!(cfg.build.host_sees_all_qualified);
    }

    #[test]
    fn bare_serve_and_docker_flag() {
        let cfg = Config::docker_default(&Overrides::default()).unwrap();
        let opts = cfg.watch_options().unwrap();
        assert!(opts.gateways);
        assert_eq!(opts.docker.endpoint, None);
        let cfg = Config::docker_default(&Overrides {
            docker: Some("tcp://127.0.0.1:2375".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            cfg.watch_options().unwrap().docker.endpoint.as_deref(),
            Some("tcp://127.0.0.1:2375")
        );
        let statics = Config::from_toml(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n",
            &Overrides::default(),
        )
        .unwrap();
        assert!(
            statics.watch_options().is_none(),
            "no [docker]: never watched"
        );
    }

    #[test]
    fn errors_keep_their_cause_as_source() {
        use std::error::Error;
        let missing = Path::new("/nonexistent/dockns-layout-test.toml");
        let e = Config::load(missing, &Overrides::default()).unwrap_err();
        assert!(
            e.source().is_some_and(|s| s.is::<std::io::Error>()),
            "{e:?}"
        );
        let e = Config::from_toml("[server", &Overrides::default()).unwrap_err();
        assert!(
            e.source()
                .is_some_and(|s| s.to_string().contains("unclosed table")),
            "the TOML parser's error: {e:?}"
        );
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[network]]\nname = \"demo\"\n[[network.container]]\nname = \"api\"\nipv4 = [\"10.0.0.300\"]\n";
        let e = Config::from_toml(text, &Overrides::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "[[network]] #1 (name = \"demo\"), container #1 (name = \"api\"): ipv4 entry \"10.0.0.300\" is not an IPv4 address; write e.g. \"10.89.0.2\""
        );
        assert!(
            e.source()
                .is_some_and(|s| s.is::<std::net::AddrParseError>()),
            "{e:?}"
        );
    }
}
