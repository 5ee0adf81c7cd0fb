//! Helpers for tests and benches that need a real Docker daemon: a tiny scratch image built once
//! per content, networks and containers with a unique prefix that are always removed, DNS
//! questions asked from inside a container's network namespace, and an in-process dockns that
//! watches Docker (forwarding to the kit's fake upstream, which answers NXDOMAIN).
//!
//! Traffic goes only to loopback and to the networks and containers created here. Nothing here
//! asks Docker's resolver (127.0.0.11) about a name it would forward, and nothing here removes
//! what a lab did not create.

pub use super::dns::{ask_reply, wait_for, Reply};
pub use super::upstream::{Behavior, FakeUpstream};
use dockns::config::{Config, Overrides};
use dockns::docker::DockerWatcher;
use dockns::server::Server;
use hickory_proto::rr::RecordType;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Docker CLI matching the daemon (20.10 here); `docker` from PATH otherwise.
pub fn docker_bin() -> &'static str {
    if std::path::Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// Runs the Docker CLI; Ok(stdout trimmed) or Err(stderr).
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new(docker_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", docker_bin()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs the Docker CLI and panics with its error message on failure.
pub fn dk(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether the Docker tests can run. Panics when they must (DOCKNS_REQUIRE_DOCKER=1) and
/// Docker is not usable; otherwise records and prints the skip ([`super::skip`]) and returns
/// false (the test then returns).
pub fn docker_available() -> bool {
    let ok = docker(&["info", "--format", "{{.ServerVersion}}"]);
    let root = unsafe { libc::geteuid() } == 0;
    let problem = match (&ok, root) {
        (Ok(_), true) => None,
        (Err(e), _) => Some(format!("Docker is unreachable ({e})")),
        (Ok(_), false) => Some("these tests need root (nsenter into container netns)".into()),
    };
    match problem {
        None => true,
        Some(p) => {
            super::skip::skip(&format!("{p}; start dockerd (and run as root) to run it"));
            false
        }
    }
}

const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM INT; while :; do sleep 1; done\"]\n";

/// The test image (built from /bin/busybox, tag derived from its content); built at most once.
pub fn image() -> String {
    static IMAGE: Mutex<Option<String>> = Mutex::new(None);
    let mut guard = IMAGE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tag) = guard.as_ref() {
        return tag.clone();
    }
    let busybox = std::fs::read("/bin/busybox").expect(
        "/bin/busybox (static) is needed to build the test image: apt-get install busybox-static",
    );
    // FNV-1a over the binary and the Dockerfile: stable across runs and Rust versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in busybox.iter().chain(DOCKERFILE.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let tag = format!("dockns-test:{h:016x}");
    if docker(&["image", "inspect", &tag]).is_err() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bb = dir.path().join("busybox");
        std::fs::write(&bb, &busybox).expect("copy busybox");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755))
            .expect("chmod busybox");
        std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).expect("write Dockerfile");
        let path = dir.path().to_string_lossy().to_string();
        dk(&["build", "-q", "-t", &tag, &path]);
    }
    *guard = Some(tag.clone());
    tag
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Everything one test created; removed on drop, even when the test panics.
pub struct Lab {
    /// Unique prefix of every name.
    pub prefix: String,
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    services: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
}

impl Lab {
    /// A new lab with a unique prefix.
    pub fn new(tag: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Lab {
            prefix: format!("dnt{}{}{tag}", std::process::id() % 100_000, n),
            containers: Mutex::new(Vec::new()),
            networks: Mutex::new(Vec::new()),
            services: Mutex::new(Vec::new()),
            images: Mutex::new(Vec::new()),
        }
    }

    /// `prefix-name`.
    pub fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates a network `prefix-name` with extra `docker network create` flags.
    pub fn network(&self, name: &str, flags: &[&str]) -> String {
        let full = self.name(name);
        let mut args = vec!["network", "create"];
        args.extend_from_slice(flags);
        args.push(&full);
        dk(&args);
        self.networks.lock().unwrap().push(full.clone());
        full
    }

    /// Runs a detached container `prefix-name` from the test image with extra `docker run`
    /// flags; returns its full name.
    pub fn run(&self, name: &str, flags: &[&str]) -> String {
        let full = self.name(name);
        self.run_named(&full, flags);
        full
    }

    /// Runs a detached container `prefix-name` from another image; returns its full name.
    pub fn run_image(&self, name: &str, image: &str, flags: &[&str]) -> String {
        let full = self.name(name);
        let mut args = vec!["run", "-d", "--name", &full, "--stop-timeout", "1"];
        args.extend_from_slice(flags);
        args.push(image);
        self.containers.lock().unwrap().push(full.clone());
        dk(&args);
        full
    }

