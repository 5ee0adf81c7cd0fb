//! The forward cache and in-flight de-duplication of upstream questions.
//!
//! [`Cache`] keeps normalised upstream answers ([`reply::Answer`]: header, question and records,
//! no OPT) keyed by everything that changes the answer: the lower-cased question name, the type
//! and class, the client's DO and CD bits, and the identity of the upstream server set asked (a
//! 64-bit hash of the list; 0 for the configured `[upstream] servers`), so an answer fetched with
//! CD=1, or from one container's own DNS servers, never reaches a client that asked otherwise.
//! A hit is rebuilt for each client by [`reply::write_client_reply`]: its ID, its question
//! bytes, its flags, dockns's own OPT: nothing of another client (its COOKIE, RFC 7873) is ever
//! replayed. An entry lives for the smallest TTL in the answer (TTLs served decremented by the
//! entry's age); negative answers (NXDOMAIN, NODATA) for min(SOA TTL, SOA MINIMUM) as RFC 2308
//! says, never without an SOA.
//!
//! Bounds: `max_bytes` of accounted memory (message, TTL table, key twice, and a fixed
//! per-entry overhead, [`ENTRY_OVERHEAD`]) and `max_entries` entries, each split evenly over
//! [`SHARDS`] shards; inserting evicts the oldest insertions of its shard until the new entry
//! fits. An expired entry is kept (within the bounds) for `stale` more time, so that
//! [`Cache::stale_vec`] can answer it with TTL 30 when every upstream fails (RFC 8767).
//!
//! Why a hand-written sharded map and not moka: the cache-hit probe runs on the UDP worker
//! threads for every forwarded question and must not cost more than a local answer; moka's
//! `get` clones an `Arc` and records the read for its eviction policy, a sharded `HashMap`
//! lookup under an uncontended mutex copies straight into the reply buffer. Measured numbers
//! are in the README ("Forwarding").
//!
//! [`Inflight`] lets identical questions share one upstream query: the first asker leads, the
//! others wait for its result. This module only stores and rewrites DNS messages; it never
//! sends anything and never decides which upstream to ask (that is `forward/mod.rs`). Lookups
//! take one uncontended shard lock and allocate nothing.

use super::reply::{self, Answer, AnswerRef, ClientQuery, Ttl};
use crate::metrics::CacheMetrics;
use crate::wire::MAX_KEY_LEN;
use crate::wire::{self, Parse};
use rustc_hash::FxHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Longest TTL the cache honours, seconds (longer ones are capped).
pub const MAX_TTL: u32 = reply::MAX_TTL;
/// Shards of the cache (each with its own lock and its share of the bounds).
pub const SHARDS: usize = 16;
/// Bytes accounted per entry besides its message, TTL table and keys (the entry, the map slot,
/// the eviction-queue slot, allocator headers).
pub const ENTRY_OVERHEAD: usize = 160;
/// Key: name key, type, class, flags byte, server-set identity.
const KEY_MAX: usize = MAX_KEY_LEN + 5 + 8;

/// A client's question as the cache needs it, borrowed from the packet.
#[derive(Clone, Copy)]
pub struct CacheQuestion<'a> {
    /// The client's query.
    pub client: ClientQuery<'a>,
    key: [u8; KEY_MAX],
    key_len: usize,
}

impl<'a> CacheQuestion<'a> {
    /// Parses an ordinary query (the fast-path shape) asked of the server set `set` (see
    /// [`crate::forward::set_id`]); `None` for anything unusual.
    pub fn parse(pkt: &'a [u8], set: u64) -> Option<CacheQuestion<'a>> {
        // The parser writes the lower-cased name straight into the key buffer.
        let mut key = [0u8; KEY_MAX];
        let name: &mut [u8; MAX_KEY_LEN] = (&mut key[..MAX_KEY_LEN]).try_into().ok()?;
        let Parse::Query(q) = wire::parse_query(pkt, name) else {
            return None;
        };
        let client = ClientQuery {
            id: q.id,
            flags: q.flags,
            question: pkt.get(wire::HEADER_LEN..q.qend)?,
            edns: q.edns,
        };
        let key_len = finish_key(&mut key, q.key_len, q.qtype, q.qclass, &client, set)?;
        Some(CacheQuestion {
            client,
            key,
            key_len,
        })
    }

    /// Builds the key from parts: `name` is the lower-cased wire name without the root label.
    /// `None` when the name is too long for a key.
    pub fn new(
        client: ClientQuery<'a>,
        name: &[u8],
        qtype: u16,
        qclass: u16,
        set: u64,
    ) -> Option<CacheQuestion<'a>> {
        let mut key = [0u8; KEY_MAX];
        let n = name.len();
        key.get_mut(..n)?.copy_from_slice(name);
        let key_len = finish_key(&mut key, n, qtype, qclass, &client, set)?;
        Some(CacheQuestion {
            client,
            key,
            key_len,
        })
    }

