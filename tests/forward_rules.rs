//! The forwarder's manners, end to end against scripted fake upstreams on loopback: the reply a
//! client gets is dockns's own (RFC 1035 §4.1.1 header, RFC 6891 OPT, TC keeps the OPT), the
//! query an upstream gets is dockns's own (no client COOKIE/ECS/padding, RFC 7873), the cache key
//! holds CD, matching is exact (type bytes, trailing bytes, counts), one lost packet does not
//! kill a server, expired answers are served stale when every upstream fails (RFC 8767), answers
//! from Docker's resolver (127.0.0.11) live no longer than `[server] ttl`, and per-client server
//! sets reach their own servers with their own cache entries.

mod kit;

use dockns::forward::{ForwardSettings, Forwarder, ServerSet};
use kit::{ancount, id_of, rcode, tcp_ask, udp_client, udp_exchange, wait_until, TestServer, WAIT};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const UPSTREAM: &str = "timeout_ms = 400\nbudget_ms = 1500";

/// What a scripted upstream sends back for the n-th query (0-based) it received.
type Script = Arc<dyn Fn(&[u8], usize) -> Vec<Vec<u8>> + Send + Sync>;

/// A fake DNS server on a loopback address (UDP and TCP, one port) that answers by script and
/// keeps every query it received.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Source address of every UDP query.
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Scripted {
    fn start(ip: &str, script: Script) -> Scripted {
        // UDP and TCP on one port: retry until a port is free for both.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(format!("{ip}:0")).expect("bind fake");
            if let Ok(tcp) = std::net::TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (seen, sources, count, stop, script) = (
                seen.clone(),
                sources.clone(),
                count.clone(),
                stop.clone(),
                script.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, src)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let q = buf[..n].to_vec();
                    sources.lock().unwrap().push(src);
                    let i = count.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap().push(q.clone());
                    for r in script(&q, i) {
                        let _ = udp.send_to(&r, src);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }));
        }
        {
            let (seen, count, stop) = (seen.clone(), count.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let (seen, count, script) = (seen.clone(), count.clone(), script.clone());
                    std::thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        while let Ok(q) = kit::tcp_recv(&mut s) {
                            let i = count.fetch_add(1, Ordering::SeqCst);
                            seen.lock().unwrap().push(q.clone());
                            for r in script(&q, i) {
                                if kit::tcp_send(&mut s, &r).is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            }));
        }
        Scripted {
            addr,
            seen,
            sources,
            count,
            stop,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn last(&self) -> Vec<u8> {
        self.seen.lock().unwrap().last().cloned().expect("a query")
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn name_end(b: &[u8], mut at: usize) -> usize {
    loop {
        let l = b[at];
        if l == 0 {
            return at + 1;
        }
        if l & 0xC0 == 0xC0 {
            return at + 2;
        }
        at += 1 + usize::from(l);
    }
}

/// End of the question section.
fn qend(m: &[u8]) -> usize {
    name_end(m, 12) + 4
}

/// A record: type, class, TTL, RDATA (owner skipped).
#[derive(Debug, Clone)]
struct Rr {
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: Vec<u8>,
}

/// Every record of a message, section by section (answer, authority, additional).
fn records(m: &[u8]) -> [Vec<Rr>; 3] {
    let mut at = qend(m);
    let mut out: [Vec<Rr>; 3] = Default::default();
    for (s, count) in [be16(m, 6), be16(m, 8), be16(m, 10)]
        .into_iter()
        .enumerate()
    {
        for _ in 0..count {
            at = name_end(m, at);
            let rdlen = usize::from(be16(m, at + 8));
            out[s].push(Rr {
                rtype: be16(m, at),
                class: be16(m, at + 2),
                ttl: u32::from_be_bytes(m[at + 4..at + 8].try_into().unwrap()),
                rdata: m[at + 10..at + 10 + rdlen].to_vec(),
            });
            at += 10 + rdlen;
        }
    }
    assert_eq!(at, m.len(), "no bytes after the last record");
    out
}

/// The OPT record of a message, if any.
fn opt(m: &[u8]) -> Option<Rr> {
    records(m)[2].iter().find(|r| r.rtype == 41).cloned()
}

/// EDNS option codes inside an OPT's RDATA.
fn option_codes(rdata: &[u8]) -> Vec<u16> {
    let mut v = Vec::new();
    let mut at = 0;
    while at + 4 <= rdata.len() {
        v.push(be16(rdata, at));
        at += 4 + usize::from(be16(rdata, at + 2));
    }
    v
}

fn encode_name(name: &str) -> Vec<u8> {
    kit::encode_name(name)
}

/// A query with the given flags word, type, and an optional OPT (size, DO, raw options).
fn query(id: u16, flags: u16, name: &str, qtype: u16, edns: Option<(u16, bool, &[u8])>) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    p.extend_from_slice(&encode_name(name));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    if let Some((size, d, opts)) = edns {
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, 0, if d { 0x80 } else { 0 }, 0]);
        p.extend_from_slice(&(opts.len() as u16).to_be_bytes());
        p.extend_from_slice(opts);
    }
    p
}

