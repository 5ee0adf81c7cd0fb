//! The forward cache and in-flight de-duplication of upstream questions.
//!
//! [`Cache`] keeps upstream responses keyed by (lower-cased question name, type, class, DO bit,
//! EDNS present). It is bounded (entry cap split over shards, oldest insertion evicted first),
//! respects TTLs (an entry lives for the smallest TTL in the response and is served with every
//! TTL decremented by its age), and caches negative answers (NXDOMAIN, NODATA) for
//! min(SOA TTL, SOA MINIMUM) as RFC 2308 says, never without an SOA. A response served from
//! the cache gets the client's ID, RD bit and the client's letter case in the question.
//!
//! [`Inflight`] lets identical questions share one upstream query: the first asker leads, the
//! others wait for its result. This module only stores and rewrites DNS messages; it never
//! sends anything and never decides which upstream to ask (that is `forward/mod.rs`). Lookups
//! take one uncontended shard lock and allocate nothing.

use crate::dns::wire::{self, EdnsInfo, Parse};
use crate::metrics::CacheMetrics;
use crate::model::MAX_KEY_LEN;
use rustc_hash::FxHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Longest TTL the cache honours, seconds (longer ones are capped).
pub const MAX_TTL: u32 = 86_400;
const SHARDS: usize = 16;
/// Key: name key, type, class, flags byte.
const KEY_MAX: usize = MAX_KEY_LEN + 5;
const TYPE_SOA: u16 = 6;
const TYPE_OPT: u16 = 41;

/// A client's question as the cache needs it, borrowed from the packet.
#[derive(Clone, Copy)]
pub struct CacheQuestion<'a> {
    id: u16,
    flags: u16,
    question: &'a [u8],
    edns: Option<EdnsInfo>,
    key: [u8; KEY_MAX],
    key_len: usize,
}

