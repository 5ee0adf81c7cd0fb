//! Upstream faults, against fake upstream servers on loopback: dead, refusing, SERVFAIL,
//! garbage, wrong ID, wrong question, late. Clients always get an answer or SERVFAIL within
//! the budget, never silence; bogus replies are ignored while the real one is awaited; a dead
//! server is skipped until its health probe succeeds.

mod kit;

use kit::*;
use std::time::{Duration, Instant};

const SERVFAIL: u8 = 2;
/// Per-try timeout and total budget of these tests.
const UPSTREAM: &str = "timeout_ms = 400\nbudget_ms = 900";

fn server(ups: &[&FakeUpstream]) -> TestServer {
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    TestServer::start("", &addrs, UPSTREAM)
}

/// Asks once over UDP for a forwarded name; returns the reply and how long it took.
fn ask_udp(s: &TestServer, id: u16, name: &str) -> (Option<Vec<u8>>, Duration) {
    let sock = udp_client("127.0.0.1");
    let t = Instant::now();
    let r = udp_exchange(
        &sock,
        s.addr,
        &query(id, name, 1, false),
        Duration::from_secs(6),
    );
    (r, t.elapsed())
}

fn expect_answer(s: &TestServer, name: &str) {
    let (r, _) = ask_udp(s, 0x0A0A, name);
    let r = r.unwrap_or_else(|| panic!("{name}: silence"));
    assert_eq!((rcode(&r), ancount(&r)), (0, 1), "{name}: the real answer");
    let q = query(0x0A0A, name, 1, false);
    assert_eq!(
        &r[12..q.len()],
        &q[12..],
        "{name}: the answer to our question"
    );
    assert_eq!(
        &r[r.len() - 4..],
        &[192, 0, 2, 1],
        "{name}: the upstream's record"
    );
    let r = tcp_ask(s.addr, &query(0x0B0B, name, 1, false)).expect("tcp");
    assert_eq!(
        (rcode(&r), ancount(&r)),
        (0, 1),
        "{name}: the real answer over TCP"
    );
}

fn expect_servfail(s: &TestServer, name: &str) -> Duration {
    let (r, took) = ask_udp(s, 0x0C0C, name);
    let r = r.unwrap_or_else(|| panic!("{name}: silence instead of SERVFAIL"));
    assert_eq!(id_of(&r), 0x0C0C);
    assert_eq!(rcode(&r), SERVFAIL, "{name}");
    took
}

#[test]
fn healthy_upstream_answers() {
    let up = FakeUpstream::start(Behavior::Answer);
    let s = server(&[&up]);
    expect_answer(&s, "ok.example");
}

#[test]
fn dead_upstream_gives_servfail_within_the_budget() {
    let up = FakeUpstream::start(Behavior::Dead);
    let s = server(&[&up]);
    let took = expect_servfail(&s, "dead1.example");
    // Budget 900 ms; the reply must come from the budget, not from the client giving up (6 s).
    assert!(took < Duration::from_secs(5), "SERVFAIL after {took:?}");
    let took = expect_servfail(&s, "dead2.example");
    assert!(took < Duration::from_secs(5), "SERVFAIL after {took:?}");
    assert_alive(s.addr, "a dead upstream");
}

#[test]
fn dead_server_is_skipped_until_its_probe_succeeds() {
    let dead = FakeUpstream::start(Behavior::Dead);
    let good = FakeUpstream::start(Behavior::Answer);
    let s = server(&[&dead, &good]);
    // The first questions pay a timeout on the dead server, then fall through to the good one;
    // after DEAD_AFTER (3) failed tries in a row it is marked dead.
    for name in ["one.example", "two.example", "three.example"] {
        expect_answer(&s, name);
    }
    assert!(
        wait_until(WAIT, || !s.server.forwarder.alive()[0].1),
        "first server marked dead"
    );
    // From now on clients skip it: only probes (the root name) reach it.
    let before = dead.names().len();
    for i in 0..5 {
        expect_answer(&s, &format!("skip{i}.example"));
    }
    let after: Vec<String> = dead.names()[before..].to_vec();
    assert!(
        after.iter().all(|n| n.is_empty()),
        "dead server got client queries: {after:?}"
    );
    assert!(
        wait_until(WAIT, || dead.names().iter().any(|n| n.is_empty())),
        "the dead server is probed"
    );
    // It comes back: the probe notices and clients use it again.
    dead.set(Behavior::Answer);
    assert!(
        wait_until(Duration::from_secs(10), || s.server.forwarder.alive()[0].1),
        "probe revives the server"
    );
    let before = dead.count();
    expect_answer(&s, "back.example");
    assert!(dead.count() > before, "revived server serves clients again");
}