/// An upstream reply to `q`: flags word, A answers (last octet, TTL), optional raw OPT record.
fn reply(q: &[u8], flags: u16, answers: &[(u8, u32)], opt: Option<&[u8]>) -> Vec<u8> {
    let mut r = q[..2].to_vec();
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, u8::from(opt.is_some())]);
    r.extend_from_slice(&q[12..qend(q)]);
    for &(last, ttl) in answers {
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4, 192, 0, 2, last]);
    }
    if let Some(o) = opt {
        r.extend_from_slice(o);
    }
    r
}

/// An OPT record with size 4096, DO set, and one COOKIE option (8-byte client + 16-byte server
/// cookie: `client`, then 0xEE).
fn upstream_opt(client: &[u8; 8]) -> Vec<u8> {
    let mut o = vec![0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0, 0, 28, 0, 10, 0, 24];
    o.extend_from_slice(client);
    o.extend_from_slice(&[0xEE; 16]);
    o
}

/// The client COOKIE in a query, if it sent one.
fn client_cookie(q: &[u8]) -> Option<[u8; 8]> {
    let o = opt(q)?;
    let mut at = 0;
    while at + 4 <= o.rdata.len() {
        let (code, len) = (be16(&o.rdata, at), usize::from(be16(&o.rdata, at + 2)));
        if code == 10 && len >= 8 {
            return o.rdata[at + 4..at + 12].try_into().ok();
        }
        at += 4 + len;
    }
    None
}

fn ask(s: &TestServer, q: &[u8]) -> Vec<u8> {
    let sock = udp_client("127.0.0.1");
    let r = udp_exchange(&sock, s.addr, q, WAIT).expect("a reply");
    assert_eq!(id_of(&r), id_of(q), "the client's ID");
    r
}

fn first_a(r: &[u8]) -> Option<(u8, u32)> {
    records(r)[0]
        .iter()
        .find(|rr| rr.rtype == 1)
        .map(|rr| (rr.rdata[3], rr.ttl))
}

const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const Z: u16 = 0x0040;
const CD: u16 = 0x0010;

/// An authoritative-style upstream: AA=1, RA=0, its own OPT with a COOKIE echoing the client's.
fn authoritative() -> Script {
    Arc::new(|q: &[u8], _| {
        let cookie = client_cookie(q).unwrap_or([0x11; 8]);
        vec![reply(
            q,
            QR | AA | (be16(q, 2) & RD),
            &[(1, 300)],
            Some(&upstream_opt(&cookie)),
        )]
    })
}

#[test]
fn upstream_query_is_dockns_own() {
    let up = Scripted::start("127.0.0.1", authoritative());
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    // RD=0, a Z bit, CD=1, EDNS 8192 with DO, a COOKIE and padding.
    let mut opts = vec![0, 10, 0, 8];
    opts.extend_from_slice(b"CLIENTCK");
    opts.extend_from_slice(&[0, 12, 0, 4, 0, 0, 0, 0]);
    let q = query(0x0101, Z | CD, "own.example", 1, Some((8192, true, &opts)));
    let r = ask(&s, &q);
    assert_eq!(rcode(&r), 0);
    let sent = up.last();
    let flags = be16(&sent, 2);
    assert_eq!(flags & RD, RD, "RD=1 upstream whatever the client asked");
    assert_eq!(flags & Z, 0, "no client Z bits upstream");
    assert_eq!(flags & CD, CD, "CD as the client's");
    let o = opt(&sent).expect("dockns's own EDNS upstream");
    assert_eq!(
        o.class, 1232,
        "dockns's own UDP size, not the client's 8192"
    );
    assert_eq!(o.ttl & 0x8000, 0x8000, "DO as the client's");
    assert!(
        option_codes(&o.rdata).is_empty(),
        "no client options (COOKIE, padding) upstream: {:?}",
        option_codes(&o.rdata)
    );
    // An ECS option sends the query down the slow parser: still none of it upstream.
    let mut ecs = vec![0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100];
    ecs.extend_from_slice(&[0, 10, 0, 8]);
    ecs.extend_from_slice(b"CLIENTCK");
    let q = query(0x0102, RD, "ecs.example", 1, Some((4096, false, &ecs)));
    assert_eq!(rcode(&ask(&s, &q)), 0);
    let o = opt(&up.last()).expect("EDNS upstream");
    assert!(option_codes(&o.rdata).is_empty(), "no ECS upstream");
}

