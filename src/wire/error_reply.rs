//! The error reply every layer can send: SERVFAIL or REFUSED for any query packet, echoing its
//! question, whichever parser (fast or slow) accepts it. It reads no table and allocates nothing
//! on the fast-parse path.

use super::slow::{parse_slow, SlowParse};
use super::{parse_query, response_limit, write_response, Body, Parse, HEADER_LEN, MAX_KEY_LEN};

/// Writes an error response (SERVFAIL, REFUSED) for a query packet, echoing its question.
/// Returns 0 when the packet is not a query worth answering.
pub fn error_response(pkt: &[u8], code: u16, out: &mut [u8], tcp: bool) -> usize {
    let mut key = [0u8; MAX_KEY_LEN];
    match parse_query(pkt, &mut key) {
        Parse::Query(q) => write_response(
            out,
            q.id,
            q.flags,
            &pkt[HEADER_LEN..q.qend],
            q.edns,
            Body {
                rcode: code,
                ..Default::default()
            },
            response_limit(q.edns, tcp),
        ),
        Parse::Drop => 0,
        Parse::Slow => match parse_slow(pkt) {
            SlowParse::Query(n) => write_response(
                out,
                n.id,
                n.flags,
                &n.question,
                n.edns,
                Body {
                    rcode: code,
                    ..Default::default()
                },
                response_limit(n.edns, tcp),
            ),
            SlowParse::Error {
                id,
                flags,
                question,
                edns,
                ..
            } => write_response(
                out,
                id,
                flags,
                &question,
                edns,
                Body {
                    rcode: code,
                    ..Default::default()
                },
                response_limit(edns, tcp),
            ),
            SlowParse::Drop => 0,
        },
    }
}
