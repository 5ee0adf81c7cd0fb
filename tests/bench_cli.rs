//! `dockns bench` against an in-process dockns on an ephemeral loopback port: every query it
//! sends must come back matched, with the server's counters agreeing.

mod kit;

use dockns::bench::{run, BenchArgs, BenchConfig};
use dockns::config::{Config, Overrides};
use dockns::server::Server;
use kit::{Behavior, FakeUpstream};
use std::net::SocketAddr;

fn config(silent_upstream: SocketAddr) -> Config {
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
host_view = ["benchnet"]
workers = 2

[upstream]
servers = ["{}"]

[[network]]
name = "benchnet"

[[network.container]]
name = "alpha"
ipv4 = ["10.1.0.2"]

[[network.container]]
name = "beta"
ipv4 = ["10.1.0.3", "10.1.0.4"]
ipv6 = ["fd01::3"]
"#,
        silent_upstream
    );
    Config::from_toml(&text, &Overrides::default()).unwrap()
}

fn args(server: String) -> BenchArgs {
    BenchArgs {
        server,
        queries: None,
        query: vec![
            "alpha".into(),
            "beta:AAAA".into(),
            "beta.benchnet".into(),
            "ALPHA.benchnet:A".into(),
        ],
        tcp: false,
        inflight: 32,
        rate: None,
        threads: 2,
        sockets: 2,
        duration: Some(60.0),
        count: Some(4000),
        timeout_ms: 10_000,
        edns: false,
        json: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_udp_tcp_and_open_loop() {
    // A bound but silent upstream: nothing here should be forwarded.
    let upstream = FakeUpstream::start(Behavior::Dead);
    let server = Server::start(config(upstream.addr)).unwrap();
    let addr = server.bound()[0].to_string();

    // Closed loop over UDP, count-limited: every query answered, rcodes as the tables say.
    let a = args(addr.clone());
    let cfg = BenchConfig::from_args(&a).unwrap();
    let r = tokio::task::spawn_blocking(move || run(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.sent, 4000);
    assert_eq!(r.responses, 4000, "{r:?}");
    assert_eq!(r.timeouts, 0);
    assert_eq!(r.rcodes.get("NOERROR"), Some(&4000));
    assert!(r.latency_us.p50 > 0.0 && r.latency_us.p50 <= r.latency_us.p99);
    assert!(r.latency_us.p99 <= r.latency_us.max);
    assert_eq!(server.stats.totals().udp_local, 4000);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["transport"], "udp");
    assert!(json["latency_us"]["p999"].as_f64().is_some());

    // TCP, pipelined on persistent connections.
    let mut a = args(addr.clone());
    a.tcp = true;
    let cfg = BenchConfig::from_args(&a).unwrap();
    let r = tokio::task::spawn_blocking(move || run(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.sent, r.responses, r.timeouts), (4000, 4000, 0), "{r:?}");
    assert_eq!(server.stats.totals().tcp_local, 4000);

    // Open loop at a fixed rate: 300 queries at 1000/s from a dnsperf-style file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.txt");
    std::fs::write(&file, "; comment\nalpha A\nbeta.benchnet AAAA\n").unwrap();
    let mut a = args(addr.clone());
    a.query.clear();
    a.queries = Some(file);
    a.rate = Some(1000);
    a.count = Some(300);
    a.threads = 1;
    let cfg = BenchConfig::from_args(&a).unwrap();
    let r = tokio::task::spawn_blocking(move || run(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.mode, "open");
    assert_eq!((r.sent, r.responses), (300, 300), "{r:?}");
    // 300 queries at 1000/s take about 0.3 s; allow a loaded machine plenty of slack.
    assert!(
        r.elapsed_s >= 0.25,
        "open loop sent faster than its rate: {r:?}"
    );

    // Nothing may have gone upstream.
    assert_eq!(server.stats.totals().forwarded, 0);
    server.shutdown().await;
}

#[test]
fn bench_rejects_bad_arguments() {
    let mut a = args("127.0.0.1:5353".into());
    a.query.clear();
    assert!(BenchConfig::from_args(&a)
        .unwrap_err()
        .contains("no queries"));
    let mut a = args("not an address".into());
    a.threads = 1;
    assert!(BenchConfig::from_args(&a).unwrap_err().contains("--server"));
    let mut a = args("127.0.0.1:5353".into());
    a.query = vec!["x:NOTATYPE".into()];
    assert!(BenchConfig::from_args(&a).is_err());
}