#[test]
fn all_dead_servfails_within_the_budget_and_recovers() {
    let up = FakeUpstream::start(Behavior::Dead);
    let s = server(&[&up]);
    // Three failed tries in a row (DEAD_AFTER) mark it dead.
    expect_servfail(&s, "a.example");
    expect_servfail(&s, "b.example");
    expect_servfail(&s, "b2.example");
    assert!(wait_until(WAIT, || !s.server.forwarder.alive()[0].1));
    // Every server is dead: still tried as a last resort, SERVFAIL within the budget (0.9 s).
    let took = expect_servfail(&s, "c.example");
    assert!(took < Duration::from_secs(3), "SERVFAIL took {took:?}");
    up.set(Behavior::Answer);
    assert!(
        wait_until(Duration::from_secs(10), || s.server.forwarder.alive()[0].1),
        "probe revives the only server"
    );
    expect_answer(&s, "d.example");
}

#[test]
fn refusing_and_servfail_upstreams_fall_through() {
    let refuse = FakeUpstream::start(Behavior::REFUSE);
    let fail = FakeUpstream::start(Behavior::SERVFAIL);
    let good = FakeUpstream::start(Behavior::Answer);
    let s = server(&[&refuse, &fail, &good]);
    expect_answer(&s, "through.example");
    // Refusing is an answer, not death.
    assert!(s.server.forwarder.alive().iter().all(|(_, a)| *a));
    let only = FakeUpstream::start(Behavior::REFUSE);
    let s2 = server(&[&only]);
    expect_servfail(&s2, "refused.example");
}

#[test]
fn garbage_is_ignored_then_servfail_or_next_server() {
    let junk = FakeUpstream::start(Behavior::Garbage);
    let s = server(&[&junk]);
    let took = expect_servfail(&s, "junk.example");
    assert!(took < Duration::from_secs(5));
    let junk2 = FakeUpstream::start(Behavior::Garbage);
    let good = FakeUpstream::start(Behavior::Answer);
    let s2 = server(&[&junk2, &good]);
    expect_answer(&s2, "junk2.example");
}

#[test]
fn wrong_id_and_wrong_question_are_ignored_while_waiting() {
    for b in [
        Behavior::WrongIdThenAnswer,
        Behavior::WrongQuestionThenAnswer,
    ] {
        let up = FakeUpstream::start(b);
        let s = server(&[&up]);
        // The bogus reply comes first; the client must get the real one (UDP and TCP paths).
        expect_answer(&s, "spoofed.example");
        expect_answer(&s, "another.example");
        assert!(s.server.forwarder.alive()[0].1, "{b:?}: still alive");
    }
}

#[test]
fn answer_after_the_deadline_gives_servfail_and_no_late_reply() {
    // Answers after 1.5 s; the budget is 0.9 s.
    let up = FakeUpstream::start(Behavior::Late(1500));
    let s = server(&[&up]);
    let sock = udp_client("127.0.0.1");
    let q = query(0x7777, "late.example", 1, false);
    let r = udp_exchange(&sock, s.addr, &q, Duration::from_secs(6)).expect("SERVFAIL, not silence");
    assert_eq!(rcode(&r), SERVFAIL);
    // The late answer reaches dockns, which drops it as matching no question in flight (the
    // pool's ignored counter): only then is "no second reply" a result.
    assert!(
        wait_until(Duration::from_secs(5), || s
            .server
            .forwarder
            .pool_totals()
            .ignored
            >= 1),
        "the late answer arrived and was dropped"
    );
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    if let Ok((n, _)) = sock.recv_from(&mut buf) {
        panic!("a second reply arrived: {:?}", &buf[..n]);
    }
    assert_alive(s.addr, "a late upstream");
}
