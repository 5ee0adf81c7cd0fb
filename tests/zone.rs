//! The served domain as a real zone (RFC 1034/1035, 2308, 5936, 6303, 8020, 8482) and what
//! stays home: a real dockns on loopback, asked over UDP and TCP, with a counting fake
//! upstream that must see none of these questions unless a test says so.

mod kit;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use kit::aio::*;
use std::net::{IpAddr, Ipv4Addr};

/// The demo tables plus a dotted alias (`x.y.z` on `demo`) for the empty non-terminals.
async fn zone_server(extra_server: &str) -> (TestServer, FakeUpstream) {
    let up = fake_upstream(Behavior::AnswerWith(Ipv4Addr::new(192, 0, 2, 80))).await;
    let toml = demo_toml(&[up.addr], extra_server).replacen(
        "aliases = [\"www\"]",
        "aliases = [\"www\", \"x.y.z\"]",
        1,
    );
    (start(&toml).await, up)
}

fn query_class(id: u16, name: &str, qtype: RecordType, class: DNSClass) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii(name).expect("name"), qtype);
    q.set_query_class(class);
    m.add_query(q);
    m.to_vec().expect("encode")
}

async fn ask_class(s: &TestServer, name: &str, qtype: RecordType, class: DNSClass) -> Message {
    let r = udp_raw(s.addr, &query_class(9, name, qtype, class), WAIT)
        .await
        .unwrap_or_else(|| panic!("no reply for {name} {qtype} {class}"));
    Message::from_vec(&r).expect("decode")
}