#[test]
fn forwarded_reply_has_dockns_header_and_opt() {
    let up = Scripted::start("127.0.0.1", authoritative());
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    let mut opts = vec![0, 10, 0, 8];
    opts.extend_from_slice(b"CLIENTCK");
    let q = query(
        0x0202,
        RD | CD,
        "MiXeD.Example",
        1,
        Some((4096, true, &opts)),
    );
    let r = ask(&s, &q);
    let flags = be16(&r, 2);
    assert_eq!(flags & AA, 0, "AA=0 on a forwarded answer");
    assert_eq!(flags & RA, RA, "RA=1: dockns recurses for its clients");
    assert_eq!(
        flags & (RD | CD),
        RD | CD,
        "RD and CD copied from the client"
    );
    assert_eq!(
        &r[12..qend(&r)],
        &q[12..qend(&q)],
        "question exactly as asked"
    );
    let o = opt(&r).expect("an OPT for an EDNS client");
    assert_eq!(o.class, 1232, "dockns's own advertised size");
    assert_eq!(o.ttl & 0x8000, 0x8000, "DO copied");
    assert!(
        option_codes(&o.rdata).is_empty(),
        "no upstream options passed on"
    );
    // No EDNS from the client: no OPT back, RD=0 copied.
    let q = query(0x0203, 0, "plain.example", 1, None);
    let r = ask(&s, &q);
    assert!(opt(&r).is_none());
    assert_eq!(be16(&r, 2) & (RD | AA | RA), RA);
}

#[test]
fn another_clients_cookie_is_never_replayed() {
    let up = Scripted::start("127.0.0.1", authoritative());
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    let mk = |id, ck: &[u8; 8]| {
        let mut o = vec![0, 10, 0, 8];
        o.extend_from_slice(ck);
        query(id, RD, "cookie.example", 1, Some((1232, false, &o)))
    };
    let a = ask(&s, &mk(1, b"AAAAAAAA"));
    let b = ask(&s, &mk(2, b"BBBBBBBB"));
    assert_eq!(up.count(), 1, "the second came from the cache");
    for r in [&a, &b] {
        assert!(
            !r.windows(8).any(|w| w == b"AAAAAAAA" || w == b"BBBBBBBB"),
            "a client COOKIE in a reply: {r:?}"
        );
        assert!(option_codes(&opt(r).unwrap().rdata).is_empty());
    }
}

#[test]
fn cd_is_part_of_the_cache_key() {
    // CD=1 (validation off) gets a different answer from a validating upstream.
    let up = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| {
            let last = if be16(q, 2) & CD != 0 { 66 } else { 1 };
            vec![reply(q, QR | RA | RD, &[(last, 300)], None)]
        }),
    );
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    let r = ask(&s, &query(1, RD | CD, "cd.example", 1, None));
    assert_eq!(first_a(&r).unwrap().0, 66);
    let r = ask(&s, &query(2, RD, "cd.example", 1, None));
    assert_eq!(
        first_a(&r).unwrap().0,
        1,
        "a CD=1 answer served to a CD=0 client"
    );
    let r = ask(&s, &query(3, RD | CD, "cd.example", 1, None));
    assert_eq!(first_a(&r).unwrap().0, 66);
    assert_eq!(up.count(), 2);
}

#[test]
fn truncated_replies_keep_the_opt() {
    // 100 A records: 1.6 KB, over the 1232 a UDP client may get.
    let up = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| {
            let many: Vec<(u8, u32)> = (0..100).map(|i| (i, 300)).collect();
            vec![reply(q, QR | RA | RD, &many, None)]
        }),
    );
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    for id in [1, 2] {
        // The first from upstream, the second from the cache.
        let r = ask(
            &s,
            &query(id, RD, "big.example", 1, Some((1232, true, &[]))),
        );
        assert_eq!(be16(&r, 2) & TC, TC, "TC");
        let o = opt(&r).expect("RFC 6891 §6.1.1: the OPT stays on a truncated reply");
        assert_eq!(o.class, 1232);
        assert_eq!(o.ttl & 0x8000, 0x8000);
    }
    let r = tcp_ask(
        s.addr,
        &query(3, RD, "big.example", 1, Some((4096, false, &[]))),
    )
    .unwrap();
    assert_eq!(ancount(&r), 100, "TCP gets it all");
    assert!(opt(&r).is_some());
}

