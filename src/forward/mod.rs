//! Forwarding: every question the tables do not answer goes to the upstream servers.
//!
//! Policy and transport are kept apart. What dockns sends upstream, what it accepts back and
//! what it replies to the client are pure functions in `reply.rs` (dockns's own query with its
//! own EDNS, exact matching with a structural walk, a reply rebuilt for each client with
//! dockns's own header and OPT). This module decides whom to ask and in which order, moves the
//! bytes (UDP through the socket pool of `pool.rs`, driven by `engine.rs`: long-lived sockets on
//! random ports re-opened on a schedule, a random ID per try, a reply heard only from the address
//! and port asked; TCP over a new connection per try), and always
//! returns something for the client: the answer, a stale answer, or SERVFAIL once every server
//! failed or the question's total budget ran out. It never answers with silence.
//!
//! Servers: every entry point takes the client's server set, `Option<&ServerSet>`: `None` is
//! the configured `[upstream] servers`, `Some` a container's own DNS servers in order. Health
//! is kept per distinct server address (the configured ones, plus a registry created on demand,
//! bounded by [`MAX_TRACKED_SERVERS`]). A server that fails [`health::DEAD_AFTER`] tries in a
//! row (timeouts, I/O errors) is marked dead and skipped; a background health probe (`. NS`, to
//! that server only) revives it as soon as it answers (see `health.rs`). When every server of a
//! set is dead, all are still tried in order within the budget (a last resort beats a certain
//! SERVFAIL). In-flight forwards are bounded by a semaphore; the listeners answer REFUSED when
//! it is exhausted, so memory stays bounded.
//!
//! In front of the upstreams sit the response cache and in-flight de-duplication (see
//! `cache.rs`): [`Forwarder::resolve`] answers from the cache when it can, lets identical
//! questions share one upstream query, stores what comes back, and when every upstream failed
//! answers an expired entry within `[upstream] serve_stale_secs` with TTL 30 (RFC 8767).
//! Answers from Docker's own resolver ([`DOCKER_RESOLVER`]) are cached, and their TTLs capped,
//! no longer than `[server] ttl`: it answers container names with TTL 600, and a stopped
//! container must not be served for ten minutes.

use crate::metrics::{CacheMetrics, UpstreamTotals};
use crate::stats::AnswerSource;
use crate::wire::slow::{parse_slow, SlowParse};
use crate::wire::{self, error_response, rcode, EdnsInfo, MAX_MESSAGE};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
pub mod cache;
pub mod engine;
pub mod health;
pub mod pool;
pub mod reply;

use health::Health;
use reply::{Answer, ClientQuery, Judgement, Ttl};
use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A client's own upstream servers, in order (e.g. a container's `HostConfig.Dns`).
pub type ServerSet = Arc<[SocketAddr]>;

/// Docker's embedded resolver as seen from inside a container (one definition, in the model):
/// answers from an upstream at this address (any port) are cached and served no longer than
/// `[server] ttl`.
pub use crate::model::DOCKER_RESOLVER;
/// Most distinct server addresses whose health is remembered besides the configured ones;
/// beyond, a new server is asked with no health memory (as if seen for the first time).
pub const MAX_TRACKED_SERVERS: usize = 1024;

/// Settings of the forwarder.
#[derive(Clone, Debug)]
pub struct ForwardSettings {
    /// Upstream servers, in preference order.
    pub servers: Vec<SocketAddr>,
    /// Per-try timeout.
    pub timeout: Duration,
    /// Total time per question.
    pub budget: Duration,
    /// Most questions in flight.
    pub max_inflight: usize,
    /// Responses kept in the cache at most (0 disables it).
    pub cache_size: usize,
    /// Randomise the letter case of upstream query names (0x20) and require it back.
    pub randomize_case: bool,
    /// Bytes the cache may account at most (0 disables it).
    pub cache_bytes: usize,
    /// How long past its TTL an answer may be served when every upstream fails (0: never).
    pub serve_stale: Duration,
    /// `[server] ttl`: the longest TTL of answers from [`DOCKER_RESOLVER`].
    pub local_ttl: u32,
}

