//! The forwarder's UDP engine: how [`Forwarder`] drives the socket pool (`pool.rs`).
//!
//! A UDP client's cache miss is handed to the pool straight from the worker thread
//! ([`Forwarder::forward_udp`]): no task, no socket, no await. The pool's receiver thread calls
//! back here ([`Policy`]) to count tries and health, to store an accepted answer in the cache,
//! and to answer each waiting client on the listener socket it asked on, or to complete an
//! async caller's oneshot ([`Forwarder::resolve_pool`]). This module decides nothing about
//! which servers to ask or what an acceptable answer is beyond what `mod.rs` already decides;
//! it must never block the worker threads.

use super::pool::{Outcome, Policy, Pool, PoolConfig, Verdict};
use super::reply::{self, Answer, Judgement};
use super::{set_id, Asked, Forwarder, ServerSet};
use crate::stats::{log_reply, since, AnswerSource, Stamp, WorkerStats};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// A UDP client waiting for a forwarded answer: where to answer it.
pub struct UdpClient {
    /// The listener socket the query came in on (the reply leaves from it).
    pub socket: Arc<UdpSocket>,
    /// The client.
    pub to: SocketAddr,
    /// When the query arrived.
    pub t0: Stamp,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Its slot in the forwarder's in-flight bound, released once answered.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// How a waiter gets its reply.
enum ReplyTo {
    /// A UDP client, answered by the receiver thread.
    Udp(UdpClient),
    /// An async caller.
    Async {
        tcp: bool,
        tx: oneshot::Sender<(Vec<u8>, AnswerSource)>,
    },
}

/// Who waits for a question in the pool: the client's query, its server-set identity (for the
/// cache key and serve-stale) and where the reply goes.
pub struct Waiter {
    pkt: Box<[u8]>,
    set: u64,
    to: ReplyTo,
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
    fn pool(&self, rt: Option<&tokio::runtime::Handle>) -> Option<&Arc<Pool<Waiter, Answer>>> {
        self.pool
            .get_or_init(|| {
                let policy: std::sync::Weak<dyn Policy<Waiter, Answer>> = self.me.clone();
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

    /// The pool's counters for `/metrics` (zero before the first forwarded UDP question).
    pub fn pool_totals(&self) -> crate::metrics::PoolTotals {
        self.pool_stats()
            .map_or_else(Default::default, |s| crate::metrics::PoolTotals {
                ignored: s.mismatched.load(Ordering::Relaxed),
                joined: s.joined.load(Ordering::Relaxed),
                reopened: s.reopened.load(Ordering::Relaxed),
            })
    }

    /// Questions in flight in the pool now.
    pub fn pool_pending(&self) -> usize {
        self.pool
            .get()
            .and_then(|p| p.as_ref())
            .map_or(0, |p| p.pending())
    }

    fn submit(
        &self,
        waiter: Waiter,
        servers: Option<&ServerSet>,
        rt: Option<&tokio::runtime::Handle>,
    ) {
        let Some(asked) = Asked::read(&waiter.pkt) else {
            // Not a query: nothing to answer (the listeners never forward these).
            return;
        };
        let Some(pool) = self.pool(rt) else {
            self.finish(waiter, None);
            return;
        };
        let key = asked
            .cache_question(waiter.set)
            .map(|cq| cq.inflight_key(false));
        // dockns's own upstream query; the pool sets its ID (and letter case, with 0x20).
        let query = reply::upstream_query(0, &asked.client());
        let order: Box<[SocketAddr]> = self.order(servers).iter().map(|u| u.addr).collect();
        pool.submit(self, &query, key, order, waiter);
    }

    /// Forwards a UDP client's question `pkt` (a cache miss) from a worker thread, to `servers`
    /// (`None`: the configured ones): sent at once on a pool socket; the receiver thread
    /// answers the client. Never blocks.
    pub fn forward_udp(
        &self,
        pkt: &[u8],
        client: UdpClient,
        servers: Option<&ServerSet>,
        rt: &tokio::runtime::Handle,
    ) {
        let set = set_id(servers);
        // The worker's cache probe counts hits only: the miss is counted here.
        if self.cache.is_some() && super::cache::CacheQuestion::parse(pkt, set).is_some() {
            self.cache_metrics.miss();
        }
        let waiter = Waiter {
            pkt: pkt.into(),
            set,
            to: ReplyTo::Udp(client),
        };
        self.submit(waiter, servers, Some(rt));
    }

    /// Resolves a UDP client's query through the pool, for async callers: the client's reply
    /// and where it came from.
    pub(super) async fn resolve_pool(
        &self,
        pkt: &[u8],
        servers: Option<&ServerSet>,
    ) -> (Vec<u8>, AnswerSource) {
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            pkt: pkt.into(),
            set: set_id(servers),
            to: ReplyTo::Async { tcp: false, tx },
        };
        self.submit(waiter, servers, None);
        // The pool answers every waiter within the budget; the margin only guards against a
        // receiver thread that is gone.
        let wait = self.budget + std::time::Duration::from_secs(1);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            _ => (super::servfail(pkt, false), AnswerSource::Upstream),
        }
    }

    /// The reply for a waiter's query: from the answer, or (every try failed) a stale answer
    /// or SERVFAIL.
    fn reply_for(
        &self,
        pkt: &[u8],
        set: u64,
        answer: Option<&Answer>,
        tcp: bool,
    ) -> (Vec<u8>, AnswerSource) {
        let Some(asked) = Asked::read(pkt) else {
            return (Vec::new(), AnswerSource::Upstream);
        };
        match (answer, asked.cache_question(set)) {
            (Some(a), _) => (asked.reply(a, tcp), AnswerSource::Upstream),
            (None, Some(cq)) => self.stale_or_servfail(&asked, &cq, tcp),
            (None, None) => (asked.servfail(tcp), AnswerSource::Upstream),
        }
    }
}
impl Policy<Waiter, Answer> for Forwarder {
    fn sent(&self, server: SocketAddr) {
        self.upstream_of(server)
            .queries
            .fetch_add(1, Ordering::Relaxed);
    }