#[test]
fn type_bytes_match_exactly() {
    // Asked type 65 (HTTPS); the first reply is for type 97 (0x61 = 'a', 0x41 = 'A').
    let up = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| {
            let mut wrong = reply(q, QR | RA | RD, &[(66, 300)], None);
            let t = qend(q) - 4;
            wrong[t + 1] = 97;
            vec![wrong, reply(q, QR | RA | RD, &[], None)]
        }),
    );
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    let r = ask(&s, &query(1, RD, "https.example", 65, None));
    assert_eq!(be16(&r, qend(&r) - 4), 65);
    assert_eq!(
        (rcode(&r), ancount(&r)),
        (0, 0),
        "the type-65 reply, not the type-97 one"
    );
}

#[test]
fn structurally_broken_replies_are_dropped_and_counted() {
    // Trailing garbage, then a count that promises a record that is not there: never accepted.
    let up = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| {
            let mut trailing = reply(q, QR | RA | RD, &[(66, 300)], None);
            trailing.extend_from_slice(&[0xDE, 0xAD]);
            let mut short = reply(q, QR | RA | RD, &[(67, 300)], None);
            short[7] = 2;
            vec![trailing, short]
        }),
    );
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    let r = ask(&s, &query(1, RD, "broken.example", 1, None));
    assert_eq!(rcode(&r), 2, "SERVFAIL, not a broken answer");
    let t = s.server.forwarder.upstream_totals();
    assert!(t[0].malformed >= 2, "counted: {:?}", t[0]);
    // With a good reply behind them, the good one is taken.
    let good = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| {
            let mut trailing = reply(q, QR | RA | RD, &[(66, 300)], None);
            trailing.push(0);
            vec![trailing, reply(q, QR | RA | RD, &[(7, 300)], None)]
        }),
    );
    let s = TestServer::start("", &[good.addr], UPSTREAM);
    let r = ask(&s, &query(2, RD, "broken2.example", 1, None));
    assert_eq!(first_a(&r).unwrap().0, 7);
}

#[test]
fn replies_from_another_port_are_not_heard() {
    // The real server answers after 150 ms; meanwhile a spoofer on another port of the same
    // address sends a wrong answer with the right ID and question to dockns's query port.
    let up = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| {
            std::thread::sleep(Duration::from_millis(150));
            vec![reply(q, QR | RA | RD, &[(1, 300)], None)]
        }),
    );
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    let client = udp_client("127.0.0.1");
    client.set_read_timeout(Some(WAIT)).unwrap();
    let q = query(0x0909, RD, "spoof.example", 1, None);
    client.send_to(&q, s.addr).unwrap();
    assert!(wait_until(WAIT, || up.count() >= 1));
    let src = *up.sources.lock().unwrap().last().expect("a UDP query");
    let spoofer = UdpSocket::bind("127.0.0.1:0").unwrap();
    spoofer
        .send_to(&reply(&up.last(), QR | RA | RD, &[(66, 300)], None), src)
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = client.recv_from(&mut buf).expect("a reply");
    assert_eq!(
        first_a(&buf[..n]).unwrap().0,
        1,
        "the spoofed reply was taken"
    );
}

#[test]
fn one_lost_packet_does_not_move_traffic() {
    // The first server drops exactly its first query; the second always answers.
    let first = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], n| {
            if n == 0 {
                vec![]
            } else {
                vec![reply(q, QR | RA | RD, &[(1, 300)], None)]
            }
        }),
    );
    let second = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| vec![reply(q, QR | RA | RD, &[(2, 300)], None)]),
    );
    let s = TestServer::start("", &[first.addr, second.addr], UPSTREAM);
    let r = ask(&s, &query(1, RD, "lost.example", 1, None));
    assert_eq!(
        first_a(&r).unwrap().0,
        2,
        "the lost question retried on the next server"
    );
    assert!(
        s.server.forwarder.alive()[0].1,
        "one timeout does not mark the first server dead"
    );
    for i in 0..4u16 {
        let r = ask(&s, &query(10 + i, RD, &format!("next{i}.example"), 1, None));
        assert_eq!(
            first_a(&r).unwrap().0,
            1,
            "later questions still go to the first"
        );
    }
    assert_eq!(second.count(), 1);
}