    /// The cache key.
    pub fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    /// The in-flight key: the cache key plus the transport (a UDP answer may be truncated).
    pub fn inflight_key(&self, tcp: bool) -> Box<[u8]> {
        let mut k = Vec::with_capacity(self.key_len + 1);
        k.extend_from_slice(self.key());
        k.push(u8::from(tcp));
        k.into_boxed_slice()
    }
}

/// Appends type, class, the DO/CD byte and the server-set identity to the `n` name bytes already
/// in `key`; returns the key length (`None` when it does not fit).
fn finish_key(
    key: &mut [u8; KEY_MAX],
    n: usize,
    qtype: u16,
    qclass: u16,
    client: &ClientQuery<'_>,
    set: u64,
) -> Option<usize> {
    let k = key.get_mut(n..n + 13)?;
    k[0..2].copy_from_slice(&qtype.to_be_bytes());
    k[2..4].copy_from_slice(&qclass.to_be_bytes());
    k[4] = u8::from(client.dnssec_ok()) | (u8::from(client.checking_disabled()) << 1);
    k[5..13].copy_from_slice(&set.to_be_bytes());
    Some(n + 13)
}

struct Entry {
    msg: Box<[u8]>,
    /// Offsets of every TTL field (OPT excluded) and the TTL stored there.
    ttls: Box<[(u16, u32)]>,
    rcode: u16,
    stored: Instant,
    expires: Instant,
    /// Served stale (when every upstream fails) until then; removed after.
    stale_until: Instant,
    weight: usize,
    seq: u64,
}

impl Entry {
    fn answer(&self) -> AnswerRef<'_> {
        AnswerRef {
            msg: &self.msg,
            ttls: &self.ttls,
            rcode: self.rcode,
        }
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    order: VecDeque<(Box<[u8]>, u64)>,
    seq: u64,
    bytes: usize,
}

/// Cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Entries stored now.
    pub entries: usize,
    /// Bytes accounted to them now.
    pub bytes: usize,
}

/// The bounded, TTL-respecting response cache. See the module docs.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    per_shard_bytes: usize,
    stale: Duration,
    entries: AtomicU64,
    bytes: AtomicU64,
    metrics: Arc<CacheMetrics>,
}

fn shard_of(key: &[u8]) -> usize {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    (h.finish() >> 32) as usize % SHARDS
}

/// The UDP or TCP limit of the client's reply.
fn limit(q: &CacheQuestion<'_>, tcp: bool) -> usize {
    wire::response_limit(q.client.edns, tcp)
}

/// Writes the normalised answer `a` for the client of `q` (see [`reply::write_client_reply`]).
pub fn fit_vec(a: &Answer, q: &CacheQuestion<'_>, tcp: bool) -> Vec<u8> {
    reply::client_reply(&q.client, a.as_ref(), Ttl::Aged(0), limit(q, tcp))
}

