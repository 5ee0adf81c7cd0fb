//! What counting costs a local answer: the fast path alone, then the fast path plus everything
//! the UDP worker adds per reply for metrics (two clock reads (TSC via quanta), the classic counter, the
//! transport/qtype/rcode/source counters and the latency histogram) and the disabled per-query
//! log check.
//!
//!   cargo bench --bench metrics_hot_path

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dockns::config::{Config, Overrides};
use dockns::dns::answer::{handle, Action};
use dockns::model::Snapshot;
use dockns::stats::{log_reply, since, stamp, AnswerSource, Stats};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use std::net::{IpAddr, SocketAddr};

fn bench(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
    let cfg = Config::load(
        std::path::Path::new(path),
        &Overrides {
            upstream: vec!["127.0.0.1:9".into()],
            ..Default::default()
        },
    )
    .expect("demo config");
    let snap = Snapshot::build(&cfg.static_catalog, cfg.build.clone());
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("api.").unwrap(),
        RecordType::A,
    ));
    let pkt = m.to_vec().unwrap();
    let client: IpAddr = "127.0.0.1".parse().unwrap();
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let stats = Stats::default();
    let w = stats.worker_owned();
    let mut out = vec![0u8; 4096];

    let mut g = c.benchmark_group("local_answer");
    g.bench_function("fast_path_only", |b| {
        b.iter(|| {
            black_box(handle(
                &snap,
                client,
                None,
                black_box(&pkt),
                &mut out,
                false,
            ))
        })
    });
    g.bench_function("fast_path_with_metrics", |b| {
        b.iter(|| {
            let t0 = stamp();
            let action = handle(&snap, client, None, black_box(&pkt), &mut out, false);
            if let Action::Reply(n, outcome) = action {
                let reply = &out[..n];
                w.record(outcome, false);
                w.answered(false, AnswerSource::Local, reply, since(t0));
                log_reply(src, false, AnswerSource::Local, reply);
            }
            black_box(action)
        })
    });
    let Action::Reply(n, _) = handle(&snap, client, None, &pkt, &mut out, false) else {
        panic!("api A is answered locally");
    };
    let reply = out[..n].to_vec();
    g.bench_function("clock_pair", |b| {
        b.iter(|| black_box(since(black_box(stamp()))))
    });
    g.bench_function("counters_only", |b| {
        b.iter(|| {
            w.answered(
                false,
                AnswerSource::Local,
                black_box(&reply),
                black_box(900),
            )
        })
    });
    g.bench_function("query_log_disabled", |b| {
        b.iter(|| log_reply(src, false, AnswerSource::Local, black_box(&reply)))
    });
    g.finish();
    black_box(stats.detailed());
}

criterion_group!(benches, bench);
criterion_main!(benches);
