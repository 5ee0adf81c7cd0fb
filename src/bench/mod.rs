//! `dockns bench`: a DNS load generator to point at any server (dockns, Docker's 127.0.0.11,
//! Knot, ...).
//!
//! It owns the query mix (a dnsperf-style file of `name type` lines, or names on the command
//! line), the load shape (closed loop: a fixed number of queries in flight, for peak
//! throughput; open loop: a fixed send rate, for latency at a given load), the limits (duration
//! or count) and the report (throughput, answer codes, timeouts, HDR-histogram latency
//! percentiles, text or JSON). UDP uses several connected non-blocking sockets per thread with
//! batched `sendmmsg`/`recvmmsg`, so the generator is not the bottleneck; TCP pipelines queries
//! on persistent connections. It never touches the dockns server internals: it only speaks DNS
//! on the wire, and it always stops by itself (duration or count, plus the reply timeout).

mod load;
mod tcp;
mod udp;

use hdrhistogram::Histogram;
use serde::Serialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Command-line arguments of `dockns bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server to load, ADDR[:PORT] (port 53 when absent).
    #[arg(long, short = 's', default_value = "127.0.0.1:53")]
    pub server: String,
    /// Query file: one `name type` per line (dnsperf format; `#`/`;` comments).
    #[arg(long, short = 'd', value_name = "FILE")]
    pub queries: Option<PathBuf>,
    /// A query `name[:type]` (repeatable; type defaults to A). Used with or without --queries.
    #[arg(long, short = 'n', value_name = "NAME[:TYPE]")]
    pub query: Vec<String>,
    /// Use TCP (queries pipelined on persistent connections) instead of UDP.
    #[arg(long)]
    pub tcp: bool,
    /// Closed loop: most queries in flight at once, in total.
    #[arg(long, short = 'q', default_value_t = 256)]
    pub inflight: usize,
    /// Open loop: send this many queries per second in total instead of a closed loop.
    #[arg(long, short = 'Q', value_name = "QPS")]
    pub rate: Option<u64>,
    /// Generator threads.
    #[arg(long, short = 'T', default_value_t = 1)]
    pub threads: usize,
    /// Sockets (UDP source ports) or connections (TCP) per thread.
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// Run this many seconds (default 10 unless --count is given).
    #[arg(long, short = 'l', value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Stop after sending this many queries.
    #[arg(long, short = 'c')]
    pub count: Option<u64>,
    /// A query without a reply after this many milliseconds counts as a timeout.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Add an EDNS OPT record (UDP size 1232) to every query.
    #[arg(long)]
    pub edns: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A validated load run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Target server.
    pub server: SocketAddr,
    /// Encoded queries (ID 0, patched per send), used round robin.
    pub queries: Vec<Vec<u8>>,
    /// TCP instead of UDP.
    pub tcp: bool,
    /// Closed-loop window (total).
    pub inflight: usize,
    /// Open-loop rate (total queries per second).
    pub rate: Option<u64>,
    /// Threads.
    pub threads: usize,
    /// Sockets or connections per thread.
    pub sockets: usize,
    /// Time limit.
    pub duration: Option<Duration>,
    /// Count limit.
    pub count: Option<u64>,
    /// Reply timeout.
    pub timeout: Duration,
}

/// The result of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Target server.
    pub server: String,
    /// "udp" or "tcp".
    pub transport: &'static str,
    /// "closed" (N in flight) or "open" (fixed rate).
    pub mode: &'static str,
    /// Wall time from the first send to the last reply or timeout, seconds.
    pub elapsed_s: f64,
    /// Queries sent.
    pub sent: u64,
    /// Replies matched to a query.
    pub responses: u64,
    /// Replies per second over the sending period.
    pub qps: f64,
    /// Queries that got no reply within the timeout.
    pub timeouts: u64,
    /// Replies that matched no outstanding query (late after a timeout, or unexpected).
    pub unexpected: u64,
    /// Open loop: sends skipped because the generator fell behind or ran out of IDs.
    pub lagged: u64,
    /// Replies per response code name.
    pub rcodes: std::collections::BTreeMap<String, u64>,
    /// Latency of matched replies, microseconds.
    pub latency_us: Latency,
}

/// Latency summary, microseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Latency {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// What one generator thread measured.
pub(crate) struct ThreadResult {
    pub sent: u64,
    pub responses: u64,
    pub timeouts: u64,
    pub unexpected: u64,
    pub lagged: u64,
    pub rcodes: [u64; 16],
    pub hist: Histogram<u64>,
    /// Nanoseconds from the common start to the end of sending.
    pub send_ns: u64,
}

