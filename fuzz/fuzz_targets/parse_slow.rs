//! Fuzzes the hickory-backed slow parser: never panics; what it accepts re-encodes into a
//! question the fast parser reads back with the same key.
#![no_main]
use dockns::wire::slow::{parse_slow, SlowParse};
use dockns::wire::{parse_query, Parse};
use dockns::wire::MAX_KEY_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
