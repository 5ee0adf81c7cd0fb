//! Answering UDP: one worker's receive-answer-send cycle on one listener socket.
//!
//! A worker receives a batch of datagrams (`recvmmsg`), loads the current snapshot once for the
//! batch (a lock-free `arc-swap` guard), answers local names into a batch of reply buffers and
//! sends them all with one `sendmmsg`: no allocation, no lock, no `.await`, no log line.
//! Forwarded questions the cache can answer go out in the same batch (one shard lock, no
//! allocation); the others are sent upstream from this thread on the forwarder's socket pool
//! (`forward/pool.rs`: no task, no socket per question) and answered by its receiver thread,
//! bounded by the forwarder's in-flight limit (REFUSED beyond it).
//!
//! Replies never go to a source that cannot be one (port 0, unspecified, broadcast or multicast
//! addresses, RFC 1122 §3.2.1.3 and RFC 768): such datagrams are dropped and counted. Which
//! sockets to serve and when is the engine's job (`engine.rs`); this module never blocks.

use super::answer::{self, Action};
use super::guard::Guard;
use super::report::{ForwardAdmission, Reporter};
use crate::forward::engine::UdpClient;
use crate::forward::Forwarder;
use crate::mmsg::MsgBatch;
use crate::model::{Snapshot, SnapshotHandle};
use crate::stats::{stamp, Stamp, WorkerStats};
use crate::wire::MAX_MESSAGE;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// What every UDP worker needs from the server.
#[derive(Clone)]
pub struct UdpDeps {
    /// Current tables.
    pub snapshot: SnapshotHandle,
    /// Upstream pool.
    pub forwarder: Arc<Forwarder>,
    /// Runtime (for the health probes the upstream receiver starts).
    pub runtime: tokio::runtime::Handle,
    /// Access control and forward rate limits.
    pub guard: Arc<Guard>,
}

/// One listener socket as one worker serves it.
pub struct Slot {
    /// The socket (non-blocking; shared with the upstream receiver thread, which sends
    /// forwarded replies from it).
    pub socket: Arc<UdpSocket>,
    /// Address the socket is bound to; `None` for a wildcard bind.
    pub local: Option<IpAddr>,
    /// This worker's counters for this listener (written by the worker's thread only).
    pub stats: Arc<WorkerStats>,
}

/// Clients may reach us over an IPv4-mapped IPv6 address: scope by the IPv4 address.
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a datagram from `port` at `ip` (canonical) may be answered: not from port 0 (RFC 768:
/// no reply is expected) and not from an address that is never a host's own (unspecified,
/// broadcast, multicast: RFC 1122 §3.2.1.3 says to discard such datagrams).
#[inline]
pub fn replyable(ip: IpAddr, port: u16) -> bool {
    port != 0
        && match ip {
            IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
            IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
        }
}

/// Datagrams moved per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: any UDP payload fits (a 64 KiB datagram of garbage still gets
/// its FORMERR). The kernel only touches the bytes it writes, so the untouched tail of each
/// buffer costs address space, not memory.
const MAX_UDP_QUERY: usize = MAX_MESSAGE + 1;
/// Room for one UDP response (dockns caps its own UDP responses at 1232 bytes; error and
/// cached responses are checked against this size before they are written).
const UDP_OUT: usize = 4096;

/// How a [`UdpWorker::serve`] turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The socket has nothing more to read now; `busy` when its last batch was large (the
    /// worker may poll a little longer before it sleeps).
    Drained {
        /// The last batch held several datagrams.
        busy: bool,
    },
    /// The turn's budget ran out with datagrams possibly still queued.
    More,
}

/// Batch size from which a drained socket counts as busy.
const BUSY_BATCH: usize = 4;

/// One worker's buffers and what it answers with; serves any number of listener sockets, one
/// turn at a time.
pub struct UdpWorker {
    deps: UdpDeps,
    /// Counters for forwarded replies (written by the upstream receiver thread).
    forward_stats: Arc<WorkerStats>,
    inb: MsgBatch,
    outb: MsgBatch,
    scratch: Vec<u8>,
}

impl UdpWorker {
    /// A worker; its buffers are allocated here, once.
    pub fn new(deps: UdpDeps, forward_stats: Arc<WorkerStats>) -> UdpWorker {
        UdpWorker {
            deps,
            forward_stats,
            inb: MsgBatch::new(BATCH, MAX_UDP_QUERY, true),
            outb: MsgBatch::new(BATCH, UDP_OUT, true),
            scratch: vec![0u8; UDP_OUT],
        }
    }