    fn tried(&self, server: SocketAddr, outcome: Outcome) {
        let up = self.upstream_of(server);
        match outcome {
            Outcome::Answer => up.health.success(),
            Outcome::Refused => {
                // An answer, even a failure, means the server is alive.
                up.health.success();
                up.rcode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(upstream = %up.addr, "upstream answered an error rcode, trying next");
            }
            Outcome::Timeout => {
                up.timeouts.fetch_add(1, Ordering::Relaxed);
                self.failed(&up);
            }
            Outcome::Io => {
                up.io_errors.fetch_add(1, Ordering::Relaxed);
                self.failed(&up);
            }
        }
    }

    fn judge(&self, server: SocketAddr, query: &[u8], qend: usize, r: &[u8]) -> Verdict<Answer> {
        let id = u16::from_be_bytes([query[0], query[1]]);
        // The pool already matched the question byte for byte: judge it case-exact.
        match reply::judge(id, &query[12..qend], r, true, self.ttl_cap(server)) {
            Judgement::Ignore => Verdict::Ignore,
            Judgement::Malformed => {
                self.upstream_of(server)
                    .malformed
                    .fetch_add(1, Ordering::Relaxed);
                Verdict::Malformed
            }
            Judgement::Failed(_) => Verdict::Failed,
            Judgement::Accept(a) => Verdict::Accept(a),
        }
    }

    fn answered(&self, first: &Waiter, answer: &Answer) {
        let (Some(c), Some(asked)) = (&self.cache, Asked::read(&first.pkt)) else {
            return;
        };
        if let Some(cq) = asked.cache_question(first.set) {
            c.insert(&cq, answer);
        }
    }

    fn finish(&self, w: Waiter, answer: Option<&Answer>) {
        match w.to {
            ReplyTo::Udp(c) => {
                let (r, source) = self.reply_for(&w.pkt, w.set, answer, false);
                if !r.is_empty() {
                    c.stats.answered(false, source, &r, since(c.t0));
                    log_reply(c.to, false, source, &r);
                    let _ = c.socket.send_to(&r, c.to);
                }
                drop(c.permit);
            }
            ReplyTo::Async { tcp, tx } => {
                let _ = tx.send(self.reply_for(&w.pkt, w.set, answer, tcp));
            }
        }
    }
}
