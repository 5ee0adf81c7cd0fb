//! Query counters, kept per worker (one cache-line-aligned struct each, relaxed atomics in fixed
//! arrays indexed by small qtype/rcode buckets, no sharing between workers) and summed only when
//! someone reads them, so counting costs the hot path a few uncontended atomic adds: no
//! allocation, no lock, no map lookup.
//!
//! This module only counts; rendering (Prometheus text) lives in `metrics`, and what counts as a
//! reply is decided by the listeners that call in here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How a reply was produced, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the tables (records, NODATA or NXDOMAIN).
    Local,
    /// An error response (FORMERR, NOTIMP, BADVERS, REFUSED, SERVFAIL).
    Error,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSource {
    /// Written by dockns itself: the tables (records, NODATA, NXDOMAIN) and the error responses
    /// (FORMERR, NOTIMP, BADVERS, REFUSED for lack of capacity).
    Local = 0,
    /// A forwarded question answered from the cache.
    Cache = 1,
    /// A forwarded question answered by an upstream server (or SERVFAIL once every upstream
    /// failed).
    Upstream = 2,
}

/// Label values of [`AnswerSource`], by index.
pub const SOURCES: [&str; 3] = ["local", "cache", "upstream"];

/// Transports, by index (`tcp as usize`).
pub const TRANSPORTS: [&str; 2] = ["udp", "tcp"];

/// Question types counted separately; everything else is `other` (the last bucket).
pub const QTYPES: [(&str, u16); 11] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("HTTPS", 65),
    ("ANY", 255),
];
/// Number of qtype buckets (the named ones plus `other`).
pub const QTYPE_BUCKETS: usize = QTYPES.len() + 1;

/// Response codes counted separately; everything else is `other` (the last bucket).
pub const RCODES: [(&str, u16); 7] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("BADVERS", 16),
];
/// Number of rcode buckets (the named ones plus `other`).
pub const RCODE_BUCKETS: usize = RCODES.len() + 1;

/// Upper bounds of the latency histogram buckets, in nanoseconds (10 µs .. 5 s); one more
/// bucket (+Inf) follows.
pub const LATENCY_BOUNDS_NS: [u64; 18] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

#[inline]
fn qtype_bucket(qtype: u16) -> usize {
    match qtype {
        1 => 0,
        2 => 1,
        5 => 2,
        6 => 3,
        12 => 4,
        15 => 5,
        16 => 6,
        28 => 7,
        33 => 8,
        65 => 9,
        255 => 10,
        _ => QTYPE_BUCKETS - 1,
    }
}

#[inline]
fn rcode_bucket(rcode: u16) -> usize {
    match rcode {
        0..=5 => usize::from(rcode),
        16 => 6,
        _ => RCODE_BUCKETS - 1,
    }
}

/// The question type echoed in a DNS message (`None` without a question). Walks the question
/// name's labels; never reads past the message.
#[inline]
pub fn message_qtype(msg: &[u8]) -> Option<u16> {
    if msg.len() < 12 || msg[4] == 0 && msg[5] == 0 {
        return None;
    }
    let mut i = 12usize;
    loop {
        let len = *msg.get(i)?;
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xC0 == 0xC0 {
            i += 2;
            break;
        }
        i += 1 + usize::from(len);
    }
    Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]))
}

/// The full response code of a DNS message: the header's four bits, extended by the OPT record
/// when the message ends with an option-less one (as every response dockns writes does).
#[inline]
pub fn message_rcode(msg: &[u8]) -> u16 {
    if msg.len() < 12 {
        return 0;
    }
    let low = u16::from(msg[3] & 0x0F);
    let n = msg.len();
    // OPT without options: 0 (root), type 41, class, ext-rcode, version, flags(2), rdlen 0.
    if n >= 12 + 11 && msg[n - 11] == 0 && msg[n - 10] == 0 && msg[n - 9] == 41 {
        let rdlen = u16::from_be_bytes([msg[n - 2], msg[n - 1]]);
        if rdlen == 0 {
            return (u16::from(msg[n - 6]) << 4) | low;
        }
    }
    low
}

/// A latency histogram with fixed buckets; one writer per worker, summed on scrape.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_ns: AtomicU64,
}

#[inline]
fn latency_bucket(nanos: u64) -> usize {
    let mut i = 0;
    while i < LATENCY_BOUNDS_NS.len() && nanos > LATENCY_BOUNDS_NS[i] {
        i += 1;
    }
    i
}

