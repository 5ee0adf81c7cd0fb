//! The checks of the fuzz targets, in one place: `fuzz/fuzz_targets/*.rs` include this file
//! (`#[path]`) and call one function per input, and `tests/fuzz_regressions.rs` replays the
//! seeds, every saved crash and a bounded run of mutated seeds through the same functions, so
//! the fuzzers and `cargo test` check the same properties of the real code.
//!
//! Each function drives library code only (the parsers, `answer::handle`/`handle_slow`,
//! `forward::upstream_reply`) and panics when a property does not hold. It must not depend on
//! anything but `dockns` and `std` (the fuzz crate has no other dependency), and must not
//! re-implement what it checks.

use dockns::dns::answer::{handle, handle_slow, Action};
use dockns::forward::{upstream_reply, UpstreamReply};
use dockns::model::Snapshot;
use dockns::wire::slow::{parse_slow, SlowParse};
use dockns::wire::MAX_KEY_LEN;
use dockns::wire::{self, parse_query, Parse, HEADER_LEN};
use std::net::IpAddr;
use std::sync::OnceLock;

/// One target's checks: panics when a property does not hold for the input.
pub type Check = fn(&[u8]);

/// The fuzz targets this file checks, by name (as in `fuzz/Cargo.toml` and `fuzz/seeds/`).
pub const TARGETS: [(&str, Check); 4] = [
    ("parse_query", parse_query_target),
    ("parse_slow", parse_slow_target),
    ("answer", answer_target),
    ("upstream_response", upstream_response_target),
];

/// The largest reply the server may send for `pkt` as the library defines it: the client's EDNS
/// size within [512, 1232] over UDP (512 without EDNS), a whole message over TCP. The EDNS
/// comes from whichever parser reads the packet.
pub fn client_limit(pkt: &[u8], tcp: bool) -> usize {
    let mut key = [0u8; MAX_KEY_LEN];
    let edns = match parse_query(pkt, &mut key) {
        Parse::Query(q) => q.edns,
        Parse::Drop => None,
        Parse::Slow => match parse_slow(pkt) {
            SlowParse::Query(n) => n.edns,
            SlowParse::Error { edns, .. } => edns,
            _ => None,
        },
    };
    wire::response_limit(edns, tcp)
}

/// The zero-allocation fast parser never panics and never reports positions past the packet;
/// its key is lower case.
pub fn parse_query_target(data: &[u8]) {
    let mut key = [0u8; MAX_KEY_LEN];
    if let Parse::Query(q) = parse_query(data, &mut key) {
        assert!(q.qend <= data.len() && q.qend >= HEADER_LEN + 5);
        assert!(q.key_len < MAX_KEY_LEN);
        assert!(!key[..q.key_len].iter().any(u8::is_ascii_uppercase));
    }
}

/// The hickory-backed slow parser never panics; what it accepts re-encodes into a question the
/// fast parser reads back with the same key, type and class.
pub fn parse_slow_target(data: &[u8]) {
    if let SlowParse::Query(n) = parse_slow(data) {
        let mut pkt = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        pkt.extend_from_slice(&n.question);
        let mut key = [0u8; MAX_KEY_LEN];
        match parse_query(&pkt, &mut key) {
            Parse::Query(q) => {
                assert_eq!(&key[..q.key_len], &n.key[..]);
                assert_eq!((q.qtype, q.qclass), (n.qtype, n.qclass));
            }
            other => panic!("re-encoded question not readable: {other:?}"),
        }
    }
}

fn snapshots() -> &'static (Snapshot, Snapshot) {
    static S: OnceLock<(Snapshot, Snapshot)> = OnceLock::new();
    S.get_or_init(|| {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ndomain = \"docker\"\n[upstream]\nservers = [\"127.0.0.1:9\"]\n{}",
            include_str!("networks.toml")
        );
        let cfg = dockns::config::Config::from_toml(&text, &Default::default())
            .unwrap_or_else(|e| panic!("fuzz config: {e}"));
        (
            Snapshot::build(&cfg.static_catalog, cfg.build.clone()),
            Snapshot::build(&cfg.static_catalog, cfg.build.clone()),
        )
    })
}