pub(crate) struct Upstream {
    addr: SocketAddr,
    health: Health,
    /// Tries sent.
    queries: AtomicU64,
    /// Tries that timed out.
    timeouts: AtomicU64,
    /// Tries that failed at the socket.
    io_errors: AtomicU64,
    /// Tries answered SERVFAIL/REFUSED/FORMERR/NOTIMP.
    rcode_errors: AtomicU64,
    /// Replies matching a try that were structurally invalid (dropped).
    malformed: AtomicU64,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Arc<Upstream> {
        Arc::new(Upstream {
            addr,
            health: Health::default(),
            queries: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            io_errors: AtomicU64::new(0),
            rcode_errors: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        })
    }

    fn totals(&self) -> UpstreamTotals {
        UpstreamTotals {
            addr: self.addr,
            queries: self.queries.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            io_errors: self.io_errors.load(Ordering::Relaxed),
            rcode_errors: self.rcode_errors.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            up: !self.health.is_dead(),
        }
    }
}

/// The identity of a server set in cache keys: 0 for the configured servers (`None`), else a
/// 64-bit hash of the list (never 0).
pub fn set_id(servers: Option<&ServerSet>) -> u64 {
    let Some(list) = servers else { return 0 };
    let mut h = FxHasher::default();
    list.hash(&mut h);
    h.finish().max(1)
}

/// The upstream pool. See the module docs.
pub struct Forwarder {
    upstreams: Vec<Arc<Upstream>>,
    /// Servers of per-client sets that are not configured ones.
    registry: RwLock<HashMap<SocketAddr, Arc<Upstream>>>,
    timeout: Duration,
    budget: Duration,
    /// `[server] ttl` (follows reloads).
    local_ttl: AtomicU32,
    inflight: Arc<Semaphore>,
    /// Itself, for spawning health probes from `&self`.
    me: Weak<Forwarder>,
    max_inflight: usize,
    cache_metrics: Arc<CacheMetrics>,
    cache: Option<cache::Cache>,
    pending: Arc<cache::Inflight>,
    randomize_case: bool,
    /// UDP transport (see `pool.rs`), opened on first use.
    pool: std::sync::OnceLock<Option<Arc<pool::Pool<engine::Waiter, Answer>>>>,
}

/// Why one try failed.
#[derive(Debug)]
pub(crate) enum TryError {
    Io,
    Rcode,
}

/// A client's query, owned (for the async path; the slow parser's output is owned anyway).
struct Asked {
    id: u16,
    flags: u16,
    question: Vec<u8>,
    /// Lower-cased wire name, no root label.
    key: Vec<u8>,
    qtype: u16,
    qclass: u16,
    edns: Option<EdnsInfo>,
}

impl Asked {
    fn read(pkt: &[u8]) -> Option<Asked> {
        let mut key = [0u8; crate::wire::MAX_KEY_LEN];
        match wire::parse_query(pkt, &mut key) {
            wire::Parse::Query(q) => Some(Asked {
                id: q.id,
                flags: q.flags,
                question: pkt.get(wire::HEADER_LEN..q.qend)?.to_vec(),
                key: key[..q.key_len].to_vec(),
                qtype: q.qtype,
                qclass: q.qclass,
                edns: q.edns,
            }),
            wire::Parse::Drop => None,
            wire::Parse::Slow => match parse_slow(pkt) {
                SlowParse::Query(n) => Some(Asked {
                    id: n.id,
                    flags: n.flags,
                    question: n.question,
                    key: n.key,
                    qtype: n.qtype,
                    qclass: n.qclass,
                    edns: n.edns,
                }),
                _ => None,
            },
        }
    }

    fn client(&self) -> ClientQuery<'_> {
        ClientQuery {
            id: self.id,
            flags: self.flags,
            question: &self.question,
            edns: self.edns,
        }
    }

    fn cache_question(&self, set: u64) -> Option<cache::CacheQuestion<'_>> {
        cache::CacheQuestion::new(self.client(), &self.key, self.qtype, self.qclass, set)
    }

    /// The reply for this client from an accepted answer.
    fn reply(&self, a: &Answer, tcp: bool) -> Vec<u8> {
        let r = reply::client_reply(
            &self.client(),
            a.as_ref(),
            Ttl::Aged(0),
            wire::response_limit(self.edns, tcp),
        );
        if r.is_empty() {
            return self.servfail(tcp);
        }
        r
    }

    fn servfail(&self, tcp: bool) -> Vec<u8> {
        let mut out = vec![0u8; wire::HEADER_LEN + self.question.len() + 11];
        let room = out.len();
        let n = wire::write_response(
            &mut out,
            self.id,
            self.flags,
            &self.question,
            self.edns,
            wire::Body {
                rcode: rcode::SERVFAIL,
                ..Default::default()
            },
            if tcp { MAX_MESSAGE } else { room },
        );
        out.truncate(n);
        out
    }
}

