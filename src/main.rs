//! The `dockns` command: parses the command line, sets up logging, runs the chosen subcommand
//! and maps every failure to a one-line message and an exit code (2: bad configuration or
//! usage, 1: could not start or run).

use clap::{Args, Parser, Subcommand};
use dockns::admin::{ExplainDoc, RecordsDoc};
use dockns::cli;
use dockns::config::{Config, ConfigError, LogFormat, Overrides};
use dockns::dns::listen::BindError;
use dockns::docker::DockerWatcher;
use dockns::server::Server;
use hickory_proto::rr::RecordType;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dockns",
    version,
    about = "A fast DNS server for containers: Docker's embedded resolver, done better",
    after_help = "Examples:\n  dockns serve --config config/demo.toml\n  dockns check-config config/demo.toml\n  dockns records --admin http://127.0.0.1:9153\n  dockns query api --server 127.0.0.1:5353 --from 10.89.0.3\n  dig @127.0.0.1 -p 5353 api"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the DNS server.
    #[command(
        after_help = "Examples:\n  dockns serve --config config/demo.toml\n  dockns serve --config my.toml --listen 127.0.0.1:5353 --upstream 192.0.2.53\n  dockns serve                       # Docker at the default socket, gateway listeners"
    )]
    Serve(ServeArgs),
    /// Validate a configuration file and print the effective configuration.
    #[command(after_help = "Example:\n  dockns check-config config/demo.toml")]
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Exit 0 when the dockns of this container or host is ready, 1 with the reason otherwise
    /// (the image's HEALTHCHECK: no curl or shell needed).
    #[command(
        after_help = "Examples:\n  dockns health                                   # reads /etc/dockns/dockns.toml\n  dockns health --config my.toml\n  dockns health --admin http://127.0.0.1:9153\n\nWith [admin] in the configuration it asks the admin API's /readyz (503 until the first\nDocker sync, with the reason, e.g. no access to the Docker socket). Without [admin] a\nconfiguration without [docker] is ready as soon as dockns runs; one with [docker] cannot be\nchecked, which is reported as unhealthy: add an [admin] section."
    )]
    Health(HealthArgs),
    /// Load-test any DNS server (UDP or TCP, closed or open loop) and report latency percentiles.
    #[command(
        after_help = "Examples:\n  dockns bench -s 127.0.0.1:5353 -n api -n db:AAAA -l 10\n  dockns bench -s 127.0.0.1:5353 -d queries.txt -Q 50000 -l 10 --json\n  dockns bench -s 127.0.0.1:5353 -d queries.txt --tcp -q 64"
    )]
    Bench(dockns::bench::BenchArgs),
    /// Print the tables of a running dockns (networks, endpoints, names) via its admin API.
    #[command(
        after_help = "Examples:\n  dockns records                              # admin API at http://127.0.0.1:9153\n  dockns records --network demo\n  dockns records --json | jq '.networks[].names'\n  dockns records --admin http://127.0.0.1:9253\n\nThe server needs an [admin] section (it listens on 127.0.0.1:9153 by default). A client\noutside [admin] full_access (default: loopback) sees only the networks it could resolve."
    )]
    Records(RecordsArgs),
    /// Ask a running dockns a question; show the answer, which scope was used and why.
    #[command(
        after_help = "Examples:\n  dockns query api --server 127.0.0.1:5353                 # as this host sees it\n  dockns query db AAAA --server 127.0.0.1:5353\n  dockns query api --server 127.0.0.1:5353 --from 10.89.0.3 # as that container sees it\n  dockns query 10.89.0.2 --server 127.0.0.1:5353           # an address: PTR\n  dockns query example.com --server 127.0.0.1:5353 --tcp\n\n--from asks the admin API to explain the tables for another client (a DNS packet cannot\ncarry another source address); names that are forwarded are then also asked live."
    )]
    Query(QueryArgs),
}

