//! The slow path: hickory-proto judges every query the fast parser declined.
//!
//! It turns an unusual but valid query into the same [`Normalized`] form the fast path uses
//! (so both share one resolver and one writer, and give identical bytes for the same question),
//! and decides the error for everything else: FORMERR for what does not parse, NOTIMP for other
//! opcodes, silence for responses and fragments shorter than a header.

use super::{rcode, EdnsInfo, HEADER_LEN};
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

/// A query the slow path accepted, in owned form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Query ID.
    pub id: u16,
    /// Raw flags word of the query.
    pub flags: u16,
    /// Encoded question section (name as the client wrote it, type, class).
    pub question: Vec<u8>,
    /// Lower-case wire key of the name (no root label).
    pub key: Vec<u8>,
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// EDNS, when present.
    pub edns: Option<EdnsInfo>,
}

/// What the slow path decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlowParse {
    /// Answer it like any query.
    Query(Normalized),
    /// Answer with this error code, echoing `question` (possibly empty).
    Error {
        /// Query ID.
        id: u16,
        /// Raw flags of the query.
        flags: u16,
        /// Response code.
        rcode: u16,
        /// Encoded question to echo, or empty.
        question: Vec<u8>,
        /// EDNS of the query, if it could be read.
        edns: Option<EdnsInfo>,
    },
    /// Not a query: drop.
    Drop,
}

fn encode_question(q: &hickory_proto::op::Query) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    if q.emit(&mut enc).is_err() {
        return Vec::new();
    }
    buf
}

/// The question of a message that did not parse as a whole, when there is exactly one and it
/// reads cleanly (a FORMERR reply echoes it); else empty.
fn readable_question(pkt: &[u8]) -> Vec<u8> {
    if pkt.len() < HEADER_LEN || u16::from_be_bytes([pkt[4], pkt[5]]) != 1 {
        return Vec::new();
    }
    // Decode from the start of the message so compression pointers resolve.
    let mut dec = BinDecoder::new(pkt);
    if dec.read_slice(HEADER_LEN).is_err() {
        return Vec::new();
    }
    match hickory_proto::op::Query::read(&mut dec) {
        Ok(q) => encode_question(&q),
        Err(_) => Vec::new(),
    }
}

/// Parses anything the fast path declined.
pub fn parse_slow(pkt: &[u8]) -> SlowParse {
    if pkt.len() < HEADER_LEN {
        return SlowParse::Drop;
    }
    let id = u16::from_be_bytes([pkt[0], pkt[1]]);
    let flags = u16::from_be_bytes([pkt[2], pkt[3]]);
    if flags & 0x8000 != 0 {
        return SlowParse::Drop;
    }
    let msg = match Message::from_vec(pkt) {
        Ok(m) => m,
        Err(_) => {
            return SlowParse::Error {
                id,
                flags,
                rcode: rcode::FORMERR,
                question: readable_question(pkt),
                edns: None,
            }
        }
    };
    if msg.metadata.message_type != MessageType::Query {
        return SlowParse::Drop;
    }
    let edns = msg.edns.as_ref().map(|e| EdnsInfo {
        udp_size: e.max_payload(),
        dnssec_ok: e.flags().dnssec_ok,
        version: e.version(),
    });
    let question = if msg.queries.len() == 1 {
        encode_question(&msg.queries[0])
    } else {
        Vec::new()
    };
    if msg.metadata.op_code != OpCode::Query {
        return SlowParse::Error {
            id,
            flags,
            rcode: rcode::NOTIMP,
            question,
            edns,
        };
    }
    if msg.queries.len() != 1 || question.is_empty() {
        return SlowParse::Error {
            id,
            flags,
            rcode: rcode::FORMERR,
            question: Vec::new(),
            edns,
        };
    }
    let q = &msg.queries[0];
    let mut key = Vec::with_capacity(question.len());
    for label in q.name().iter() {
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    SlowParse::Query(Normalized {
        id,
        flags,
        question,
        key,
        qtype: u16::from(q.query_type()),
        qclass: u16::from(q.query_class()),
        edns,
    })
}