impl Forwarder {
    /// Builds the pool.
    pub fn new(s: &ForwardSettings) -> Arc<Forwarder> {
        let cache_metrics = Arc::new(CacheMetrics::default());
        Arc::new_cyclic(|me| Forwarder {
            upstreams: s.servers.iter().map(|&addr| Upstream::new(addr)).collect(),
            registry: RwLock::default(),
            timeout: s.timeout,
            budget: s.budget,
            local_ttl: AtomicU32::new(s.local_ttl),
            inflight: Arc::new(Semaphore::new(s.max_inflight)),
            me: me.clone(),
            max_inflight: s.max_inflight,
            cache: cache::Cache::new(
                s.cache_size,
                s.cache_bytes,
                s.serve_stale,
                cache_metrics.clone(),
            ),
            cache_metrics,
            pending: Arc::default(),
            randomize_case: s.randomize_case,
            pool: std::sync::OnceLock::new(),
        })
    }

    /// Counters for the answer cache (the cache records into them).
    pub fn cache_metrics(&self) -> &Arc<CacheMetrics> {
        &self.cache_metrics
    }

    /// Per-server counters: the configured servers in order, then the other servers of
    /// per-client sets.
    pub fn upstream_totals(&self) -> Vec<UpstreamTotals> {
        let mut v: Vec<UpstreamTotals> = self.upstreams.iter().map(|u| u.totals()).collect();
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        let mut more: Vec<UpstreamTotals> = reg.values().map(|u| u.totals()).collect();
        more.sort_by_key(|t| t.addr);
        v.extend(more);
        v
    }

    /// Forwarded questions in flight now.
    pub fn inflight(&self) -> usize {
        self.max_inflight
            .saturating_sub(self.inflight.available_permits())
    }

