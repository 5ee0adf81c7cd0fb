//! Metrics that are not per-worker query counters, and the Prometheus text rendering of all of
//! them.
//!
//! Owns the recording APIs other parts call: [`CacheMetrics`] (the forwarder's cache),
//! [`DockerMetrics`] (the Docker source: events, reconnects, resync drift, connection state) and
//! the readiness flag in [`ServerMetrics`]. Query counters live per worker in `stats`;
//! upstream counters live with the upstreams in `forward`. Everything here is relaxed atomics,
//! written where things happen and read only when `/metrics` is scraped; rendering allocates,
//! recording never does. This module must not read the model or the network itself: the admin
//! server gathers the inputs and hands them to [`render`].

use crate::stats::{
    Detailed, LATENCY_BOUNDS_NS, QTYPES, QTYPE_BUCKETS, RCODES, RCODE_BUCKETS, SOURCES, TRANSPORTS,
};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// One counter on its own cache line, so counters bumped by different threads do not share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PaddedCounter(AtomicU64);

impl PaddedCounter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the value (for gauges).
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of the forwarder's answer cache. The cache calls these; nothing else does.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    /// Lookups answered from the cache.
    pub hits: PaddedCounter,
    /// Lookups that found nothing usable.
    pub misses: PaddedCounter,
    /// Entries dropped to make room (not expiry).
    pub evictions: PaddedCounter,
    /// Entries held now (a gauge the cache sets).
    pub entries: PaddedCounter,
    /// Bytes accounted to the entries now (a gauge the cache sets).
    pub bytes: PaddedCounter,
    /// Expired answers served because every upstream failed (RFC 8767).
    pub stale: PaddedCounter,
    /// Whether a cache is present at all (set by the cache when it is built).
    pub enabled: AtomicBool,
}

impl CacheMetrics {
    /// Counts a hit.
    #[inline]
    pub fn hit(&self) {
        self.hits.add(1);
    }
    /// Counts a miss.
    #[inline]
    pub fn miss(&self) {
        self.misses.add(1);
    }
    /// Counts `n` evictions.
    #[inline]
    pub fn evicted(&self, n: u64) {
        self.evictions.add(n);
    }
    /// Records the current number of entries.
    #[inline]
    pub fn set_entries(&self, n: u64) {
        self.entries.set(n);
    }
    /// Records the bytes accounted to the entries.
    #[inline]
    pub fn set_bytes(&self, n: u64) {
        self.bytes.set(n);
    }
    /// Counts one answer served stale.
    #[inline]
    pub fn served_stale(&self) {
        self.stale.add(1);
    }
}

/// Docker event types counted separately; anything else is `other` (the last).
pub const DOCKER_EVENT_TYPES: [&str; 5] = ["container", "network", "service", "node", "other"];

/// Counters of the Docker source. The Docker watcher calls these; nothing else does.
#[derive(Debug, Default)]
pub struct DockerMetrics {
    events: [AtomicU64; DOCKER_EVENT_TYPES.len()],
    reconnects: AtomicU64,
    resyncs: AtomicU64,
    drift: AtomicU64,
    connected: AtomicBool,
}

