//! Fuzzes the zero-allocation fast parser: never panics, never reports positions past the packet.
#![no_main]
use dockns::wire::{parse_query, Parse, HEADER_LEN};
use dockns::wire::MAX_KEY_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut key = [0u8; MAX_KEY_LEN];
    if let Parse::Query(q) = parse_query(data, &mut key) {
        assert!(q.qend <= data.len() && q.qend >= HEADER_LEN + 5);
        assert!(q.key_len < MAX_KEY_LEN);
        assert!(!key[..q.key_len].iter().any(u8::is_ascii_uppercase));
    }
});