fn soa_of(m: &Message) -> (String, String, u32) {
    let r = m
        .authorities
        .iter()
        .chain(&m.answers)
        .find(|r| r.record_type() == RecordType::SOA)
        .unwrap_or_else(|| panic!("no SOA in {m:?}"));
    match &r.data {
        RData::SOA(soa) => (r.name.to_ascii(), soa.mname.to_ascii(), soa.serial),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apex_has_ns_and_the_name_server_resolves() {
    let (s, up) = zone_server("").await;
    let m = ask(s.addr, "docker", RecordType::NS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let ns: Vec<String> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::NS(n) => n.0.to_ascii(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ns, vec!["ns1.docker."]);
    // The SOA MNAME is that name server, and it has an address: the listener's.
    let soa = ask(s.addr, "docker", RecordType::SOA).await;
    let (_, mname, _) = soa_of(&soa);
    assert_eq!(mname, "ns1.docker.");
    let a = ask(s.addr, "NS1.docker", RecordType::A).await;
    assert!(a.metadata.authoritative);
    assert_eq!(v4(&a), vec![Ipv4Addr::LOCALHOST]);
    assert_eq!(a.answers[0].name.to_ascii(), "NS1.docker.");
    let aaaa = ask(s.addr, "ns1.docker", RecordType::AAAA).await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
    assert_eq!(soa_of(&aaaa).0, "docker.");
    assert_eq!(up.count(), 0);
    s.stop().await;

    // Configured addresses win: one name server per address.
    let (s, _up) = zone_server("ns_addresses = [\"10.89.0.53\", \"fd00:89::53\"]").await;
    let m = ask(s.addr, "docker", RecordType::NS).await;
    assert_eq!(m.answers.len(), 2);
    assert_eq!(
        v4(&ask(s.addr, "ns1.docker", RecordType::A).await),
        vec![Ipv4Addr::new(10, 89, 0, 53)]
    );
    let none = ask(s.addr, "ns2.docker", RecordType::A).await;
    assert!(none.answers.is_empty() && none.metadata.response_code == ResponseCode::NoError);
    let aaaa = ask_tcp(s.addr, "ns2.docker", RecordType::AAAA).await;
    match &aaaa.answers[0].data {
        RData::AAAA(a) => assert_eq!(a.0, "fd00:89::53".parse::<std::net::Ipv6Addr>().unwrap()),
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_changes_when_the_tables_change() {
    let (s, _up) = zone_server("").await;
    let (_, _, before) = soa_of(&ask(s.addr, "docker", RecordType::SOA).await);
    let (_, _, neg) = soa_of(&ask(s.addr, "nope.docker", RecordType::A).await);
    assert_eq!(
        before, neg,
        "one serial for the answer and the negative SOA"
    );
    let toml = demo_toml(&[], "").replace("10.89.0.2\"]", "10.89.0.200\"]");
    let mut cfg = config(&toml);
    cfg.listen = s.server.config().listen;
    s.server.reload(cfg).expect("reload");
    let (_, _, after) = soa_of(&ask(s.addr, "docker", RecordType::SOA).await);
    assert!(
        (after.wrapping_sub(before) as i32) > 0,
        "serial {before} -> {after} must increase (RFC 1982)"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_non_terminals_are_nodata() {
    let (s, up) = zone_server("").await;
    // Every <network>.<domain>, and the parents of a dotted alias, exist with no data.
    for name in [
        "demo.docker",
        "backoffice.docker",
        "y.z.docker",
        "z.docker",
        "z.demo.docker",
    ] {
        for t in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
            let m = ask(s.addr, name, t).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} {t}"
            );
            assert!(m.answers.is_empty(), "{name} {t}");
            assert_eq!(soa_of(&m).0, "docker.", "{name} {t}");
        }
    }
    // Below them, what exists answers and what does not is NXDOMAIN.
    assert_eq!(
        v4(&ask(s.addr, "x.y.z.docker", RecordType::A).await),
        vec![Ipv4Addr::new(10, 89, 0, 3)]
    );
    assert_eq!(
        v4(&ask(s.addr, "db.demo.docker", RecordType::A).await),
        vec![Ipv4Addr::new(10, 89, 0, 2)]
    );
    for name in [
        "q.y.z.docker",
        "nope.demo.docker",
        "nope.docker",
        "arpa.docker",
    ] {
        let m = ask(s.addr, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    assert_eq!(up.count(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_answers_a_subset() {
    let (s, up) = zone_server("").await;
    for name in ["db", "db.docker", "postgres.demo"] {
        let m = ask(s.addr, name, RecordType::ANY).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(
            v4(&m),
            vec![Ipv4Addr::new(10, 89, 0, 2)],
            "{name}: RFC 8482 subset"
        );
    }
    let m = ask(s.addr, "docker", RecordType::ANY).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    let m = ask(s.addr, "2.0.89.10.in-addr.arpa", RecordType::ANY).await;
    assert_eq!(m.answers[0].record_type(), RecordType::PTR);
    // An empty non-terminal has nothing: NODATA.
    let m = ask(s.addr, "demo.docker", RecordType::ANY).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(up.count(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_transfers_and_meta_types_get_a_defined_rcode_at_once() {
    let (s, up) = zone_server("").await;
    for name in ["docker", "example.com"] {
        let m = ask_tcp(s.addr, name, RecordType::AXFR).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "{name} AXFR/TCP"
        );
        assert_eq!(m.queries.len(), 1, "question echoed");
        let m = ask(s.addr, name, RecordType::AXFR).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::FormErr,
            "{name} AXFR/UDP"
        );
        assert_eq!(m.queries.len(), 1, "question echoed");
        for ask_it in [true, false] {
            let m = if ask_it {
                ask(s.addr, name, RecordType::IXFR).await
            } else {
                ask_tcp(s.addr, name, RecordType::IXFR).await
            };
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "{name} IXFR"
            );
        }
        for (t, want) in [
            (RecordType::OPT, ResponseCode::FormErr),
            (RecordType::Unknown(0), ResponseCode::FormErr),
            (RecordType::TSIG, ResponseCode::NotImp),
            (RecordType::Unknown(254), ResponseCode::NotImp),
        ] {
            let q = query_bytes(5, name, t, None);
            let r = udp_raw(s.addr, &q, WAIT).await.expect("reply");
            assert_eq!(r[3] & 0x0f, want.low(), "{name} {t}");
            assert_eq!(&r[4..6], &[0, 1], "{name} {t}: question echoed");
        }
    }
    assert_eq!(up.count(), 0, "none of these is forwarded");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_stay_home() {
    let (s, up) = zone_server("").await;
    // CHAOS: no version disclosure, not forwarded.
    for name in [
        "version.bind",
        "id.server",
        "hostname.bind",
        "version.server",
    ] {
        let m = ask_class(&s, name, RecordType::TXT, DNSClass::CH).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert_eq!(m.queries.len(), 1);
    }
    // Local names in other classes: answered here (REFUSED: no data in that class).
    for class in [
        DNSClass::CH,
        DNSClass::HS,
        DNSClass::NONE,
        DNSClass::Unknown(77),
    ] {
        for name in ["db", "db.docker", "docker", "example.com"] {
            let m = ask_class(&s, name, RecordType::A, class).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "{name} {class}"
            );
        }
    }
    assert_eq!(up.count(), 0, "no class but IN/ANY is forwarded");
    // QCLASS ANY for a local name gets the IN data.
    for name in ["db", "db.docker"] {
        let m = ask_class(&s, name, RecordType::A, DNSClass::ANY).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(v4(&m), vec![Ipv4Addr::new(10, 89, 0, 2)], "{name}");
        assert_eq!(m.answers[0].dns_class, DNSClass::IN);
    }
    let m = ask_class(&s, "docker", RecordType::SOA, DNSClass::ANY).await;
    assert_eq!(m.answers.len(), 1);
    let m = ask_class(&s, "nope.docker", RecordType::A, DNSClass::ANY).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(up.count(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_zones_of_served_subnets_stay_home() {
    let (s, up) = zone_server("").await;
    // demo is 10.89.0.0/16: its reverse zone is 89.10.in-addr.arpa.
    for name in [
        "9.0.89.10.in-addr.arpa",
        "250.255.89.10.in-addr.arpa",
        "7.9.89.10.in-addr.arpa",
    ] {
        for m in [
            ask(s.addr, name, RecordType::PTR).await,
            ask_tcp(s.addr, name, RecordType::PTR).await,
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(m.metadata.authoritative, "{name}");
            let (owner, mname, _) = soa_of(&m);
            assert_eq!(owner, "89.10.in-addr.arpa.", "{name}");
            assert_eq!(mname, "89.10.in-addr.arpa.", "{name}: RFC 6303 SOA");
        }
    }
    // A used address: the container's name, as before.
    let m = ask(s.addr, "3.0.89.10.IN-ADDR.ARPA", RecordType::PTR).await;
    match &m.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.demo."),
        other => panic!("{other:?}"),
    }
    // The apex has its SOA; a parent of used addresses is an empty non-terminal; a name that is
    // not an address is NXDOMAIN; another type at a used address is NODATA.
    let m = ask(s.addr, "89.10.in-addr.arpa", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].name.to_ascii(), "89.10.in-addr.arpa.");
    for (name, t, rcode) in [
        (
            "0.89.10.in-addr.arpa",
            RecordType::PTR,
            ResponseCode::NoError,
        ),
        (
            "5.89.10.in-addr.arpa",
            RecordType::PTR,
            ResponseCode::NXDomain,
        ),
        (
            "x.2.0.89.10.in-addr.arpa",
            RecordType::PTR,
            ResponseCode::NXDomain,
        ),
        (
            "2.0.89.10.in-addr.arpa",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
        ("89.10.in-addr.arpa", RecordType::A, ResponseCode::NoError),
    ] {
        let m = ask(s.addr, name, t).await;
        assert_eq!(m.metadata.response_code, rcode, "{name} {t}");
        assert!(m.answers.is_empty(), "{name} {t}");
        assert_eq!(soa_of(&m).0, "89.10.in-addr.arpa.", "{name} {t}");
    }
    assert_eq!(up.count(), 0, "nothing in a served subnet is forwarded");
    // Outside every served subnet: forwarded as before.
    let m = ask(s.addr, "9.0.91.10.in-addr.arpa", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(up.count(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formerr_echoes_a_readable_question() {
    let (s, _up) = zone_server("").await;
    // One good question, then an answer count with no answer: the message does not parse.
    let mut q = query_bytes(0x77, "Db.Docker", RecordType::A, None);
    q[7] = 1;
    let r = udp_raw(s.addr, &q, WAIT).await.expect("FORMERR reply");
    assert_eq!(r[3] & 0x0f, 1, "FORMERR");
    assert_eq!(&r[4..6], &[0, 1], "QDCOUNT 1");
    let m = Message::from_vec(&r).expect("decodes");
    assert_eq!(m.queries[0].name().to_ascii(), "Db.Docker.");
    assert_eq!(m.queries[0].query_type(), RecordType::A);
    // An unreadable question: a bare header, as before.
    let mut bad = query_bytes(0x78, "db", RecordType::A, None);
    bad[12] = 60;
    let r = udp_raw(s.addr, &bad, WAIT).await.expect("FORMERR reply");
    assert_eq!(r.len(), 12);
    assert_eq!(r[3] & 0x0f, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_addresses_must_be_addresses() {
    let base = demo_toml(&[], "ns_addresses = [\"ns1.example\"]");
    let e = dockns::config::Config::from_toml(&base, &Default::default()).expect_err("rejected");
    assert!(e.to_string().contains("[server] ns_addresses[0]"), "{e}");
    let ip: IpAddr = "10.89.0.53".parse().unwrap();
    let ok = demo_toml(&[], &format!("ns_addresses = [\"{ip}\"]"));
    let cfg = config(&ok);
    assert_eq!(cfg.build.ns_addresses, vec![ip]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authoritative_only_refuses_other_names_without_ra() {
    let (s, up) = zone_server("recursion = false").await;
    for (name, t) in [
        ("example.com", RecordType::A),
        ("example.com", RecordType::MX),
    ] {
        for m in [ask(s.addr, name, t).await, ask_tcp(s.addr, name, t).await] {
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "{name} {t}"
            );
            assert!(!m.metadata.recursion_available, "{name} {t}: RA clear");
        }
    }
    assert_eq!(up.count(), 0, "nothing is forwarded");
    for (name, rcode) in [
        ("db", ResponseCode::NoError),
        ("db.docker", ResponseCode::NoError),
        ("nope.docker", ResponseCode::NXDomain),
        ("9.0.89.10.in-addr.arpa", ResponseCode::NXDomain),
    ] {
        let m = ask(s.addr, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, rcode, "{name}");
        assert!(!m.metadata.recursion_available, "{name}: RA clear");
        assert!(m.metadata.authoritative, "{name}");
    }
    s.stop().await;
    // The default keeps RA set on local answers (dockns is the containers' resolver).
    let (s, _up) = zone_server("").await;
    assert!(
        ask(s.addr, "db", RecordType::A)
            .await
            .metadata
            .recursion_available
    );
    s.stop().await;
}