impl DockerMetrics {
    /// Counts one event applied to the model; `kind` is Docker's event `Type` (`container`,
    /// `network`, `service`, ...).
    pub fn event_applied(&self, kind: &str) {
        let i = DOCKER_EVENT_TYPES[..DOCKER_EVENT_TYPES.len() - 1]
            .iter()
            .position(|t| t.eq_ignore_ascii_case(kind))
            .unwrap_or(DOCKER_EVENT_TYPES.len() - 1);
        self.events[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one reconnection to the daemon after the connection was lost.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one periodic resync and the number of differences it found between the model and
    /// the daemon (`0` when the event stream had missed nothing).
    pub fn resynced(&self, drift: u64) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
        self.drift.fetch_add(drift, Ordering::Relaxed);
    }

    /// Records whether the daemon is reachable now.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    /// Events applied, by [`DOCKER_EVENT_TYPES`].
    pub fn events(&self) -> [u64; DOCKER_EVENT_TYPES.len()] {
        std::array::from_fn(|i| self.events[i].load(Ordering::Relaxed))
    }
}

/// Server-wide state for the admin endpoints: readiness and Docker counters.
#[derive(Debug)]
pub struct ServerMetrics {
    /// Docker source counters.
    pub docker: DockerMetrics,
    /// Whether a Docker source is configured (its metrics are only rendered then).
    pub docker_configured: bool,
    synced: AtomicBool,
    /// Why the Docker source is not (or no longer) connected, for `/readyz`.
    docker_problem: std::sync::Mutex<Option<String>>,
    started: Instant,
}

impl ServerMetrics {
    /// New state. Without Docker the tables are complete at once, so the server is ready as
    /// soon as its listeners are bound; with Docker it waits for [`ServerMetrics::set_synced`].
    pub fn new(docker_configured: bool) -> ServerMetrics {
        ServerMetrics {
            docker: DockerMetrics::default(),
            docker_configured,
            synced: AtomicBool::new(!docker_configured),
            docker_problem: std::sync::Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// The Docker source calls this once its initial sync is published.
    pub fn set_synced(&self) {
        if !self.synced.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "dockns {} ready: initial Docker sync published",
                env!("CARGO_PKG_VERSION")
            );
        }
    }

