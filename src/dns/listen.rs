//! Listeners: binding UDP and TCP on an address, and the set of listeners that can grow and
//! shrink at run time (gateway and sidecar addresses follow Docker networks).
//!
//! Every bind error becomes one sentence that names the address, the cause and the fix.
//! A fixed port is first probed without SO_REUSEPORT, so a port already held by another server
//! (even another dockns) is reported instead of silently shared.

use super::engine::{worker_stats, UdpEngine};
use super::guard::Guard;
use super::tcp::{accept_loop, TcpContext};
use super::udp::{Slot, UdpDeps};
use crate::forward::Forwarder;
use crate::model::SnapshotHandle;
use crate::stats::{Detailed, Stats, WorkerStats};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// A listener that could not be started, phrased for the operator: what, where, the cause
/// (also the error's [`source`](std::error::Error::source)) and the fix, on one line.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A DNS listener's socket could not be opened, bound or listened on.
    #[error("cannot listen on {addr} ({proto}): {source}; {fix}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// "udp" or "tcp".
        proto: &'static str,
        /// The system's error.
        source: std::io::Error,
        /// What to do about it.
        fix: String,
    },
    /// The admin API's socket could not be opened, bound or listened on.
    #[error("cannot listen for the admin API on {addr} (tcp): {source}; {fix}")]
    Admin {
        /// The address asked for.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
        /// What to do about it.
        fix: &'static str,
    },
    /// The kernel did not say which address a socket was bound to.
    #[error("cannot read the bound address of {addr}")]
    BoundAddress {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A listener's worker thread could not be started.
    #[error("cannot start a UDP worker thread: {source}")]
    Thread {
        /// The system's error.
        source: std::io::Error,
    },
}

/// An owned copy of `e` that displays the same (the OS error code is kept).
pub fn owned_io_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

fn bind_error(addr: SocketAddr, proto: &'static str, e: &std::io::Error) -> BindError {
    let fix = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another DNS server (or another dockns) is using it: stop it, or choose another address with --listen"
                .to_string()
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: run as root, `setcap cap_net_bind_service=+ep` the binary, or use a port such as {}:5353",
            addr.ip()
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface on this machine has that address: check the address, or use 127.0.0.1".to_string()
        }
        _ => "check the address in [server] listen".to_string(),
    };
    BindError::Listen {
        addr,
        proto,
        source: owned_io_error(e),
        fix,
    }
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Generous buffers absorb bursts while a worker is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s)
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Sockets bound for one listener address.
pub struct BoundSockets {
    /// The address actually bound (port resolved when 0 was asked).
    pub addr: SocketAddr,
    /// One non-blocking UDP socket per worker.
    pub udp: Vec<UdpSocket>,
    /// The TCP listener.
    pub tcp: std::net::TcpListener,
}