impl<'a> CacheQuestion<'a> {
    /// Parses an ordinary query (the fast-path shape); `None` for anything unusual, which then
    /// bypasses the cache.
    pub fn parse(pkt: &'a [u8]) -> Option<CacheQuestion<'a>> {
        let mut name = [0u8; MAX_KEY_LEN];
        let Parse::Query(q) = wire::parse_query(pkt, &mut name) else {
            return None;
        };
        let mut key = [0u8; KEY_MAX];
        let n = q.key_len;
        key[..n].copy_from_slice(&name[..n]);
        key[n..n + 2].copy_from_slice(&q.qtype.to_be_bytes());
        key[n + 2..n + 4].copy_from_slice(&q.qclass.to_be_bytes());
        key[n + 4] = match q.edns {
            None => 0,
            Some(e) => 1 | (u8::from(e.dnssec_ok) << 1),
        };
        Some(CacheQuestion {
            id: q.id,
            flags: q.flags,
            question: &pkt[wire::HEADER_LEN..q.qend],
            edns: q.edns,
            key,
            key_len: n + 5,
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

struct Entry {
    resp: Box<[u8]>,
    /// Offsets of every TTL field (OPT excluded) and the TTL stored there.
    ttls: Box<[(u16, u32)]>,
    stored: Instant,
    expires: Instant,
    seq: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    order: VecDeque<(Box<[u8]>, u64)>,
    seq: u64,
}

/// Cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Entries stored now.
    pub entries: usize,
}

/// The bounded, TTL-respecting response cache. See the module docs.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    entries: AtomicU64,
    metrics: Arc<CacheMetrics>,
}

fn shard_of(key: &[u8]) -> usize {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    (h.finish() >> 32) as usize % SHARDS
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            0xC0 => return (at + 2 <= b.len()).then_some(at + 2),
            _ => return None,
        }
    }
}

/// What a response may be cached as: its TTL fields and how long it lives.
fn analyse(resp: &[u8], question: &[u8]) -> Option<(Vec<(u16, u32)>, u32)> {
    if resp.len() < wire::HEADER_LEN + question.len() || resp.len() > usize::from(u16::MAX) {
        return None;
    }
    let flags = be16(resp, 2);
    let rcode = flags & 0x000F;
    // A response (QR), not truncated (TC), NOERROR or NXDOMAIN, exactly our one question.
    if flags & 0x8000 == 0 || flags & 0x0200 != 0 || (rcode != 0 && rcode != 3) {
        return None;
    }
    if be16(resp, 4) != 1
        || !resp[wire::HEADER_LEN..wire::HEADER_LEN + question.len()].eq_ignore_ascii_case(question)
    {
        return None;
    }
    let (an, ns, ar) = (be16(resp, 6), be16(resp, 8), be16(resp, 10));
    let mut at = wire::HEADER_LEN + question.len();
    let mut ttls = Vec::new();
    let mut min_ttl = u32::MAX;
    let mut soa_ttl: Option<u32> = None;
    for i in 0..(u32::from(an) + u32::from(ns) + u32::from(ar)) {
        at = skip_name(resp, at)?;
        if at + 10 > resp.len() {
            return None;
        }
        let rtype = be16(resp, at);
        let ttl = be32(resp, at + 4);
        let rdlen = usize::from(be16(resp, at + 8));
        let rdata = at + 10;
        if rdata + rdlen > resp.len() {
            return None;
        }
        if rtype != TYPE_OPT {
            // A TTL with the top bit set is treated as zero (RFC 2181 §8).
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
            ttls.push(((at + 4) as u16, ttl));
            min_ttl = min_ttl.min(ttl);
            let in_authority = i >= u32::from(an) && i < u32::from(an) + u32::from(ns);
            if rtype == TYPE_SOA && in_authority && rdlen >= 20 {
                let minimum = be32(resp, rdata + rdlen - 4);
                soa_ttl = Some(ttl.min(minimum));
            }
        }
        at = rdata + rdlen;
    }
    if at != resp.len() {
        return None;
    }
    let life = if rcode == 0 && an > 0 {
        min_ttl
    } else {
        // Negative answer: only with an SOA (RFC 2308 §5).
        soa_ttl?
    };
    (life > 0).then_some((ttls, life.min(MAX_TTL)))
}

/// Rewrites a shared or cached response for one client: its ID, its RD bit, its letter case.
fn personalize(out: &mut [u8], q: &CacheQuestion<'_>) {
    out[0..2].copy_from_slice(&q.id.to_be_bytes());
    out[2] = (out[2] & !0x01) | ((q.flags >> 8) as u8 & 0x01);
    let n = q.question.len();
    out[wire::HEADER_LEN..wire::HEADER_LEN + n].copy_from_slice(q.question);
}

/// Writes `resp` for the client `q` into `out`, truncated (TC, question only) when it exceeds
/// the client's UDP limit (what it advertised, at least 512, as for answers straight from
/// upstream). Returns the length, or 0 when `out` is too small.
fn fit(resp: &[u8], q: &CacheQuestion<'_>, tcp: bool, out: &mut [u8]) -> usize {
    let limit = if tcp {
        wire::MAX_MESSAGE
    } else {
        q.edns.map_or(wire::PLAIN_UDP_LIMIT, |e| {
            usize::from(e.udp_size).max(wire::PLAIN_UDP_LIMIT)
        })
    };
    if resp.len() <= limit {
        if resp.len() > out.len() {
            return 0;
        }
        out[..resp.len()].copy_from_slice(resp);
        personalize(&mut out[..resp.len()], q);
        return resp.len();
    }
    let n = wire::HEADER_LEN + q.question.len();
    if n > out.len() {
        return 0;
    }
    out[..wire::HEADER_LEN].copy_from_slice(&resp[..wire::HEADER_LEN]);
    out[2] |= 0x02; // TC
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    personalize(&mut out[..n], q);
    n
}

/// [`fit`] into a new vector (for the async path).
pub fn fit_vec(resp: &[u8], q: &CacheQuestion<'_>, tcp: bool) -> Vec<u8> {
    let mut out = vec![0u8; resp.len().max(wire::HEADER_LEN + q.question.len())];
    let n = fit(resp, q, tcp, &mut out);
    out.truncate(n);
    out
}

impl Cache {
    /// A cache of at most `entries` responses that records into `metrics`; `None` when
    /// `entries` is 0 (disabled).
    pub fn new(entries: usize, metrics: Arc<CacheMetrics>) -> Option<Cache> {
        if entries == 0 {
            return None;
        }
        metrics.enabled.store(true, Ordering::Relaxed);
        Some(Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: entries.div_ceil(SHARDS),
            entries: AtomicU64::new(0),
            metrics,
        })
    }