    /// Runs a detached container with an exact name.
    pub fn run_named(&self, full: &str, flags: &[&str]) -> String {
        let img = image();
        let mut args = vec!["run", "-d", "--name", full, "--stop-timeout", "1"];
        args.extend_from_slice(flags);
        args.push(&img);
        self.containers.lock().unwrap().push(full.to_string());
        dk(&args)
    }

    /// Remembers a container created by other means (renamed, ...), for cleanup.
    pub fn track_container(&self, name: &str) {
        self.containers.lock().unwrap().push(name.to_string());
    }

    /// Remembers an image for cleanup.
    pub fn track_image(&self, tag: &str) {
        self.images.lock().unwrap().push(tag.to_string());
    }

    /// Remembers a network created by other means, for cleanup.
    pub fn track_network(&self, name: &str) {
        self.networks.lock().unwrap().push(name.to_string());
    }

    /// Remembers a swarm service for cleanup.
    pub fn track_service(&self, name: &str) {
        self.services.lock().unwrap().push(name.to_string());
    }

    /// Removes everything now (also done on drop).
    pub fn cleanup(&self) {
        let services = std::mem::take(&mut *self.services.lock().unwrap());
        if !services.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(services.iter().map(String::as_str));
            let _ = docker(&args);
            // Their task containers may outlive the service (and the swarm): remove them too.
            for s in &services {
                let label = format!("label=com.docker.swarm.service.name={s}");
                let ids = docker(&["ps", "-aq", "--filter", &label]).unwrap_or_default();
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    let _ = docker(&args);
                }
            }
        }
        // One at a time: Docker 20.10 can leave a stale endpoint behind (and the network then
        // cannot be removed) when containers on the same networks are removed concurrently,
        // which `docker rm -f a b c` does.
        let containers = std::mem::take(&mut *self.containers.lock().unwrap());
        for c in containers.iter().rev() {
            let _ = docker(&["rm", "-f", c]);
        }
        // Anything else named with the prefix (bulk tests do not track each container, and a
        // thread that failed half-way may have left one behind).
        let filter = format!("name={}-", self.prefix);
        let left = docker(&["ps", "-aq", "--filter", &filter]).unwrap_or_default();
        for c in left.split_whitespace() {
            let _ = docker(&["rm", "-f", c]);
        }
        for img in std::mem::take(&mut *self.images.lock().unwrap()) {
            let _ = docker(&["rmi", "-f", &img]);
        }
        let networks = std::mem::take(&mut *self.networks.lock().unwrap());
        for n in networks.iter().rev() {
            // Swarm task endpoints linger for a moment after the service is gone.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match docker(&["network", "rm", n]) {
                    Ok(_) => break,
                    Err(_) if docker(&["network", "inspect", n]).is_err() => break,
                    Err(e) if Instant::now() > deadline => {
                        eprintln!("!!! test cleanup could not remove network {n}: {e}");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(250)),
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `docker inspect -f FORMAT target`.
pub fn inspect(target: &str, format: &str) -> String {
    dk(&["inspect", "-f", format, target])
}

/// The PID of a running container's first process (for its network namespace).
pub fn pid(container: &str) -> u32 {
    inspect(container, "{{.State.Pid}}")
        .parse()
        .unwrap_or_else(|_| panic!("no PID for {container}"))
}

/// A container's IPv4 address on a network.
pub fn ip_on(container: &str, network: &str) -> IpAddr {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    inspect(container, &f)
        .parse()
        .unwrap_or_else(|_| panic!("{container} has no address on {network}"))
}

/// A network's (first) IPv4 gateway address: the IPAM configuration's, else this host's address
/// inside the network's first subnet (Docker does not list a gateway it picked itself).
pub fn gateway(network: &str) -> IpAddr {
    let listed = dk(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        network,
    ]);
    if let Ok(ip) = listed.parse() {
        return ip;
    }
    let subnet: ipnet::IpNet = dk(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        network,
    ])
    .parse()
    .unwrap_or_else(|_| panic!("network {network} has no subnet"));
    dockns::docker::listeners::local_addresses()
        .into_iter()
        .find(|a| subnet.contains(a))
        .unwrap_or_else(|| panic!("network {network} has no gateway on this host"))
}

/// The full ID of a container.
pub fn id(container: &str) -> String {
    inspect(container, "{{.Id}}")
}

/// Asks `server` from inside the network namespace of process `pid` (a container).
pub fn ask_from(pid: u32, server: SocketAddr, name: &str, qtype: RecordType) -> Reply {
    ask_from_result(pid, server, name, qtype).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`ask_from`], `None` when nothing answers.