impl Cache {
    /// A cache of at most `entries` answers and `bytes` accounted bytes, keeping expired
    /// answers `stale` longer for serve-stale, recording into `metrics`; `None` when `entries`
    /// or `bytes` is 0 (disabled).
    pub fn new(
        entries: usize,
        bytes: usize,
        stale: Duration,
        metrics: Arc<CacheMetrics>,
    ) -> Option<Cache> {
        if entries == 0 || bytes == 0 {
            return None;
        }
        metrics.enabled.store(true, Ordering::Relaxed);
        Some(Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: entries.div_ceil(SHARDS),
            per_shard_bytes: bytes / SHARDS,
            stale,
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            metrics,
        })
    }

    fn count(&self, added: bool, weight: usize) {
        let w = weight as u64;
        let (n, b) = if added {
            (
                self.entries.fetch_add(1, Ordering::Relaxed) + 1,
                self.bytes.fetch_add(w, Ordering::Relaxed) + w,
            )
        } else {
            (
                self.entries
                    .fetch_sub(1, Ordering::Relaxed)
                    .saturating_sub(1),
                self.bytes.fetch_sub(w, Ordering::Relaxed).saturating_sub(w),
            )
        };
        self.metrics.set_entries(n);
        self.metrics.set_bytes(b);
    }

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `q` from the cache into `out` (TTLs decremented by the entry's age); returns the
    /// length, or `None` on a miss (absent or expired).
    pub fn get(&self, q: &CacheQuestion<'_>, tcp: bool, out: &mut [u8]) -> Option<usize> {
        let r = self.probe(q, tcp, out);
        if r.is_none() {
            self.metrics.miss();
        }
        r
    }

    /// [`Cache::get`] for a probe that is followed, on a miss, by the full forwarding path
    /// (which looks again and counts the miss): counts hits only, so each client question is
    /// one lookup in the metrics.
    pub fn probe(&self, q: &CacheQuestion<'_>, tcp: bool, out: &mut [u8]) -> Option<usize> {
        let r = self.get_at(q, tcp, out, Instant::now());
        if r.is_some() {
            self.metrics.hit();
        }
        r
    }

    fn get_at(
        &self,
        q: &CacheQuestion<'_>,
        tcp: bool,
        out: &mut [u8],
        now: Instant,
    ) -> Option<usize> {
        let mut shard = self.shard(q.key());
        let e = shard.map.get(q.key())?;
        if now >= e.expires {
            if now >= e.stale_until {
                let w = e.weight;
                shard.bytes -= w;
                shard.map.remove(q.key());
                self.count(false, w);
            }
            return None;
        }
        let age = now
            .duration_since(e.stored)
            .as_secs()
            .min(u64::from(u32::MAX)) as u32;
        let n =
            reply::write_client_reply(out, &q.client, e.answer(), Ttl::Aged(age), limit(q, tcp));
        (n > 0).then_some(n)
    }

    /// [`Cache::get`] into a new vector.
    pub fn get_vec(&self, q: &CacheQuestion<'_>, tcp: bool) -> Option<Vec<u8>> {
        let mut out = vec![0u8; wire::MAX_MESSAGE];
        let n = self.get(q, tcp, &mut out)?;
        out.truncate(n);
        Some(out)
    }

    /// An expired answer to `q` still within the stale window, every TTL set to
    /// [`reply::STALE_TTL`] (RFC 8767), for when every upstream failed. Counted as a stale
    /// answer in the metrics.
    pub fn stale_vec(&self, q: &CacheQuestion<'_>, tcp: bool) -> Option<Vec<u8>> {
        self.stale_at(q, tcp, Instant::now())
    }

    fn stale_at(&self, q: &CacheQuestion<'_>, tcp: bool, now: Instant) -> Option<Vec<u8>> {
        let shard = self.shard(q.key());
        let e = shard.map.get(q.key())?;
        if now >= e.stale_until {
            return None;
        }
        let r = reply::client_reply(
            &q.client,
            e.answer(),
            Ttl::Fixed(reply::STALE_TTL),
            limit(q, tcp),
        );
        if r.is_empty() {
            return None;
        }
        self.metrics.served_stale();
        Some(r)
    }

    /// Stores an accepted upstream answer to `q` if it may be cached (see the module docs).
    pub fn insert(&self, q: &CacheQuestion<'_>, a: &Answer) {
        self.insert_at(q, a, Instant::now());
    }

    fn insert_at(&self, q: &CacheQuestion<'_>, a: &Answer, now: Instant) {
        let Some(life) = a.life else {
            return;
        };
        let life = life.min(MAX_TTL);
        let weight = a.msg.len() + a.ttls.len() * 8 + 2 * q.key_len + ENTRY_OVERHEAD;
        if weight > self.per_shard_bytes {
            return;
        }
        let key: Box<[u8]> = q.key().into();
        let mut shard = self.shard(&key);
        let sh = &mut *shard;
        if let Some(old) = sh.map.remove(&key) {
            sh.bytes -= old.weight;
            self.count(false, old.weight);
        }
        while sh.map.len() >= self.per_shard || sh.bytes + weight > self.per_shard_bytes {
            let Some((old, seq)) = sh.order.pop_front() else {
                break;
            };
            if sh.map.get(&old).is_some_and(|e| e.seq == seq) {
                if let Some(e) = sh.map.remove(&old) {
                    sh.bytes -= e.weight;
                    self.count(false, e.weight);
                    self.metrics.evicted(1);
                }
            }
        }
        sh.seq += 1;
        let seq = sh.seq;
        sh.order.push_back((key.clone(), seq));
        let expires = now + Duration::from_secs(u64::from(life));
        sh.map.insert(
            key,
            Entry {
                msg: a.msg.as_slice().into(),
                ttls: a.ttls.as_slice().into(),
                rcode: a.rcode,
                stored: now,
                expires,
                stale_until: expires + self.stale,
                weight,
                seq,
            },
        );
        sh.bytes += weight;
        self.count(true, weight);
        // Replaced keys leave stale order slots behind: compact when they pile up.
        if sh.order.len() > 2 * sh.map.len() + 16 {
            let map = &sh.map;
            sh.order
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.load(Ordering::Relaxed) as usize,
            bytes: self.bytes.load(Ordering::Relaxed) as usize,
        }
    }
}