/// Summed histogram: per-bucket (not cumulative) counts and the sum of observations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistogramTotals {
    /// Observations per bucket, bounds as [`LATENCY_BOUNDS_NS`], then +Inf.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of all observations, nanoseconds.
    pub sum_ns: u64,
}

impl HistogramTotals {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Written by one thread only ([`Stats::worker_owned`]): plain load+store instead of a
    /// locked read-modify-write.
    owned: bool,
    udp_local: AtomicU64,
    tcp_local: AtomicU64,
    errors: AtomicU64,
    forwarded: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    rate_limited: AtomicU64,
    /// Replies by transport, qtype bucket and rcode bucket.
    replies: [[[AtomicU64; RCODE_BUCKETS]; QTYPE_BUCKETS]; 2],
    /// Replies by source.
    sources: [AtomicU64; 3],
    /// Latency by source.
    latency: [Histogram; 3],
}

/// Summed counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Answered from the tables over UDP.
    pub udp_local: u64,
    /// Answered from the tables over TCP.
    pub tcp_local: u64,
    /// Error responses (FORMERR, NOTIMP, BADVERS).
    pub errors: u64,
    /// Handed to the forwarder.
    pub forwarded: u64,
    /// Refused because the in-flight bound was reached.
    pub refused: u64,
    /// Dropped without an answer (not a query).
    pub dropped: u64,
}

/// Everything the workers counted, summed (for `/metrics`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Detailed {
    /// The classic totals.
    pub totals: Totals,
    /// Queries dropped or refused by a rate limiter.
    pub rate_limited: u64,
    /// Replies by transport, qtype bucket, rcode bucket (label values: [`TRANSPORTS`],
    /// [`QTYPES`] + `other`, [`RCODES`] + `other`).
    pub replies: [[[u64; RCODE_BUCKETS]; QTYPE_BUCKETS]; 2],
    /// Replies by source ([`SOURCES`]).
    pub sources: [u64; 3],
    /// Latency by source ([`SOURCES`]).
    pub latency: [HistogramTotals; 3],
}

