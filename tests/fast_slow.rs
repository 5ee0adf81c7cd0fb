//! Property: for any valid question the fast path (`answer::handle`) and the slow path
//! (`answer::handle_slow`, hickory-proto) produce identical response bytes. Each side gets its own
//! snapshot built from the same catalog, so the round-robin rotation advances in step.

mod kit;

use dockns::config::{Config, Overrides};
use dockns::dns::answer::{handle, handle_slow, Action};
use dockns::model::Snapshot;
use proptest::prelude::*;
use std::net::IpAddr;

fn snapshots() -> (Snapshot, Snapshot) {
    snapshots_with("")
}

fn snapshots_with(server_keys: &str) -> (Snapshot, Snapshot) {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ndomain = \"docker\"\n{server_keys}\n[upstream]\nservers = [\"127.0.0.1:9\"]\n{}",
        kit::NETWORKS
    );
    let cfg = Config::from_toml(&text, &Overrides::default()).expect("config");
    (
        Snapshot::build(&cfg.static_catalog, cfg.build.clone()),
        Snapshot::build(&cfg.static_catalog, cfg.build.clone()),
    )
}

const KNOWN: &[&str] = &[
    "db",
    "postgres",
    "api",
    "api-1",
    "api-2",
    "vault",
    "db.demo",
    "api.demo",
    "vault.backoffice",
    "db.docker",
    "api.demo.docker",
    "docker",
    "2.0.89.10.in-addr.arpa",
    "11.0.89.10.in-addr.arpa",
    "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.8.0.0.0.0.d.f.ip6.arpa",
    "nothere.docker",
    "example.com",
    // The zone: its name server, empty non-terminals, the reverse zones of the served subnets
    // (demo is 10.89.0.0/24: zone 0.89.10.in-addr.arpa), CHAOS names.
    "ns1.docker",
    "ns2.docker",
    "demo.docker",
    "backoffice.docker",
    "0.89.10.in-addr.arpa",
    "9.0.89.10.in-addr.arpa",
    "x.2.0.89.10.in-addr.arpa",
    "89.10.in-addr.arpa",
    "0.90.10.in-addr.arpa",
    "version.bind",
    "id.server",
];

fn label() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(
            prop_oneof![Just(b'-'), b'a'..=b'z', b'A'..=b'Z', b'0'..=b'9'],
            1..20
        ),
        1 => proptest::collection::vec(any::<u8>(), 1..63),
    ]
}

fn name() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        2 => proptest::sample::select(KNOWN).prop_map(|n| {
            n.split('.').map(|l| l.as_bytes().to_vec()).collect()
        }),
        1 => proptest::collection::vec(label(), 0..5),
    ]
}

fn qtype() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(1u16),
        Just(28),
        Just(12),
        Just(6),
        Just(255),
        Just(16),
        Just(33),
        Just(5),
        Just(2),
        Just(251),
        Just(252),
        Just(41),
        Just(0),
        Just(250),
        Just(254),
        any::<u16>()
    ]
}

fn qclass() -> impl Strategy<Value = u16> {
    prop_oneof![
        8 => Just(1u16),
        1 => Just(3),
        1 => Just(4),
        1 => Just(254),
        1 => Just(255),
        1 => any::<u16>()
    ]
}

#[derive(Debug, Clone)]
struct Case {
    id: u16,
    rd: bool,
    cd: bool,
    labels: Vec<Vec<u8>>,
    upper: Vec<bool>,
    qtype: u16,
    qclass: u16,
    edns: Option<(u16, bool, u8, u8)>,
    client: IpAddr,
    tcp: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
        name(),
        proptest::collection::vec(any::<bool>(), 64),
        qtype(),
        qclass(),
        proptest::option::of((
            any::<u16>(),
            any::<bool>(),
            prop_oneof![9 => Just(0u8), 1 => any::<u8>()],
            0u8..5,
        )),
        proptest::sample::select(vec![
            "127.0.0.1".parse::<IpAddr>().unwrap(),
            "10.89.0.2".parse().unwrap(),
            "10.90.0.2".parse().unwrap(),
            "::1".parse().unwrap(),
        ]),
        any::<bool>(),
    )
        .prop_map(
            |(id, rd, cd, labels, upper, qtype, qclass, edns, client, tcp)| Case {
                id,
                rd,
                cd,
                labels,
                upper,
                qtype,
                qclass,
                edns,
                client,
                tcp,
            },
        )
}

