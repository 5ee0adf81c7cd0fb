//! The Docker path at scale, end to end: a fake Docker 20.10 (API 1.41, [`engine`]) holding a
//! large world of bridge networks and running containers, the real `dockns` binary syncing
//! with it as a child process, and the measurements of what one Docker event costs it: the
//! time from the event being written to the stream until a separate probe gets the new
//! address (NOERROR), and the CPU time dockns's threads other than the UDP workers spend on
//! it (per thread, in nanoseconds, from `/proc/PID/task/TID/schedstat`).
//!
//! Used by `benches/docker_scale.rs` (10,000 containers on 500 networks, under dnsperf load)
//! and by the smoke test `tests/engine_scale.rs` (a small world, no load), so the bench's code
//! path is built and run by `cargo test`. It must not assert anything about speed (it returns
//! figures; the bench prints them), and must not send traffic anywhere but the loopback
//! listener of the dockns it started; the upstream is a dead loopback port (every name asked
//! is local: `[server] domain` keeps unknown names under it from being forwarded).

use super::dns::query_bytes;
use super::engine::{Api, Ep, FakeEngine};
use super::process::Dockns;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

/// The zone dockns answers authoritatively in these runs: a probe's `name.network.docker`
/// gets NXDOMAIN until the container is known, and is never forwarded.
pub const DOMAIN: &str = "docker";

/// Compose-style service names; each network (a compose project) has replicas of each.
const SERVICES: [&str; 8] = [
    "web", "api", "db", "cache", "worker", "queue", "auth", "proxy",
];

/// Hosts per /24 the world may use (.2 to .251; .1 is the gateway).
const HOSTS_PER_NET: u32 = 250;

/// One bridge network of the world.
#[derive(Clone, Debug)]
pub struct WorldNet {
    /// Network name (`p17_default`).
    pub name: String,
    /// Network ID.
    pub id: String,
    /// First three octets of its /24.
    prefix: [u8; 3],
    /// Next host number to hand out.
    next_host: u32,
}

impl WorldNet {
    fn take_ip(&mut self) -> Ipv4Addr {
        let h = self.next_host;
        assert!(
            h < HOSTS_PER_NET + 2,
            "network {} is full: lower the containers per network",
            self.name
        );
        self.next_host += 1;
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], h as u8)
    }
}

/// A name the world expects dockns to answer, and the address it must carry.
#[derive(Clone, Debug)]
pub struct Expect {
    /// The question (`name.network.docker`).
    pub qname: String,
    /// The address in the answer.
    pub ip: Ipv4Addr,
}

/// A fake daemon and what it holds.
pub struct World {
    /// The fake Docker 20.10.
    pub engine: FakeEngine,
    /// Its networks.
    pub nets: Vec<WorldNet>,
    /// Containers at the start.
    pub containers: usize,
    /// Endpoints at the start (containers on two or three networks count more than once).
    pub endpoints: usize,
    /// Containers with a link.
    pub links: usize,
    /// A spread sample of the starting containers (the sync is done when all answer).
    pub samples: Vec<Expect>,
    /// Local names for the query load (each answered NOERROR with addresses).
    pub load_names: Vec<String>,
    /// Containers added by [`World::start_event`] so far.
    pub added: usize,
}

/// The names of container `k` on its network: `p17-web-3` (compose's project-service-N).
fn service(k: usize, nets: usize) -> (&'static str, usize) {
    let round = k / nets;
    (SERVICES[round % SERVICES.len()], round / SERVICES.len() + 1)
}

