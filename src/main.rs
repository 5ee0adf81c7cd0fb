//! The `dockns` command: parses the command line, sets up logging, runs the chosen subcommand
//! and maps every failure to a one-line message and an exit code (2: bad configuration or
//! usage, 1: could not start or run).

use clap::{Args, Parser, Subcommand};
use dockns::config::{Config, LogFormat, Overrides};
use dockns::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dockns",
    version,
    about = "A fast DNS server for containers: Docker's embedded resolver, done better",
    after_help = "Examples:\n  dockns serve --config config/demo.toml\n  dockns check-config config/demo.toml\n  dig @127.0.0.1 -p 5353 api"
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
    /// Load-test any DNS server (UDP or TCP, closed or open loop) and report latency percentiles.
    #[command(
        after_help = "Examples:\n  dockns bench -s 127.0.0.1:5353 -n api -n db:AAAA -l 10\n  dockns bench -s 127.0.0.1:5353 -d queries.txt -Q 50000 -l 10 --json\n  dockns bench -s 127.0.0.1:5353 -d queries.txt --tcp -q 64"
    )]
    Bench(dockns::bench::BenchArgs),
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

fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
        format!("--log-level {level:?} is not a level or filter ({e}); use info, debug, ...")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        Command::CheckConfig { file } => match Config::load(&file, &Overrides::default()) {
            Ok(cfg) => {
                match toml::to_string_pretty(&cfg) {
                    Ok(s) => println!(
                        "# {} is valid; effective configuration:\n{s}",
                        file.display()
                    ),
                    Err(_) => println!("{cfg:#?}"),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dockns: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => serve(args),
        Command::Bench(args) => ExitCode::from(dockns::bench::main(&args)),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    if let Err(e) = init_logging(&args.log_level, args.log_format) {
        eprintln!("dockns: {e}");
        return ExitCode::from(2);
    }
    let overrides = Overrides {
        listen: args.listen,
        upstream: args.upstream,
        docker: args.docker,
    };
    let config = match &args.config {
        Some(path) => Config::load(path, &overrides),
        None => Config::docker_default(&overrides),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dockns: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dockns")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dockns: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(config, args.config, overrides))
}

async fn run(config: Config, path: Option<PathBuf>, overrides: Overrides) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let server = match Server::start(config.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dockns: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        listen = ?server.bound(),
        upstreams = ?server.forwarder.servers(),
        networks = config.static_networks.len(),
        "dockns {} ready",
        env!("CARGO_PKG_VERSION")
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("dockns: cannot install signal handlers");
        return ExitCode::from(1);
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let Some(p) = &path else {
                    tracing::warn!("SIGHUP: no config file to reload");
                    continue;
                };
                match Config::load(p, &overrides) {
                    Ok(new) => match server.reload(new) {
                        Ok(()) => tracing::info!(file = %p.display(), "configuration reloaded"),
                        Err(e) => tracing::error!("reload rejected, old configuration kept: {e}"),
                    },
                    Err(e) => tracing::error!("reload rejected, old configuration kept: {e}"),
                }
            }
        }
    }
    tracing::info!("shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server.shutdown()).await;
    ExitCode::SUCCESS
}