    /// Records why Docker cannot be used (`None` once it can): `/readyz` says it.
    pub fn set_docker_problem(&self, problem: Option<String>) {
        *self
            .docker_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// Why Docker cannot be used right now, if it cannot.
    pub fn docker_problem(&self) -> Option<String> {
        self.docker_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the initial sync is done (always true without Docker).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Seconds since the server started.
    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Counters of one upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTotals {
    /// The server.
    pub addr: SocketAddr,
    /// Tries sent to it.
    pub queries: u64,
    /// Tries that timed out.
    pub timeouts: u64,
    /// Tries that failed at the socket (refused, unreachable, reset).
    pub io_errors: u64,
    /// Tries answered with SERVFAIL or REFUSED.
    pub rcode_errors: u64,
    /// Replies that matched a try by ID and question but were structurally invalid (dropped).
    pub malformed: u64,
    /// Whether it is currently considered alive.
    pub up: bool,
}

/// Sizes of the tables in the current snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Networks served.
    pub networks: u64,
    /// Containers (and static hosts) known.
    pub containers: u64,
    /// Endpoints (container × network attachments).
    pub endpoints: u64,
    /// Compiled names (plain, `name.network`, reverse), over all networks.
    pub names: u64,
    /// Distinct client views.
    pub views: u64,
    /// Snapshot generation.
    pub generation: u64,
}

/// Counters of the forwarder's UDP socket pool (`forward/pool.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolTotals {
    /// UDP datagrams on the pool sockets that matched no try (dropped).
    pub ignored: u64,
    /// Forwarded UDP questions that joined an identical one in flight.
    pub joined: u64,
    /// Pool sockets re-opened on the schedule.
    pub reopened: u64,
}

/// Everything [`render`] needs, gathered by the admin server at scrape time.
pub struct Inputs<'a> {
    /// Query counters summed over the workers.
    pub queries: &'a Detailed,
    /// Per-upstream counters.
    pub upstreams: &'a [UpstreamTotals],
    /// Forwards currently in flight.
    pub forward_inflight: u64,
    /// The UDP socket pool's counters.
    pub pool: PoolTotals,
    /// Cache counters.
    pub cache: &'a CacheMetrics,
    /// Server state and Docker counters.
    pub server: &'a ServerMetrics,
    /// Table sizes.
    pub tables: TableSizes,
    /// Listeners running.
    pub listeners: u64,
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render(i: &Inputs<'_>) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    render_replies(&mut o, i.queries);
    render_latency(&mut o, i.queries);
    render_forwarder(&mut o, i);
    render_upstreams(&mut o, i.upstreams);
    render_cache(&mut o, i.cache);
    render_tables(&mut o, i.tables, i.listeners);
    render_server(&mut o, i.server);
    o.0
}

/// Replies by transport, question type and rcode; answers by source.
fn render_replies(o: &mut Out, q: &Detailed) {
    o.head(
        "dockns_queries_total",
        "counter",
        "Replies sent, by transport, question type and response code.",
    );
    for (t, tname) in TRANSPORTS.iter().enumerate() {
        for qi in 0..QTYPE_BUCKETS {
            let qname = QTYPES.get(qi).map_or("other", |x| x.0);
            for ri in 0..RCODE_BUCKETS {
                let n = q.replies[t][qi][ri];
                if n == 0 {
                    continue;
                }
                let rname = RCODES.get(ri).map_or("other", |x| x.0);
                o.sample(
                    "dockns_queries_total",
                    &[("transport", tname), ("qtype", qname), ("rcode", rname)],
                    n,
                );
            }
        }
    }

    o.head(
        "dockns_answers_total",
        "counter",
        "Replies sent, by where the answer came from (local tables and errors, cache, upstream).",
    );
    for (s, name) in SOURCES.iter().enumerate() {
        o.sample("dockns_answers_total", &[("source", name)], q.sources[s]);
    }
}

/// The answer-time histogram, by answer source.
fn render_latency(o: &mut Out, q: &Detailed) {
    o.head(
        "dockns_answer_duration_seconds",
        "histogram",
        "Time from receiving a query to having its reply ready, by answer source.",
    );
    for (s, name) in SOURCES.iter().enumerate() {
        let h = &q.latency[s];
        let mut cum = 0u64;
        for (b, bound) in LATENCY_BOUNDS_NS.iter().enumerate() {
            cum += h.buckets[b];
            let le = format!("{}", *bound as f64 / 1e9);
            o.sample(
                "dockns_answer_duration_seconds_bucket",
                &[("source", name), ("le", &le)],
                cum,
            );
        }
        cum += h.buckets[LATENCY_BOUNDS_NS.len()];
        o.sample(
            "dockns_answer_duration_seconds_bucket",
            &[("source", name), ("le", "+Inf")],
            cum,
        );
        o.sample(
            "dockns_answer_duration_seconds_sum",
            &[("source", name)],
            h.sum_ns as f64 / 1e9,
        );
        o.sample(
            "dockns_answer_duration_seconds_count",
            &[("source", name)],
            cum,
        );
    }
}

/// The forwarder's own counters and gauges.
fn render_forwarder(o: &mut Out, i: &Inputs<'_>) {
    let q = i.queries;
    o.single(
        "dockns_forwarded_total",
        "counter",
        "Questions handed to the forwarder (cache, then upstream).",
        q.totals.forwarded,
    );
    o.single(
        "dockns_refused_total",
        "counter",
        "Questions answered REFUSED because the in-flight forward bound was reached.",
        q.totals.refused,
    );
    o.single(
        "dockns_rate_limited_total",
        "counter",
        "Questions dropped or refused by the rate limiter.",
        q.rate_limited,
    );
    o.single(
        "dockns_dropped_total",
        "counter",
        "Packets dropped without a reply (not a DNS query).",
        q.totals.dropped,
    );
    o.single(
        "dockns_forward_inflight",
        "gauge",
        "Forwarded questions waiting for an answer now.",
        i.forward_inflight,
    );
    o.single(
        "dockns_upstream_udp_ignored_total",
        "counter",
        "UDP datagrams on the upstream sockets that matched no question in flight (another address or port than the one asked, an unknown ID, another question or letter case, a late duplicate): dropped.",
        i.pool.ignored,
    );
    o.single(
        "dockns_forward_joined_total",
        "counter",
        "Forwarded UDP questions that joined an identical question already in flight instead of asking again.",
        i.pool.joined,
    );
    o.single(
        "dockns_upstream_sockets_reopened_total",
        "counter",
        "Upstream UDP sockets replaced on schedule (after 1000 queries or 10 s), so source ports keep changing.",
        i.pool.reopened,
    );
}

/// Per-upstream counters and liveness.
fn render_upstreams(o: &mut Out, upstreams: &[UpstreamTotals]) {
    o.head(
        "dockns_upstream_queries_total",
        "counter",
        "Tries sent to each upstream server.",
    );
    for u in upstreams {
        o.sample(
            "dockns_upstream_queries_total",
            &[("server", &u.addr.to_string())],
            u.queries,
        );
    }
    o.head(
        "dockns_upstream_timeouts_total",
        "counter",
        "Tries to each upstream server that timed out.",
    );
    for u in upstreams {
        o.sample(
            "dockns_upstream_timeouts_total",
            &[("server", &u.addr.to_string())],
            u.timeouts,
        );
    }
    o.head(
        "dockns_upstream_errors_total",
        "counter",
        "Tries to each upstream server that failed: kind=io (refused, unreachable, reset) kind=rcode (SERVFAIL, REFUSED, FORMERR, NOTIMP) or kind=malformed (a reply to the try that was structurally invalid: dropped).",
    );
    for u in upstreams {
        let server = u.addr.to_string();
        o.sample(
            "dockns_upstream_errors_total",
            &[("server", &server), ("kind", "io")],
            u.io_errors,
        );
        o.sample(
            "dockns_upstream_errors_total",
            &[("server", &server), ("kind", "rcode")],
            u.rcode_errors,
        );
        o.sample(
            "dockns_upstream_errors_total",
            &[("server", &server), ("kind", "malformed")],
            u.malformed,
        );
    }
    o.head(
        "dockns_upstream_up",
        "gauge",
        "1 while an upstream server is considered alive, 0 while it is tried last.",
    );
    for u in upstreams {
        o.sample(
            "dockns_upstream_up",
            &[("server", &u.addr.to_string())],
            u8::from(u.up),
        );
    }
}

/// The answer cache.
fn render_cache(o: &mut Out, c: &CacheMetrics) {
    o.single(
        "dockns_cache_enabled",
        "gauge",
        "1 when the forwarder has an answer cache (0: the cache counters stay at zero).",
        u8::from(c.enabled.load(Ordering::Relaxed)),
    );
    o.single(
        "dockns_cache_entries",
        "gauge",
        "Entries in the answer cache.",
        c.entries.get(),
    );
    o.single(
        "dockns_cache_bytes",
        "gauge",
        "Bytes accounted to the answer cache (bounded by [upstream] cache_bytes).",
        c.bytes.get(),
    );
    o.single(
        "dockns_cache_stale_answers_total",
        "counter",
        "Expired answers served (TTL 30) because every upstream failed (RFC 8767).",
        c.stale.get(),
    );
    o.single(
        "dockns_cache_hits_total",
        "counter",
        "Forwarded questions answered from the cache.",
        c.hits.get(),
    );
    o.single(
        "dockns_cache_misses_total",
        "counter",
        "Cache lookups that found nothing usable.",
        c.misses.get(),
    );
    o.single(
        "dockns_cache_evictions_total",
        "counter",
        "Cache entries dropped to make room.",
        c.evictions.get(),
    );
}

/// Table sizes and listeners.
fn render_tables(o: &mut Out, t: TableSizes, listeners: u64) {
    o.single("dockns_networks", "gauge", "Networks served.", t.networks);
    o.single(
        "dockns_containers",
        "gauge",
        "Containers (and static hosts) known.",
        t.containers,
    );
    o.single(
        "dockns_endpoints",
        "gauge",
        "Endpoints (container attachments to served networks).",
        t.endpoints,
    );
    o.single(
        "dockns_names",
        "gauge",
        "Compiled names over all networks (plain, name.network and reverse).",
        t.names,
    );
    o.single(
        "dockns_views",
        "gauge",
        "Distinct client views in the current snapshot.",
        t.views,
    );
    o.single(
        "dockns_snapshot_generation",
        "gauge",
        "Snapshots published since start.",
        t.generation,
    );
    o.single(
        "dockns_listeners",
        "gauge",
        "DNS listeners (UDP+TCP address pairs) running.",
        listeners,
    );
}

/// Docker source counters, readiness, uptime and build.
fn render_server(o: &mut Out, s: &ServerMetrics) {
    if s.docker_configured {
        o.head(
            "dockns_docker_events_total",
            "counter",
            "Docker events applied to the tables, by event type.",
        );
        for (k, n) in DOCKER_EVENT_TYPES.iter().zip(s.docker.events()) {
            o.sample("dockns_docker_events_total", &[("type", k)], n);
        }
        o.single(
            "dockns_docker_reconnects_total",
            "counter",
            "Reconnections to the Docker daemon after losing it.",
            s.docker.reconnects.load(Ordering::Relaxed),
        );
        o.single(
            "dockns_docker_resyncs_total",
            "counter",
            "Periodic full resyncs with the Docker daemon.",
            s.docker.resyncs.load(Ordering::Relaxed),
        );
        o.single(
            "dockns_docker_resync_drift_total",
            "counter",
            "Differences a resync found that the event stream had missed.",
            s.docker.drift.load(Ordering::Relaxed),
        );
        o.single(
            "dockns_docker_connected",
            "gauge",
            "1 while the Docker daemon is reachable.",
            u8::from(s.docker.connected.load(Ordering::Relaxed)),
        );
    }
    o.single(
        "dockns_ready",
        "gauge",
        "1 once listeners are bound and the initial sync is done.",
        u8::from(s.is_synced()),
    );
    o.single(
        "dockns_uptime_seconds",
        "gauge",
        "Seconds since dockns started.",
        format!("{:.3}", s.uptime_seconds()),
    );
    o.head(
        "dockns_build_info",
        "gauge",
        "Version of the running dockns.",
    );
    o.sample(
        "dockns_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{AnswerSource, Stats};

    #[test]
    fn renders_valid_exposition() {
        let stats = Stats::default();
        let w = stats.worker();
        let reply = [
            0u8, 1, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 16, 0, 1,
        ];
        w.answered(true, AnswerSource::Local, &reply, 20_000);
        let d = stats.detailed();
        let server = ServerMetrics::new(true);
        server.docker.event_applied("container");
        server.docker.event_applied("plugin");
        server.docker.resynced(2);
        let cache = CacheMetrics::default();
        let up = [UpstreamTotals {
            addr: "127.0.0.1:53".parse().unwrap(),
            queries: 3,
            timeouts: 1,
            io_errors: 0,
            rcode_errors: 2,
            malformed: 0,
            up: true,
        }];
        let text = render(&Inputs {
            queries: &d,
            upstreams: &up,
            forward_inflight: 0,
            pool: PoolTotals {
                ignored: 3,
                ..Default::default()
            },
            cache: &cache,
            server: &server,
            tables: TableSizes::default(),
            listeners: 1,
        });
        assert!(text.contains(
            "dockns_queries_total{transport=\"tcp\",qtype=\"TXT\",rcode=\"NXDOMAIN\"} 1\n"
        ));
        assert!(text.contains(
            "dockns_answer_duration_seconds_bucket{source=\"local\",le=\"0.00001\"} 0\n"
        ));
        assert!(text.contains(
            "dockns_answer_duration_seconds_bucket{source=\"local\",le=\"0.000025\"} 1\n"
        ));
        assert!(text.contains("dockns_answer_duration_seconds_count{source=\"local\"} 1\n"));
        assert!(text
            .contains("dockns_upstream_errors_total{server=\"127.0.0.1:53\",kind=\"rcode\"} 2\n"));
        assert!(text.contains("dockns_upstream_udp_ignored_total 3\n"));
        assert!(text.contains("dockns_docker_events_total{type=\"container\"} 1\n"));
        assert!(text.contains("dockns_docker_events_total{type=\"other\"} 1\n"));
        assert!(text.contains("dockns_docker_resync_drift_total 2\n"));
        assert!(text.contains("dockns_ready 0\n"));
        // Every sample line belongs to a family declared by a TYPE line before it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    declared.iter().any(|d| name == d
                        || name
                            .strip_prefix(d.as_str())
                            .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) })),
                    "undeclared sample {line}"
                );
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
            }
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