impl World {
    /// A world of `containers` running containers on `networks` bridge networks, with room for
    /// `extra` containers more. The mix: each network is a compose project whose containers
    /// carry their service name as an alias; one container in 10 is also on the next network
    /// (alias kept), one in 50 on a third (no alias), one in 200 links to the project's first
    /// container (`--link target:backend`), one in 20 has a hostname of its own.
    pub fn build(containers: usize, networks: usize, extra: usize) -> World {
        assert!(
            networks > 0 && containers > 0,
            "need networks and containers"
        );
        assert!(
            networks <= 150 * 250,
            "at most {} networks (one /24 each under 10.100.0.0/10)",
            150 * 250
        );
        let per_net = (containers as f64 * 1.13 + extra as f64 * 1.5) / networks as f64 + 4.0;
        assert!(
            per_net <= f64::from(HOSTS_PER_NET),
            "{containers} containers (+{extra}) on {networks} networks is about {per_net:.0} \
             endpoints per /24 network: at most {HOSTS_PER_NET}; use more networks"
        );
        let engine = FakeEngine::start(Api::V141);
        let mut nets = Vec::with_capacity(networks);
        for i in 0..networks {
            let prefix = [10, 100 + (i / 250) as u8, (i % 250) as u8];
            let name = format!("p{i}_default");
            let subnet = format!("{}.{}.{}.0/24", prefix[0], prefix[1], prefix[2]);
            let gateway = format!("{}.{}.{}.1", prefix[0], prefix[1], prefix[2]);
            let id = engine.add_network(&name, &subnet, &gateway);
            nets.push(WorldNet {
                name,
                id,
                prefix,
                next_host: 2,
            });
        }
        let mut w = World {
            engine,
            nets,
            containers: 0,
            endpoints: 0,
            links: 0,
            samples: Vec::new(),
            load_names: Vec::new(),
            added: 0,
        };
        let n = networks;
        let sample_every = (containers / 20).max(1);
        let load_every = (containers / 5000).max(1);
        for k in 0..containers {
            let p = k % n;
            let (svc, replica) = service(k, n);
            let name = format!("p{p}-{svc}-{replica}");
            let mut eps: Vec<(String, Ep)> = Vec::new();
            let ip = w.nets[p].take_ip();
            let mut links = Vec::new();
            if k % 200 == 150 && k >= n {
                // The project's first container (k = p) is `p{p}-web-1`.
                links.push(format!("p{p}-web-1:backend"));
                w.links += 1;
            }
            eps.push((
                w.nets[p].name.clone(),
                Ep {
                    ip: ip.to_string(),
                    aliases: vec![svc.to_string()],
                    links,
                },
            ));
            if k % 10 == 3 && n > 1 {
                let q = (p + 1) % n;
                let ip2 = w.nets[q].take_ip();
                eps.push((
                    w.nets[q].name.clone(),
                    Ep {
                        ip: ip2.to_string(),
                        aliases: vec![svc.to_string()],
                        links: Vec::new(),
                    },
                ));
            }
            if k % 50 == 7 && n > 2 {
                let q = (p + 2) % n;
                let ip3 = w.nets[q].take_ip();
                eps.push((
                    w.nets[q].name.clone(),
                    Ep {
                        ip: ip3.to_string(),
                        ..Ep::default()
                    },
                ));
            }
            let hostname = (k % 20 == 5).then(|| format!("{svc}{replica}.p{p}"));
            let refs: Vec<(&str, Ep)> = eps.iter().map(|(n, e)| (n.as_str(), e.clone())).collect();
            w.engine.add_container(&name, hostname.as_deref(), &refs);
            w.containers += 1;
            w.endpoints += eps.len();
            let net = &w.nets[p].name;
            if k % sample_every == 0 || k + 1 == containers {
                w.samples.push(Expect {
                    qname: format!("{name}.{net}.{DOMAIN}"),
                    ip,
                });
            }
            if k % load_every == 0 {
                // The forms a client uses: plain name, name.network, service.network, and
                // names under the zone.
                w.load_names.push(match (k / load_every) % 4 {
                    0 => name.clone(),
                    1 => format!("{name}.{net}"),
                    2 => format!("{svc}.{net}"),
                    _ => format!("{name}.{net}.{DOMAIN}"),
                });
            }
        }
        w
    }

    /// The dnsperf query file (`name A` lines) for [`World::load_names`].
    pub fn write_queries(&self, path: &Path) {
        let mut text = String::new();
        for n in &self.load_names {
            text.push_str(n);
            text.push_str(" A\n");
        }
        std::fs::write(path, text).expect("write the query file");
    }