/// The outcome shared with waiters: the upstream response, or `None` when every upstream
/// failed (the waiters answer SERVFAIL too).
pub type Shared = Option<Arc<Answer>>;

type Waiters = Vec<oneshot::Sender<Shared>>;

/// Questions in flight upstream, so identical ones share one query.
#[derive(Default)]
pub struct Inflight {
    map: Mutex<HashMap<Box<[u8]>, Waiters>>,
}

/// The role of one asker of a question.
pub enum Join {
    /// Ask upstream, then [`Leader::finish`].
    Leader(Leader),
    /// Wait for the leader's result (an error means the leader gave up: ask yourself).
    Waiter(oneshot::Receiver<Shared>),
}

/// The asker that queries upstream for everyone; dropping it unfinished releases the waiters
/// (they then ask upstream themselves).
pub struct Leader {
    inflight: Arc<Inflight>,
    key: Option<Box<[u8]>>,
}

impl Inflight {
    /// Joins the question `key`: the first asker leads.
    pub fn join(self: &Arc<Self>, key: Box<[u8]>) -> Join {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = map.get_mut(&key) {
            let (tx, rx) = oneshot::channel();
            w.push(tx);
            return Join::Waiter(rx);
        }
        map.insert(key.clone(), Vec::new());
        Join::Leader(Leader {
            inflight: self.clone(),
            key: Some(key),
        })
    }

    /// Questions in flight now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, key: &[u8]) -> Waiters {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
            .unwrap_or_default()
    }
}