#[test]
fn expired_answers_are_served_stale_when_every_upstream_fails() {
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let up = Scripted::start(
        "127.0.0.1",
        Arc::new(move |q: &[u8], _| {
            if f.load(Ordering::SeqCst) {
                vec![reply(q, QR | RA | RD | 2, &[], None)] // SERVFAIL
            } else {
                vec![reply(q, QR | RA | RD, &[(9, 1)], None)] // TTL 1 s
            }
        }),
    );
    let s = TestServer::start("", &[up.addr], UPSTREAM);
    let r = ask(&s, &query(1, RD, "stale.example", 1, None));
    assert_eq!(first_a(&r), Some((9, 1)));
    std::thread::sleep(Duration::from_millis(2100));
    failing.store(true, Ordering::SeqCst);
    let r = ask(&s, &query(2, RD, "stale.example", 1, None));
    assert_eq!(rcode(&r), 0, "the stale answer, not SERVFAIL");
    assert_eq!(first_a(&r), Some((9, 30)), "RFC 8767: TTL 30");
    assert!(up.count() >= 2, "the upstream was asked first");
    assert_eq!(s.server.forwarder.cache_metrics().stale.get(), 1);
    // A name never answered: SERVFAIL.
    let r = ask(&s, &query(3, RD, "never.example", 1, None));
    assert_eq!(rcode(&r), 2);

    // serve_stale_secs = 0: no stale answers.
    failing.store(false, Ordering::SeqCst);
    let s = TestServer::start("", &[up.addr], &format!("{UPSTREAM}\nserve_stale_secs = 0"));
    assert_eq!(rcode(&ask(&s, &query(4, RD, "stale2.example", 1, None))), 0);
    std::thread::sleep(Duration::from_millis(2100));
    failing.store(true, Ordering::SeqCst);
    assert_eq!(rcode(&ask(&s, &query(5, RD, "stale2.example", 1, None))), 2);
}

#[test]
fn answers_from_dockers_resolver_live_no_longer_than_the_local_ttl() {
    // Docker's 127.0.0.11 answers container names with TTL 600.
    let docker = Scripted::start(
        "127.0.0.11",
        Arc::new(|q: &[u8], _| vec![reply(q, QR | RA | RD, &[(5, 600)], None)]),
    );
    let s = TestServer::start("ttl = 1", &[docker.addr], UPSTREAM);
    let r = ask(&s, &query(1, RD, "web", 1, None));
    let (_, ttl) = first_a(&r).unwrap();
    assert!(ttl <= 1, "TTL {ttl} from Docker's resolver passed on");
    assert!(wait_until(Duration::from_secs(5), || {
        ask(&s, &query(2, RD, "web", 1, None));
        docker.count() >= 2
    }));
    // Another upstream's 600 stays 600.
    let other = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| vec![reply(q, QR | RA | RD, &[(5, 600)], None)]),
    );
    let s = TestServer::start("ttl = 1", &[other.addr], UPSTREAM);
    assert_eq!(
        first_a(&ask(&s, &query(3, RD, "web", 1, None))),
        Some((5, 600))
    );
}

#[test]
fn each_server_set_asks_its_own_servers_with_its_own_cache_entries() {
    let a = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| vec![reply(q, QR | RA | RD, &[(1, 300)], None)]),
    );
    let b = Scripted::start(
        "127.0.0.1",
        Arc::new(|q: &[u8], _| vec![reply(q, QR | RA | RD, &[(2, 300)], None)]),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let f = Forwarder::new(&ForwardSettings {
            servers: vec![a.addr],
            timeout: Duration::from_millis(400),
            budget: Duration::from_millis(1500),
            max_inflight: 16,
            cache_size: 100,
            cache_bytes: 1 << 20,
            serve_stale: Duration::ZERO,
            local_ttl: 5,
            randomize_case: false,
        });
        let own: ServerSet = Arc::from(vec![b.addr]);
        let q = query(7, RD, "set.example", 1, None);
        let mine = f.resolve(&q, false, Some(&own)).await;
        assert_eq!(first_a(&mine).unwrap().0, 2, "the container's own server");
        let default = f.resolve(&q, false, None).await;
        assert_eq!(
            first_a(&default).unwrap().0,
            1,
            "not the other set's cache entry"
        );
        let again = f.resolve(&q, false, Some(&own)).await;
        assert_eq!(first_a(&again).unwrap().0, 2);
        let mut out = [0u8; 512];
        assert!(f
            .answer_from_cache(&q, &mut out, false, Some(&own))
            .is_some());
        assert_eq!((a.count(), b.count()), (1, 1), "each answer cached per set");
        assert_eq!(
            f.is_alive(b.addr),
            Some(true),
            "health kept for the set's server"
        );
        assert!(f
            .upstream_totals()
            .iter()
            .any(|t| t.addr == b.addr && t.queries == 1));
    });
}