    /// Adds container number `j` of the run (stopped when `with_connect`; on two networks
    /// when `two_networks`) and returns what its start event must make resolvable, and the
    /// events to send.
    fn new_container(&mut self, j: usize, with_connect: bool, two_networks: bool) -> NewContainer {
        let n = self.nets.len();
        // Spread over the networks (a multiplicative hash, so neighbours differ).
        let p = (j.wrapping_mul(2_654_435_761) >> 7) % n;
        let svc = SERVICES[j % SERVICES.len()];
        let name = format!("p{p}-{svc}-n{j}");
        let mut nets = vec![p];
        if two_networks && n > 1 {
            nets.push((p + 1) % n);
        }
        let mut eps = Vec::new();
        let mut ip = None;
        for &q in &nets {
            let a = self.nets[q].take_ip();
            ip.get_or_insert(a);
            eps.push((
                self.nets[q].name.clone(),
                Ep {
                    ip: a.to_string(),
                    aliases: vec![svc.to_string()],
                    links: Vec::new(),
                },
            ));
        }
        let refs: Vec<(&str, Ep)> = eps.iter().map(|(n, e)| (n.as_str(), e.clone())).collect();
        let id = self.engine.add_container(&name, None, &refs);
        if with_connect {
            self.engine.edit(&id, |c| c.running = false);
        }
        self.added += 1;
        NewContainer {
            id,
            net_ids: nets.iter().map(|&q| self.nets[q].id.clone()).collect(),
            expect: Expect {
                qname: format!("{name}.{}.{DOMAIN}", self.nets[p].name),
                ip: ip.expect("at least one network"),
            },
            with_connect,
        }
    }
}

/// A container added for one event.
struct NewContainer {
    id: String,
    net_ids: Vec<String>,
    expect: Expect,
    with_connect: bool,
}

/// The real dockns watching the world's fake daemon.
pub struct ScaleServer {
    /// The child process (killed on drop).
    pub dockns: Dockns,
    /// Its loopback listener.
    pub addr: SocketAddr,
    /// Its pid.
    pub pid: u32,
    /// When it was started.
    pub started: Instant,
    _dir: tempfile::TempDir,
}

impl ScaleServer {
    /// Starts `dockns serve` (the crate's binary) with `workers` UDP workers on a
    /// loopback port-0 listener, the world's fake daemon as `[docker] endpoint`, no sweep, and
    /// a dead loopback upstream.
    pub fn start(world: &World, workers: usize) -> ScaleServer {
        ScaleServer::start_bin(world, workers, Path::new(super::process::BIN))
    }

