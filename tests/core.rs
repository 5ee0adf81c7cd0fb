//! The core server end to end: a real dockns on an ephemeral loopback port, asked over UDP and
//! TCP by a real DNS client, with fake upstreams on loopback.

mod kit;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use kit::aio::*;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

async fn demo() -> (TestServer, FakeUpstream) {
    let up = fake_upstream(Behavior::AnswerWith(Ipv4Addr::new(192, 0, 2, 80))).await;
    let s = start(&demo_toml(&[up.addr], "")).await;
    (s, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_and_aaaa_for_every_name_form() {
    let (s, up) = demo().await;
    for name in [
        "db",
        "db.",
        "postgres",
        "db.demo",
        "postgres.demo",
        "db.docker",
        "db.demo.docker",
        "DB.Demo.",
    ] {
        let m = ask(s.addr, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(v4(&m), vec![Ipv4Addr::new(10, 89, 0, 2)], "{name}");
        assert!(
            m.metadata.authoritative,
            "{name}: local answers are authoritative"
        );
        assert!(m.metadata.recursion_available);
        assert!(m.metadata.recursion_desired, "RD is copied");
    }
    let m = ask(s.addr, "db", RecordType::AAAA).await;
    match &m.answers[0].data {
        RData::AAAA(a) => assert_eq!(a.0, "fd00:89::2".parse::<std::net::Ipv6Addr>().unwrap()),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.answers[0].ttl, 5);
    assert_eq!(up.count(), 0, "local names are never forwarded");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_echoes_question_case() {
    let (s, _up) = demo().await;
    let m = ask(s.addr, "PoStGrEs.DEMO.", RecordType::A).await;
    assert_eq!(m.queries[0].name().to_ascii(), "PoStGrEs.DEMO.");
    assert_eq!(m.answers[0].name.to_ascii(), "PoStGrEs.DEMO.");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_rotate_by_one_per_response() {
    let (s, _up) = demo().await;
    let mut firsts = Vec::new();
    let mut sets = HashSet::new();
    for _ in 0..6 {
        let m = ask(s.addr, "api", RecordType::A).await;
        let ips = v4(&m);
        assert_eq!(ips.len(), 3);
        let mut sorted = ips.clone();
        sorted.sort();
        sets.insert(sorted);
        firsts.push(ips[0]);
    }
    assert_eq!(sets.len(), 1, "always the same set");
    // Three successive responses start at three different replicas, and the cycle repeats.
    let first3: HashSet<_> = firsts[..3].iter().collect();
    assert_eq!(first3.len(), 3, "{firsts:?}");
    assert_eq!(firsts[..3], firsts[3..6], "{firsts:?}");
    // TCP shares the rotation and returns the same set.
    let m = ask_tcp(s.addr, "api", RecordType::A).await;
    assert_eq!(v4(&m).len(), 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_names_get_nodata_for_other_types_and_are_never_forwarded() {
    let (s, up) = demo().await;
    for (name, t) in [
        ("web", RecordType::AAAA),
        ("db", RecordType::MX),
        ("db", RecordType::TXT),
        ("db", RecordType::SRV),
        ("api.demo", RecordType::NS),
    ] {
        let m = ask(s.addr, name, t).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name} {t}"
        );
        assert!(m.answers.is_empty(), "{name} {t}");
        assert!(
            m.authorities.is_empty(),
            "{name} {t}: no SOA outside the domain"
        );
    }
    // Under the domain, NODATA carries the zone's SOA.
    let m = ask(s.addr, "db.docker", RecordType::MX).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(up.count(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_under_the_domain_are_nxdomain_with_soa() {
    let (s, up) = demo().await;
    for name in ["nope.docker", "db.nope.docker", "x.y.docker"] {
        let m = ask(s.addr, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert_eq!(m.authorities.len(), 1, "{name}");
        assert_eq!(m.authorities[0].name.to_ascii(), "docker.");
        assert_eq!(m.authorities[0].ttl, 5);
    }
    let m = ask(s.addr, "docker", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(up.count(), 0, "the domain is never forwarded");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptr_for_container_addresses() {
    let (s, _up) = demo().await;
    let m = ask(s.addr, "2.0.89.10.in-addr.arpa", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    match &m.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "db.demo."),
        other => panic!("{other:?}"),
    }
    let m = ask(
        s.addr,
        "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.8.0.0.0.0.d.f.ip6.arpa",
        RecordType::PTR,
    )
    .await;
    assert_eq!(m.answers.len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_truncates_and_tcp_returns_everything() {
    let (s, _up) = demo().await;
    // No EDNS: 512 bytes at most, TC set, whole records only.
    let q = query_bytes(1, "many", RecordType::A, None);
    let r = udp_raw(s.addr, &q, WAIT).await.expect("reply");
    assert!(r.len() <= 512, "{}", r.len());
    let m = Message::from_vec(&r).expect("decodes: whole records only");
    assert!(m.metadata.truncation);
    assert!(!m.answers.is_empty() && m.answers.len() < 40);
    assert!(m.edns.is_none(), "no OPT when the query had none");
    // EDNS with a small size is clamped up to 512; a big one down to 1232; 40 A records fit.
    let q = query_bytes(2, "many", RecordType::A, Some(4096));
    let r = udp_raw(s.addr, &q, WAIT).await.expect("reply");
    let m = Message::from_vec(&r).unwrap();
    assert!(r.len() <= 1232);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    // TCP: the client retries and gets all of it.
    let m = ask_tcp(s.addr, "many", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_is_echoed_and_bad_versions_get_badvers() {
    let (s, _up) = demo().await;
    let q = query_bytes(9, "db", RecordType::A, Some(1400));
    let m = Message::from_vec(&udp_raw(s.addr, &q, WAIT).await.unwrap()).unwrap();
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
    // EDNS version 1 → BADVERS (extended rcode 16).
    let mut q = query_bytes(10, "db", RecordType::A, Some(1400));
    let opt = q.len() - 11;
    q[opt + 6] = 1;
    let r = udp_raw(s.addr, &q, WAIT).await.unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert!(m.answers.is_empty());
    assert_eq!(r[opt + 5], 1, "extended rcode high bits = 1 (16 >> 4)");
    assert_eq!(r[3] & 0x0f, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formerr_notimp_and_drops() {
    let (s, _up) = demo().await;
    // Two questions → FORMERR.
    let mut two = query_bytes(7, "db", RecordType::A, None);
    let q1 = two[12..].to_vec();
    two.extend_from_slice(&q1);
    two[5] = 2;
    let r = udp_raw(s.addr, &two, WAIT).await.expect("FORMERR reply");
    assert_eq!(&r[0..2], &[0, 7]);
    assert_eq!(r[3] & 0x0f, 1, "FORMERR");
    // Label length running past the end → FORMERR.
    let mut bad = query_bytes(8, "db", RecordType::A, None);
    bad[12] = 60;
    let r = udp_raw(s.addr, &bad, WAIT).await.expect("FORMERR reply");
    assert_eq!(r[3] & 0x0f, 1);
    // Opcode STATUS (2) → NOTIMP, question echoed.
    let mut st = query_bytes(11, "db", RecordType::A, None);
    st[2] = (st[2] & 0x87) | (2 << 3);
    let r = udp_raw(s.addr, &st, WAIT).await.expect("NOTIMP reply");
    assert_eq!(r[3] & 0x0f, 4, "NOTIMP");
    assert_eq!((r[2] >> 3) & 0x0f, 2, "opcode echoed");
    // Shorter than a header, or a response: dropped, and the server keeps answering.
    assert!(udp_raw(s.addr, &[1, 2, 3], Duration::from_millis(300))
        .await
        .is_none());
    let mut resp = query_bytes(12, "db", RecordType::A, None);
    resp[2] |= 0x80;
    assert!(udp_raw(s.addr, &resp, Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(v4(&ask(s.addr, "db", RecordType::A).await).len(), 1);
    let t = s.server.stats.totals();
    assert_eq!(t.dropped, 2);
    assert!(t.errors >= 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_unknown_names_over_udp_and_tcp() {
    let (s, up) = demo().await;
    let m = ask(s.addr, "example.com", RecordType::A).await;
    assert_eq!(v4(&m), vec![Ipv4Addr::new(192, 0, 2, 80)]);
    assert_eq!(m.metadata.id, 0x4242, "client ID restored");
    assert_eq!(up.count(), 1);
    let m = ask_tcp(s.addr, "example.org", RecordType::A).await;
    assert_eq!(v4(&m), vec![Ipv4Addr::new(192, 0, 2, 80)]);
    assert_eq!(up.tcp_count(), 1, "TCP goes upstream over TCP");
    // Random query ID and source port towards the upstream.
    for _ in 0..6 {
        ask(s.addr, "example.net", RecordType::A).await;
    }
    let seen = up.sources();
    assert!(seen.iter().any(|(id, _)| *id != 0x4242), "{seen:?}");
    let ports: HashSet<u16> = seen.iter().map(|(_, p)| *p).collect();
    assert!(ports.len() > 1, "source ports vary: {seen:?}");
    // A known-name type under a non-local name (reverse of a non-container IP) is forwarded too.
    ask(s.addr, "8.8.8.8.in-addr.arpa", RecordType::PTR).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_answers_pass_through_and_tcp_retry_gets_all() {
    let up = fake_upstream(Behavior::TruncateUdp(60)).await;
    let s = start(&demo_toml(&[up.addr], "")).await;
    let m = ask(s.addr, "big.example", RecordType::A).await;
    assert!(m.metadata.truncation, "TC passed through");
    let m = ask_tcp(s.addr, "big.example", RecordType::A).await;
    assert_eq!(m.answers.len(), 60);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_with_wrong_id_or_question_are_ignored() {
    let up = fake_upstream(Behavior::WrongIdAndQuestionThenAnswer).await;
    let s = start(&demo_toml(&[up.addr], "")).await;
    let m = ask(s.addr, "spoof.example", RecordType::A).await;
    assert_eq!(v4(&m), vec![ANSWER_IP]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_gives_servfail_within_the_budget() {
    let dead = fake_upstream(Behavior::Dead).await;
    let s = start(&demo_toml(&[dead.addr], "")).await;
    let t0 = Instant::now();
    let m = ask(s.addr, "example.com", RecordType::A).await;
    let took = t0.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.queries.len(), 1, "question echoed");
    // Budget is 900 ms (timeout 300 ms); allow scheduling slack on a loaded machine.
    assert!(took < Duration::from_millis(900 + 1500), "{took:?}");
    // And local names are still answered.
    assert_eq!(v4(&ask(s.addr, "db", RecordType::A).await).len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_at_all_gives_servfail() {
    let s = start(&demo_toml(&[], "")).await;
    let m = ask(s.addr, "example.com", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_upstream() {
    let good = fake_upstream(Behavior::AnswerWith(Ipv4Addr::new(192, 0, 2, 2))).await;
    for first in [
        Behavior::Dead,
        Behavior::Rcode(ResponseCode::ServFail),
        Behavior::Rcode(ResponseCode::Refused),
    ] {
        let bad = fake_upstream(first).await;
        let s = start(&demo_toml(&[bad.addr, good.addr], "")).await;
        let m = ask(s.addr, "example.com", RecordType::A).await;
        assert_eq!(v4(&m), vec![Ipv4Addr::new(192, 0, 2, 2)], "{first:?}");
        assert!(bad.count() >= 1, "first server tried first");
        s.stop().await;
    }
    // A dead server is remembered: after health::DEAD_AFTER (3) timeouts in a row, the next
    // question goes to the live one first.
    let dead = fake_upstream(Behavior::Dead).await;
    let s = start(&demo_toml(&[dead.addr, good.addr], "")).await;
    for name in ["a.example", "a2.example", "a3.example"] {
        ask(s.addr, name, RecordType::A).await;
    }
    let t0 = Instant::now();
    let m = ask(s.addr, "b.example", RecordType::A).await;
    assert_eq!(v4(&m), vec![Ipv4Addr::new(192, 0, 2, 2)]);
    assert_eq!(dead.count(), 3, "dead server skipped");
    assert!(t0.elapsed() < Duration::from_millis(300 + 1000));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_only_scope_gets_servfail_and_nothing_forwarded() {
    let up = fake_upstream(Behavior::AnswerWith(Ipv4Addr::new(192, 0, 2, 1))).await;
    let s = start(&demo_toml(&[up.addr], "host_view = [\"backoffice\"]")).await;
    let t0 = Instant::now();
    let m = ask(s.addr, "example.com", RecordType::A).await;
    // What current Docker answers a client on internal networks only (20.10 stays silent).
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "answered at once"
    );
    assert_eq!(up.count(), 0);
    // Its own names resolve; the other network's plain names do not (unknown here, and no
    // upstream: SERVFAIL as for any other name).
    assert_eq!(v4(&ask(s.addr, "vault", RecordType::A).await).len(), 1);
    let m = ask(s.addr, "api", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    s.stop().await;
    // One non-internal network in scope allows forwarding again.
    let s = start(&demo_toml(
        &[up.addr],
        "host_view = [\"backoffice\", \"demo\"]",
    ))
    .await;
    let m = ask(s.addr, "example.com", RecordType::A).await;
    assert_eq!(v4(&m), vec![Ipv4Addr::new(192, 0, 2, 1)]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_serves_several_queries_per_connection_then_idles_out() {
    let up = fake_upstream(Behavior::AnswerWith(Ipv4Addr::new(192, 0, 2, 3))).await;
    let s = start(&demo_toml(&[up.addr], "tcp_idle_timeout_ms = 400")).await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // Pipelined: three local, one forwarded, sent before reading anything.
    for (id, name) in [(1u16, "db"), (2, "example.com"), (3, "api"), (4, "web")] {
        tcp_send(&mut c, &query_bytes(id, name, RecordType::A, None)).await;
    }
    let mut ids = HashSet::new();
    for _ in 0..4 {
        let r = tcp_recv(&mut c).await.expect("reply");
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), if m.metadata.id == 3 { 3 } else { 1 });
        ids.insert(m.metadata.id);
    }
    assert_eq!(ids.len(), 4);
    // Idle past the timeout (400 ms): the server closes the connection (EOF or reset), well
    // before the 5 s this waits; a timeout here is a failure, not a pass.
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed after idling: {closed:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_tables_and_keeps_answering() {
    let (s, _up) = demo().await;
    assert_eq!(v4(&ask(s.addr, "db", RecordType::A).await).len(), 1);
    let mut toml = demo_toml(&[], "");
    toml = toml.replace("10.89.0.2\"]", "10.89.0.200\"]");
    let mut cfg = config(&toml);
    cfg.listen = s.server.config().listen;
    s.server.reload(cfg).expect("reload");
    let m = ask(s.addr, "db", RecordType::A).await;
    assert_eq!(v4(&m), vec![Ipv4Addr::new(10, 89, 0, 200)]);
    s.stop().await;
}