    fn count(&self, added: bool) {
        let n = if added {
            self.entries.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.entries
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1)
        };
        self.metrics.set_entries(n);
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
            shard.map.remove(q.key());
            self.count(false);
            return None;
        }
        let n = fit(&e.resp, q, tcp, out);
        if n == 0 {
            return None;
        }
        if n == e.resp.len() {
            let age = now
                .duration_since(e.stored)
                .as_secs()
                .min(u64::from(u32::MAX)) as u32;
            for &(at, ttl) in e.ttls.iter() {
                let at = usize::from(at);
                out[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
            }
        }
        Some(n)
    }

    /// [`Cache::get`] into a new vector.
    pub fn get_vec(&self, q: &CacheQuestion<'_>, tcp: bool) -> Option<Vec<u8>> {
        let mut out = vec![0u8; wire::MAX_MESSAGE];
        let n = self.get(q, tcp, &mut out)?;
        out.truncate(n);
        Some(out)
    }

    /// Stores an upstream response to `q` if it may be cached (see the module docs).
    pub fn insert(&self, q: &CacheQuestion<'_>, resp: &[u8]) {
        self.insert_at(q, resp, Instant::now());
    }

    fn insert_at(&self, q: &CacheQuestion<'_>, resp: &[u8], now: Instant) {
        let Some((ttls, life)) = analyse(resp, q.question) else {
            return;
        };
        let key: Box<[u8]> = q.key().into();
        let mut shard = self.shard(&key);
        let sh = &mut *shard;
        let fresh = !sh.map.contains_key(&key);
        if fresh {
            while sh.map.len() >= self.per_shard {
                let Some((old, seq)) = sh.order.pop_front() else {
                    break;
                };
                if sh.map.get(&old).is_some_and(|e| e.seq == seq) {
                    sh.map.remove(&old);
                    self.count(false);
                    self.metrics.evicted(1);
                }
            }
            self.count(true);
        }
        sh.seq += 1;
        let seq = sh.seq;
        sh.order.push_back((key.clone(), seq));
        sh.map.insert(
            key,
            Entry {
                resp: resp.into(),
                ttls: ttls.into_boxed_slice(),
                stored: now,
                expires: now + Duration::from_secs(u64::from(life)),
                seq,
            },
        );
        // Replaced keys leave stale order slots behind: compact when they pile up.
        if sh.order.len() > 2 * self.per_shard + 16 {
            let map = &sh.map;
            sh.order
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.load(Ordering::Relaxed) as usize,
        }
    }
}