    /// [`start`](Self::start) with another `dockns` binary (an older build, for before/after).
    pub fn start_bin(world: &World, workers: usize, bin: &Path) -> ScaleServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("dockns.toml");
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\ngateways = false\n\
             domain = \"{DOMAIN}\"\nttl = 5\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\n\
             [docker]\nendpoint = \"{}\"\nsweep_interval_s = 0\n",
            world.engine.endpoint()
        );
        std::fs::write(&config, text).expect("write the config");
        let started = Instant::now();
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["serve", "--config"]).arg(&config);
        let dockns = Dockns::spawn(cmd);
        let pid = dockns.child.id();
        let addr = dockns.addr;
        ScaleServer {
            dockns,
            addr,
            pid,
            started,
            _dir: dir,
        }
    }

    /// Waits until every name of `samples` answers its address; how long after the start
    /// that was. The error names what is still missing and the end of dockns's log.
    pub fn wait_answers(&self, samples: &[Expect], timeout: Duration) -> Result<Duration, String> {
        let sock = probe_socket(self.addr);
        let deadline = Instant::now() + timeout;
        let mut missing: Vec<&Expect> = samples.iter().collect();
        while !missing.is_empty() {
            missing.retain(|e| !answers_once(&sock, e, Duration::from_millis(200)));
            if missing.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let log = self.dockns.log();
                let tail = log[log.len().saturating_sub(5)..].join("\n");
                return Err(format!(
                    "dockns did not answer {} of {} sample names within {timeout:?} of its start \
                     (e.g. {} A, expected {}); the end of its log:\n{tail}",
                    missing.len(),
                    samples.len(),
                    missing[0].qname,
                    missing[0].ip
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(self.started.elapsed())
    }

    /// Resident set size now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_field(self.pid, "VmRSS:")
    }

    /// Thread count now.
    pub fn threads(&self) -> u64 {
        status_field(self.pid, "Threads:")
    }
}

fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn probe_socket(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind the probe socket");
    s.connect(server).expect("connect the probe socket");
    s
}

/// Whether a reply is NOERROR for `e.qname` with `e.ip` among its A records.
fn reply_has(buf: &[u8], e: &Expect) -> bool {
    let Ok(m) = Message::from_vec(buf) else {
        return false;
    };
    let same_question = m.queries.first().is_some_and(|q| {
        q.name()
            .to_ascii()
            .trim_end_matches('.')
            .eq_ignore_ascii_case(&e.qname)
    });
    same_question
        && m.metadata.response_code == ResponseCode::NoError
        && m.answers
            .iter()
            .any(|rr| matches!(&rr.data, RData::A(a) if a.0 == e.ip))
}

/// One question, one wait of up to `wait` for its answer.
fn answers_once(sock: &UdpSocket, e: &Expect, wait: Duration) -> bool {
    let q = query_bytes(rand_id(), &e.qname, RecordType::A, None);
    if sock.send(&q).is_err() {
        return false;
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = sock.set_read_timeout(Some(left));
        match sock.recv(&mut buf) {
            Ok(n) if reply_has(&buf[..n], e) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Whether `sock` has a datagram to read within `wait` (ppoll: a high-resolution timeout).
fn readable_within(sock: &UdpSocket, wait: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd for a socket this function borrows, a valid timespec, no
    // signal mask; ppoll writes only `pfd.revents`.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    n > 0 && pfd.revents != 0
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x4d00);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Asks `e` every `every` until an answer carries its address (the time of that answer), or
/// `timeout` passes (`None`). Replies to earlier questions of the same name count.
fn poll_resolvable(
    sock: &UdpSocket,
    e: &Expect,
    from: Instant,
    every: Duration,
    timeout: Duration,
) -> Option<Instant> {
    let deadline = from + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let q = query_bytes(rand_id(), &e.qname, RecordType::A, None);
        let _ = sock.send(&q);
        let next = (now + every).min(deadline);
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Not SO_RCVTIMEO: the kernel rounds it up to whole scheduler ticks (a 500 µs
            // timeout waits 4-8 ms at HZ=250), which made the probe ask every ~8 ms and
            // measure "resolvable" that coarsely. ppoll sleeps on a high-resolution timer.
            if !readable_within(sock, left) {
                break;
            }
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let at = Instant::now();
                    if reply_has(&buf[..n], e) {
                        return Some(at);
                    }
                }
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break
                }
                // ECONNREFUSED from an earlier send: dockns is gone; the deadline ends it.
                Err(_) => std::thread::sleep(every),
            }
        }
    }
}

/// CPU time of a process's threads, split into the UDP listener workers (`udp-N`) and the
/// rest, read per thread in nanoseconds from `/proc/PID/task/TID/schedstat`.
pub struct Cpu {
    pid: u32,
}

/// One reading of [`Cpu`].
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    /// When it was read.
    pub at: Option<Instant>,
    /// Nanoseconds on CPU of every thread but the UDP workers.
    pub other_ns: u64,
    /// Nanoseconds on CPU of the UDP workers.
    pub udp_ns: u64,
    /// The threads counted in `other_ns`, with their time.
    pub other: HashMap<u32, u64>,
}

impl Cpu {
    /// Reads the threads of `pid`.
    pub fn new(pid: u32) -> Cpu {
        Cpu { pid }
    }

