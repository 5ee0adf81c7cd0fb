//! UDP workers: one OS thread and one SO_REUSEPORT socket each, so the kernel spreads queries
//! over the workers with no shared queue.
//!
//! A worker receives a datagram, loads the current snapshot (a lock-free `arc-swap` guard),
//! answers local names in place and sends the reply: no allocation, no lock, no `.await`, no log
//! line. Questions that must go upstream are handed to the tokio runtime as a task, bounded by the
//! forwarder's in-flight limit (REFUSED beyond it). The thread polls a stop flag between
//! datagrams (the socket has a short read timeout), which is how listeners are removed.

use super::answer::{self, Action};
use super::guard::Guard;
use super::stats::{log_reply, AnswerSource, WorkerStats};
use super::wire::{rcode, MAX_MESSAGE};
use crate::forward::Forwarder;
use crate::model::SnapshotHandle;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What a UDP worker needs.
pub struct UdpWorker {
    /// The socket (shared with forward tasks that send the late replies).
    pub socket: Arc<UdpSocket>,
    /// Address the socket is bound to; `None` for a wildcard bind.
    pub local: Option<IpAddr>,
    /// Current tables.
    pub snapshot: SnapshotHandle,
    /// Upstream pool.
    pub forwarder: Arc<Forwarder>,
    /// Runtime that runs forward tasks.
    pub runtime: tokio::runtime::Handle,
    /// Set to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Access control and forward rate limits.
    pub guard: Arc<Guard>,
}

/// Clients may reach us over an IPv4-mapped IPv6 address: scope by the IPv4 address.
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl UdpWorker {
    /// Runs until the stop flag is set.
    pub fn run(self) {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        let mut out = vec![0u8; MAX_MESSAGE];
        while !self.stop.load(Ordering::Relaxed) {
            let (n, src) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                // ICMP errors from earlier sends (ECONNREFUSED) and the like: not fatal.
                Err(_) => continue,
            };
            let t0 = Instant::now();
            let pkt = &buf[..n];
            let client = canonical(src.ip());
            let action = {
                let snap = self.snapshot.load();
                match self.guard.screen(&snap, client, pkt, &mut out, false) {
                    Some(refused) => refused,
                    None => answer::handle(&snap, client, self.local, pkt, &mut out, false),
                }
            };
            match action {
                Action::Reply(len, outcome) => {
                    let reply = &out[..len];
                    self.stats.record(outcome, false);
                    self.stats.answered(
                        false,
                        AnswerSource::Local,
                        reply,
                        t0.elapsed().as_nanos() as u64,
                    );
                    log_reply(src, false, AnswerSource::Local, reply);
                    let _ = self.socket.send_to(reply, src);
                }
                Action::Forward => self.forward(pkt, src, client, &mut out, t0),
                Action::Drop => self.stats.dropped(),
            }
        }
    }

    fn forward(&self, pkt: &[u8], src: SocketAddr, client: IpAddr, out: &mut [u8], t0: Instant) {
        // Over its forward rate or over the in-flight bound: REFUSED.
        let permit = if self.guard.allow_forward(client) {
            let p = self.forwarder.try_acquire();
            if p.is_none() {
                self.stats.refused();
            }
            p
        } else {
            self.stats.rate_limited();
            None
        };
        let Some(permit) = permit else {
            let n = answer::error_response(pkt, rcode::REFUSED, out, false);
            if n > 0 {
                let reply = &out[..n];
                self.stats.answered(
                    false,
                    AnswerSource::Local,
                    reply,
                    t0.elapsed().as_nanos() as u64,
                );
                log_reply(src, false, AnswerSource::Local, reply);
                let _ = self.socket.send_to(reply, src);
            }
            return;
        };
        self.stats.forwarded();
        let pkt = pkt.to_vec();
        let socket = self.socket.clone();
        let forwarder = self.forwarder.clone();
        let stats = self.stats.clone();
        self.runtime.spawn(async move {
            let (resp, source) = forwarder.resolve_traced(&pkt, false).await;
            if !resp.is_empty() {
                stats.answered(false, source, &resp, t0.elapsed().as_nanos() as u64);
                log_reply(src, false, source, &resp);
                let _ = socket.send_to(&resp, src);
            }
            drop(permit);
        });
    }
}