    /// The configured servers.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.upstreams.iter().map(|u| u.addr).collect()
    }

    /// Reserves a slot for one forwarded question; `None` when the bound is reached.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.inflight.clone().try_acquire_owned().ok()
    }

    /// Whether each configured server is currently considered alive, in config order.
    pub fn alive(&self) -> Vec<(SocketAddr, bool)> {
        self.upstreams
            .iter()
            .map(|u| (u.addr, !u.health.is_dead()))
            .collect()
    }

    /// Whether the server at `addr` is currently considered alive (`None`: never asked).
    pub fn is_alive(&self, addr: SocketAddr) -> Option<bool> {
        if let Some(u) = self.upstreams.iter().find(|u| u.addr == addr) {
            return Some(!u.health.is_dead());
        }
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.get(&addr).map(|u| !u.health.is_dead())
    }

    /// The tracked state of one server address (created on first use, bounded).
    fn upstream_of(&self, addr: SocketAddr) -> Arc<Upstream> {
        if let Some(u) = self.upstreams.iter().find(|u| u.addr == addr) {
            return u.clone();
        }
        if let Some(u) = self
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
        {
            return u.clone();
        }
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = reg.get(&addr) {
            return u.clone();
        }
        let u = Upstream::new(addr);
        if reg.len() < MAX_TRACKED_SERVERS {
            reg.insert(addr, u.clone());
        }
        u
    }

    /// Upstreams to try for a server set, in its order; dead ones are skipped until a probe
    /// revives them. When every server is dead they are all tried anyway (within the budget):
    /// a last resort beats a certain SERVFAIL.
    fn order(&self, servers: Option<&ServerSet>) -> Vec<Arc<Upstream>> {
        let all: Vec<Arc<Upstream>> = match servers {
            None => self.upstreams.clone(),
            Some(list) => {
                let mut v: Vec<Arc<Upstream>> = Vec::with_capacity(list.len());
                for &a in list.iter() {
                    if !v.iter().any(|u| u.addr == a) {
                        v.push(self.upstream_of(a));
                    }
                }
                v
            }
        };
        if all.iter().all(|u| u.health.is_dead()) {
            return all;
        }
        all.into_iter().filter(|u| !u.health.is_dead()).collect()
    }

    /// Counts a failed try; when that makes the server dead, starts its health probe.
    fn failed(&self, up: &Arc<Upstream>) {
        if up.health.failure() {
            tracing::warn!(upstream = %up.addr, "upstream not answering; skipping it until a health probe succeeds");
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(health::probe_until_alive(self.me.clone(), up.clone()));
            }
        }
    }

    /// Follows a reload of `[server] ttl` (the cap of answers from [`DOCKER_RESOLVER`]).
    pub fn set_local_ttl(&self, ttl: u32) {
        self.local_ttl.store(ttl, Ordering::Relaxed);
    }

    /// The TTL cap for answers from `addr`.
    fn ttl_cap(&self, addr: SocketAddr) -> u32 {
        if addr.ip() == DOCKER_RESOLVER {
            self.local_ttl.load(Ordering::Relaxed)
        } else {
            reply::MAX_TTL
        }
    }

    /// Resolves a client's query upstream, asking `servers` (`None`: the configured ones).
    /// Always returns a response for the client unless the packet is not a query at all (then
    /// the result is empty).
    pub async fn resolve(&self, pkt: &[u8], tcp: bool, servers: Option<&ServerSet>) -> Vec<u8> {
        self.resolve_traced(pkt, tcp, servers).await.0
    }

    /// Answers a query from the cache alone, without waiting (for the listeners' own threads):
    /// the length written into `out`, or `None` on a miss. A miss is not counted here: the
    /// caller goes on to [`Forwarder::resolve`], which counts it. No allocation, one shard lock.
    pub fn answer_from_cache(
        &self,
        pkt: &[u8],
        out: &mut [u8],
        tcp: bool,
        servers: Option<&ServerSet>,
    ) -> Option<usize> {
        let c = self.cache.as_ref()?;
        c.probe(
            &cache::CacheQuestion::parse(pkt, set_id(servers))?,
            tcp,
            out,
        )
    }

    /// [`Forwarder::resolve`], also saying where the answer came from (for metrics): the cache,
    /// an identical question already in flight, or the upstreams.
    pub async fn resolve_traced(
        &self,
        pkt: &[u8],
        tcp: bool,
        servers: Option<&ServerSet>,
    ) -> (Vec<u8>, AnswerSource) {
        let up = AnswerSource::Upstream;
        let Some(asked) = Asked::read(pkt) else {
            return (servfail(pkt, tcp), up);
        };
        let Some(cq) = asked.cache_question(set_id(servers)) else {
            if !tcp {
                return self.resolve_pool(pkt, servers).await;
            }
            return (self.resolve_upstream(&asked, tcp, servers).await, up);
        };
        if let Some(resp) = self.cache.as_ref().and_then(|c| c.get_vec(&cq, tcp)) {
            return (resp, AnswerSource::Cache);
        }
        if !tcp {
            // UDP goes through the socket pool (engine.rs), which de-duplicates by itself.
            return self.resolve_pool(pkt, servers).await;
        }
        let lead = match self.pending.join(cq.inflight_key(tcp)) {
            cache::Join::Leader(lead) => lead,
            cache::Join::Waiter(rx) => {
                return match tokio::time::timeout(self.budget, rx).await {
                    Ok(Ok(Some(a))) => (asked.reply(&a, tcp), up),
                    Ok(Ok(None)) => self.stale_or_servfail(&asked, &cq, tcp),
                    // The leader gave up (or took too long): ask for ourselves.
                    _ => (self.resolve_upstream(&asked, tcp, servers).await, up),
                };
            }
        };
        match self.upstream(&asked, tcp, servers).await {
            Some(a) => {
                if let Some(c) = &self.cache {
                    c.insert(&cq, &a);
                }
                let out = asked.reply(&a, tcp);
                lead.finish(Some(Arc::new(a)));
                (out, up)
            }
            None => {
                lead.finish(None);
                self.stale_or_servfail(&asked, &cq, tcp)
            }
        }
    }

    /// Every upstream failed: an expired answer within the stale window (TTL 30), else SERVFAIL.
    fn stale_or_servfail(
        &self,
        asked: &Asked,
        cq: &cache::CacheQuestion<'_>,
        tcp: bool,
    ) -> (Vec<u8>, AnswerSource) {
        match self.cache.as_ref().and_then(|c| c.stale_vec(cq, tcp)) {
            Some(r) => (r, AnswerSource::Cache),
            None => (asked.servfail(tcp), AnswerSource::Upstream),
        }
    }

    /// Upstream only, ready for the client; SERVFAIL when every server failed.
    async fn resolve_upstream(
        &self,
        asked: &Asked,
        tcp: bool,
        servers: Option<&ServerSet>,
    ) -> Vec<u8> {
        match self.upstream(asked, tcp, servers).await {
            Some(a) => asked.reply(&a, tcp),
            None => asked.servfail(tcp),
        }
    }

    /// Asks the servers in order: the first accepted answer, normalised, or `None` once every
    /// server failed or the budget ran out.
    async fn upstream(
        &self,
        asked: &Asked,
        tcp: bool,
        servers: Option<&ServerSet>,
    ) -> Option<Answer> {
        let deadline = Instant::now() + self.budget;
        let client = asked.client();
        for up in self.order(servers) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let per_try = self.timeout.min(deadline - now);
            up.queries.fetch_add(1, Ordering::Relaxed);
            let id: u16 = rand::random();
            let query = reply::upstream_query(id, &client);
            let ex = Exchange {
                id,
                query: &query,
                question: &asked.question,
                ttl_cap: self.ttl_cap(up.addr),
                up: &up,
            };
            let res = if tcp {
                tokio::time::timeout(per_try, try_tcp(&ex)).await
            } else {
                tokio::time::timeout(per_try, try_udp(&ex)).await
            };
            let timed_out = res.is_err();
            match res {
                Ok(Ok(a)) => {
                    up.health.success();
                    return Some(a);
                }
                Ok(Err(TryError::Rcode)) => {
                    // An answer, even a failure, means the server is alive.
                    up.health.success();
                    up.rcode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(upstream = %up.addr, "upstream answered an error rcode, trying next");
                }
                Ok(Err(TryError::Io)) | Err(_) => {
                    if timed_out {
                        up.timeouts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        up.io_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    self.failed(&up);
                }
            }
        }
        None
    }
}