    /// Whether a thread name is a UDP listener worker's (src/dns/engine.rs names them).
    pub fn is_udp_worker(name: &str) -> bool {
        name.strip_prefix("udp-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The threads now: (TID, name). Names are read every time: a thread takes its name
    /// when it first runs, and a TID may be reused.
    pub fn threads(&self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return out;
        };
        for ent in dir.flatten() {
            let Some(tid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let name = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", self.pid))
                .unwrap_or_default()
                .trim()
                .to_string();
            out.push((tid, name));
        }
        out.sort();
        out
    }

    /// Reads every thread's CPU time now.
    pub fn sample(&self) -> CpuSample {
        let mut s = CpuSample {
            at: Some(Instant::now()),
            ..CpuSample::default()
        };
        for (tid, name) in self.threads() {
            let Ok(text) =
                std::fs::read_to_string(format!("/proc/{}/task/{tid}/schedstat", self.pid))
            else {
                continue;
            };
            let ns: u64 = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if Cpu::is_udp_worker(&name) {
                s.udp_ns += ns;
            } else {
                s.other_ns += ns;
                s.other.insert(tid, ns);
            }
        }
        s
    }
}

impl CpuSample {
    /// Nanoseconds the non-UDP threads spent from `earlier` to this sample, thread by thread
    /// (a thread that started since counts whole), and how many of the threads counted then
    /// had exited (their time since `earlier` is lost, never subtracted).
    pub fn other_since(&self, earlier: &CpuSample) -> (i64, usize) {
        let gone = earlier
            .other
            .keys()
            .filter(|t| !self.other.contains_key(t))
            .count();
        let spent: u64 = self
            .other
            .iter()
            .map(|(tid, &now)| match earlier.other.get(tid) {
                // A lower count is a new thread that reused the TID.
                Some(&then) if then <= now => now - then,
                _ => now,
            })
            .sum();
        (spent as i64, gone)
    }

    /// Seconds from `earlier` to this sample.
    pub fn secs_since(&self, earlier: &CpuSample) -> f64 {
        match (self.at, earlier.at) {
            (Some(a), Some(b)) => a.saturating_duration_since(b).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// How the start events are sent.
#[derive(Clone, Debug)]
pub struct EventPlan {
    /// How many.
    pub count: usize,
    /// Events per second (each waits for the previous one to be resolvable).
    pub rate: f64,
    /// How long an event may take to be resolvable before it counts as failed.
    pub timeout: Duration,
    /// How often the probe asks.
    pub poll: Duration,
    /// Stop starting events at this instant (the end of the query load).
    pub stop_at: Option<Instant>,
    /// CPU rate of the non-UDP threads without events (ns per second), subtracted.
    pub idle_ns_per_s: f64,
}

/// What one event cost.
#[derive(Clone, Debug)]
pub struct EventResult {
    /// Event number.
    pub n: usize,
    /// Docker 20.10's `create`, `network connect` per network, then `start` (else `start`
    /// alone, the container already running).
    pub with_connect: bool,
    /// First event written → first answer with the new address (`None`: timed out).
    pub latency: Option<Duration>,
    /// Non-UDP CPU from just before the event to just before the next one, minus the idle
    /// rate over that time, in ns (may be slightly negative when the idle rate overshoots).
    pub cpu_ns: i64,
    /// The same, from just before the event until it was resolvable.
    pub cpu_to_resolvable_ns: i64,
    /// Non-UDP threads that exited in the window (their CPU in it is missing).
    pub exited_threads: usize,
}

/// Sends start events to the world one by one, each a new container, and measures each.
/// Even events are sent as Docker 20.10 sends a `docker start` (`create`, a `network connect`
/// per network, `start`: moby emits the connects while it sets up the sandbox, before the
/// state is running); odd ones as a `start` alone for a container that is already running.
/// An event's CPU window runs from just before it to just before the next one (or one
/// interval after it, for the last), so trailing work is counted and no time is counted twice.
pub fn run_events(world: &mut World, server: &ScaleServer, plan: &EventPlan) -> Vec<EventResult> {
    let cpu = Cpu::new(server.pid);
    let sock = probe_socket(server.addr);
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    let mut out: Vec<EventResult> = Vec::with_capacity(plan.count);
    // The open window: its start, and the sample when the event was resolvable.
    let mut open: Option<(CpuSample, CpuSample)> = None;
    let close =
        |out: &mut Vec<EventResult>, open: Option<(CpuSample, CpuSample)>, end: &CpuSample| {
            if let (Some((start, resolved)), Some(last)) = (open, out.last_mut()) {
                let idle = |s: &CpuSample| (plan.idle_ns_per_s * s.secs_since(&start)) as i64;
                let (spent, gone) = end.other_since(&start);
                last.cpu_ns = spent - idle(end);
                last.cpu_to_resolvable_ns = resolved.other_since(&start).0 - idle(&resolved);
                last.exited_threads = gone;
            }
        };
    let mut slot = Instant::now();
    for i in 0..plan.count {
        if plan.stop_at.is_some_and(|s| Instant::now() + interval > s) {
            break;
        }
        let j = world.added;
        // The container is in the fake before its events, as in the daemon.
        // Half of the connect-first ones are on two networks (two connect events).
        let c = world.new_container(j, i % 2 == 0, i % 4 == 0);
        let start = cpu.sample();
        close(&mut out, open.take(), &start);
        let t0 = Instant::now();
        if c.with_connect {
            world.engine.container_event("create", &c.id);
            for net in &c.net_ids {
                world.engine.network_event("connect", net, &c.id);
            }
            world.engine.edit(&c.id, |x| x.running = true);
        }
        world.engine.container_event("start", &c.id);
        let resolved = poll_resolvable(&sock, &c.expect, t0, plan.poll, plan.timeout);
        let at_resolved = cpu.sample();
        out.push(EventResult {
            n: j,
            with_connect: c.with_connect,
            latency: resolved.map(|at| at.saturating_duration_since(t0)),
            cpu_ns: 0,
            cpu_to_resolvable_ns: 0,
            exited_threads: 0,
        });
        open = Some((start, at_resolved));
        slot += interval;
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        } else {
            slot = now;
        }
    }
    let end = cpu.sample();
    close(&mut out, open.take(), &end);
    out
}

/// The `q`-quantile (0..=1) of `v` (nearest rank; `None` when empty).
pub fn quantile<T: Copy + Ord>(v: &[T], q: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

/// The result of one dnsperf run.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Queries per second.
    pub qps: f64,
    /// Queries sent.
    pub sent: u64,
    /// Queries answered.
    pub completed: u64,
    /// Queries lost (no answer within dnsperf's timeout).
    pub lost: u64,
    /// dnsperf's `Response codes:` line.
    pub rcodes: String,
}

/// dnsperf on PATH, or the one-line reason it is not.
pub fn dnsperf_available() -> Result<(), String> {
    match std::process::Command::new("dnsperf")
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "dnsperf is needed for the query load and cannot be run ({e}): apt-get install dnsperf"
        )),
    }
}

/// No query load for `secs` seconds (a `sleep` child in dnsperf's place, so a phase lasts as
/// long either way); [`Load::wait`] then reads an empty load (0 queries/s).
pub fn start_no_load(secs: u64) -> std::process::Child {
    std::process::Command::new("sleep")
        .arg(secs.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sleep: {e}"))
}

/// dnsperf against `server` for `secs` seconds with `clients` sockets and `inflight` queries
/// in flight, started now; read its result with [`Load::wait`].
pub fn start_load(
    server: SocketAddr,
    queries: &Path,
    secs: u64,
    clients: u32,
    inflight: u32,
) -> std::process::Child {
    std::process::Command::new("dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .arg("-d")
        .arg(queries)
        .args(["-l", &secs.to_string(), "-c", &clients.to_string()])
        .args(["-q", &inflight.to_string(), "-t", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run dnsperf: {e} (apt-get install dnsperf)"))
}

impl Load {
    /// Waits for a dnsperf started by [`start_load`] and reads its summary.
    pub fn wait(child: std::process::Child) -> Result<Load, String> {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("dnsperf: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.is_empty() && out.status.success() {
            // `start_no_load`: nothing was asked.
            return Ok(Load::default());
        }
        let num = |key: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        let qps = num("Queries per second:").ok_or_else(|| {
            format!(
                "dnsperf printed no summary ({}):\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok(Load {
            qps,
            sent: num("Queries sent:").unwrap_or(0.0) as u64,
            completed: num("Queries completed:").unwrap_or(0.0) as u64,
            lost: num("Queries lost:").unwrap_or(0.0) as u64,
            rcodes: text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Response codes:"))
                .unwrap_or("")
                .trim()
                .to_string(),
        })
    }
}