/// The outcome shared with waiters: the upstream response, or `None` when every upstream
/// failed (the waiters answer SERVFAIL too).
pub type Shared = Option<Arc<[u8]>>;

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

    fn query(name: &[u8], qtype: u16, id: u16, edns: Option<bool>) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
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

    /// A response to `q` with the given answer TTLs (A records) or, with none, an NXDOMAIN
    /// carrying an SOA (TTL `soa_ttl`, MINIMUM `minimum`).
    fn response(q: &[u8], answers: &[u32], soa: Option<(u32, u32)>) -> Vec<u8> {
        let cq = CacheQuestion::parse(q).unwrap();
        let mut r = vec![0x99, 0x99, 0x81, 0x80, 0, 1];
        r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        r.extend_from_slice(&u16::from(soa.is_some()).to_be_bytes());
        r.extend_from_slice(&[0, 0]);
        r.extend_from_slice(cq.question);
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

    fn ttl_at(r: &[u8], rr: usize, qlen: usize) -> u32 {
        be32(r, 12 + qlen + rr * 16 + 6)
    }

    #[test]
    fn positive_answers_age_and_expire() {
        let c = Cache::new(100, Arc::default()).unwrap();
        let q = query(b"\x03www\x07example\x00", 1, 1, None);
        let cq = CacheQuestion::parse(&q).unwrap();
        let t0 = Instant::now();
        c.insert_at(&cq, &response(&q, &[300, 60], None), t0);
        // Another client, other ID and letter case.
        let q2 = query(b"\x03WwW\x07Example\x00", 1, 0x4242, None);
        let cq2 = CacheQuestion::parse(&q2).unwrap();
        let mut out = [0u8; 512];
        let n = c
            .get_at(&cq2, false, &mut out, t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(&out[0..2], &[0x42, 0x42]);
        assert_eq!(&out[12..12 + cq2.question.len()], cq2.question);
        assert_eq!(ttl_at(&out[..n], 0, cq2.question.len()), 290);
        assert_eq!(ttl_at(&out[..n], 1, cq2.question.len()), 50);
        // Lives for the smallest TTL.
        assert!(c
            .get_at(&cq2, false, &mut out, t0 + Duration::from_secs(60))
            .is_none());
        assert_eq!(c.stats().entries, 0, "expired entries are removed");
    }

    #[test]
    fn negative_answers_use_soa_minimum() {
        let c = Cache::new(100, Arc::default()).unwrap();
        let q = query(b"\x04nope\x07example\x00", 1, 7, None);
        let cq = CacheQuestion::parse(&q).unwrap();
        let t0 = Instant::now();
        c.insert_at(&cq, &response(&q, &[], Some((3600, 30))), t0);
        let mut out = [0u8; 512];
        let n = c
            .get_at(&cq, false, &mut out, t0 + Duration::from_secs(29))
            .unwrap();
        assert_eq!(out[3] & 0x0F, 3, "NXDOMAIN served from cache");
        // The SOA's owner is the root (one byte), so its TTL sits at +5.
        assert_eq!(be32(&out[..n], 12 + cq.question.len() + 5), 3600 - 29);
        assert!(c
            .get_at(&cq, false, &mut out, t0 + Duration::from_secs(30))
            .is_none());
        // No SOA: not cached at all.
        let q = query(b"\x05other\x07example\x00", 1, 7, None);
        let cq = CacheQuestion::parse(&q).unwrap();
        let mut r = response(&q, &[], None);
        r[3] |= 3;
        c.insert_at(&cq, &r, t0);
        assert!(c.get_at(&cq, false, &mut out, t0).is_none());
    }

    #[test]
    fn uncacheable_responses_are_skipped() {
        let c = Cache::new(100, Arc::default()).unwrap();
        let q = query(b"\x01a\x00", 1, 1, None);
        let cq = CacheQuestion::parse(&q).unwrap();
        let mut out = [0u8; 512];
        let mut servfail = response(&q, &[300], None);
        servfail[3] = 0x82;
        c.insert(&cq, &servfail);
        let mut tc = response(&q, &[300], None);
        tc[2] |= 0x02;
        c.insert(&cq, &tc);
        c.insert(&cq, &response(&q, &[0], None));
        let other = query(b"\x01b\x00", 1, 1, None);
        c.insert(&cq, &response(&other, &[300], None));
        let mut cut = response(&q, &[300], None);
        cut.pop();
        c.insert(&cq, &cut);
        assert!(c.get(&cq, false, &mut out).is_none());
        assert_eq!(c.stats().entries, 0);
        assert!(
            Cache::new(0, Arc::default()).is_none(),
            "cache_size 0 disables the cache"
        );
    }

    #[test]
    fn key_separates_type_do_bit_and_edns() {
        let c = Cache::new(100, Arc::default()).unwrap();
        let plain = query(b"\x01a\x00", 1, 1, None);
        c.insert(
            &CacheQuestion::parse(&plain).unwrap(),
            &response(&plain, &[300], None),
        );
        let mut out = [0u8; 512];
        for other in [
            query(b"\x01a\x00", 28, 1, None),
            query(b"\x01a\x00", 1, 1, Some(false)),
            query(b"\x01a\x00", 1, 1, Some(true)),
        ] {
            assert!(c
                .get(&CacheQuestion::parse(&other).unwrap(), false, &mut out)
                .is_none());
        }
        assert!(c
            .get(&CacheQuestion::parse(&plain).unwrap(), false, &mut out)
            .is_some());
    }

    #[test]
    fn bounded_oldest_evicted_first() {
        let c = Cache::new(SHARDS, Arc::default()).unwrap(); // one entry per shard
        let mut qs = Vec::new();
        for i in 0..200u16 {
            let name = format!("\x04n{i:03}\x00");
            let q = query(name.as_bytes(), 1, i, None);
            c.insert(
                &CacheQuestion::parse(&q).unwrap(),
                &response(&q, &[300], None),
            );
            qs.push(q);
        }
        assert!(c.stats().entries <= SHARDS);
        // The last one inserted is still there.
        let mut out = [0u8; 512];
        let last = CacheQuestion::parse(qs.last().unwrap()).unwrap();
        assert!(c.get(&last, false, &mut out).is_some());
    }

    #[test]
    fn oversized_answers_are_truncated_for_small_udp_clients() {
        let c = Cache::new(10, Arc::default()).unwrap();
        let q = query(b"\x03big\x00", 1, 5, None);
        let cq = CacheQuestion::parse(&q).unwrap();
        let answers = vec![300u32; 40]; // 40 * 16 bytes > 512
        c.insert(&cq, &response(&q, &answers, None));
        let mut out = vec![0u8; 4096];
        let n = c.get(&cq, false, &mut out).unwrap();
        assert_eq!(n, 12 + cq.question.len());
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
        lead.finish(Some(Arc::from(&b"resp"[..])));
        assert_eq!(w1.await.unwrap().as_deref(), Some(&b"resp"[..]));
        assert_eq!(w2.await.unwrap().as_deref(), Some(&b"resp"[..]));
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
