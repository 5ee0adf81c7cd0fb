//! Forwarding: every question the tables do not answer goes to the upstream servers.
//!
//! [`Forwarder::resolve`] sends the client's query with a fresh random ID from a fresh random
//! source port (UDP) or over a new connection (TCP), accepts only a response whose ID and question
//! match, tries the next server on timeout, SERVFAIL or REFUSED, and always returns something for
//! the client: the upstream's answer with the client's ID restored, or SERVFAIL once every
//! server failed or the question's total budget ran out. It never answers with silence.
//!
//! A server that fails [`health::DEAD_AFTER`] tries in a row (timeouts, I/O errors, garbage) is
//! marked dead and skipped; a background health probe (`. NS`, to that server only) revives it
//! as soon as it answers (see `health.rs`). When every server is dead, all are still tried in
//! order within the budget (a last resort beats a certain SERVFAIL). In-flight forwards are
//! bounded by a semaphore; the listeners answer REFUSED when it is exhausted, so memory stays
//! bounded. Deciding whether upstream bytes are the answer is a pure
//! function ([`upstream_reply`]) so it can be fuzzed.
//!
//! Every entry point takes the client's own server list (`servers`, from
//! [`Snapshot::client_servers`](crate::model::Snapshot::client_servers)): `None` means the
//! configured servers; a list is asked in its order within the same budget, past the cache.
//!
//! In front of the upstreams sit the response cache and in-flight de-duplication (see
//! `cache.rs`): [`Forwarder::resolve`] answers from the cache when it can, lets identical
//! questions share one upstream query, and stores what comes back.

use crate::dns::answer::error_response;
use crate::dns::stats::AnswerSource;
use crate::dns::wire::{self, rcode, MAX_MESSAGE};
use crate::metrics::{CacheMetrics, UpstreamTotals};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
pub mod cache;
pub mod health;

use health::Health;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// Responses kept in the cache (0 disables it).
    pub cache_size: usize,
}

struct Upstream {
    addr: SocketAddr,
    health: Health,
    /// Tries sent.
    queries: AtomicU64,
    /// Tries that timed out.
    timeouts: AtomicU64,
    /// Tries that failed at the socket.
    io_errors: AtomicU64,
    /// Tries answered SERVFAIL/REFUSED.
    rcode_errors: AtomicU64,
}

/// The upstream pool. See the module docs.
pub struct Forwarder {
    upstreams: Vec<Upstream>,
    timeout: Duration,
    budget: Duration,
    inflight: Arc<Semaphore>,
    /// Itself, for spawning health probes from `&self`.
    me: Weak<Forwarder>,
    max_inflight: usize,
    cache_metrics: Arc<CacheMetrics>,
    cache: Option<cache::Cache>,
    pending: Arc<cache::Inflight>,
}

/// Why one try failed.
#[derive(Debug)]
enum TryError {
    Io,
    Rcode,
}

impl Forwarder {
    /// Builds the pool.
    pub fn new(s: &ForwardSettings) -> Arc<Forwarder> {
        let cache_metrics = Arc::new(CacheMetrics::default());
        Arc::new_cyclic(|me| Forwarder {
            upstreams: s
                .servers
                .iter()
                .map(|&addr| Upstream {
                    addr,
                    health: Health::default(),
                    queries: AtomicU64::new(0),
                    timeouts: AtomicU64::new(0),
                    io_errors: AtomicU64::new(0),
                    rcode_errors: AtomicU64::new(0),
                })
                .collect(),
            timeout: s.timeout,
            budget: s.budget,
            inflight: Arc::new(Semaphore::new(s.max_inflight)),
            me: me.clone(),
            max_inflight: s.max_inflight,
            cache: cache::Cache::new(s.cache_size, cache_metrics.clone()),
            cache_metrics,
            pending: Arc::default(),
        })
    }

    /// Counters for the answer cache (the cache records into them).
    pub fn cache_metrics(&self) -> &Arc<CacheMetrics> {
        &self.cache_metrics
    }

    /// Per-server counters, in configured order.
    pub fn upstream_totals(&self) -> Vec<UpstreamTotals> {
        self.upstreams
            .iter()
            .map(|u| UpstreamTotals {
                addr: u.addr,
                queries: u.queries.load(Ordering::Relaxed),
                timeouts: u.timeouts.load(Ordering::Relaxed),
                io_errors: u.io_errors.load(Ordering::Relaxed),
                rcode_errors: u.rcode_errors.load(Ordering::Relaxed),
                up: !u.health.is_dead(),
            })
            .collect()
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

    /// Upstreams to try, in configured order; dead ones are skipped until a probe revives them.
    /// When every server is dead they are all tried anyway (within the budget): a last resort
    /// beats a certain SERVFAIL.
    fn order(&self) -> impl Iterator<Item = (usize, &Upstream)> {
        let all_dead = self.upstreams.iter().all(|u| u.health.is_dead());
        self.upstreams
            .iter()
            .enumerate()
            .filter(move |(_, u)| all_dead || !u.health.is_dead())
    }

    /// Counts a failed try; when that makes the server dead, starts its health probe.
    fn failed(&self, idx: usize, up: &Upstream) {
        if up.health.failure() {
            tracing::warn!(upstream = %up.addr, "upstream not answering; skipping it until a health probe succeeds");
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(health::probe_until_alive(self.me.clone(), idx));
            }
        }
    }

