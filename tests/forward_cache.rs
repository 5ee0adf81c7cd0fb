//! The forward cache end to end: an in-process dockns forwarding to a fake upstream on loopback
//! that counts the queries it receives per name.

mod kit;

use dockns::config::{Config, Overrides};
use dockns::server::Server;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// Question name (lower case, dotted) and the end of the question section.
fn question(pkt: &[u8]) -> Option<(String, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*pkt.get(at)?);
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(pkt.get(at + 1..at + 1 + len)?).to_lowercase());
        at += 1 + len;
    }
    Some((labels.join("."), at + 5))
}

/// A fake upstream: `*.cached.test` gets an A record (TTL 300), `*.missing.test` NXDOMAIN with
/// an SOA (MINIMUM 60), `*.slow.test` the A record after 1 s. Counts queries per name.
async fn fake_upstream() -> (SocketAddr, Hits) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    let hits: Hits = Arc::default();
    let h = hits.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let pkt = buf[..n].to_vec();
            let Some((name, qend)) = question(&pkt) else {
                continue;
            };
            *h.lock().unwrap().entry(name.clone()).or_default() += 1;
            let mut r = pkt[..2].to_vec();
            if name.ends_with("missing.test") {
                r.extend_from_slice(&[0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0]);
                r.extend_from_slice(&pkt[12..qend]);
                r.extend_from_slice(&[0xC0, 0x0C, 0, 6, 0, 1, 0, 0, 0x0E, 0x10, 0, 22, 0, 0]);
                r.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 60]);
            } else {
                r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
                r.extend_from_slice(&pkt[12..qend]);
                r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 1, 0x2C, 0, 4, 192, 0, 2, 7]);
            }
            let sock = sock.clone();
            let slow = name.ends_with("slow.test");
            tokio::spawn(async move {
                if slow {
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
                let _ = sock.send_to(&r, from).await;
            });
        }
    });
    (addr, hits)
}

fn server(upstream: SocketAddr, cache_size: usize) -> Server {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\n[upstream]\nservers = [\"{upstream}\"]\ncache_size = {cache_size}\ntimeout_ms = 3000\nbudget_ms = 6000\n"
    );
    Server::start(Config::from_toml(&text, &Overrides::default()).unwrap()).unwrap()
}

/// Sends one query with `id` and waits (generously) for the reply.
async fn ask(server: SocketAddr, name: &str, id: u16) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = kit::query(id, name, 1, false);
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&q, server).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await {
            buf.truncate(n);
            return buf;
        }
    }
    panic!("no reply from dockns for {name}");
}

fn hits(h: &Hits, name: &str) -> usize {
    h.lock().unwrap().get(name).copied().unwrap_or(0)
}

fn ttl_of_first_answer(resp: &[u8]) -> u32 {
    kit::parse(resp).answers[0].ttl
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_answers_repeats_negatives_and_shares_inflight() {
    let (up, h) = fake_upstream().await;
    let srv = server(up, 100);
    let addr = srv.bound()[0];

    // Positive answer: one upstream query, then served from the cache with the client's ID
    // and letter case and a TTL no larger than the upstream's.
    let first = ask(addr, "www.cached.test", 1).await;
    assert_eq!(first[3] & 0x0F, 0);
    assert_eq!(ttl_of_first_answer(&first), 300);
    for (i, name) in ["WWW.cached.test", "www.CACHED.test", "www.cached.test"]
        .iter()
        .enumerate()
    {
        let id = 100 + i as u16;
        let r = ask(addr, name, id).await;
        assert_eq!(u16::from_be_bytes([r[0], r[1]]), id);
        let want = kit::query(id, name, 1, false);
        assert_eq!(
            &r[12..want.len()],
            &want[12..],
            "question echoes the client's case"
        );
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert!(ttl_of_first_answer(&r) <= 300);
    }
    assert_eq!(
        hits(&h, "www.cached.test"),
        1,
        "repeats came from the cache"
    );

    // Negative answer (NXDOMAIN with SOA): cached too.
    for id in 1..=3 {
        let r = ask(addr, "x.missing.test", id).await;
        assert_eq!(r[3] & 0x0F, 3);
    }
    assert_eq!(
        hits(&h, "x.missing.test"),
        1,
        "NXDOMAIN cached per RFC 2308"
    );
    // Exact accounting: every client question is one cache lookup, counted once (the UDP
    // worker's own probe and the forwarder's lookup must not both count a miss).
    let m = srv.forwarder.cache_metrics();
    assert_eq!((m.hits.get(), m.misses.get()), (5, 2), "(hits, misses)");

    // In-flight de-duplication: ten clients ask a slow name at once, one upstream query.
    let mut tasks = Vec::new();
    for id in 0..10u16 {
        tasks.push(tokio::spawn(ask(addr, "a.slow.test", 500 + id)));
    }
    for (id, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert_eq!(u16::from_be_bytes([r[0], r[1]]), 500 + id as u16);
        assert_eq!(r[3] & 0x0F, 0);
    }
    assert_eq!(
        hits(&h, "a.slow.test"),
        1,
        "identical questions shared one query"
    );
    let m = srv.forwarder.cache_metrics();
    assert!(m.enabled.load(std::sync::atomic::Ordering::Relaxed));
    assert!(m.entries.get() >= 3, "entries gauge");
    assert!(m.hits.get() >= 5, "hits: {}", m.hits.get());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_size_zero_always_asks_upstream() {
    let (up, h) = fake_upstream().await;
    let srv = server(up, 0);
    let addr = srv.bound()[0];
    for id in 1..=3 {
        let r = ask(addr, "nocache.cached.test", id).await;
        assert_eq!(u16::from_be_bytes([r[0], r[1]]), id);
    }
    assert_eq!(hits(&h, "nocache.cached.test"), 3);
    let m = srv.forwarder.cache_metrics();
    assert!(!m.enabled.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(m.hits.get(), 0);
    srv.shutdown().await;
}