impl WorkerStats {
    #[inline]
    fn bump(&self, c: &AtomicU64, n: u64) {
        if self.owned {
            // Single writer: no other thread can interleave, readers see whole values.
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts one reply.
    #[inline]
    pub fn record(&self, outcome: Outcome, tcp: bool) {
        let c = match (outcome, tcp) {
            (Outcome::Local, false) => &self.udp_local,
            (Outcome::Local, true) => &self.tcp_local,
            (Outcome::Error, _) => &self.errors,
        };
        self.bump(c, 1);
    }

    /// Counts one reply sent to a client: by transport, the question type and response code
    /// read from `reply` itself, by source, and its latency (`nanos` from receiving the query
    /// to having the reply ready).
    #[inline]
    pub fn answered(&self, tcp: bool, source: AnswerSource, reply: &[u8], nanos: u64) {
        let q = message_qtype(reply).map_or(QTYPE_BUCKETS - 1, qtype_bucket);
        let r = rcode_bucket(message_rcode(reply));
        self.bump(&self.replies[usize::from(tcp)][q][r], 1);
        self.bump(&self.sources[source as usize], 1);
        let h = &self.latency[source as usize];
        self.bump(&h.buckets[latency_bucket(nanos)], 1);
        self.bump(&h.sum_ns, nanos);
    }

    /// Counts one forwarded question.
    #[inline]
    pub fn forwarded(&self) {
        self.bump(&self.forwarded, 1);
    }

    /// Counts one REFUSED for lack of capacity.
    #[inline]
    pub fn refused(&self) {
        self.bump(&self.refused, 1);
    }

    /// Counts one dropped packet.
    #[inline]
    pub fn dropped(&self) {
        self.bump(&self.dropped, 1);
    }

    /// Counts one query a rate limiter dropped or refused.
    #[inline]
    pub fn rate_limited(&self) {
        self.bump(&self.rate_limited, 1);
    }
}

/// All workers' counters: the live workers' and, folded into one sum, those of workers that
/// were retired (a removed listener's), so totals never go back when a listener goes away.
#[derive(Debug, Default)]
pub struct Stats {
    workers: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    live: Vec<Arc<WorkerStats>>,
    retired: Detailed,
}

impl Stats {
    /// Registers a new worker and returns its counters; any number of threads may write them.
    pub fn worker(&self) -> Arc<WorkerStats> {
        self.register(WorkerStats::default())
    }

    /// Registers counters that exactly one thread writes (a UDP worker thread): counting is a
    /// plain load and store. Writing them from two threads at once would lose counts.
    pub fn worker_owned(&self) -> Arc<WorkerStats> {
        self.register(WorkerStats {
            owned: true,
            ..WorkerStats::default()
        })
    }

    fn register(&self, w: WorkerStats) -> Arc<WorkerStats> {
        let w = Arc::new(w);
        self.lock().live.push(w.clone());
        w
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unregisters counters whose writers are gone (a removed listener's): their counts are
    /// added to the retired sum and the registry drops its reference, so the memory is freed
    /// with the writers' last one. Unknown counters are ignored.
    pub fn retire(&self, w: &Arc<WorkerStats>) {
        let mut reg = self.lock();
        if let Some(i) = reg.live.iter().position(|x| Arc::ptr_eq(x, w)) {
            let gone = reg.live.swap_remove(i);
            gone.add_to(&mut reg.retired);
        }
    }

    /// Number of live (registered, not retired) counter sets.
    pub fn live_workers(&self) -> usize {
        self.lock().live.len()
    }

    /// Sums every worker's counters (including retired workers').
    pub fn totals(&self) -> Totals {
        self.detailed().totals
    }

    /// Sums every counter of every worker (including retired workers').
    pub fn detailed(&self) -> Detailed {
        let reg = self.lock();
        let mut d = reg.retired.clone();
        for w in &reg.live {
            w.add_to(&mut d);
        }
        d
    }

    /// Sums the counters of some workers only (one listener's, say).
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a Arc<WorkerStats>>) -> Detailed {
        let mut d = Detailed::default();
        for w in workers {
            w.add_to(&mut d);
        }
        d
    }
}

impl WorkerStats {
    /// Adds these counters into `d`.
    fn add_to(&self, d: &mut Detailed) {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let t = &mut d.totals;
        t.udp_local += ld(&self.udp_local);
        t.tcp_local += ld(&self.tcp_local);
        t.errors += ld(&self.errors);
        t.forwarded += ld(&self.forwarded);
        t.refused += ld(&self.refused);
        t.dropped += ld(&self.dropped);
        d.rate_limited += ld(&self.rate_limited);
        for (dt, wt) in d.replies.iter_mut().zip(&self.replies) {
            for (dq, wq) in dt.iter_mut().zip(wt) {
                for (dr, wr) in dq.iter_mut().zip(wq) {
                    *dr += ld(wr);
                }
            }
        }
        for (ds, ws) in d.sources.iter_mut().zip(&self.sources) {
            *ds += ld(ws);
        }
        for (dh, wh) in d.latency.iter_mut().zip(&self.latency) {
            for (db, wb) in dh.buckets.iter_mut().zip(&wh.buckets) {
                *db += ld(wb);
            }
            dh.sum_ns += ld(&wh.sum_ns);
        }
    }
}

/// A timestamp for latency: quanta reads the TSC where it is invariant (a few ns instead of the
/// ~25-50 ns of a vDSO clock read) and falls back to the OS monotonic clock elsewhere.
pub type Stamp = quanta::Instant;

/// Now, for [`Stamp`]-based latency.
#[inline]
pub fn stamp() -> Stamp {
    quanta::Instant::now()
}

/// Nanoseconds since `t0`.
#[inline]
pub fn since(t0: Stamp) -> u64 {
    t0.elapsed().as_nanos() as u64
}

/// Target of the per-query log lines (`--log-level info,dockns::query=debug` turns them on).
pub const QUERY_LOG_TARGET: &str = "dockns::query";

/// Writes one debug line for a reply when the query log is enabled; costs one cached
/// level check otherwise.
#[inline]
pub fn log_reply(client: std::net::SocketAddr, tcp: bool, source: AnswerSource, reply: &[u8]) {
    if tracing::enabled!(target: QUERY_LOG_TARGET, tracing::Level::DEBUG) {
        tracing::debug!(
            target: QUERY_LOG_TARGET,
            %client,
            transport = TRANSPORTS[usize::from(tcp)],
            name = %QuestionName(reply),
            qtype = %Mnemonic(&QTYPES, "TYPE", message_qtype(reply).unwrap_or(0)),
            rcode = %Mnemonic(&RCODES, "RCODE", message_rcode(reply)),
            source = SOURCES[source as usize],
            "query"
        );
    }
}

/// Displays a code by its mnemonic from a table, else as `PREFIX<n>` (`TYPE65534`).
struct Mnemonic<'a>(&'a [(&'a str, u16)], &'a str, u16);

impl std::fmt::Display for Mnemonic<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.iter().find(|(_, c)| *c == self.2) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}{}", self.1, self.2),
        }
    }
}