/// Binds UDP (one SO_REUSEPORT socket per worker) and TCP on `addr`. Port 0 picks one free port
/// for both protocols.
pub fn bind(addr: SocketAddr, workers: usize) -> Result<BoundSockets, BindError> {
    let workers = workers.max(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        if addr.port() != 0 {
            // Probe: fails if anyone holds the port, even with SO_REUSEPORT.
            drop(udp_socket(addr, false).map_err(|e| bind_error(addr, "udp", &e))?);
        }
        let first = udp_socket(addr, true).map_err(|e| bind_error(addr, "udp", &e))?;
        let actual: SocketAddr = first
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or(BindError::BoundAddress { addr })?;
        let tcp = match tcp_listener(actual) {
            Ok(t) => t,
            Err(e)
                if addr.port() == 0
                    && attempts < 20
                    && e.kind() == std::io::ErrorKind::AddrInUse =>
            {
                continue
            }
            Err(e) => return Err(bind_error(actual, "tcp", &e)),
        };
        let mut udp = vec![first];
        for _ in 1..workers {
            udp.push(udp_socket(actual, true).map_err(|e| bind_error(actual, "udp", &e))?);
        }
        let udp = udp
            .into_iter()
            .map(|s| {
                s.set_nonblocking(true)?;
                Ok(UdpSocket::from(s))
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| bind_error(actual, "udp", &e))?;
        return Ok(BoundSockets {
            addr: actual,
            udp,
            tcp,
        });
    }
}

/// Everything a listener needs from the server.
#[derive(Clone)]
pub struct ListenerDeps {
    /// Current tables.
    pub snapshot: SnapshotHandle,
    /// Upstream pool.
    pub forwarder: Arc<Forwarder>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Runtime for tasks.
    pub runtime: tokio::runtime::Handle,
    /// TCP idle timeout.
    pub tcp_idle_timeout: Duration,
    /// TCP connection slots, shared by all listeners.
    pub tcp_connections: Arc<Semaphore>,
    /// UDP worker threads (shared by every listener).
    pub workers: usize,
    /// Access control and forward rate limits.
    pub guard: Arc<Guard>,
}

/// One running listener: its UDP sockets live in the engine's workers under `id`.
struct Running {
    bound: SocketAddr,
    id: usize,
    /// Counters of its UDP sockets, one per worker (retired on removal).
    udp_stats: Vec<Arc<WorkerStats>>,
    /// Counters of its TCP connections (retired when the last connection ends).
    tcp_stats: Arc<WorkerStats>,
    stop_tcp: watch::Sender<bool>,
    tcp_task: tokio::task::JoinHandle<()>,
}

/// A running listener, for reports (`/metrics`, the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveListener {
    /// The address asked for.
    pub asked: SocketAddr,
    /// The address bound (port resolved when 0 was asked).
    pub bound: SocketAddr,
    /// What it answered itself, UDP and TCP (forwarded replies are counted per worker).
    pub queries: Detailed,
}

struct Inner {
    engine: Option<UdpEngine>,
    next_id: usize,
    running: BTreeMap<SocketAddr, Running>,
}

/// The set of running listeners, keyed by the address asked for. Its UDP sockets are served by
/// one [`UdpEngine`] (a fixed number of threads, started with the first listener), its TCP
/// listeners by one accept task each on the runtime: no thread per listener.
pub struct ListenerSet {
    deps: ListenerDeps,
    /// All TCP connection slots (to wait for every connection to drain on shutdown).
    tcp_slots: u32,
    inner: Mutex<Inner>,
}

