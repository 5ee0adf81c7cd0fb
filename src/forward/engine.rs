//! The forwarder's UDP engine: how [`Forwarder`] drives the socket pool (`pool.rs`).
//!
//! A UDP client's cache miss is handed to the pool straight from the worker thread
//! ([`Forwarder::forward_udp`]): no task, no socket, no await. The pool's receiver thread calls
//! back here ([`Policy`]) to count tries and health, to store an accepted answer in the cache,
//! and to answer each waiting client on the listener socket it asked on, or to complete an
//! async caller's oneshot ([`Forwarder::resolve_pool`]). This module decides nothing about
//! which servers to ask or what an acceptable answer is beyond what `mod.rs` already decides;
//! it must never block the worker threads.

use super::pool::{Outcome, Policy, Pool, PoolConfig};
use super::{cache, rcode_fails, servfail, Forwarder, QuestionRef};
use crate::dns::stats::{log_reply, since, AnswerSource, Stamp, WorkerStats};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// A UDP client waiting for a forwarded answer: where and how to answer it.
pub struct UdpClient {
    /// The listener socket the query came in on (the reply leaves from it).
    pub socket: Arc<UdpSocket>,
    /// The client.
    pub to: SocketAddr,
    /// The client's query.
    pub pkt: Box<[u8]>,
    /// When the query arrived.
    pub t0: Stamp,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Its slot in the forwarder's in-flight bound, released once answered.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Who waits for a question in the pool.
pub enum Waiter {
    /// A UDP client, answered by the receiver thread.
    Udp(UdpClient),
    /// An async caller.
    Async {
        /// The client's query.
        pkt: Box<[u8]>,
        /// Whether the client asked over TCP (no truncation).
        tcp: bool,
        /// The reply.
        tx: oneshot::Sender<Vec<u8>>,
    },
}

/// The client's reply to `pkt` from an accepted upstream `reply` (its ID, RD bit and letter
/// case restored, truncated to its UDP limit), or SERVFAIL.
fn client_reply(pkt: &[u8], reply: Option<&[u8]>, tcp: bool) -> Vec<u8> {
    let Some(reply) = reply else {
        return servfail(pkt, tcp);
    };
    if let Some(cq) = cache::CacheQuestion::parse(pkt) {
        return cache::fit_vec(reply, &cq, tcp);
    }
    let Some(q) = QuestionRef::read(pkt) else {
        return Vec::new();
    };
    let n = 12 + q.question.len();
    if reply.len() < n {
        return servfail(pkt, tcp);
    }
    let mut out = q.for_client(reply.to_vec(), tcp);
    // The question as the client wrote it (the upstream saw it case-randomised).
    out[12..n].copy_from_slice(&q.question);
    out
}

impl Forwarder {
    /// Settings of the socket pool.
    pub(super) fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            timeout: self.timeout,
            budget: self.budget,
            sockets: super::pool::SOCKETS_PER_FAMILY,
            reopen_queries: super::pool::REOPEN_QUERIES,
            reopen_after: super::pool::REOPEN_AFTER,
            randomize_case: self.randomize_case,
        }
    }

    /// The socket pool, opened on first use; `None` when it cannot be opened (then forwarded
    /// questions get SERVFAIL, and the cause is logged once).
    fn pool(&self, rt: Option<&tokio::runtime::Handle>) -> Option<&Arc<Pool<Waiter>>> {
        self.pool
            .get_or_init(|| {
                let policy: std::sync::Weak<dyn Policy<Waiter>> = self.me.clone();
                let rt = rt
                    .cloned()
                    .or_else(|| tokio::runtime::Handle::try_current().ok());
                match Pool::start(self.pool_config(), policy, rt) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::error!("cannot open the upstream sockets ({e}); forwarded questions get SERVFAIL: check the open-files limit (ulimit -n)");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The transport's counters (`None` before the first forwarded UDP question).
    pub fn pool_stats(&self) -> Option<&super::pool::PoolStats> {
        self.pool.get()?.as_ref().map(|p| &p.stats)
    }

    /// Questions in flight in the pool now.
    pub fn pool_pending(&self) -> usize {
        self.pool
            .get()
            .and_then(|p| p.as_ref())
            .map_or(0, |p| p.pending())
    }

    fn submit(&self, pkt: &[u8], waiter: Waiter, rt: Option<&tokio::runtime::Handle>) {
        let Some(pool) = self.pool(rt) else {
            self.finish(waiter, None);
            return;
        };
        let key = cache::CacheQuestion::parse(pkt).map(|cq| cq.inflight_key(false));
        let servers: Box<[SocketAddr]> = self.order().map(|(_, u)| u.addr).collect();
        pool.submit(self, pkt, key, servers, waiter);
    }

    /// Forwards a UDP client's question (a cache miss) from a worker thread: sent at once on a
    /// pool socket; the receiver thread answers the client. Never blocks.
    pub fn forward_udp(&self, client: UdpClient, rt: &tokio::runtime::Handle) {
        // The worker's cache probe counts hits only: the miss is counted here.
        if self.cache.is_some() && cache::CacheQuestion::parse(&client.pkt).is_some() {
            self.cache_metrics.miss();
        }
        let pkt = client.pkt.clone();
        self.submit(&pkt, Waiter::Udp(client), Some(rt));
    }

    /// Resolves a UDP client's query through the pool, for async callers: the client's reply.
    pub(super) async fn resolve_pool(&self, pkt: &[u8]) -> Vec<u8> {
        let (tx, rx) = oneshot::channel();
        self.submit(
            pkt,
            Waiter::Async {
                pkt: pkt.into(),
                tcp: false,
                tx,
            },
            None,
        );
        // The pool answers every waiter within the budget; the margin only guards against a
        // receiver thread that is gone.
        let wait = self.budget + std::time::Duration::from_secs(1);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            _ => servfail(pkt, false),
        }
    }

    fn upstream_index(&self, server: SocketAddr) -> Option<usize> {
        self.upstreams.iter().position(|u| u.addr == server)
    }
}

impl Policy<Waiter> for Forwarder {
    fn sent(&self, server: SocketAddr) {
        if let Some(i) = self.upstream_index(server) {
            self.upstreams[i].queries.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tried(&self, server: SocketAddr, outcome: Outcome) {
        let Some(i) = self.upstream_index(server) else {
            return;
        };
        let up = &self.upstreams[i];
        match outcome {
            Outcome::Answer => up.health.success(),
            Outcome::Refused => {
                up.rcode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(upstream = %up.addr, "upstream answered SERVFAIL/REFUSED, trying next");
            }
            Outcome::Timeout => {
                up.timeouts.fetch_add(1, Ordering::Relaxed);
                self.failed(i, up);
            }
            Outcome::Io => {
                up.io_errors.fetch_add(1, Ordering::Relaxed);
                self.failed(i, up);
            }
        }
    }

    fn accept(&self, reply: &[u8]) -> bool {
        !rcode_fails(reply)
    }

    fn answered(&self, query: &[u8], reply: &[u8]) {
        if let (Some(c), Some(cq)) = (&self.cache, cache::CacheQuestion::parse(query)) {
            c.insert(&cq, reply);
        }
    }

    fn finish(&self, waiter: Waiter, reply: Option<&[u8]>) {
        match waiter {
            Waiter::Udp(c) => {
                let r = client_reply(&c.pkt, reply, false);
                if !r.is_empty() {
                    c.stats
                        .answered(false, AnswerSource::Upstream, &r, since(c.t0));
                    log_reply(c.to, false, AnswerSource::Upstream, &r);
                    let _ = c.socket.send_to(&r, c.to);
                }
                drop(c.permit);
            }
            Waiter::Async { pkt, tcp, tx } => {
                let _ = tx.send(client_reply(&pkt, reply, tcp));
            }
        }
    }
}