impl Leader {
    /// Hands the result to every waiter and ends the in-flight entry.
    pub fn finish(mut self, result: Shared) {
        if let Some(key) = self.key.take() {
            for w in self.inflight.take(&key) {
                let _ = w.send(result.clone());
            }
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // Dropping the senders tells the waiters to ask for themselves.
            drop(self.inflight.take(&key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::reply::{judge, Judgement};

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn query_flags(name: &[u8], qtype: u16, id: u16, edns: Option<bool>, cd: bool) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x01, if cd { 0x10 } else { 0 }, 0, 1, 0, 0, 0, 0, 0]);
        p.push(u8::from(edns.is_some()));
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(d) = edns {
            p.extend_from_slice(&[
                0,
                0,
                41,
                0x04,
                0xD0,
                0,
                0,
                if d { 0x80 } else { 0 },
                0,
                0,
                0,
            ]);
        }
        p
    }

    fn query(name: &[u8], qtype: u16, id: u16, edns: Option<bool>) -> Vec<u8> {
        query_flags(name, qtype, id, edns, false)
    }

    fn cache(entries: usize) -> Cache {
        Cache::new(entries, 1 << 24, Duration::ZERO, Arc::default()).unwrap()
    }

    /// A response to `q` with the given answer TTLs (A records) or, with none, an NXDOMAIN
    /// carrying an SOA (TTL `soa_ttl`, MINIMUM `minimum`).
    fn response(q: &[u8], answers: &[u32], soa: Option<(u32, u32)>) -> Vec<u8> {
        let cq = CacheQuestion::parse(q, 0).unwrap();
        let mut r = vec![0x99, 0x99, 0x81, 0x80, 0, 1];
        r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        r.extend_from_slice(&u16::from(soa.is_some()).to_be_bytes());
        r.extend_from_slice(&[0, 0]);
        r.extend_from_slice(cq.client.question);
        for (i, ttl) in answers.iter().enumerate() {
            r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&[0, 4, 192, 0, 2, i as u8]);
        }
        if let Some((ttl, min)) = soa {
            if answers.is_empty() {
                r[3] = (r[3] & 0xF0) | 3;
            }
            r.extend_from_slice(&[0, 0, 6, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            let mut rd = vec![0, 0]; // root mname, root rname
            rd.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
            rd.extend_from_slice(&min.to_be_bytes());
            r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            r.extend_from_slice(&rd);
        }
        r
    }

    /// The response judged as the forwarder does (sent as ID 0x9999 with the same question).
    fn judged(q: &[u8], r: &[u8]) -> Option<Answer> {
        let cq = CacheQuestion::parse(q, 0).unwrap();
        match judge(0x9999, cq.client.question, r, false, MAX_TTL) {
            Judgement::Accept(a) => Some(a),
            _ => None,
        }
    }

    fn ans(q: &[u8], r: &[u8]) -> Answer {
        judged(q, r).expect("accepted")
    }

    fn ttl_at(r: &[u8], rr: usize, qlen: usize) -> u32 {
        be32(r, 12 + qlen + rr * 16 + 6)
    }

    #[test]
    fn positive_answers_age_and_expire() {
        let c = cache(100);
        let q = query(b"\x03www\x07example\x00", 1, 1, None);
        let cq = CacheQuestion::parse(&q, 0).unwrap();
        let t0 = Instant::now();
        c.insert_at(&cq, &ans(&q, &response(&q, &[300, 60], None)), t0);
        // Another client, other ID and letter case.
        let q2 = query(b"\x03WwW\x07Example\x00", 1, 0x4242, None);
        let cq2 = CacheQuestion::parse(&q2, 0).unwrap();
        let qlen = cq2.client.question.len();
        let mut out = [0u8; 512];
        let n = c
            .get_at(&cq2, false, &mut out, t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(&out[0..2], &[0x42, 0x42]);
        assert_eq!(&out[12..12 + qlen], cq2.client.question);
        assert_eq!(ttl_at(&out[..n], 0, qlen), 290);
        assert_eq!(ttl_at(&out[..n], 1, qlen), 50);
        // Lives for the smallest TTL.
        assert!(c
            .get_at(&cq2, false, &mut out, t0 + Duration::from_secs(60))
            .is_none());
        assert_eq!(c.stats().entries, 0, "expired entries are removed");
    }

    #[test]
    fn negative_answers_use_soa_minimum() {
        let c = cache(100);
        let q = query(b"\x04nope\x07example\x00", 1, 7, None);
        let cq = CacheQuestion::parse(&q, 0).unwrap();
        let qlen = cq.client.question.len();
        let t0 = Instant::now();
        c.insert_at(&cq, &ans(&q, &response(&q, &[], Some((3600, 30)))), t0);
        let mut out = [0u8; 512];
        let n = c
            .get_at(&cq, false, &mut out, t0 + Duration::from_secs(29))
            .unwrap();
        assert_eq!(out[3] & 0x0F, 3, "NXDOMAIN served from cache");
        // The SOA's owner is the root (one byte), so its TTL sits at +5.
        assert_eq!(be32(&out[..n], 12 + qlen + 5), 3600 - 29);
        assert!(c
            .get_at(&cq, false, &mut out, t0 + Duration::from_secs(30))
            .is_none());
        // No SOA: not cached at all.
        let q = query(b"\x05other\x07example\x00", 1, 7, None);
        let cq = CacheQuestion::parse(&q, 0).unwrap();
        let mut r = response(&q, &[], None);
        r[3] |= 3;
        c.insert_at(&cq, &ans(&q, &r), t0);
        assert!(c.get_at(&cq, false, &mut out, t0).is_none());
    }

    #[test]
    fn uncacheable_responses_are_skipped() {
        let c = cache(100);
        let q = query(b"\x01a\x00", 1, 1, None);
        let cq = CacheQuestion::parse(&q, 0).unwrap();
        let mut out = [0u8; 512];
        let mut servfail = response(&q, &[300], None);
        servfail[3] = 0x82;
        assert!(judged(&q, &servfail).is_none(), "SERVFAIL is a failure");
        let mut tc = response(&q, &[300], None);
        tc[2] |= 0x02;
        c.insert(&cq, &ans(&q, &tc));
        c.insert(&cq, &ans(&q, &response(&q, &[0], None)));
        let other = query(b"\x01b\x00", 1, 1, None);
        assert!(judged(&q, &response(&other, &[300], None)).is_none());
        let mut cut = response(&q, &[300], None);
        cut.pop();
        assert!(judged(&q, &cut).is_none(), "a cut record is malformed");
        assert!(c.get(&cq, false, &mut out).is_none());
        assert_eq!(c.stats().entries, 0);
        assert!(
            Cache::new(0, 1 << 20, Duration::ZERO, Arc::default()).is_none(),
            "cache_size 0 disables the cache"
        );
        assert!(
            Cache::new(10, 0, Duration::ZERO, Arc::default()).is_none(),
            "cache_bytes 0 disables the cache"
        );
    }

    #[test]
    fn key_separates_type_do_cd_and_server_set() {
        let c = cache(100);
        let plain = query(b"\x01a\x00", 1, 1, None);
        c.insert(
            &CacheQuestion::parse(&plain, 0).unwrap(),
            &ans(&plain, &response(&plain, &[300], None)),
        );
        let mut out = [0u8; 512];
        for (other, set) in [
            (query(b"\x01a\x00", 28, 1, None), 0),
            (query(b"\x01a\x00", 1, 1, Some(true)), 0),
            (query_flags(b"\x01a\x00", 1, 1, None, true), 0),
            (query(b"\x01a\x00", 1, 1, None), 42),
        ] {
            assert!(c
                .get(&CacheQuestion::parse(&other, set).unwrap(), false, &mut out)
                .is_none());
        }
        // EDNS without DO asks upstream exactly what a plain query asks: the same entry, with
        // dockns's own OPT for this client.
        let e = query(b"\x01a\x00", 1, 1, Some(false));
        let n = c
            .get(&CacheQuestion::parse(&e, 0).unwrap(), false, &mut out)
            .unwrap();
        assert_eq!(&out[n - 11..n - 8], &[0, 0, 41]);
        assert!(c
            .get(&CacheQuestion::parse(&plain, 0).unwrap(), false, &mut out)
            .is_some());
    }

    #[test]
    fn bounded_oldest_evicted_first() {
        let c = cache(SHARDS); // one entry per shard
        let mut qs = Vec::new();
        for i in 0..200u16 {
            let name = format!("\x04n{i:03}\x00");
            let q = query(name.as_bytes(), 1, i, None);
            c.insert(
                &CacheQuestion::parse(&q, 0).unwrap(),
                &ans(&q, &response(&q, &[300], None)),
            );
            qs.push(q);
        }
        assert!(c.stats().entries <= SHARDS);
        // The last one inserted is still there.
        let mut out = [0u8; 512];
        let last = CacheQuestion::parse(qs.last().unwrap(), 0).unwrap();
        assert!(c.get(&last, false, &mut out).is_some());
    }

    #[test]
    fn bounded_in_bytes() {
        let budget = 256 * 1024;
        let c = Cache::new(1_000_000, budget, Duration::ZERO, Arc::default()).unwrap();
        for i in 0..2000u16 {
            let name = format!("\x05n{i:04}\x00");
            let q = query(name.as_bytes(), 1, i, None);
            // 60 A records: about 1 KiB per answer.
            c.insert(
                &CacheQuestion::parse(&q, 0).unwrap(),
                &ans(&q, &response(&q, &[300; 60], None)),
            );
            assert!(c.stats().bytes <= budget, "{} > {budget}", c.stats().bytes);
        }
        let s = c.stats();
        assert!(s.entries > 100 && s.entries < 2000, "{s:?}");
        // An answer larger than a shard's share is not cached at all.
        let q = query(b"\x03big\x00", 1, 1, None);
        let cq = CacheQuestion::parse(&q, 0).unwrap();
        let big = ans(&q, &response(&q, &[300; 1200], None));
        c.insert(&cq, &big);
        assert!(c.get_vec(&cq, true).is_none());
    }

    #[test]
    fn expired_answers_are_served_stale_within_the_window() {
        let c = Cache::new(100, 1 << 20, Duration::from_secs(3600), Arc::default()).unwrap();
        let q = query(b"\x03old\x00", 1, 9, Some(false));
        let cq = CacheQuestion::parse(&q, 0).unwrap();
        let qlen = cq.client.question.len();
        let t0 = Instant::now();
        c.insert_at(&cq, &ans(&q, &response(&q, &[60], None)), t0);
        let mut out = [0u8; 512];
        let later = t0 + Duration::from_secs(600);
        assert!(c.get_at(&cq, false, &mut out, later).is_none(), "expired");
        let r = c.stale_at(&cq, false, later).expect("stale answer");
        assert_eq!(ttl_at(&r, 0, qlen), reply::STALE_TTL);
        assert_eq!(&r[0..2], &[0, 9]);
        assert!(
            c.stale_at(&cq, false, t0 + Duration::from_secs(60 + 3600))
                .is_none(),
            "beyond the stale window"
        );
        let none = Cache::new(100, 1 << 20, Duration::ZERO, Arc::default()).unwrap();
        none.insert_at(&cq, &ans(&q, &response(&q, &[60], None)), t0);
        assert!(none.stale_at(&cq, false, later).is_none());
    }

    #[test]
    fn oversized_answers_are_truncated_for_small_udp_clients() {
        let c = cache(10);
        let q = query(b"\x03big\x00", 1, 5, None);
        let cq = CacheQuestion::parse(&q, 0).unwrap();
        let answers = vec![300u32; 40]; // 40 * 16 bytes > 512
        c.insert(&cq, &ans(&q, &response(&q, &answers, None)));
        let mut out = vec![0u8; 4096];
        let n = c.get(&cq, false, &mut out).unwrap();
        assert_eq!(n, 12 + cq.client.question.len());
        assert_ne!(out[2] & 0x02, 0, "TC set");
        let n = c.get(&cq, true, &mut out).unwrap();
        assert!(n > 512, "TCP gets the whole answer");
    }

    #[tokio::test]
    async fn inflight_shares_one_result() {
        let f = Arc::new(Inflight::default());
        let Join::Leader(lead) = f.join(b"k".as_slice().into()) else {
            panic!("first asker must lead")
        };
        let Join::Waiter(w1) = f.join(b"k".as_slice().into()) else {
            panic!("second asker must wait")
        };
        let Join::Waiter(w2) = f.join(b"k".as_slice().into()) else {
            panic!("third asker must wait")
        };
        assert!(matches!(
            f.join(b"other".as_slice().into()),
            Join::Leader(_)
        ));
        let a = Arc::new(Answer {
            msg: b"resp".to_vec(),
            ttls: Vec::new(),
            rcode: 0,
            life: None,
        });
        lead.finish(Some(a.clone()));
        assert_eq!(w1.await.unwrap().as_deref(), Some(&*a));
        assert_eq!(w2.await.unwrap().as_deref(), Some(&*a));
        assert!(f.is_empty());
        // A leader that gives up releases its waiters with an error.
        let Join::Leader(lead) = f.join(b"k".as_slice().into()) else {
            panic!()
        };
        let Join::Waiter(w) = f.join(b"k".as_slice().into()) else {
            panic!()
        };
        drop(lead);
        assert!(w.await.is_err());
        assert!(f.is_empty());
    }
}