fn servfail(pkt: &[u8], tcp: bool) -> Vec<u8> {
    let mut out = vec![0u8; if tcp { MAX_MESSAGE } else { 4096 }];
    let n = error_response(pkt, rcode::SERVFAIL, &mut out, tcp);
    out.truncate(n);
    out
}

/// What the forwarder makes of bytes an upstream sent for a client's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamReply {
    /// The client's packet is not a query: nothing is forwarded.
    NotAQuery,
    /// Not the answer (wrong ID, wrong question, not a response, garbage): keep waiting.
    Ignored,
    /// The answer by ID and question, but structurally invalid: dropped (counted), keep waiting.
    Malformed,
    /// The upstream failed (SERVFAIL, REFUSED, FORMERR, NOTIMP): try the next server.
    Failed,
    /// The reply dockns sends the client (see `reply.rs`).
    Accepted(Vec<u8>),
}

/// Decides, without I/O, what the forwarder does with `resp` received from an upstream for the
/// client's `query`, when dockns's own upstream query for it was sent with ID `sent_id`. The
/// same code the forwarding path runs; exposed for fuzzing and tests.
pub fn upstream_reply(query: &[u8], sent_id: u16, resp: &[u8], tcp: bool) -> UpstreamReply {
    let Some(asked) = Asked::read(query) else {
        return UpstreamReply::NotAQuery;
    };
    match reply::judge(sent_id, &asked.question, resp, false, reply::MAX_TTL) {
        Judgement::Ignore => UpstreamReply::Ignored,
        Judgement::Malformed => UpstreamReply::Malformed,
        Judgement::Failed(_) => UpstreamReply::Failed,
        Judgement::Accept(a) => UpstreamReply::Accepted(asked.reply(&a, tcp)),
    }
}

/// One try: what was sent and how to judge what comes back.
pub(crate) struct Exchange<'a> {
    pub(crate) id: u16,
    pub(crate) query: &'a [u8],
    pub(crate) question: &'a [u8],
    pub(crate) ttl_cap: u32,
    pub(crate) up: &'a Upstream,
}

impl Exchange<'_> {
    /// `Some` ends the try; `None` keeps waiting.
    fn judge(&self, resp: &[u8]) -> Option<Result<Answer, TryError>> {
        match reply::judge(self.id, self.question, resp, false, self.ttl_cap) {
            Judgement::Ignore => None,
            Judgement::Malformed => {
                self.up.malformed.fetch_add(1, Ordering::Relaxed);
                None
            }
            Judgement::Failed(_) => Some(Err(TryError::Rcode)),
            Judgement::Accept(a) => Some(Ok(a)),
        }
    }
}