    /// Serves `slot` for up to `budget` batches: each receives up to [`BATCH`] datagrams with
    /// one non-blocking `recvmmsg`, answers them against one snapshot load and sends all replies
    /// with one `sendmmsg`.
    pub fn serve(&mut self, slot: &Slot, budget: usize) -> Served {
        let fd = slot.socket.as_raw_fd();
        let mut busy = false;
        for _ in 0..budget {
            // EAGAIN ends the turn; EINTR and ICMP errors from earlier sends (ECONNREFUSED)
            // only cost a try.
            let n = match self.inb.recv(fd, BATCH, libc::MSG_DONTWAIT) {
                Ok(0) => return Served::Drained { busy },
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Served::Drained { busy }
                }
                Err(_) => continue,
            };
            busy = n >= BUSY_BATCH;
            // One clock read per batch: latency is counted from the batch's arrival.
            let replies = self.answer_batch(slot, n, stamp());
            if replies > 0 {
                self.outb.send_all(fd, replies);
            }
            // A short batch emptied the queue: whatever arrives later raises a new
            // (edge-triggered) readiness event, so no read is spent to hear EAGAIN.
            if n < BATCH {
                return Served::Drained { busy };
            }
        }
        Served::More
    }

    /// Answers received datagrams `0..n` into the out batch; returns how many replies it holds.
    fn answer_batch(&mut self, slot: &Slot, n: usize, t0: Stamp) -> usize {
        let report = Reporter::new(&slot.stats, false);
        let snap = self.deps.snapshot.load();
        let mut replies = 0;
        for i in 0..n {
            let Some(src) = self.inb.addr(i).filter(|_| !self.inb.truncated(i)) else {
                report.dropped();
                continue;
            };
            let client = canonical(src.ip());
            if !replyable(client, src.port()) {
                report.dropped();
                continue;
            }
            if let Some(len) = self.answer_one(&snap, slot, report, i, (client, src), replies, t0) {
                self.outb.set_len(replies, len);
                self.outb.copy_addr(replies, &self.inb, i);
                replies += 1;
            }
        }
        replies
    }

    /// Answers datagram `i` into reply slot `at`; `None` when it gets no reply in this batch
    /// (dropped, or sent upstream).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn answer_one(
        &mut self,
        snap: &Snapshot,
        slot: &Slot,
        report: Reporter<'_>,
        i: usize,
        (client, src): (IpAddr, SocketAddr),
        at: usize,
        t0: Stamp,
    ) -> Option<usize> {
        let pkt = self.inb.packet(i);
        let out = self.outb.buf_mut(at);
        let action = match self.deps.guard.screen(snap, client, pkt, out, false) {
            Some(refused) => refused,
            None => {
                let local = self.deps.guard.scope_local(client, slot.local);
                answer::handle(snap, client, local, pkt, out, false)
            }
        };
        match action {
            Action::Reply(len, outcome) => {
                report.local(src, outcome, &out[..len], t0);
                Some(len)
            }
            Action::Drop => {
                report.dropped();
                None
            }
            // A cached forward answer goes out with this batch; only a miss goes upstream.
            Action::Forward => {
                let servers = snap.client_servers(client);
                match self
                    .deps
                    .forwarder
                    .answer_from_cache(pkt, out, false, servers)
                {
                    Some(len) => {
                        report.cache_hit(src, &out[..len], t0);
                        Some(len)
                    }
                    None => {
                        let deps = &self.deps;
                        let admitted = report.admit_forward(
                            (&deps.guard, snap),
                            &deps.forwarder,
                            (client, src),
                            pkt,
                            &mut self.scratch,
                            t0,
                        );
                        match admitted {
                            ForwardAdmission::Refused(0) => {}
                            ForwardAdmission::Refused(n) => {
                                let _ = slot.socket.send_to(&self.scratch[..n], src);
                            }
                            // Sent upstream from this thread on a pool socket; the pool's
                            // receiver thread answers the client from this listener socket.
                            ForwardAdmission::Go(permit) => deps.forwarder.forward_udp(
                                pkt,
                                UdpClient {
                                    socket: slot.socket.clone(),
                                    to: src,
                                    t0,
                                    stats: self.forward_stats.clone(),
                                    permit: Some(permit),
                                },
                                servers,
                                &deps.runtime,
                            ),
                        }
                        None
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn sources_that_cannot_take_a_reply() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        // RFC 768: source port 0 means no reply is expected.
        assert!(!replyable(v4(127, 0, 0, 1), 0));
        // RFC 1122 §3.2.1.3: never a host's own address.
        assert!(!replyable(v4(0, 0, 0, 0), 5353));
        assert!(!replyable(v4(255, 255, 255, 255), 5353));
        assert!(!replyable(v4(224, 0, 0, 251), 5353));
        assert!(!replyable(v4(239, 1, 2, 3), 5353));
        assert!(!replyable(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 5353));
        assert!(!replyable("ff02::fb".parse().unwrap(), 5353));
        // Ordinary clients.
        assert!(replyable(v4(127, 0, 0, 1), 40000));
        assert!(replyable(v4(172, 18, 0, 5), 1));
        assert!(replyable("fd00::5".parse().unwrap(), 40000));
        // An IPv4-mapped source is judged by its IPv4 address once canonical.
        let mapped: IpAddr = "::ffff:255.255.255.255".parse().unwrap();
        assert!(!replyable(canonical(mapped), 5353));
    }
}