pub fn ask_from_opt(pid: u32, server: SocketAddr, name: &str, qtype: RecordType) -> Option<Reply> {
    ask_from_result(pid, server, name, qtype).ok()
}

fn ask_from_result(
    pid: u32,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
) -> Result<Reply, String> {
    let name = name.to_string();
    std::thread::spawn(move || -> Result<Reply, String> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .map_err(|e| format!("open netns of {pid}: {e}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this (short-lived) thread only; the fd is valid while `ns` lives.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        ask_reply(server, &name, qtype)
    })
    .join()
    .unwrap_or_else(|_| Err("query thread panicked".into()))
}

/// Asks `server` from this process's own network namespace (host view).
pub fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Reply {
    ask_reply(server, name, qtype).unwrap_or_else(|e| panic!("{e}"))
}

/// Docker's own resolver, as seen from inside a container.
pub fn docker_dns() -> SocketAddr {
    "127.0.0.11:53".parse().unwrap()
}

/// A port for gateway listeners, which need one fixed number on every network: free on every
/// address right now and below the kernel's ephemeral range, so no socket bound to port 0 and
/// no outgoing connection can take it before dockns binds it (only another explicit bind of
/// the same number could, and every kit socket binds port 0).
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (low.saturating_sub(12_000).max(1024), low);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut seed = u64::from(std::process::id()) << 32 ^ u64::from(now.subsec_nanos());
    for _ in 0..200 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = from + (seed >> 33) as u16 % (to - from);
        let free = UdpSocket::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({from}..{to})");
}

/// dockns running in-process, watching Docker, with gateway listeners.
pub struct Dockns {
    /// The runtime the server runs on.
    pub rt: tokio::runtime::Runtime,
    /// The server.
    pub server: Server,
    /// The watcher.
    pub watcher: DockerWatcher,
    /// Loopback listener (host view).
    pub loopback: SocketAddr,
    /// Port of the gateway listeners.
    pub port: u16,
    /// The fake upstream it forwards to.
    pub upstream: FakeUpstream,
}

impl Dockns {
    /// Starts dockns with `gateways = true` on a free port, a loopback listener and a fake
    /// upstream; `extra_docker` is added to the `[docker]` section (e.g. an endpoint).
    pub fn start(extra_docker: &str) -> Dockns {
        Dockns::start_with(extra_docker, true)
    }

    /// Like [`start`](Self::start); `extra` is appended after the `[docker]` keys (more keys,
    /// or whole tables such as `[[network]]`), and `wait_sync` waits for the first sync.
    pub fn start_with(extra: &str, wait_sync: bool) -> Dockns {
        let upstream = FakeUpstream::start(Behavior::NXDOMAIN);
        let sweep = if extra.contains("sweep_interval_s") {
            ""
        } else {
            "sweep_interval_s = 0\n"
        };
        let port = free_port();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ngateways = true\ngateway_port = {port}\nttl = 5\nworkers = 1\n\
             [upstream]\nservers = [\"{}\"]\ntimeout_ms = 500\nbudget_ms = 1000\n\
             [docker]\n{sweep}{extra}\n",
            upstream.addr
        );
        let cfg = Config::from_toml(&text, &Overrides::default()).expect("test config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt
            .block_on(async { Server::start(cfg) })
            .expect("server start");
        let watcher = {
            let _g = rt.enter();
            server.watch_docker().expect("docker configured")
        };
        let loopback = server.bound()[0];
        let d = Dockns {
            rt,
            server,
            watcher,
            loopback,
            port,
            upstream,
        };
        if wait_sync {
            let status = d.watcher.status();
            wait_for(
                "dockns to sync with Docker",
                Duration::from_secs(30),
                || (status.syncs() > 0).then_some(()),
            );
        }
        d
    }

    /// The gateway listener of a network, once dockns listens there.
    pub fn on(&self, network: &str) -> SocketAddr {
        let addr = SocketAddr::new(gateway(network), self.port);
        wait_for(
            &format!("dockns to listen on {addr} ({network})"),
            Duration::from_secs(20),
            || {
                self.server
                    .listeners
                    .addresses()
                    .iter()
                    .any(|(a, _)| *a == addr)
                    .then_some(addr)
            },
        )
    }
}

impl Drop for Dockns {
    fn drop(&mut self) {
        self.watcher.stop();
        let l = self.server.listeners.clone();
        self.rt.block_on(async move { l.stop_all().await });
    }
}

/// One network's table, reduced to what both sides can state: the network itself, each
/// container's endpoint on it, the names answered with their addresses, and the reverse names.
/// Built either from `docker inspect` ([`truth_tables`]) or from what dockns serves
/// ([`served_tables`]), so the two compare as wholes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetTable {
    /// Docker network ID.
    pub id: String,
    /// Internal network.
    pub internal: bool,
    /// Subnets from the IPAM configuration.
    pub subnets: BTreeSet<String>,
    /// Endpoints by container name.
    pub endpoints: BTreeMap<String, EndpointRow>,
    /// Every answered name (plain and `name.network`, lower case) with its addresses.
    pub names: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Reverse names with their PTR targets (lower case).
    pub reverse: BTreeMap<String, BTreeSet<String>>,
}