#[derive(Args)]
struct RecordsArgs {
    /// Only this network.
    #[arg(long, short = 'n', value_name = "NET")]
    network: Option<String>,
    /// Base URL of the admin API.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9153",
        env = "DOCKNS_ADMIN"
    )]
    admin: String,
    /// Print the JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct HealthArgs {
    /// The configuration the server runs with (to find its admin API).
    #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Base URL of the admin API (instead of the configuration's [admin] listen).
    #[arg(long, value_name = "URL", env = "DOCKNS_ADMIN")]
    admin: Option<String>,
}

/// The configuration path of the container image (Dockerfile, contrib/image, examples).
const DEFAULT_CONFIG: &str = "/etc/dockns/dockns.toml";

#[derive(Args)]
struct QueryArgs {
    /// The name to ask for (an IP address asks for its PTR record).
    name: String,
    /// Record type (A, AAAA, PTR, MX, TXT, SRV, ... or a number). Default: A, or PTR for an address.
    #[arg(value_name = "TYPE")]
    qtype: Option<String>,
    /// The dockns to ask, ADDR[:PORT] (port 53 by default).
    #[arg(
        long,
        short = 's',
        value_name = "ADDR[:PORT]",
        default_value = "127.0.0.1:53",
        env = "DOCKNS_SERVER"
    )]
    server: String,
    /// Explain the answer for this client address instead of this machine's.
    #[arg(long, value_name = "IP")]
    from: Option<std::net::IpAddr>,
    /// Ask over TCP instead of UDP.
    #[arg(long)]
    tcp: bool,
    /// Base URL of the admin API (for the scope explanation).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9153",
        env = "DOCKNS_ADMIN"
    )]
    admin: String,
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (TOML). Without one: Docker at the default endpoint, gateway listeners.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Listen on ADDR:PORT, UDP and TCP (repeatable; replaces [server] listen).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// Upstream server ADDR[:PORT] (repeatable; replaces [upstream] servers).
    #[arg(long, value_name = "ADDR[:PORT]")]
    upstream: Vec<String>,
    /// Watch Docker at this endpoint (unix:///var/run/docker.sock, tcp://host:2375).
    #[arg(long, value_name = "URI")]
    docker: Option<String>,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, default_value = "info", env = "DOCKNS_LOG")]
    log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Why `serve` stopped with an error. Each message is one line naming the cause and the fix;