pub(crate) async fn try_udp(ex: &Exchange<'_>) -> Result<Answer, TryError> {
    let addr = ex.up.addr;
    let bind: SocketAddr = match addr.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).await.map_err(|_| TryError::Io)?;
    // Connected: the kernel passes on only datagrams from the address and port asked.
    sock.connect(addr).await.map_err(|_| TryError::Io)?;
    sock.send(ex.query).await.map_err(|_| TryError::Io)?;
    // dockns advertises 1232 upstream; a little more room so an oversized reply is seen whole
    // (and judged) rather than cut.
    let mut buf = vec![0u8; 4096];
    loop {
        // A refused port shows up as an error here: treat the server as failed.
        let n = sock.recv(&mut buf).await.map_err(|_| TryError::Io)?;
        if let Some(r) = ex.judge(&buf[..n]) {
            return r;
        }
    }
}

async fn try_tcp(ex: &Exchange<'_>) -> Result<Answer, TryError> {
    let mut stream = TcpStream::connect(ex.up.addr)
        .await
        .map_err(|_| TryError::Io)?;
    let _ = stream.set_nodelay(true);
    let mut msg = Vec::with_capacity(ex.query.len() + 2);
    msg.extend_from_slice(&(ex.query.len() as u16).to_be_bytes());
    msg.extend_from_slice(ex.query);
    stream.write_all(&msg).await.map_err(|_| TryError::Io)?;
    loop {
        let len = stream.read_u16().await.map_err(|_| TryError::Io)?;
        let mut buf = vec![0u8; usize::from(len)];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|_| TryError::Io)?;
        if let Some(r) = ex.judge(&buf) {
            return r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_skips_dead_servers() {
        let f = Forwarder::new(&ForwardSettings {
            servers: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            timeout: Duration::from_millis(10),
            budget: Duration::from_millis(20),
            max_inflight: 1,
            cache_size: 0,
            randomize_case: false,
            cache_bytes: 0,
            serve_stale: Duration::ZERO,
            local_ttl: 5,
        });
        for _ in 0..health::DEAD_AFTER {
            f.upstreams[0].health.failure();
        }
        let order: Vec<u16> = f.order(None).iter().map(|u| u.addr.port()).collect();
        assert_eq!(order, vec![2]);
        // A client's own set: its order, health shared per address with the configured list.
        let set: ServerSet = Arc::from(vec![
            "127.0.0.1:3".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
        ]);
        let order: Vec<u16> = f.order(Some(&set)).iter().map(|u| u.addr.port()).collect();
        assert_eq!(order, vec![3]);
        assert_eq!(f.is_alive("127.0.0.1:3".parse().unwrap()), Some(true));
        assert_eq!(set_id(None), 0);
        assert_ne!(set_id(Some(&set)), 0);
        assert!(f.try_acquire().is_some_and(|p| {
            let second = f.try_acquire();
            drop(p);
            second.is_none()
        }));
    }

    #[test]
    fn upstream_reply_judges_bytes() {
        let q = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ];
        let mut r = q.to_vec();
        r[0..2].copy_from_slice(&[0xAB, 0xCD]);
        r[2] = 0x81;
        r[3] = 0x80;
        // Right ID, right question (any case): accepted with the client's ID.
        r[13] = b'A';
        let UpstreamReply::Accepted(a) = upstream_reply(&q, 0xABCD, &r, false) else {
            panic!("accepted")
        };
        assert_eq!(&a[0..2], &[0x12, 0x34]);
        assert_eq!(
            upstream_reply(&q, 0xABCE, &r, false),
            UpstreamReply::Ignored
        );
        r[13] = b'b';
        assert_eq!(
            upstream_reply(&q, 0xABCD, &r, false),
            UpstreamReply::Ignored
        );
        r[13] = b'a';
        r[3] = 0x85;
        assert_eq!(upstream_reply(&q, 0xABCD, &r, false), UpstreamReply::Failed);
        r[3] = 0x80;
        r.push(0);
        assert_eq!(
            upstream_reply(&q, 0xABCD, &r, false),
            UpstreamReply::Malformed,
            "trailing bytes"
        );
        r.pop();
        assert_eq!(
            upstream_reply(&q, 0xABCD, &r[..5], true),
            UpstreamReply::Ignored
        );
        assert_eq!(upstream_reply(&[], 0, &r, true), UpstreamReply::NotAQuery);
    }
}
