//! The UDP forwarding transport seen from the upstream: cache misses leave from a few long-lived
//! sockets (not one fresh socket per question), and with `[upstream] randomize_case = true` the
//! query name goes upstream in random letter case (0x20, as unbound's `use-caps-for-id`) and a
//! reply that does not echo it exactly is not believed. Fake upstreams on loopback only.

mod kit;

use kit::*;
use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::Duration;

#[test]
fn cache_misses_leave_from_a_few_long_lived_sockets() {
    let up = FakeUpstream::start(Behavior::Answer);
    let s = TestServer::start("", &[up.addr], "cache_size = 0");
    let client = udp_client("127.0.0.1");
    for i in 0..200u16 {
        let r = udp_exchange(
            &client,
            s.addr,
            &query(i, &format!("m{i}.example.com"), 1, false),
            WAIT,
        )
        .unwrap_or_else(|| panic!("no reply to m{i}"));
        assert_eq!((rcode(&r), ancount(&r)), (0, 1));
    }
    let seen = up.udp_queries();
    assert_eq!(seen.len(), 200);
    let ports: HashSet<u16> = seen.iter().map(|(from, _)| from.port()).collect();
    // A fresh socket per question would show 200 source ports; the pool keeps a handful
    // (re-opened only after 1,000 queries or 10 s each).
    assert!(
        ports.len() <= 8,
        "{} source ports for 200 questions",
        ports.len()
    );
}

#[test]
fn randomized_case_goes_upstream_and_must_come_back_exactly() {
    let up = FakeUpstream::start(Behavior::Answer);
    let s = TestServer::start(
        "",
        &[up.addr],
        "cache_size = 0\nrandomize_case = true\ntimeout_ms = 300\nbudget_ms = 600",
    );
    let name = "abcdefghijklmnopqrstuvwxyz.Example.COM";
    let q = query(0x4242, name, 1, false);
    let client = udp_client("127.0.0.1");
    let r = udp_exchange(&client, s.addr, &q, WAIT).expect("answer");
    assert_eq!((rcode(&r), ancount(&r)), (0, 1));
    assert_eq!(&r[12..q.len()], &q[12..], "the client's own letter case");
    let asked = up.udp_queries()[0].1.clone();
    let wire = encode_name(name);
    let upstream_name = &asked[12..12 + wire.len()];
    assert!(upstream_name.eq_ignore_ascii_case(&wire));
    assert_ne!(upstream_name, &wire[..], "case randomised (36 letters)");

    // An upstream that does not echo the case is not believed: SERVFAIL once the budget is
    // spent.
    up.set(Behavior::AnswerLowercased);
    let q = query(0x4343, "other.Example.COM", 1, false);
    let r = udp_exchange(&client, s.addr, &q, WAIT).expect("a reply, not silence");
    assert_eq!(rcode(&r), 2, "SERVFAIL");
}

#[test]
fn a_closed_port_upstream_fails_over_at_once() {
    // A port nobody listens on: the kernel answers ICMP port unreachable, which must move the
    // question to the next server at once rather than after the 3 s try timeout.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let up = FakeUpstream::start(Behavior::Answer);
    let s = TestServer::start(
        "",
        &[closed, up.addr],
        "cache_size = 0\ntimeout_ms = 3000\nbudget_ms = 6000",
    );
    let client = udp_client("127.0.0.1");
    let t = std::time::Instant::now();
    let r = udp_exchange(
        &client,
        s.addr,
        &query(9, "next.example.com", 1, false),
        WAIT,
    )
    .expect("answer");
    assert_eq!(
        (rcode(&r), ancount(&r)),
        (0, 1),
        "the second server's answer"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "failed over after {:?}",
        t.elapsed()
    );
}