/// the cause is also the error's [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
enum ServeError {
    /// `--log-level` does not parse.
    #[error("--log-level {level:?} is not a level or filter ({source}); use info, debug, ...")]
    LogLevel {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No tokio runtime.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// No signal handlers.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// A listener or the admin API could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Root could not be dropped.
    #[error("{0}")]
    Privileges(Box<dyn std::error::Error + Send + Sync>),
}

impl ServeError {
    /// 2: bad configuration or usage; 1: could not start or run.
    fn exit_code(&self) -> ExitCode {
        match self {
            ServeError::LogLevel { .. } | ServeError::Config(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }
}

fn init_logging(level: &str, format: LogFormat) -> Result<(), ServeError> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).map_err(|source| ServeError::LogLevel {
            level: level.to_string(),
            source,
        })?;
    // Colours only on a terminal: `docker logs`, journald and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            match Config::load(&file, &Overrides::default())
                .and_then(|cfg| Ok((cfg, Config::effective_toml(&file)?)))
            {
                Ok((cfg, effective)) => {
                    for w in cfg.warnings() {
                        eprintln!("dockns: warning: {}: {w}", file.display());
                    }
                    println!(
                        "# {} is valid; effective configuration (a valid dockns.toml):\n{effective}",
                        file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dockns: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve(args) => serve(args),
        Command::Bench(args) => ExitCode::from(dockns::bench::main(&args)),
        Command::Records(args) => client(records(args)),
        Command::Health(args) => client(health(args)),
        Command::Query(args) => client(query(args)),
    }
}

/// An error from another module's client code (`cli`), whatever its type.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a client subcommand (`health`, `records`, `query`) failed (exit code 1). Each message is
/// one line naming the cause and the fix; the cause is also the error's `source`.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    /// `health`: the configuration cannot be used.
    #[error("unhealthy: {0}")]
    Config(#[source] ConfigError),
    /// `health`: Docker is watched but there is no admin API to ask.
    #[error("unhealthy: {} watches Docker but has no [admin] section, so readiness cannot be read; add [admin] (listen = \"127.0.0.1:9153\")", path.display())]
    NoAdmin { path: PathBuf },
    /// `health`: the admin API could not be asked.
    #[error("unhealthy: {0}")]
    Unreachable(#[source] BoxError),
    /// `health`: the admin API says not ready.
    #[error("unhealthy: {url}: HTTP {status}: {}", body.trim())]
    NotReady {
        url: String,
        status: u16,
        body: String,
    },
    /// The admin API answered with an error status.
    #[error("{url}: HTTP {status}: {}", body.trim())]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    /// An argument, a request or a reply the client code could not handle.
    #[error("{0}")]
    Cli(#[source] BoxError),
}

impl ClientError {
    fn cli(e: impl Into<BoxError>) -> ClientError {
        ClientError::Cli(e.into())
    }
}

/// Runs a client subcommand on a small runtime; errors are one line, exit code 1.
fn client(fut: impl std::future::Future<Output = Result<String, ClientError>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dockns: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(fut) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dockns: {e}");
            ExitCode::from(1)
        }
    }
}

async fn health(args: HealthArgs) -> Result<String, ClientError> {
    // The token of `[admin] token_file`, presented when configured: the admin API may admit
    // loopback only with it (e.g. `allow = []`, `full_access = []`).
    let mut authorization = None;
    let admin = match args.admin {
        Some(a) => a,
        None => {
            let cfg =
                Config::load(&args.config, &Overrides::default()).map_err(ClientError::Config)?;
            authorization = cfg.admin_access.token.as_ref().map(|t| t.authorization());
            match cfg.admin {
                Some(addr) => {
                    // A wildcard listen address is reached through loopback.
                    let ip = match addr.ip() {
                        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                        }
                        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                        }
                        ip => ip,
                    };
                    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
                }
                None if cfg.docker.is_none() => {
                    return Ok(format!(
                        "healthy: {} has static tables only (no [docker]): ready once running\n",
                        args.config.display()
                    ))
                }
                None => return Err(ClientError::NoAdmin { path: args.config }),
            }
        }
    };
    let (status, body) = cli::http_get_authorized(&admin, "/readyz", authorization.as_deref())
        .await
        .map_err(|e| ClientError::Unreachable(e.into()))?;
    if status == 200 {
        Ok(body)
    } else {
        Err(ClientError::NotReady {
            url: format!("{admin}/readyz"),
            status,
            body,
        })
    }
}

async fn records(args: RecordsArgs) -> Result<String, ClientError> {
    let path = match &args.network {
        Some(n) => format!("/v1/records/{}", cli::url_encode(n)),
        None => "/v1/records".to_string(),
    };
    if args.json {
        let (status, body) = cli::http_get(&args.admin, &path)
            .await
            .map_err(ClientError::cli)?;
        if status != 200 {
            return Err(ClientError::Http {
                url: format!("{}{path}", args.admin),
                status,
                body,
            });
        }
        return Ok(body);
    }
    let doc: RecordsDoc = cli::get_json(&args.admin, &path)
        .await
        .map_err(ClientError::cli)?;
    Ok(cli::format_records(&doc))
}

async fn query(args: QueryArgs) -> Result<String, ClientError> {
    let server = cli::parse_server(&args.server).map_err(ClientError::cli)?;
    let ip_name = args.name.parse::<std::net::IpAddr>().ok();
    let qtype = match (&args.qtype, ip_name) {
        (Some(t), _) => cli::parse_type(t).map_err(ClientError::cli)?,
        (None, Some(_)) => RecordType::PTR,
        (None, None) => RecordType::A,
    };
    let name = match ip_name {
        Some(ip) if qtype == RecordType::PTR => dockns::model::reverse_name(ip),
        _ => args.name.clone(),
    };
    let explain_path = |from: std::net::IpAddr| {
        format!(
            "/v1/explain?name={}&type={}&from={}&local={}",
            cli::url_encode(&name),
            qtype,
            cli::url_encode(&from.to_string()),
            cli::url_encode(&server.ip().to_string())
        )
    };
    let mut out = String::new();
    match args.from {
        Some(from) => {
            let doc: ExplainDoc = cli::get_json(&args.admin, &explain_path(from))
                .await
                .map_err(ClientError::cli)?;
            out.push_str(&format!(
                ";; QUESTION: {} {} as client {from} would ask it on {server} (from the tables)\n",
                doc.name, doc.qtype
            ));
            out.push_str(&cli::format_explain(&doc));
            if doc.result == "forward" {
                let q = cli::build_query(&name, qtype).map_err(ClientError::cli)?;
                let reply = cli::ask(server, &q, args.tcp)
                    .await
                    .map_err(ClientError::cli)?;
                out.push_str(";; forwarded: the answer of the default upstream servers (a client with DNS servers of its own is forwarded to those):\n");
                out.push_str(&cli::format_reply(
                    &reply.bytes,
                    server,
                    args.tcp,
                    reply.rtt,
                ));
            }
        }
        None => {
            let q = cli::build_query(&name, qtype).map_err(ClientError::cli)?;
            let reply = cli::ask(server, &q, args.tcp)
                .await
                .map_err(ClientError::cli)?;
            out.push_str(&format!(";; QUESTION: {name} {qtype}\n"));
            out.push_str(&cli::format_reply(
                &reply.bytes,
                server,
                args.tcp,
                reply.rtt,
            ));
            match cli::get_json::<ExplainDoc>(&args.admin, &explain_path(reply.from)).await {
                Ok(doc) => out.push_str(&cli::format_explain(&doc)),
                Err(e) => out.push_str(&format!(";; no scope explanation: {e}\n")),
            }
        }
    }
    Ok(out)
}

/// glibc malloc settings for the server, applied before anything else runs. A burst of Docker
/// events (hundreds of networks removed: each event re-inspects a container and recompiles its
/// networks' tables) interleaves short-lived allocations with the tables and containers that
/// outlive it; with glibc's defaults (an arena per thread, per-thread caches, fast bins, a mmap
/// threshold that rises after each large free) the survivors end up spread over megabytes of
/// heap pages that cannot be given back: 1.34x the RSS of a fresh dockns with the same
/// networks (docs/performance.md, "300 real Docker networks"). One arena, no per-thread cache
/// and no fast bins (a freed chunk coalesces at once) and a fixed 32 KiB mmap threshold (large
/// buffers go back to the system when freed) keep them packed. The query path does not
/// allocate, so it is not affected.
///
/// The per-thread cache can only be turned off by `GLIBC_TUNABLES` when the process starts, so
/// dockns executes itself once with it set (same process ID, arguments and descriptors); a
/// `GLIBC_TUNABLES` that already sets `glibc.malloc.*` is the operator's choice and is kept.
/// Other C libraries: nothing to do.
fn tune_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0:glibc.malloc.mmap_threshold=32768";
        const MARK: &str = "DOCKNS_HEAP_TUNED";
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains("glibc.malloc.") {
            return;
        }
        if std::env::var_os(MARK).is_none() {
            let value = match current.is_empty() {
                true => TUNABLES.to_string(),
                false => format!("{current}:{TUNABLES}"),
            };
            let mut args = std::env::args_os();
            let argv0 = args.next().unwrap_or_else(|| "dockns".into());
            // The binary by its own path, not `/proc/self/exe`: the kernel names a process after
            // the file it executes, and `pidof dockns`, `pkill dockns` and process monitors must
            // keep finding it (through /proc/self/exe it would be called `exe`).
            let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
            // Only returns if the exec failed (no /proc): then without the cache setting.
            let _ = std::process::Command::new(exe)
                .arg0(argv0)
                .args(args)
                .env("GLIBC_TUNABLES", value)
                .env(MARK, "1")
                .exec();
        }
        // Executed without the tunables taking effect (or not at all): what mallopt can set.
        // SAFETY: mallopt only changes glibc's own malloc parameters; called at startup, before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MXFAST, 0);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024);
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    match serve_until_stopped(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dockns: {e}");
            e.exit_code()
        }
    }
}