/// Displays the question name of a DNS message as text (`.` for the root, `?` when absent).
pub struct QuestionName<'a>(pub &'a [u8]);

impl std::fmt::Display for QuestionName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let msg = self.0;
        if msg.len() < 13 || msg[4] == 0 && msg[5] == 0 {
            return f.write_str("?");
        }
        let mut i = 12usize;
        let mut first = true;
        while let Some(&len) = msg.get(i) {
            if len == 0 || len & 0xC0 != 0 {
                break;
            }
            let Some(label) = msg.get(i + 1..i + 1 + usize::from(len)) else {
                break;
            };
            if !first {
                f.write_str(".")?;
            }
            first = false;
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            i += 1 + usize::from(len);
        }
        if first {
            f.write_str(".")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(qname: &[u8], qtype: u16, rcode: u8, opt_ext: Option<u8>) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(qname);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        if let Some(ext) = opt_ext {
            m[11] = 1;
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, ext, 0, 0, 0, 0, 0]);
        }
        m
    }

    #[test]
    fn reads_qtype_and_rcode_from_replies() {
        let m = msg(b"\x03api\x04demo\x00", 28, 3, None);
        assert_eq!(message_qtype(&m), Some(28));
        assert_eq!(message_rcode(&m), 3);
        let m = msg(b"\x00", 1, 0, Some(1));
        assert_eq!(message_qtype(&m), Some(1));
        assert_eq!(message_rcode(&m), 16, "BADVERS lives in the OPT record");
        // No question, truncated name, short header: no panic, sensible answers.
        let mut m = msg(b"\x03api\x00", 1, 1, None);
        m[5] = 0;
        assert_eq!(message_qtype(&m), None);
        assert_eq!(
            message_qtype(b"\x00\x00\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x05ab"),
            None
        );
        assert_eq!(message_rcode(b"\x00"), 0);
        let m = msg(b"\x03Api\x03a.b\x00", 1, 0, None);
        assert_eq!(QuestionName(&m).to_string(), "Api.a\\046b");
        assert_eq!(QuestionName(&msg(b"\x00", 1, 0, None)).to_string(), ".");
        assert_eq!(Mnemonic(&QTYPES, "TYPE", 28).to_string(), "AAAA");
        assert_eq!(Mnemonic(&RCODES, "RCODE", 9).to_string(), "RCODE9");
    }

    #[test]
    fn buckets_and_aggregation() {
        let stats = Stats::default();
        let (w1, w2) = (stats.worker_owned(), stats.worker());
        let a = msg(b"\x02db\x00", 1, 0, None);
        let nx = msg(b"\x02xx\x00", 99, 3, None);
        w1.answered(false, AnswerSource::Local, &a, 5_000);
        w2.answered(false, AnswerSource::Local, &a, 30_000);
        w2.answered(true, AnswerSource::Upstream, &nx, 6_000_000_000);
        w1.record(Outcome::Local, false);
        w2.rate_limited();
        let d = stats.detailed();
        assert_eq!(d.replies[0][0][0], 2);
        assert_eq!(d.replies[1][QTYPE_BUCKETS - 1][3], 1);
        assert_eq!(d.sources, [2, 0, 1]);
        assert_eq!(d.latency[0].buckets[0], 1);
        assert_eq!(d.latency[0].buckets[2], 1);
        assert_eq!(d.latency[0].sum_ns, 35_000);
        assert_eq!(d.latency[2].buckets[LATENCY_BUCKETS - 1], 1);
        assert_eq!(d.rate_limited, 1);
        assert_eq!(stats.totals().udp_local, 1);
    }

    #[test]
    fn retired_counters_are_freed_and_still_counted() {
        let stats = Stats::default();
        let keep = stats.worker();
        let gone = stats.worker_owned();
        let a = msg(b"\x02db\x00", 1, 0, None);
        gone.answered(false, AnswerSource::Local, &a, 5_000);
        gone.record(Outcome::Local, false);
        keep.dropped();
        let before = stats.detailed();
        stats.retire(&gone);
        assert_eq!(stats.live_workers(), 1);
        assert_eq!(Arc::strong_count(&gone), 1, "the registry let go of it");
        assert_eq!(stats.detailed(), before, "totals never go back");
        stats.retire(&gone);
        assert_eq!(stats.detailed(), before, "retiring twice counts once");
        assert_eq!(Stats::sum([&keep]).totals.dropped, 1);
    }
}