impl ListenerSet {
    /// An empty set.
    pub fn new(deps: ListenerDeps) -> ListenerSet {
        ListenerSet {
            tcp_slots: deps.tcp_connections.available_permits() as u32,
            deps,
            inner: Mutex::new(Inner {
                engine: None,
                next_id: 0,
                running: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a listener on `addr` (UDP on every engine worker, and TCP); returns the bound
    /// address. Starting an address that is already running returns its bound address.
    pub fn add(&self, addr: SocketAddr) -> Result<SocketAddr, BindError> {
        let mut inner = self.lock();
        if let Some(r) = inner.running.get(&addr) {
            return Ok(r.bound);
        }
        if inner.engine.is_none() {
            let deps = UdpDeps {
                snapshot: self.deps.snapshot.clone(),
                forwarder: self.deps.forwarder.clone(),
                runtime: self.deps.runtime.clone(),
                guard: self.deps.guard.clone(),
            };
            let engine = UdpEngine::start(self.deps.workers, &deps, &self.deps.stats)
                .map_err(|source| BindError::Thread { source })?;
            inner.engine = Some(engine);
        }
        let workers = inner.engine.as_ref().map_or(1, UdpEngine::workers);
        let sockets = bind(addr, workers)?;
        let bound = sockets.addr;
        let local = (!bound.ip().is_unspecified()).then(|| bound.ip());
        let (stop_tcp, tcp_task, tcp_stats) = self.start_tcp(sockets.tcp, bound, local)?;
        let udp_stats = worker_stats(&self.deps.stats, workers);
        let slots = sockets
            .udp
            .into_iter()
            .zip(&udp_stats)
            .map(|(socket, stats)| Slot {
                socket: Arc::new(socket),
                local,
                stats: stats.clone(),
            })
            .collect();
        let id = inner.next_id;
        inner.next_id += 1;
        if let Some(engine) = &inner.engine {
            engine.add(id, slots);
        }
        inner.running.insert(
            addr,
            Running {
                bound,
                id,
                udp_stats,
                tcp_stats,
                stop_tcp,
                tcp_task,
            },
        );
        tracing::info!(%bound, "listening (udp+tcp)");
        Ok(bound)
    }

    /// Starts the accept task of a TCP listener.
    fn start_tcp(
        &self,
        listener: std::net::TcpListener,
        bound: SocketAddr,
        local: Option<IpAddr>,
    ) -> Result<TcpStart, BindError> {
        let (stop_tcp, stop_rx) = watch::channel(false);
        let stats = self.deps.stats.worker();
        let ctx = Arc::new(TcpContext {
            local,
            snapshot: self.deps.snapshot.clone(),
            forwarder: self.deps.forwarder.clone(),
            stats: stats.clone(),
            registry: self.deps.stats.clone(),
            idle_timeout: self.deps.tcp_idle_timeout,
            connections: self.deps.tcp_connections.clone(),
            guard: self.deps.guard.clone(),
        });
        let tcp = {
            let _guard = self.deps.runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| bind_error(bound, "tcp", &e))?
        };
        let task = self.deps.runtime.spawn(accept_loop(tcp, ctx, stop_rx));
        Ok((stop_tcp, task, stats))
    }

    /// Stops the listener started for `addr`, if any: its UDP sockets are closed and their
    /// counters retired before this returns; its TCP connections finish on their own.
    pub fn remove(&self, addr: SocketAddr) {
        let mut inner = self.lock();
        let Some(r) = inner.running.remove(&addr) else {
            return;
        };
        if let Some(engine) = &inner.engine {
            engine.remove(r.id);
        }
        drop(inner);
        let _ = r.stop_tcp.send(true);
        for w in &r.udp_stats {
            self.deps.stats.retire(w);
        }
        drop(r);
        release_freed_memory();
        tracing::info!(bound = %addr, "stopped listening");
    }

    /// The addresses asked for, with what they are bound to.
    pub fn addresses(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.lock()
            .running
            .iter()
            .map(|(a, r)| (*a, r.bound))
            .collect()
    }

    /// The running listeners with what each answered so far.
    pub fn live(&self) -> Vec<LiveListener> {
        self.lock()
            .running
            .iter()
            .map(|(a, r)| LiveListener {
                asked: *a,
                bound: r.bound,
                queries: Stats::sum(r.udp_stats.iter().chain([&r.tcp_stats])),
            })
            .collect()
    }

    /// Number of UDP worker threads running (0 before the first listener).
    pub fn udp_workers(&self) -> usize {
        self.lock().engine.as_ref().map_or(0, UdpEngine::workers)
    }

    /// Stops every listener and the UDP workers and waits for them and the accept loops to
    /// end, then for open TCP connections to drain (answer what they read, wait up to
    /// `SHUTDOWN_DRAIN` for their forwards, flush, close).
    pub async fn stop_all(&self) {
        let (engine, all) = {
            let mut inner = self.lock();
            (inner.engine.take(), std::mem::take(&mut inner.running))
        };
        for r in all.values() {
            let _ = r.stop_tcp.send(true);
        }
        if let Some(engine) = engine {
            let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
        }
        for r in all.into_values() {
            let _ = r.tcp_task.await;
            for w in &r.udp_stats {
                self.deps.stats.retire(w);
            }
        }
        let drain = super::tcp::SHUTDOWN_DRAIN + Duration::from_millis(300);
        let _ = tokio::time::timeout(
            drain,
            self.deps.tcp_connections.acquire_many(self.tcp_slots),
        )
        .await;
    }
}

/// Hands heap pages freed by a removed listener back to the OS: glibc keeps freed pages in its
/// heap otherwise, and RSS would stay at its high-water mark after network churn (each listener
/// costs a few KiB of counters and task state).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own heap; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

type TcpStart = (
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    Arc<WorkerStats>,
);