fn serve_until_stopped(args: ServeArgs) -> Result<(), ServeError> {
    tune_heap();
    init_logging(&args.log_level, args.log_format)?;
    let overrides = Overrides {
        listen: args.listen,
        upstream: args.upstream,
        docker: args.docker,
    };
    let config = match &args.config {
        Some(path) => Config::load(path, &overrides)?,
        None => Config::docker_default(&overrides)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dockns")
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(run(config, args.config, overrides));
    // Tasks still running (forwards past the drain) are abandoned, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// The signals `serve` acts on: SIGTERM and SIGINT stop it, SIGHUP reloads the file.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, ServeError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(ServeError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(ServeError::Signals)?,
            hup: signal(SignalKind::hangup()).map_err(ServeError::Signals)?,
        })
    }
}

async fn run(
    config: Config,
    path: Option<PathBuf>,
    overrides: Overrides,
) -> Result<(), ServeError> {
    // Handlers first: the listeners answer as soon as they are bound, and a SIGTERM or SIGHUP
    // arriving then must not kill the process with the default action.
    let mut signals = Signals::install()?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let server = Server::start(config.clone())?;
    // Docker, when configured: runs in the background; an unreachable daemon is logged once and
    // retried while the static tables are served (never fatal).
    let docker = server.watch_docker();
    if let Some(user) = &config.user {
        drop_root(user, docker.as_ref()).await?;
    }
    log_listening(&server, &config, docker.is_some());
    loop {
        tokio::select! {
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            _ = signals.hup.recv() => reload(&server, path.as_deref(), &overrides),
        }
    }
    tracing::info!("shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server.shutdown()).await;
    Ok(())
}

/// `[server] user`: switches to it when running as root, once the listeners are bound.
async fn drop_root(user: &str, docker: Option<&DockerWatcher>) -> Result<(), ServeError> {
    if let (Some(w), true) = (docker, dockns::privileges::is_root()) {
        // Gateway/sidecar listeners of the networks that exist now are bound as root: give
        // the first sync a moment before dropping it (bounded; Docker may be down).
        let status = w.status();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while status.syncs() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tracing::info!(
            user = %user,
            "after dropping root, listeners for Docker networks created later need a port >= 1024 (or CAP_NET_BIND_SERVICE), and the user needs access to the Docker socket (docker group)"
        );
    }
    if dockns::privileges::is_root() {
        let ids =
            dockns::privileges::drop_to(user).map_err(|e| ServeError::Privileges(e.into()))?;
        tracing::info!(user = %user, uid = ids.uid, gid = ids.gid, "listeners bound; dropped root");
    } else {
        tracing::info!(user = %user, "not running as root: [server] user has nothing to drop");
    }
    Ok(())
}

/// The start line: `ready` only when it is: with Docker, once the first sync is published (the
/// watcher logs that line then); until then the listeners already answer static and forwarded
/// names.
fn log_listening(server: &Server, config: &Config, docker: bool) {
    let listening: Vec<std::net::SocketAddr> = server
        .listeners
        .addresses()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    if server.metrics.is_synced() && !docker {
        tracing::info!(
            listen = ?listening,
            upstreams = ?server.forwarder.servers(),
            networks = config.static_networks.len(),
            "dockns {} ready",
            env!("CARGO_PKG_VERSION")
        );
    } else {
        tracing::info!(
            listen = ?listening,
            upstreams = ?server.forwarder.servers(),
            networks = config.static_networks.len(),
            "dockns {} listening (static tables and forwarding); ready after the first Docker sync",
            env!("CARGO_PKG_VERSION")
        );
    }
}

/// SIGHUP: reads the file again and applies it; a bad file or listener keeps the old one.
fn reload(server: &Server, path: Option<&std::path::Path>, overrides: &Overrides) {
    let Some(p) = path else {
        tracing::warn!("SIGHUP: no config file to reload");
        return;
    };
    match Config::load(p, overrides) {
        Ok(new) => match server.reload(new) {
            Ok(()) => tracing::info!(file = %p.display(), "configuration reloaded"),
            Err(e) => tracing::error!("reload rejected, old configuration kept: {e}"),
        },
        Err(e) => tracing::error!("reload rejected, old configuration kept: {e}"),
    }
}