    /// Resolves a client's query upstream. Always returns a response for the client unless the
    /// packet is not a query at all (then the result is empty). `servers`: the client's own
    /// servers ([`Snapshot::client_servers`](crate::model::Snapshot::client_servers)), `None`
    /// for the configured ones.
    pub async fn resolve(
        &self,
        pkt: &[u8],
        tcp: bool,
        servers: Option<&Arc<[SocketAddr]>>,
    ) -> Vec<u8> {
        self.resolve_traced(pkt, tcp, servers).await.0
    }

    /// Answers a query from the cache alone, without waiting (for the listeners' own threads):
    /// the length written into `out`, or `None` on a miss. A miss is not counted here: the
    /// caller goes on to [`Forwarder::resolve`], which counts it. The cache holds answers of
    /// the configured servers only: a client with servers of its own always misses.
    pub fn answer_from_cache(
        &self,
        pkt: &[u8],
        out: &mut [u8],
        tcp: bool,
        servers: Option<&Arc<[SocketAddr]>>,
    ) -> Option<usize> {
        if servers.is_some() {
            return None;
        }
        let c = self.cache.as_ref()?;
        c.probe(&cache::CacheQuestion::parse(pkt)?, tcp, out)
    }

    /// [`Forwarder::resolve`], also saying where the answer came from (for metrics): the cache,
    /// an identical question already in flight, or the upstreams.
    pub async fn resolve_traced(
        &self,
        pkt: &[u8],
        tcp: bool,
        servers: Option<&Arc<[SocketAddr]>>,
    ) -> (Vec<u8>, AnswerSource) {
        let up = AnswerSource::Upstream;
        let Some(q) = QuestionRef::read(pkt) else {
            return (servfail(pkt, tcp), up);
        };
        if let Some(list) = servers {
            // A client with servers of its own: asked there, in its order, past the cache.
            let resp = match self.upstream_via(list, pkt, &q, tcp).await {
                Some(resp) => q.for_client(resp, tcp),
                None => servfail(pkt, tcp),
            };
            return (resp, up);
        }
        let Some(cq) = cache::CacheQuestion::parse(pkt) else {
            // Unusual shapes bypass the cache.
            return (self.resolve_upstream(pkt, &q, tcp).await, up);
        };
        if let Some(resp) = self.cache.as_ref().and_then(|c| c.get_vec(&cq, tcp)) {
            return (resp, AnswerSource::Cache);
        }
        let lead = match self.pending.join(cq.inflight_key(tcp)) {
            cache::Join::Leader(lead) => lead,
            cache::Join::Waiter(rx) => {
                let resp = match tokio::time::timeout(self.budget, rx).await {
                    Ok(Ok(Some(resp))) => cache::fit_vec(&resp, &cq, tcp),
                    Ok(Ok(None)) => servfail(pkt, tcp),
                    // The leader gave up (or took too long): ask for ourselves.
                    _ => self.resolve_upstream(pkt, &q, tcp).await,
                };
                return (resp, up);
            }
        };
        match self.upstream(pkt, &q, tcp).await {
            Some(resp) => {
                if let Some(c) = &self.cache {
                    c.insert(&cq, &resp);
                }
                let out = q.for_client(resp.clone(), tcp);
                lead.finish(Some(resp.into()));
                (out, up)
            }
            None => {
                lead.finish(None);
                (servfail(pkt, tcp), up)
            }
        }
    }

    /// Upstream only, ready for the client; SERVFAIL when every server failed.
    async fn resolve_upstream(&self, pkt: &[u8], q: &QuestionRef, tcp: bool) -> Vec<u8> {
        match self.upstream(pkt, q, tcp).await {
            Some(resp) => q.for_client(resp, tcp),
            None => servfail(pkt, tcp),
        }
    }

