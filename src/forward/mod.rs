//! Forwarding: every question the tables do not answer goes to the upstream servers.
//!
//! [`Forwarder::resolve`] sends the client's query with a fresh random ID from a fresh random
//! source port (UDP) or over a new connection (TCP), accepts only a response whose ID and question
//! match, tries the next server on timeout, SERVFAIL or REFUSED, and always returns something for
//! the client: the upstream's answer with the client's ID restored, or SERVFAIL once every
//! server failed or the question's total budget ran out. It never answers with silence.
//!
//! A server that timed out is remembered as dead for a while and tried last, so one dead
//! upstream costs one timeout, not one per question. In-flight forwards are bounded by a
//! semaphore; the listeners answer REFUSED when it is exhausted, so memory stays bounded.
//!
//! In front of the upstreams sit the response cache and in-flight de-duplication (see
//! `cache.rs`): [`Forwarder::resolve`] answers from the cache when it can, lets identical
//! questions share one upstream query, and stores what comes back.

pub mod cache;

use crate::dns::answer::error_response;
use crate::dns::wire::{self, rcode, MAX_MESSAGE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a server that timed out is tried last.
const DEAD_FOR: Duration = Duration::from_secs(10);

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
    /// Milliseconds since `epoch` until which the server counts as dead (0 = alive).
    dead_until_ms: AtomicU64,
}

/// The upstream pool. See the module docs.
pub struct Forwarder {
    upstreams: Vec<Upstream>,
    timeout: Duration,
    budget: Duration,
    inflight: Arc<Semaphore>,
    epoch: Instant,
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
        Arc::new(Forwarder {
            upstreams: s
                .servers
                .iter()
                .map(|&addr| Upstream {
                    addr,
                    dead_until_ms: AtomicU64::new(0),
                })
                .collect(),
            timeout: s.timeout,
            budget: s.budget,
            inflight: Arc::new(Semaphore::new(s.max_inflight)),
            epoch: Instant::now(),
            cache: cache::Cache::new(s.cache_size),
            pending: Arc::default(),
        })
    }

    /// The configured servers.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.upstreams.iter().map(|u| u.addr).collect()
    }

    /// Reserves a slot for one forwarded question; `None` when the bound is reached.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.inflight.clone().try_acquire_owned().ok()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Upstreams in the order to try: live ones first (configured order), then dead ones.
    fn order(&self) -> Vec<&Upstream> {
        let now = self.now_ms();
        let (mut alive, dead): (Vec<&Upstream>, Vec<&Upstream>) = self
            .upstreams
            .iter()
            .partition(|u| u.dead_until_ms.load(Ordering::Relaxed) <= now);
        alive.extend(dead);
        alive
    }

    /// Answers a query from the cache alone, without waiting (for the listeners' own threads):
    /// the length written into `out`, or `None` on a miss.
    pub fn answer_from_cache(&self, pkt: &[u8], out: &mut [u8], tcp: bool) -> Option<usize> {
        let c = self.cache.as_ref()?;
        c.get(&cache::CacheQuestion::parse(pkt)?, tcp, out)
    }

    /// Cache counters (`None` when the cache is disabled).
    pub fn cache_stats(&self) -> Option<cache::CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Resolves a client's query: from the cache, by joining an identical question already in
    /// flight, or upstream. Always returns a response for the client unless the packet is not a
    /// query at all (then the result is empty).
    pub async fn resolve(&self, pkt: &[u8], tcp: bool) -> Vec<u8> {
        let Some(q) = QuestionRef::read(pkt) else {
            return servfail(pkt, tcp);
        };
        let Some(cq) = cache::CacheQuestion::parse(pkt) else {
            // Unusual shapes bypass the cache.
            return self.upstream_for(pkt, &q, tcp).await;
        };
        if let Some(resp) = self.cache.as_ref().and_then(|c| c.get_vec(&cq, tcp)) {
            return resp;
        }
        let lead = match self.pending.join(cq.inflight_key(tcp)) {
            cache::Join::Leader(lead) => lead,
            cache::Join::Waiter(rx) => {
                return match tokio::time::timeout(self.budget, rx).await {
                    Ok(Ok(Some(resp))) => cache::fit_vec(&resp, &cq, tcp),
                    Ok(Ok(None)) => servfail(pkt, tcp),
                    // The leader gave up (or took too long): ask for ourselves.
                    _ => self.upstream_for(pkt, &q, tcp).await,
                };
            }
        };
        match self.upstream(pkt, &q, tcp).await {
            Some(resp) => {
                if let Some(c) = &self.cache {
                    c.insert(&cq, &resp);
                }
                let out = cache::fit_vec(&resp, &cq, tcp);
                lead.finish(Some(resp.into()));
                out
            }
            None => {
                lead.finish(None);
                servfail(pkt, tcp)
            }
        }
    }

    /// Upstream only, with the client's UDP limit applied; SERVFAIL when every server failed.
    async fn upstream_for(&self, pkt: &[u8], q: &QuestionRef, tcp: bool) -> Vec<u8> {
        match self.upstream(pkt, q, tcp).await {
            Some(resp) => {
                if !tcp && resp.len() > wire::response_limit(q.edns, false) {
                    truncated(&resp, q)
                } else {
                    resp
                }
            }
            None => servfail(pkt, tcp),
        }
    }

    /// Asks the upstream servers in order; the first usable response (with the client's ID),
    /// whole, or `None` once every server failed or the budget ran out.
    async fn upstream(&self, pkt: &[u8], q: &QuestionRef, tcp: bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + self.budget;
        for up in self.order() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let per_try = self.timeout.min(deadline - now);
            let res = if tcp {
                tokio::time::timeout(per_try, try_tcp(up.addr, pkt, q)).await
            } else {
                tokio::time::timeout(per_try, try_udp(up.addr, pkt, q)).await
            };
            match res {
                Ok(Ok(mut resp)) => {
                    up.dead_until_ms.store(0, Ordering::Relaxed);
                    resp[0..2].copy_from_slice(&q.id.to_be_bytes());
                    return Some(resp);
                }
                Ok(Err(TryError::Rcode)) => {
                    tracing::debug!(upstream = %up.addr, "upstream answered SERVFAIL/REFUSED, trying next");
                }
                Ok(Err(TryError::Io)) | Err(_) => {
                    let was = up.dead_until_ms.swap(
                        self.now_ms() + DEAD_FOR.as_millis() as u64,
                        Ordering::Relaxed,
                    );
                    if was == 0 {
                        tracing::warn!(upstream = %up.addr, "upstream not answering; trying it last for {}s", DEAD_FOR.as_secs());
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
        let resp = &buf[..n];
        if !q.matches(resp, id) {
            // Wrong ID or question: a spoofing attempt or a late answer. Keep waiting.
            continue;
        }
        if rcode_fails(resp) {
            return Err(TryError::Rcode);
        }
        buf.truncate(n);
        return Ok(buf);
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
        if !q.matches(&buf, id) {
            continue;
        }
        if rcode_fails(&buf) {
            return Err(TryError::Rcode);
        }
        return Ok(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_puts_dead_servers_last() {
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
        f.upstreams[0]
            .dead_until_ms
            .store(f.now_ms() + 60_000, Ordering::Relaxed);
        let order: Vec<u16> = f.order().iter().map(|u| u.addr.port()).collect();
        assert_eq!(order, vec![2, 1]);
        assert!(f.try_acquire().is_some_and(|p| {
            let second = f.try_acquire();
            drop(p);
            second.is_none()
        }));
    }
}
