//! Per-reply counting: dockns's per-worker padded arrays (single writer: load+store) against
//! prometheus-client's Family<labels, Counter> + Family<labels, Histogram>, the same four
//! updates per reply (transport/qtype/rcode counter, source counter, latency bucket, latency sum).
//!
//! Run: cd benches/prometheus-client-try && cargo bench

// Label values the bench never uses are still part of the label sets being hashed.
#![allow(dead_code)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Transport {
    Udp,
    Tcp,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Qtype {
    A,
    Aaaa,
    Ptr,
    Other,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Rcode {
    Noerror,
    Nxdomain,
    Servfail,
    Other,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabels {
    transport: Transport,
    qtype: Qtype,
    rcode: Rcode,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Source {
    Local,
    Cache,
    Upstream,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: Source,
}

const BOUNDS_NS: [u64; 12] = [
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
    50_000_000,
    250_000_000,
];

#[repr(align(64))]
#[derive(Default)]
struct Worker {
    replies: [[[AtomicU64; 9]; 12]; 2],
    sources: [AtomicU64; 3],
    buckets: [[AtomicU64; 13]; 3],
    sum: [AtomicU64; 3],
}
impl Worker {
    #[inline]
    fn bump(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    #[inline]
    fn answered(&self, tcp: bool, q: usize, r: usize, s: usize, nanos: u64) {
        Self::bump(&self.replies[usize::from(tcp)][q][r], 1);
        Self::bump(&self.sources[s], 1);
        let b = BOUNDS_NS
            .iter()
            .position(|&x| nanos <= x)
            .unwrap_or(BOUNDS_NS.len());
        Self::bump(&self.buckets[s][b], 1);
        Self::bump(&self.sum[s], nanos);
    }
}

fn bench(c: &mut Criterion) {
    let w = Worker::default();
    let replies = Family::<ReplyLabels, Counter>::default();
    let sources = Family::<SourceLabels, Counter>::default();
    let latency = Family::<SourceLabels, Histogram>::new_with_constructor(|| {
        Histogram::new(BOUNDS_NS.iter().map(|&b| b as f64 / 1e9))
    });
    let mut reg = Registry::default();
    reg.register("dockns_queries", "replies", replies.clone());
    reg.register("dockns_answers", "answers", sources.clone());
    reg.register("dockns_answer_duration_seconds", "latency", latency.clone());
    let mut g = c.benchmark_group("per_reply_counting");
    g.bench_function("dockns_padded_per_worker", |b| {
        b.iter(|| {
            w.answered(
                black_box(false),
                black_box(0),
                black_box(0),
                black_box(0),
                black_box(900),
            )
        })
    });
    g.bench_function("prometheus_client_family", |b| {
        b.iter(|| {
            replies
                .get_or_create(&ReplyLabels {
                    transport: black_box(Transport::Udp),
                    qtype: Qtype::A,
                    rcode: Rcode::Noerror,
                })
                .inc();
            let s = SourceLabels {
                source: black_box(Source::Local),
            };
            sources.get_or_create(&s).inc();
            latency.get_or_create(&s).observe(black_box(900.0) / 1e9);
        })
    });
    g.finish();
}
criterion_group! { name = benches; config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)); targets = bench }
criterion_main!(benches);