/// `answer::handle` (fast path with slow fallback) and `answer::handle_slow` on the same packet
/// against two identical snapshots: never panic, every reply is a response with the query's ID
/// within the client's limit ([`client_limit`]), and both paths give identical bytes.
/// Input: a selector byte (bit 0: TCP; bits 1-2: the client), then the packet.
pub fn answer_target(data: &[u8]) {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let tcp = sel & 1 != 0;
    let client: IpAddr = match (sel >> 1) & 3 {
        0 => [127, 0, 0, 1].into(),
        1 => [10, 89, 0, 2].into(),
        2 => [10, 90, 0, 2].into(),
        _ => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let (fast, slow) = snapshots();
    let mut a = vec![0u8; 65535];
    let mut b = vec![0u8; 65535];
    let fa = handle(fast, client, None, pkt, &mut a, tcp);
    let sa = handle_slow(slow, client, None, pkt, &mut b, tcp);
    if let Action::Reply(n, _) = fa {
        let limit = client_limit(pkt, tcp);
        assert!(
            (HEADER_LEN..=limit).contains(&n),
            "reply of {n} bytes, limit {limit}"
        );
        assert_eq!(&a[..2], &pkt[..2], "ID echoed");
        assert!(a[2] & 0x80 != 0, "QR set");
    }
    match (fa, sa) {
        (Action::Reply(n, _), Action::Reply(m, _)) => {
            assert_eq!(&a[..n], &b[..m], "fast and slow paths differ")
        }
        (x, y) => assert_eq!(x, y, "fast and slow paths differ"),
    }
}

/// A query with EDNS (1232) for `www.example` A, the default client of
/// [`upstream_response_target`].
pub const UPSTREAM_QUERY: &[u8] = &[
    0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm',
    b'p', b'l', b'e', 0, 0, 1, 0, 1, 0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0,
];

/// What the forwarder does with bytes from an upstream (`forward::upstream_reply`, the code
/// the forwarding path runs): never panics; an accepted answer is what `forward/reply.rs`
/// promises the client: its ID, QR=1, opcode QUERY, RD as the client's, the client's question
/// bytes (letter case included) when the fast parser read the query, and no more bytes than the
/// client's limit ([`client_limit`]: 512 without EDNS, its EDNS size up to 1232, 65535 on TCP).
/// Input: a selector byte (bit 0: TCP; bit 1: the query is in the input; bit 7: the upstream
/// reply's ID is not the one sent), then either the response bytes (query
/// [`UPSTREAM_QUERY`]) or a query length byte, the query, and the response.
pub fn upstream_response_target(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let tcp = sel & 1 != 0;
    let (query, resp) = if sel & 2 == 0 {
        (UPSTREAM_QUERY, rest)
    } else {
        let Some((&n, rest)) = rest.split_first() else {
            return;
        };
        let n = usize::from(n).min(rest.len());
        rest.split_at(n)
    };
    let sent_id = if resp.len() >= 2 {
        u16::from_be_bytes([resp[0], resp[1]]) ^ u16::from(sel >> 7)
    } else {
        0
    };
    if let UpstreamReply::Accepted(out) = upstream_reply(query, sent_id, resp, tcp) {
        let limit = client_limit(query, tcp);
        assert!(
            (HEADER_LEN..=limit).contains(&out.len()),
            "reply of {} bytes, client's limit {limit}",
            out.len()
        );
        assert_eq!(&out[..2], &query[..2], "client's ID restored");
        assert!(out[2] & 0x80 != 0, "QR set");
        assert_eq!(out[2] & 0x78, 0, "opcode QUERY");
        assert_eq!(out[2] & 0x01, query[2] & 0x01, "RD as the client's");
        let mut key = [0u8; MAX_KEY_LEN];
        if let Parse::Query(q) = parse_query(query, &mut key) {
            assert_eq!(
                out.get(HEADER_LEN..q.qend),
                query.get(HEADER_LEN..q.qend),
                "the client's question bytes"
            );
        }
    }
}
