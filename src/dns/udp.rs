//! UDP workers: one OS thread and one SO_REUSEPORT socket each, so the kernel spreads queries
//! over the workers with no shared queue.
//!
//! A worker receives a batch of datagrams (`recvmmsg`), loads the current snapshot once for the
//! batch (a lock-free `arc-swap` guard), answers local names into a batch of reply buffers and
//! sends them all with one `sendmmsg`: no allocation, no lock, no `.await`, no log line.
//! Forwarded questions the cache can answer go out in the same batch (one shard lock, no
//! allocation); the others are sent upstream from this thread on the forwarder's socket pool
//! (`forward/pool.rs`: no task, no socket per question) and answered by its receiver thread,
//! bounded by the forwarder's in-flight limit (REFUSED beyond it). The thread polls a stop flag between
//! batches (the socket has a short read timeout), which is how listeners are removed.

use super::answer::{self, Action};
use super::guard::Guard;
use crate::forward::engine::UdpClient;
use crate::forward::Forwarder;
use crate::mmsg::MsgBatch;
use crate::model::SnapshotHandle;
use crate::stats::{log_reply, since, stamp, AnswerSource, Stamp, WorkerStats};
use crate::wire::{rcode, MAX_MESSAGE};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What a UDP worker needs.
pub struct UdpWorker {
    /// The socket (shared with the upstream receiver thread, which sends forwarded replies).
    pub socket: Arc<UdpSocket>,
    /// Address the socket is bound to; `None` for a wildcard bind.
    pub local: Option<IpAddr>,
    /// Current tables.
    pub snapshot: SnapshotHandle,
    /// Upstream pool.
    pub forwarder: Arc<Forwarder>,
    /// Runtime (for the health probes the upstream receiver starts).
    pub runtime: tokio::runtime::Handle,
    /// Set to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Counters for forwarded replies (the worker's own are written only by its thread).
    pub forward_stats: Arc<WorkerStats>,
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

/// Datagrams moved per system call.
const BATCH: usize = 32;
/// Receive buffer per datagram: any UDP payload fits (a 64 KiB datagram of garbage still gets
/// its FORMERR). The kernel only touches the bytes it writes, so the untouched tail of each
/// buffer costs address space, not memory.
const MAX_UDP_QUERY: usize = MAX_MESSAGE + 1;
/// Room for one UDP response (dockns caps its own UDP responses at 1232 bytes; error and
/// cached responses are checked against this size before they are written).
const UDP_OUT: usize = 4096;

/// Batch size from which the worker keeps polling instead of sleeping, and for how long.
const SPIN_MIN_BATCH: usize = 4;
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

impl UdpWorker {
    /// Runs until the stop flag is set.
    ///
    /// Each round receives up to [`BATCH`] datagrams with one `recvmmsg` (blocking for the
    /// first only), answers them against one snapshot load into a second batch, and sends all
    /// replies with one `sendmmsg`. Buffers are allocated once, before the loop.
    pub fn run(self) {
        let fd = self.socket.as_raw_fd();
        let mut inb = MsgBatch::new(BATCH, MAX_UDP_QUERY, true);
        let mut outb = MsgBatch::new(BATCH, UDP_OUT, true);
        let mut scratch = vec![0u8; UDP_OUT];
        // Under load (the last batch held several datagrams) the worker polls without sleeping
        // for a short while before it blocks again: a sleep/wake cycle per batch costs more
        // CPU than a few empty non-blocking receives.
        let mut spin_until: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let flags = if spin_until.is_some() {
                libc::MSG_DONTWAIT
            } else {
                libc::MSG_WAITFORONE
            };
            // Timeouts (the socket's 100 ms read timeout, so the stop flag is polled), EINTR
            // and ICMP errors from earlier sends (ECONNREFUSED) are all not fatal.
            let n = match inb.recv(fd, BATCH, flags) {
                Ok(n) if n > 0 => n,
                _ => {
                    if spin_until.is_some_and(|t| Instant::now() >= t) {
                        spin_until = None;
                    }
                    continue;
                }
            };
            // One clock read per batch: latency is counted from the batch's arrival.
            let t0 = stamp();
            spin_until = (n >= SPIN_MIN_BATCH).then(|| Instant::now() + SPIN);
            let mut replies = 0;
            {
                let snap = self.snapshot.load();
                for i in 0..n {
                    let (Some(src), false) = (inb.addr(i), inb.truncated(i)) else {
                        self.stats.dropped();
                        continue;
                    };
                    let pkt = inb.packet(i);
                    let client = canonical(src.ip());
                    let out = outb.buf_mut(replies);
                    let action = match self.guard.screen(&snap, client, pkt, out, false) {
                        Some(refused) => refused,
                        None => {
                            let local = self.guard.scope_local(client, self.local);
                            answer::handle(&snap, client, local, pkt, out, false)
                        }
                    };
                    let (len, source) = match action {
                        Action::Reply(len, outcome) => {
                            self.stats.record(outcome, false);
                            (len, AnswerSource::Local)
                        }
                        Action::Drop => {
                            self.stats.dropped();
                            continue;
                        }
                        // A cached forward answer goes out with this batch; only a miss
                        // becomes a task.
                        Action::Forward => match self.forwarder.answer_from_cache(
                            pkt,
                            outb.buf_mut(replies),
                            false,
                            snap.client_servers(client),
                        ) {
                            Some(len) => {
                                self.stats.forwarded();
                                (len, AnswerSource::Cache)
                            }
                            None => {
                                let servers = snap.client_servers(client);
                                let within_rate = self.guard.allow_forward(&snap, client);
                                self.forward(pkt, src, servers, within_rate, &mut scratch, t0);
                                continue;
                            }
                        },
                    };
                    outb.set_len(replies, len);
                    outb.copy_addr(replies, &inb, i);
                    let reply = &outb.buf_mut(replies)[..len];
                    self.stats.answered(false, source, reply, since(t0));
                    log_reply(src, false, source, reply);
                    replies += 1;
                }
            }
            if replies > 0 {
                outb.send_all(fd, replies);
            }
        }
    }

    fn forward(
        &self,
        pkt: &[u8],
        src: SocketAddr,
        servers: Option<&Arc<[SocketAddr]>>,
        within_rate: bool,
        out: &mut [u8],
        t0: Stamp,
    ) {
        // Over the in-flight bound: REFUSED; over the client's rate: SERVFAIL (see guard).
        let mut limited_rcode = rcode::REFUSED;
        let permit = if within_rate {
            let p = self.forwarder.try_acquire();
            if p.is_none() {
                self.stats.refused();
            }
            p
        } else {
            self.stats.rate_limited();
            limited_rcode = Guard::OVER_RATE_RCODE;
            None
        };
        let Some(permit) = permit else {
            let n = answer::error_response(pkt, limited_rcode, out, false);
            if n > 0 {
                let reply = &out[..n];
                self.stats
                    .answered(false, AnswerSource::Local, reply, since(t0));
                log_reply(src, false, AnswerSource::Local, reply);
                let _ = self.socket.send_to(reply, src);
            }
            return;
        };
        self.stats.forwarded();
        // Sent upstream from this thread on a pool socket; the pool's receiver thread answers
        // the client from this listener socket. No task, no socket, no await.
        self.forwarder.forward_udp(
            pkt,
            UdpClient {
                socket: self.socket.clone(),
                to: src,
                t0,
                stats: self.forward_stats.clone(),
                permit: Some(permit),
            },
            servers,
            &self.runtime,
        );
    }
}