    /// Asks the upstream servers in order: the first accepted answer, whole, or `None` once
    /// every server failed or the budget ran out.
    async fn upstream(&self, pkt: &[u8], q: &QuestionRef, tcp: bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + self.budget;
        for (idx, up) in self.order() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let per_try = self.timeout.min(deadline - now);
            up.queries.fetch_add(1, Ordering::Relaxed);
            let res = if tcp {
                tokio::time::timeout(per_try, try_tcp(up.addr, pkt, q)).await
            } else {
                tokio::time::timeout(per_try, try_udp(up.addr, pkt, q)).await
            };
            let timed_out = res.is_err();
            match res {
                Ok(Ok(resp)) => {
                    up.health.success();
                    return Some(resp);
                }
                Ok(Err(TryError::Rcode)) => {
                    up.rcode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(upstream = %up.addr, "upstream answered SERVFAIL/REFUSED, trying next");
                }
                Ok(Err(TryError::Io)) | Err(_) => {
                    if timed_out {
                        up.timeouts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        up.io_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    self.failed(idx, up);
                }
            }
        }
        None
    }
}

impl Forwarder {
    /// Asks a client's own servers in its order (Docker: first server first, next on failure),
    /// within the same budget and per-try timeout. A server that is also a configured one
    /// shares its counters and health (skipped while dead, unless all are); the others are
    /// always tried.
    async fn upstream_via(
        &self,
        list: &[SocketAddr],
        pkt: &[u8],
        q: &QuestionRef,
        tcp: bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + self.budget;
        let known = |a: SocketAddr| self.upstreams.iter().position(|u| u.addr == a);
        let dead = |a: SocketAddr| known(a).is_some_and(|i| self.upstreams[i].health.is_dead());
        let all_dead = list.iter().all(|a| dead(*a));
        for &addr in list {
            if !all_dead && dead(addr) {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let per_try = self.timeout.min(deadline - now);
            let up = known(addr).map(|i| (i, &self.upstreams[i]));
            if let Some((_, u)) = up {
                u.queries.fetch_add(1, Ordering::Relaxed);
            }
            let res = if tcp {
                tokio::time::timeout(per_try, try_tcp(addr, pkt, q)).await
            } else {
                tokio::time::timeout(per_try, try_udp(addr, pkt, q)).await
            };
            let timed_out = res.is_err();
            match res {
                Ok(Ok(resp)) => {
                    if let Some((_, u)) = up {
                        u.health.success();
                    }
                    return Some(resp);
                }
                Ok(Err(TryError::Rcode)) => {
                    if let Some((_, u)) = up {
                        u.rcode_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(upstream = %addr, "client's server answered SERVFAIL/REFUSED, trying next");
                }
                Ok(Err(TryError::Io)) | Err(_) => {
                    if let Some((i, u)) = up {
                        if timed_out {
                            u.timeouts.fetch_add(1, Ordering::Relaxed);
                        } else {
                            u.io_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        self.failed(i, u);
                    }
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
    /// The upstream answered SERVFAIL or REFUSED: try the next server.
    Failed,
    /// The answer, ready for the client (client's ID restored, TC-truncated for UDP).
    Accepted(Vec<u8>),
}

/// Decides, without I/O, what the forwarder does with `resp` received from an upstream for the
/// client's `query` that was sent upstream with ID `sent_id`. The same code the forwarding path
/// runs; exposed for fuzzing and tests.
pub fn upstream_reply(query: &[u8], sent_id: u16, resp: &[u8], tcp: bool) -> UpstreamReply {
    let Some(q) = QuestionRef::read(query) else {
        return UpstreamReply::NotAQuery;
    };
    match q.judge(resp, sent_id) {
        Verdict::Ignore => UpstreamReply::Ignored,
        Verdict::Failed => UpstreamReply::Failed,
        Verdict::Accept => UpstreamReply::Accepted(q.for_client(resp.to_vec(), tcp)),
    }
}

/// A response too large for the client's UDP limit: header and question with TC set.
fn truncated(resp: &[u8], q: &QuestionRef) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.question.len() + 12);
    out.extend_from_slice(&resp[..12]);
    out[2] |= 0x02; // TC
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&q.question);
    out
}

/// The question of the client's query, for matching responses.
struct QuestionRef {
    id: u16,
    /// Encoded question section (name, type, class) as the client wrote it.
    question: Vec<u8>,
    edns: Option<wire::EdnsInfo>,
}

impl QuestionRef {
    fn read(pkt: &[u8]) -> Option<QuestionRef> {
        let mut key = [0u8; crate::model::MAX_KEY_LEN];
        match wire::parse_query(pkt, &mut key) {
            wire::Parse::Query(q) => Some(QuestionRef {
                id: q.id,
                question: pkt[wire::HEADER_LEN..q.qend].to_vec(),
                edns: q.edns,
            }),
            wire::Parse::Drop => None,
            wire::Parse::Slow => match crate::dns::slow::parse_slow(pkt) {
                crate::dns::slow::SlowParse::Query(n) => Some(QuestionRef {
                    id: n.id,
                    question: n.question,
                    edns: n.edns,
                }),
                _ => None,
            },
        }
    }

    /// Judges bytes received for this question sent with `id`.
    fn judge(&self, resp: &[u8], id: u16) -> Verdict {
        if !self.matches(resp, id) {
            // Wrong ID or question: a spoofing attempt or a late answer. Keep waiting.
            Verdict::Ignore
        } else if rcode_fails(resp) {
            Verdict::Failed
        } else {
            Verdict::Accept
        }
    }

    /// Turns an accepted upstream answer into the client's response.
    fn for_client(&self, mut resp: Vec<u8>, tcp: bool) -> Vec<u8> {
        resp[0..2].copy_from_slice(&self.id.to_be_bytes());
        // The client's own limit: what it advertised (at least 512), not the 1232 dockns caps
        // its own answers at.
        let limit = self.edns.map_or(wire::PLAIN_UDP_LIMIT, |e| {
            usize::from(e.udp_size).max(wire::PLAIN_UDP_LIMIT)
        });
        if !tcp && resp.len() > limit {
            return truncated(&resp, self);
        }
        resp
    }

    /// Whether a response is the answer to this question sent with `id`.
    fn matches(&self, resp: &[u8], id: u16) -> bool {
        if resp.len() < 12 + self.question.len() {
            return false;
        }
        let flags = u16::from_be_bytes([resp[2], resp[3]]);
        u16::from_be_bytes([resp[0], resp[1]]) == id
            && flags & 0x8000 != 0
            && u16::from_be_bytes([resp[4], resp[5]]) == 1
            && resp[12..12 + self.question.len()].eq_ignore_ascii_case(&self.question)
    }
}

/// The verdict on one upstream message.
enum Verdict {
    Ignore,
    Failed,
    Accept,
}

fn rcode_fails(resp: &[u8]) -> bool {
    let rc = resp[3] & 0x0F;
    u16::from(rc) == rcode::SERVFAIL || u16::from(rc) == rcode::REFUSED
}

fn with_id(pkt: &[u8], id: u16) -> Vec<u8> {
    let mut q = pkt.to_vec();
    q[0..2].copy_from_slice(&id.to_be_bytes());
    q
}

async fn try_udp(addr: SocketAddr, pkt: &[u8], q: &QuestionRef) -> Result<Vec<u8>, TryError> {
    let bind: SocketAddr = match addr.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).await.map_err(|_| TryError::Io)?;
    sock.connect(addr).await.map_err(|_| TryError::Io)?;
    let id: u16 = rand::random();
    sock.send(&with_id(pkt, id))
        .await
        .map_err(|_| TryError::Io)?;
    // Room for what the client allows (the upstream honours the client's EDNS size), at least
    // 4 KiB: zeroing 64 KiB per query cost more than the rest of the exchange.
    let mut buf = vec![0u8; q.edns.map_or(0, |e| usize::from(e.udp_size)).max(4096)];
    loop {
        // A refused port shows up as an error here: treat the server as failed.
        let n = sock.recv(&mut buf).await.map_err(|_| TryError::Io)?;
        match q.judge(&buf[..n], id) {
            Verdict::Ignore => continue,
            Verdict::Failed => return Err(TryError::Rcode),
            Verdict::Accept => {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }
}

async fn try_tcp(addr: SocketAddr, pkt: &[u8], q: &QuestionRef) -> Result<Vec<u8>, TryError> {
    let mut stream = TcpStream::connect(addr).await.map_err(|_| TryError::Io)?;
    let _ = stream.set_nodelay(true);
    let id: u16 = rand::random();
    let mut msg = Vec::with_capacity(pkt.len() + 2);
    msg.extend_from_slice(&(pkt.len() as u16).to_be_bytes());
    msg.extend_from_slice(&with_id(pkt, id));
    stream.write_all(&msg).await.map_err(|_| TryError::Io)?;
    loop {
        let len = stream.read_u16().await.map_err(|_| TryError::Io)?;
        let mut buf = vec![0u8; usize::from(len)];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|_| TryError::Io)?;
        match q.judge(&buf, id) {
            Verdict::Ignore => continue,
            Verdict::Failed => return Err(TryError::Rcode),
            Verdict::Accept => return Ok(buf),
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
        });
        for _ in 0..health::DEAD_AFTER {
            f.upstreams[0].health.failure();
        }
        let order: Vec<u16> = f.order().map(|(_, u)| u.addr.port()).collect();
        assert_eq!(order, vec![2]);
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
        assert_eq!(
            upstream_reply(&q, 0xABCD, &r[..5], true),
            UpstreamReply::Ignored
        );
        assert_eq!(upstream_reply(&[], 0, &r, true), UpstreamReply::NotAQuery);
    }
}
