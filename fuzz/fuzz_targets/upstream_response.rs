//! Fuzzes what the forwarder does with bytes from an upstream (`forward::upstream_reply`):
//! never panics; an accepted answer carries the client's ID and, over UDP, fits the client's
//! limit. Input: selector byte, then either a fixed valid query and the response bytes, or a
//! query length byte, the query, and the response.
#![no_main]
use dockns::forward::{upstream_reply, UpstreamReply};
use libfuzzer_sys::fuzz_target;

const QUERY: &[u8] = &[
    0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 3, b'w', b'w', b'w', 7, b'e', b'x', b'a',
    b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1, 0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let tcp = sel & 1 != 0;
    let (query, resp) = if sel & 2 == 0 {
        (QUERY, rest)
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
        assert_eq!(&out[..2], &query[..2], "client's ID restored");
        assert!(out.len() >= 12 && out.len() <= 65535);
        if !tcp {
            assert!(out.len() <= 1232, "UDP reply within the client's limit");
        }
    }
});