/// One container's endpoint on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointRow {
    /// Short (12-digit) container ID.
    pub id: String,
    /// IPv4 addresses.
    pub ipv4: BTreeSet<String>,
    /// IPv6 addresses.
    pub ipv6: BTreeSet<String>,
    /// Names the endpoint answers to (lower case).
    pub names: BTreeSet<String>,
}

/// Tables by network name; a network absent from the map does not exist (or is not served).
pub type Tables = BTreeMap<String, NetTable>;

/// Number of endpoints over all networks.
pub fn endpoint_count(t: &Tables) -> usize {
    t.values().map(|n| n.endpoints.len()).sum()
}

/// What dockns serves now for `networks`: the records of its published catalog and compiled
/// snapshot (the same document as the admin API's `/v1/records`).
pub fn served_tables(d: &Dockns, networks: &[String]) -> Tables {
    let mut out = Tables::new();
    for net in networks {
        let doc = dockns::admin::records(&d.server.publisher, Some(net));
        for n in doc.networks {
            let endpoints = n
                .endpoints
                .into_iter()
                .map(|e| {
                    let row = EndpointRow {
                        id: e.id,
                        ipv4: e.ipv4.into_iter().collect(),
                        ipv6: e.ipv6.into_iter().collect(),
                        names: e.names.iter().map(|s| s.to_ascii_lowercase()).collect(),
                    };
                    (e.container, row)
                })
                .collect();
            let mut names: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
            for nd in n.names {
                names
                    .entry(nd.name.to_ascii_lowercase())
                    .or_default()
                    .extend(nd.addresses);
            }
            let mut reverse: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for r in n.reverse {
                reverse
                    .entry(r.name.to_ascii_lowercase())
                    .or_default()
                    .insert(r.ptr.to_ascii_lowercase());
            }
            out.insert(
                n.name,
                NetTable {
                    id: n.id,
                    internal: n.internal,
                    subnets: n.subnets.into_iter().collect(),
                    endpoints,
                    names,
                    reverse,
                },
            );
        }
    }
    out
}

