//! Listeners: binding UDP and TCP on an address, and the set of listeners that can grow and
//! shrink at run time (gateway and sidecar addresses follow Docker networks).
//!
//! Every bind error becomes one sentence that names the address, the cause and the fix.
//! A fixed port is first probed without SO_REUSEPORT, so a port already held by another server
//! (even another dockns) is reported instead of silently shared.

use super::guard::Guard;
use super::tcp::{accept_loop, TcpContext};
use super::udp::UdpWorker;
use crate::forward::Forwarder;
use crate::model::SnapshotHandle;
use crate::stats::Stats;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// One UDP socket per worker.
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
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
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
    /// UDP workers per listener.
    pub workers: usize,
    /// Access control and forward rate limits.
    pub guard: Arc<Guard>,
}

struct Running {
    stop_udp: Arc<AtomicBool>,
    stop_tcp: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    tcp_task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn stop(
        self,
    ) -> (
        Vec<std::thread::JoinHandle<()>>,
        tokio::task::JoinHandle<()>,
    ) {
        self.stop_udp.store(true, Ordering::Relaxed);
        let _ = self.stop_tcp.send(true);
        (self.threads, self.tcp_task)
    }
}

/// The set of running listeners, keyed by the address asked for.
pub struct ListenerSet {
    deps: ListenerDeps,
    /// All TCP connection slots (to wait for every connection to drain on shutdown).
    tcp_slots: u32,
    running: Mutex<BTreeMap<SocketAddr, (SocketAddr, Running)>>,
}

impl ListenerSet {
    /// An empty set.
    pub fn new(deps: ListenerDeps) -> ListenerSet {
        ListenerSet {
            tcp_slots: deps.tcp_connections.available_permits() as u32,
            deps,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts a listener on `addr` (UDP workers and TCP); returns the bound address.
    /// Starting an address that is already running returns its bound address.
    pub fn add(&self, addr: SocketAddr) -> Result<SocketAddr, BindError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bound, _)) = running.get(&addr) {
            return Ok(*bound);
        }
        let sockets = bind(addr, self.deps.workers)?;
        let bound = sockets.addr;
        let local = (!bound.ip().is_unspecified()).then(|| bound.ip());
        let stop_udp = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let forward_stats = self.deps.stats.worker();
        for (i, sock) in sockets.udp.into_iter().enumerate() {
            let worker = UdpWorker {
                socket: Arc::new(sock),
                local,
                snapshot: self.deps.snapshot.clone(),
                forwarder: self.deps.forwarder.clone(),
                runtime: self.deps.runtime.clone(),
                stop: stop_udp.clone(),
                stats: self.deps.stats.worker_owned(),
                forward_stats: forward_stats.clone(),
                guard: self.deps.guard.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("udp-{}-{i}", bound.port()))
                .spawn(move || worker.run())
                .map_err(|source| BindError::Thread { source })?;
            threads.push(t);
        }
        let (stop_tcp, stop_rx) = watch::channel(false);
        let ctx = Arc::new(TcpContext {
            local,
            snapshot: self.deps.snapshot.clone(),
            forwarder: self.deps.forwarder.clone(),
            stats: self.deps.stats.worker(),
            idle_timeout: self.deps.tcp_idle_timeout,
            connections: self.deps.tcp_connections.clone(),
            guard: self.deps.guard.clone(),
        });
        let tcp = {
            let _guard = self.deps.runtime.enter();
            tokio::net::TcpListener::from_std(sockets.tcp)
                .map_err(|e| bind_error(bound, "tcp", &e))?
        };
        let tcp_task = self.deps.runtime.spawn(accept_loop(tcp, ctx, stop_rx));
        running.insert(
            addr,
            (
                bound,
                Running {
                    stop_udp,
                    stop_tcp,
                    threads,
                    tcp_task,
                },
            ),
        );
        tracing::info!(%bound, "listening (udp+tcp)");
        Ok(bound)
    }

    /// Stops the listener started for `addr`, if any. Its threads finish within ~100 ms.
    pub fn remove(&self, addr: SocketAddr) {
        let r = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
        if let Some((bound, r)) = r {
            let _ = r.stop();
            tracing::info!(%bound, "stopped listening");
        }
    }

    /// The addresses asked for, with what they are bound to.
    pub fn addresses(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(a, (b, _))| (*a, *b))
            .collect()
    }

    /// Stops every listener and waits for the UDP threads and the accept loops to end, then for
    /// open TCP connections to drain (answer what they read, wait up to `SHUTDOWN_DRAIN` for
    /// their forwards, flush, close).
    pub async fn stop_all(&self) {
        let all: Vec<Running> =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .map(|(_, r)| r)
                .collect();
        for r in all {
            let (threads, task) = r.stop();
            let _ = task.await;
            let _ = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await;
        }
        let drain = super::tcp::SHUTDOWN_DRAIN + Duration::from_millis(300);
        let _ = tokio::time::timeout(
            drain,
            self.deps.tcp_connections.acquire_many(self.tcp_slots),
        )
        .await;
    }
}