fn encode(c: &Case) -> Option<Vec<u8>> {
    let mut flags: u16 = 0;
    if c.rd {
        flags |= 0x0100;
    }
    if c.cd {
        flags |= 0x0010;
    }
    let mut p = c.id.to_be_bytes().to_vec();
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(c.edns.is_some())]);
    let mut i = 0;
    let mut total = 1;
    for l in &c.labels {
        total += 1 + l.len();
        p.push(l.len() as u8);
        for &b in l {
            let up = c.upper[i % c.upper.len()];
            i += 1;
            p.push(if up { b.to_ascii_uppercase() } else { b });
        }
    }
    if total > 255 {
        return None;
    }
    p.push(0);
    p.extend_from_slice(&c.qtype.to_be_bytes());
    p.extend_from_slice(&c.qclass.to_be_bytes());
    if let Some((size, dnssec_ok, version, opt)) = c.edns {
        let s = size.to_be_bytes();
        // Options: none, a cookie, a valid and an empty (malformed) Client Subnet, NSID.
        let options: &[u8] = match opt {
            1 => &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            2 => &[0, 8, 0, 7, 0, 1, 24, 0, 10, 89, 0],
            3 => &[0, 8, 0, 0],
            4 => &[0, 3, 0, 0],
            _ => &[],
        };
        let len = (options.len() as u16).to_be_bytes();
        p.extend_from_slice(&[
            0,
            0,
            41,
            s[0],
            s[1],
            0,
            version,
            if dnssec_ok { 0x80 } else { 0 },
            0,
            len[0],
            len[1],
        ]);
        p.extend_from_slice(options);
    }
    Some(p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn fast_and_slow_paths_give_identical_bytes(
        cases in proptest::collection::vec(case(), 1..8),
        authoritative_only in proptest::bool::weighted(0.2),
    ) {
        // A sequence per snapshot pair, so rotation state is exercised too; sometimes as an
        // authoritative-only server (RA clear, REFUSED instead of forwarding).
        let (fast_snap, slow_snap) =
            snapshots_with(if authoritative_only {
                "recursion = false\nns_addresses = [\"10.89.0.53\", \"fd00:89::53\"]"
            } else {
                ""
            });
        for c in cases {
            let Some(pkt) = encode(&c) else { continue };
            let mut a = vec![0u8; 65535];
            let mut b = vec![0u8; 65535];
            let fa = handle(&fast_snap, c.client, None, &pkt, &mut a, c.tcp);
            let sa = handle_slow(&slow_snap, c.client, None, &pkt, &mut b, c.tcp);
            match (fa, sa) {
                (Action::Reply(n, o1), Action::Reply(m, o2)) => {
                    prop_assert_eq!(o1, o2, "outcome for {:?}", c);
                    prop_assert_eq!(&a[..n], &b[..m], "bytes for {:?}", c);
                }
                (x, y) => prop_assert_eq!(x, y, "action for {:?}", c),
            }
        }
    }
}

#[test]
fn known_names_take_the_fast_path_and_answer() {
    // Guards the property above against comparing two error paths only.
    let (snap, _) = snapshots();
    let mut out = vec![0u8; 512];
    for (name, want) in [
        ("db", 1u16),
        ("API", 2),
        ("db.docker", 1),
        ("ns1.docker", 1),
    ] {
        let q = kit::query(1, name, 1, false);
        let Action::Reply(n, _) = handle(
            &snap,
            "127.0.0.1".parse().unwrap(),
            None,
            &q,
            &mut out,
            false,
        ) else {
            panic!("{name}: no reply")
        };
        assert_eq!(kit::rcode(&out[..n]), 0, "{name}");
        assert_eq!(kit::ancount(&out[..n]), want, "{name}");
    }
}