/// The tables Docker implies right now for `networks`, from `docker network inspect` and a
/// fresh `docker inspect` of every container named with `prefix` (a lab's containers): each
/// running container's endpoint on each of those networks answers to its name, its short ID,
/// its hostname, its network aliases (and `DNSNames` on newer daemons) and its `dockns.alias`
/// label names, plain and as `name.network`; a container with `dockns.enable=false` is left
/// out; each address's reverse name points at `container.network.`.
///
/// Panics when Docker cannot be asked (call it while the daemon is quiet: a container removed
/// between the listing and the inspect is retried).
pub fn truth_tables(prefix: &str, networks: &[String]) -> Tables {
    for _ in 0..5 {
        if let Some(t) = try_truth_tables(prefix, networks) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("could not read a consistent listing from Docker for {prefix}");
}

fn try_truth_tables(prefix: &str, networks: &[String]) -> Option<Tables> {
    let existing: BTreeSet<String> = dk(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect();
    let mut out = Tables::new();
    for net in networks.iter().filter(|n| existing.contains(*n)) {
        let raw = docker(&["network", "inspect", net]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&raw).expect("network inspect JSON");
        let n = &v[0];
        let subnets = n["IPAM"]["Config"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["Subnet"].as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        out.insert(
            net.clone(),
            NetTable {
                id: n["Id"].as_str().unwrap_or_default().to_string(),
                internal: n["Internal"].as_bool().unwrap_or(false),
                subnets,
                ..NetTable::default()
            },
        );
    }
    let filter = format!("name={prefix}-");
    let ids = dk(&["ps", "-aq", "--no-trunc", "--filter", &filter]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Some(out);
    }
    let mut args = vec!["inspect"];
    args.extend(&ids);
    let raw = docker(&args).ok()?;
    let all: Vec<serde_json::Value> = serde_json::from_str(&raw).expect("inspect JSON");
    for c in &all {
        if c["State"]["Running"].as_bool() != Some(true) {
            continue;
        }
        let labels = &c["Config"]["Labels"];
        if labels["dockns.enable"]
            .as_str()
            .is_some_and(|v| matches!(v.trim(), "false" | "0" | "no" | "off"))
        {
            continue;
        }
        let name = c["Name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let full_id = c["Id"].as_str().unwrap_or_default();
        let short = full_id.get(..12).unwrap_or(full_id).to_string();
        let mut common: Vec<String> = vec![name.clone(), short.clone()];
        common.extend(c["Config"]["Hostname"].as_str().map(str::to_string));
        common.extend(
            labels["dockns.alias"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string()),
        );
        let Some(eps) = c["NetworkSettings"]["Networks"].as_object() else {
            continue;
        };
        for (net, ep) in eps {
            let Some(table) = out.get_mut(net) else {
                continue;
            };
            let field = |k: &str| -> BTreeSet<String> {
                ep[k]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .into_iter()
                    .collect()
            };
            let (ipv4, ipv6) = (field("IPAddress"), field("GlobalIPv6Address"));
            if ipv4.is_empty() && ipv6.is_empty() {
                continue;
            }
            let list = |k: &str| -> Vec<String> {
                ep[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect()
            };
            let names: BTreeSet<String> = common
                .iter()
                .cloned()
                .chain(list("Aliases"))
                .chain(list("DNSNames"))
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_lowercase())
                .collect();
            let addrs: BTreeSet<IpAddr> = ipv4
                .iter()
                .chain(&ipv6)
                .map(|a| a.parse().expect("an address"))
                .collect();
            for n in &names {
                for key in [n.clone(), format!("{n}.{}", net.to_ascii_lowercase())] {
                    table
                        .names
                        .entry(key)
                        .or_default()
                        .extend(addrs.iter().copied());
                }
            }
            for a in &addrs {
                table
                    .reverse
                    .entry(dockns::model::reverse_name(*a))
                    .or_default()
                    .insert(format!("{name}.{net}.").to_ascii_lowercase());
            }
            table.endpoints.insert(
                name.clone(),
                EndpointRow {
                    id: short.clone(),
                    ipv4,
                    ipv6,
                    names,
                },
            );
        }
    }
    Some(out)
}

/// What differs between two tables, one line per difference (for failure messages).
pub fn table_diff(served: &Tables, truth: &Tables) -> String {
    let mut out = Vec::new();
    let nets: BTreeSet<&String> = served.keys().chain(truth.keys()).collect();
    for net in nets {
        let (s, t) = match (served.get(net), truth.get(net)) {
            (Some(s), Some(t)) => (s, t),
            (Some(_), None) => {
                out.push(format!("network {net}: served, but not in Docker"));
                continue;
            }
            (None, Some(_)) => {
                out.push(format!("network {net}: in Docker, but not served"));
                continue;
            }
            (None, None) => continue,
        };
        if (&s.id, s.internal, &s.subnets) != (&t.id, t.internal, &t.subnets) {
            out.push(format!(
                "network {net}: served {:?}/{}/{:?}, Docker {:?}/{}/{:?}",
                s.id, s.internal, s.subnets, t.id, t.internal, t.subnets
            ));
        }
        diff_maps(&mut out, net, "endpoint", &s.endpoints, &t.endpoints);
        diff_maps(&mut out, net, "name", &s.names, &t.names);
        diff_maps(&mut out, net, "reverse", &s.reverse, &t.reverse);
    }
    const SHOW: usize = 40;
    let more = out.len().saturating_sub(SHOW);
    out.truncate(SHOW);
    if more > 0 {
        out.push(format!("... and {more} more differences"));
    }
    out.join("\n")
}

fn diff_maps<V: PartialEq + std::fmt::Debug>(
    out: &mut Vec<String>,
    net: &str,
    what: &str,
    served: &BTreeMap<String, V>,
    truth: &BTreeMap<String, V>,
) {
    let keys: BTreeSet<&String> = served.keys().chain(truth.keys()).collect();
    for k in keys {
        match (served.get(k), truth.get(k)) {
            (Some(s), Some(t)) if s != t => {
                out.push(format!("{net}: {what} {k}: served {s:?}, Docker {t:?}"))
            }
            (Some(s), None) => out.push(format!("{net}: {what} {k}: stale, served {s:?}")),
            (None, Some(t)) => out.push(format!("{net}: {what} {k}: missing, Docker {t:?}")),
            _ => {}
        }
    }
}