impl ThreadResult {
    pub(crate) fn new() -> ThreadResult {
        ThreadResult {
            sent: 0,
            responses: 0,
            timeouts: 0,
            unexpected: 0,
            lagged: 0,
            rcodes: [0; 16],
            // 1 ns .. 1 hour at 3 significant digits: the bounds are constants and valid.
            hist: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            send_ns: 0,
        }
    }
}

/// Which slice of the total work one thread does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Share {
    /// Queries this thread may send (u64::MAX when only the duration limits).
    pub count: u64,
    /// Open loop rate for this thread.
    pub rate: Option<f64>,
    /// In-flight window per socket (closed loop).
    pub window: usize,
    /// First query index (so threads do not all start on the same name).
    pub offset: usize,
}

/// Response code names for the report.
pub fn rcode_name(rc: usize) -> String {
    match rc {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// Outstanding queries of one socket or connection: send time by ID, free IDs in FIFO order (so
/// an ID is reused as late as possible), and the send order for timeout scans.
pub(crate) struct Outstanding {
    sent_at: Box<[u64]>,
    free: std::collections::VecDeque<u16>,
    order: std::collections::VecDeque<(u16, u64)>,
    /// Queries in flight.
    pub inflight: usize,
}

const FREE: u64 = u64::MAX;

impl Outstanding {
    pub(crate) fn new() -> Outstanding {
        Outstanding {
            sent_at: vec![FREE; 65536].into_boxed_slice(),
            free: (0..=u16::MAX).collect(),
            order: std::collections::VecDeque::new(),
            inflight: 0,
        }
    }

    /// Takes an ID for a query sent at `now` (ns), or `None` when all 65536 are in flight.
    #[inline]
    pub(crate) fn take(&mut self, now: u64) -> Option<u16> {
        let id = self.free.pop_front()?;
        self.sent_at[usize::from(id)] = now;
        self.order.push_back((id, now));
        self.inflight += 1;
        Some(id)
    }

    /// Gives back an ID that was taken but never sent.
    #[inline]
    pub(crate) fn untake(&mut self, id: u16) {
        if self.sent_at[usize::from(id)] != FREE {
            self.sent_at[usize::from(id)] = FREE;
            self.free.push_front(id);
            self.order.pop_back();
            self.inflight -= 1;
        }
    }

    /// Matches a reply: returns its latency in ns, or `None` when no query has that ID.
    #[inline]
    pub(crate) fn complete(&mut self, id: u16, now: u64) -> Option<u64> {
        let t = self.sent_at[usize::from(id)];
        if t == FREE {
            return None;
        }
        self.sent_at[usize::from(id)] = FREE;
        self.free.push_back(id);
        self.inflight -= 1;
        Some(now.saturating_sub(t))
    }

    /// Expires queries sent before `cutoff` (ns); returns how many timed out.
    pub(crate) fn expire(&mut self, cutoff: u64) -> u64 {
        let mut n = 0;
        while let Some(&(id, t)) = self.order.front() {
            let cur = self.sent_at[usize::from(id)];
            if cur != t {
                // Answered (and maybe reused since): nothing to expire.
                self.order.pop_front();
                continue;
            }
            if t >= cutoff {
                break;
            }
            self.order.pop_front();
            self.sent_at[usize::from(id)] = FREE;
            self.free.push_back(id);
            self.inflight -= 1;
            n += 1;
        }
        n
    }

    /// Expires everything still in flight.
    pub(crate) fn expire_all(&mut self) -> u64 {
        self.expire(u64::MAX)
    }
}

/// Encodes a query for `name` and `qtype` with ID 0 and RD set.
pub fn encode_query(name: &str, qtype: u16, edns: bool) -> Result<Vec<u8>, String> {
    let mut p = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    let trimmed = name.trim_end_matches('.');
    let mut total = 1;
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!(
                    "query name {name:?} has an empty label or one over 63 bytes; write e.g. api.example"
                ));
            }
            total += 1 + label.len();
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
    }
    if total > 255 {
        return Err(format!("query name {name:?} is longer than 255 bytes"));
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    if edns {
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    Ok(p)
}

/// Parses a record type name (A, AAAA, PTR, ..., TYPE123) or number.
pub fn parse_type(s: &str) -> Result<u16, String> {
    if let Ok(n) = s.parse::<u16>() {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    if let Some(n) = up.strip_prefix("TYPE").and_then(|n| n.parse::<u16>().ok()) {
        return Ok(n);
    }
    up.parse::<hickory_proto::rr::RecordType>()
        .map(u16::from)
        .map_err(|_| {
            format!("unknown record type {s:?}; use A, AAAA, PTR, MX, TXT, SRV, ... or TYPE<n>")
        })
}

/// Parses a dnsperf-style query file: `name type` per line, blank lines and `#`/`;` comments
/// ignored.
pub fn parse_query_file(text: &str, edns: bool) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut it = line.split_whitespace();
        let name = it.next().unwrap_or_default();
        let qtype = match it.next() {
            Some(t) => parse_type(t).map_err(|e| format!("line {}: {e}", i + 1))?,
            None => 1,
        };
        out.push(encode_query(name, qtype, edns).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

impl BenchConfig {
    /// Validates command-line arguments.
    pub fn from_args(a: &BenchArgs) -> Result<BenchConfig, String> {
        let server = crate::addr::parse_upstream(&a.server)
            .or_else(|| a.server.to_socket_addrs().ok().and_then(|mut it| it.next()))
            .ok_or_else(|| {
                format!(
                    "--server {:?} is not ADDR[:PORT]; write e.g. 127.0.0.1:5353",
                    a.server
                )
            })?;
        let mut queries = Vec::new();
        if let Some(path) = &a.queries {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read query file {}: {e}; check the path",
                    path.display()
                )
            })?;
            queries =
                parse_query_file(&text, a.edns).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        for q in &a.query {
            let (name, t) = q.rsplit_once(':').unwrap_or((q, "A"));
            queries.push(encode_query(name, parse_type(t)?, a.edns)?);
        }
        if queries.is_empty() {
            return Err(
                "no queries: give --queries FILE (lines of `name type`) or --query NAME[:TYPE]"
                    .into(),
            );
        }
        if a.threads == 0 || a.sockets == 0 || a.inflight == 0 {
            return Err("--threads, --sockets and --inflight must be at least 1".into());
        }
        if a.rate == Some(0) {
            return Err("--rate must be at least 1 query per second".into());
        }
        let duration = match (a.duration, a.count) {
            (Some(d), _) if !(d > 0.0 && d <= 86_400.0) => {
                return Err("--duration must be between 0 and 86400 seconds".into())
            }
            (Some(d), _) => Some(Duration::from_secs_f64(d)),
            (None, None) => Some(Duration::from_secs(10)),
            (None, Some(_)) => None,
        };
        Ok(BenchConfig {
            server,
            queries,
            tcp: a.tcp,
            inflight: a.inflight,
            rate: a.rate,
            threads: a.threads,
            sockets: a.sockets,
            duration,
            count: a.count,
            timeout: Duration::from_millis(a.timeout_ms.max(1)),
        })
    }
}

/// Starts one generator thread per `cfg.threads`, each with its share of the work.
fn spawn_threads(
    cfg: &BenchConfig,
    start: std::time::Instant,
) -> Result<Vec<std::thread::JoinHandle<Result<ThreadResult, String>>>, String> {
    let threads = cfg.threads;
    let per_socket_window = (cfg.inflight / (threads * cfg.sockets)).max(1);
    let mut handles = Vec::new();
    for t in 0..threads {
        let count = match cfg.count {
            Some(c) => c / threads as u64 + u64::from((t as u64) < c % threads as u64),
            None => u64::MAX,
        };
        let share = Share {
            count,
            rate: cfg.rate.map(|r| r as f64 / threads as f64),
            window: per_socket_window,
            offset: t * cfg.queries.len() / threads,
        };
        let cfg = cfg.clone();
        let h = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || {
                if cfg.tcp {
                    tcp::run_thread(&cfg, share, start)
                } else {
                    udp::run_thread(&cfg, share, start)
                }
            })
            .map_err(|e| format!("cannot start a generator thread: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}

impl ThreadResult {
    /// Adds another thread's counts and latencies to these.
    fn add(&mut self, r: &ThreadResult) {
        self.sent += r.sent;
        self.responses += r.responses;
        self.timeouts += r.timeouts;
        self.unexpected += r.unexpected;
        self.lagged += r.lagged;
        for (a, b) in self.rcodes.iter_mut().zip(r.rcodes) {
            *a += b;
        }
        let _ = self.hist.add(&r.hist);
        self.send_ns = self.send_ns.max(r.send_ns);
    }
}

impl Latency {
    /// The summary of a histogram of nanoseconds, in microseconds.
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |v: u64| v as f64 / 1000.0;
        Latency {
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// Runs the load and returns the report.
pub fn run(cfg: &BenchConfig) -> Result<Report, String> {
    let start = std::time::Instant::now();
    let mut total = ThreadResult::new();
    for h in spawn_threads(cfg, start)? {
        let r = h
            .join()
            .map_err(|_| "a generator thread panicked".to_string())??;
        total.add(&r);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let send_s = (total.send_ns as f64 / 1e9).max(1e-9);
    Ok(Report {
        server: cfg.server.to_string(),
        transport: if cfg.tcp { "tcp" } else { "udp" },
        mode: if cfg.rate.is_some() { "open" } else { "closed" },
        elapsed_s: elapsed,
        sent: total.sent,
        responses: total.responses,
        qps: total.responses as f64 / send_s,
        timeouts: total.timeouts,
        unexpected: total.unexpected,
        lagged: total.lagged,
        rcodes: total
            .rcodes
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (rcode_name(i), n))
            .collect(),
        latency_us: Latency::of(&total.hist),
    })
}

impl Report {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let rcodes: Vec<String> = self
            .rcodes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let l = &self.latency_us;
        let lost = if self.sent > 0 {
            100.0 * self.timeouts as f64 / self.sent as f64
        } else {
            0.0
        };
        format!(
            "dockns bench: {} over {}, {} loop, {:.2} s\n\
             queries sent   {}\n\
             responses      {}  ({:.0} queries/s)\n\
             timeouts       {} ({lost:.3}%), unexpected replies {}, lagged sends {}\n\
             rcodes         {}\n\
             latency (µs)   min {:.1}  mean {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            self.server,
            self.transport,
            self.mode,
            self.elapsed_s,
            self.sent,
            self.responses,
            self.qps,
            self.timeouts,
            self.unexpected,
            self.lagged,
            if rcodes.is_empty() { "-".to_string() } else { rcodes.join(", ") },
            l.min,
            l.mean,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
        )
    }
}

/// Runs `dockns bench` from its arguments; returns the exit code (0 ok, 2 usage, 1 failure).
pub fn main(args: &BenchArgs) -> u8 {
    let cfg = match BenchConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dockns bench: {e}");
            return 2;
        }
    };
    match run(&cfg) {
        Ok(r) => {
            if args.json {
                match serde_json::to_string_pretty(&r) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("dockns bench: cannot encode the report: {e}");
                        return 1;
                    }
                }
            } else {
                println!("{}", r.text());
            }
            0
        }
        Err(e) => {
            eprintln!("dockns bench: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_file_parses_like_dnsperf() {
        let qs = parse_query_file("# c\napi.demo A\n\n; x\nDB aaaa\nweb\n", false).unwrap();
        assert_eq!(qs.len(), 3);
        assert_eq!(&qs[0][12..], b"\x03api\x04demo\x00\x00\x01\x00\x01");
        assert_eq!(&qs[1][12..], b"\x02DB\x00\x00\x1c\x00\x01");
        assert_eq!(&qs[2][12..], b"\x03web\x00\x00\x01\x00\x01");
        assert!(parse_query_file("a..b A\n", false)
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_query_file("a BOGUS\n", false).is_err());
        assert_eq!(parse_type("TYPE65").unwrap(), 65);
        assert_eq!(parse_type("ptr").unwrap(), 12);
    }

    #[test]
    fn edns_query_has_opt() {
        let q = encode_query("a", 1, true).unwrap();
        assert_eq!(q[11], 1);
        assert_eq!(&q[q.len() - 11..q.len() - 8], &[0, 0, 41]);
    }

    #[test]
    fn outstanding_matches_and_expires() {
        let mut o = Outstanding::new();
        let a = o.take(10).unwrap();
        let b = o.take(20).unwrap();
        assert_ne!(a, b);
        assert_eq!(o.complete(a, 15), Some(5));
        assert_eq!(o.complete(a, 16), None, "a reply is matched once");
        assert_eq!(o.expire(15), 0, "b was sent at 20, not before 15");
        assert_eq!(o.expire(21), 1);
        assert_eq!(o.inflight, 0);
        assert_eq!(o.complete(b, 30), None, "late reply after timeout");
        let c = o.take(40).unwrap();
        o.untake(c);
        assert_eq!(o.inflight, 0);
        assert_eq!(o.expire_all(), 0);
    }
}
