//! Wire format on the hot path: a zero-allocation parser for ordinary queries and the one
//! response writer every path (fast, slow, errors) uses.
//!
//! [`parse_query`] accepts only the common shape — one question, no answer/authority records, at
//! most one OPT record, opcode QUERY, no compression in the question — and says `Slow` for
//! anything else, so that hickory-proto (see `slow.rs`) judges the unusual cases. It never reads
//! past the packet and never allocates: the lower-cased lookup key goes into a caller's buffer.
//!
//! [`write_response`] builds a complete response into a caller's buffer: header, the question
//! copied verbatim (so the answer echoes the client's letter case), pre-encoded answer records in
//! rotated order, an optional authority record, and an OPT record when the query had EDNS. It
//! truncates at whole records and sets TC when the transport's limit is reached.

use super::{RecordSet, MAX_KEY_LEN};

/// DNS header length.
pub const HEADER_LEN: usize = 12;
/// UDP payload size dockns advertises and caps responses at (the DNS Flag Day 2020 value).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// Classic UDP limit without EDNS.
pub const PLAIN_UDP_LIMIT: usize = 512;
/// Largest DNS message (TCP).
pub const MAX_MESSAGE: usize = 65535;
/// Size of the OPT record dockns writes (no options).
const OPT_LEN: usize = 11;

/// Response codes dockns produces.
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;
    /// Bad EDNS version (extended rcode).
    pub const BADVERS: u16 = 16;
}

/// EDNS details of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdnsInfo {
    /// Requester's UDP payload size.
    pub udp_size: u16,
    /// DNSSEC OK bit (copied into the response, RFC 3225).
    pub dnssec_ok: bool,
    /// EDNS version the client used.
    pub version: u8,
}

/// The parts of a query the answer depends on; borrowed positions into the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question {
    /// Query ID.
    pub id: u16,
    /// The query's raw flags word.
    pub flags: u16,
    /// End of the question section (the question is `pkt[12..qend]`).
    pub qend: usize,
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// Length of the lookup key written into the caller's key buffer.
    pub key_len: usize,
    /// EDNS, when the query had an OPT record.
    pub edns: Option<EdnsInfo>,
}

/// Result of the fast parser.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// An ordinary query.
    Query(Question),
    /// Something unusual: let the slow path decide.
    Slow,
    /// Not a query at all (too short for a header, or a response): drop silently.
    Drop,
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses an ordinary query without allocating. See the module docs.
///
/// Kept in one piece (over 80 lines): split into name and OPT helpers it cost 11 more
/// instructions per local query, 43 with EDNS (callgrind, `handle/local_a[_edns]`, 2026-11-29).
#[inline]
pub fn parse_query(pkt: &[u8], key: &mut [u8; MAX_KEY_LEN]) -> Parse {
    if pkt.len() < HEADER_LEN {
        return Parse::Drop;
    }
    let flags = be16(pkt, 2);
    if flags & 0x8000 != 0 {
        return Parse::Drop;
    }
    if (flags >> 11) & 0xF != 0
        || be16(pkt, 4) != 1
        || be16(pkt, 6) != 0
        || be16(pkt, 8) != 0
        || be16(pkt, 10) > 1
    {
        return Parse::Slow;
    }
    // Question name: plain labels only, lower-cased into the key.
    let mut pos = HEADER_LEN;
    let mut klen = 0usize;
    loop {
        let Some(&len) = pkt.get(pos) else {
            return Parse::Slow;
        };
        let len = usize::from(len);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 || klen + 1 + len >= MAX_KEY_LEN || pos + 1 + len > pkt.len() {
            return Parse::Slow;
        }
        key[klen] = len as u8;
        for (d, s) in key[klen + 1..klen + 1 + len]
            .iter_mut()
            .zip(&pkt[pos + 1..pos + 1 + len])
        {
            *d = s.to_ascii_lowercase();
        }
        klen += 1 + len;
        pos += 1 + len;
    }
    if pos + 4 > pkt.len() {
        return Parse::Slow;
    }
    let qtype = be16(pkt, pos);
    let qclass = be16(pkt, pos + 2);
    let qend = pos + 4;
    let edns = if be16(pkt, 10) == 1 {
        // The one additional record must be an OPT at the root with well-formed options.
        let p = qend;
        if p + OPT_LEN > pkt.len() || pkt[p] != 0 || be16(pkt, p + 1) != 41 {
            return Parse::Slow;
        }
        let rdlen = usize::from(be16(pkt, p + 9));
        let end = p + OPT_LEN + rdlen;
        if end > pkt.len() {
            return Parse::Slow;
        }
        let mut o = p + OPT_LEN;
        while o < end {
            if o + 4 > end {
                return Parse::Slow;
            }
            // Options hickory-proto decodes strictly (NSID, Client Subnet) go to the slow path,
            // so a malformed one gets the same FORMERR on both paths.
            if matches!(be16(pkt, o), 3 | 8) {
                return Parse::Slow;
            }
            o += 4 + usize::from(be16(pkt, o + 2));
        }
        if o != end {
            return Parse::Slow;
        }
        Some(EdnsInfo {
            udp_size: be16(pkt, p + 3),
            version: pkt[p + 6],
            dnssec_ok: pkt[p + 7] & 0x80 != 0,
        })
    } else {
        None
    };
    Parse::Query(Question {
        id: be16(pkt, 0),
        flags,
        qend,
        qtype,
        qclass,
        key_len: klen,
        edns,
    })
}

/// The largest response allowed for a query: 512 without EDNS, else the client's size within
/// [512, 1232]; the whole message size over TCP.
#[inline]
pub fn response_limit(edns: Option<EdnsInfo>, tcp: bool) -> usize {
    if tcp {
        return MAX_MESSAGE;
    }
    match edns {
        None => PLAIN_UDP_LIMIT,
        Some(e) => usize::from(e.udp_size.clamp(512, EDNS_UDP_SIZE)),
    }
}

/// The body of a response beyond the header and question.
#[derive(Clone, Copy, Debug, Default)]
pub struct Body<'a> {
    /// Response code (values above 15 go into the OPT record's extended rcode).
    pub rcode: u16,
    /// Authoritative answer flag.
    pub authoritative: bool,
    /// Answer records and the rotation offset to start at.
    pub answers: Option<(&'a RecordSet, usize)>,
    /// One encoded authority record (the zone SOA), or empty.
    pub authority: &'a [u8],
    /// Clear RA: the server offers no recursion (`[server] recursion = false`).
    pub no_recursion: bool,
}

/// Writes a response. `question` is the encoded question section (empty for header-only
/// errors); `qflags` the query's flags word (opcode, RD and CD are copied). Returns the length.
/// `out` must hold at least `limit` bytes, and `limit` must be at least 512.
///
/// Kept in one piece (over 80 lines): split into answer, OPT and header helpers it cost 11-16
/// more instructions per local answer (callgrind, `handle/local_a[_edns]`, 2026-11-29).
pub fn write_response(
    out: &mut [u8],
    id: u16,
    qflags: u16,
    question: &[u8],
    edns: Option<EdnsInfo>,
    body: Body<'_>,
    limit: usize,
) -> usize {
    let limit = limit.min(out.len());
    let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
    let mut pos = HEADER_LEN;
    let mut truncated = false;
    let question = if HEADER_LEN + question.len() + opt_len <= limit {
        question
    } else {
        truncated = true;
        &[][..]
    };
    out[pos..pos + question.len()].copy_from_slice(question);
    pos += question.len();
    let room = limit - pos - opt_len;

    // Answers, rotated, whole records only.
    let mut ancount = 0usize;
    if let Some((set, rot)) = body.answers {
        let bytes = set.bytes();
        let count = usize::from(set.count());
        let stride = set.stride();
        if let Some(fit) = room.checked_div(stride) {
            let fit = fit.min(count);
            truncated |= fit < count;
            let rot = rot % count.max(1);
            // Records rot..count, then 0..rot, cut at `fit`.
            let first = (count - rot).min(fit);
            let n1 = first * stride;
            out[pos..pos + n1].copy_from_slice(&bytes[rot * stride..rot * stride + n1]);
            pos += n1;
            let n2 = (fit - first) * stride;
            out[pos..pos + n2].copy_from_slice(&bytes[..n2]);
            pos += n2;
            ancount = fit;
        } else if bytes.len() <= room {
            out[pos..pos + bytes.len()].copy_from_slice(bytes);
            pos += bytes.len();
            ancount = count;
        } else {
            truncated = true;
        }
    }
    let mut nscount = 0u16;
    if !body.authority.is_empty() && !truncated {
        if pos + body.authority.len() + opt_len <= limit {
            out[pos..pos + body.authority.len()].copy_from_slice(body.authority);
            pos += body.authority.len();
            nscount = 1;
        } else {
            truncated = true;
        }
    }
    if let Some(e) = edns {
        let flags: u8 = if e.dnssec_ok { 0x80 } else { 0 };
        let size = EDNS_UDP_SIZE.to_be_bytes();
        out[pos..pos + OPT_LEN].copy_from_slice(&[
            0,
            0,
            41,
            size[0],
            size[1],
            (body.rcode >> 4) as u8,
            0,
            flags,
            0,
            0,
            0,
        ]);
        pos += OPT_LEN;
    }

    // Header last, now that the counts are known.
    let ra: u16 = if body.no_recursion { 0 } else { 0x0080 };
    let mut f: u16 = 0x8000 | (qflags & 0x7800) | (qflags & 0x0100) | ra | (qflags & 0x0010);
    if body.authoritative {
        f |= 0x0400;
    }
    if truncated {
        f |= 0x0200;
    }
    f |= body.rcode & 0x000F;
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[2..4].copy_from_slice(&f.to_be_bytes());
    out[4..6].copy_from_slice(&u16::from(!question.is_empty()).to_be_bytes());
    out[6..8].copy_from_slice(&(ancount as u16).to_be_bytes());
    out[8..10].copy_from_slice(&nscount.to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, edns: bool) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if edns {
            p.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]);
        }
        p
    }

    #[test]
    fn parses_and_lowercases() {
        let mut key = [0u8; MAX_KEY_LEN];
        let p = query(b"\x03Api\x04DEMO\x00", 1, true);
        let Parse::Query(q) = parse_query(&p, &mut key) else {
            panic!()
        };
        assert_eq!(&key[..q.key_len], b"\x03api\x04demo");
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.qtype, 1);
        assert_eq!(q.qend, 12 + 10 + 4);
        assert_eq!(
            q.edns,
            Some(EdnsInfo {
                udp_size: 4096,
                dnssec_ok: true,
                version: 0
            })
        );
        assert_eq!(response_limit(q.edns, false), 1232);
    }

    #[test]
    fn odd_shapes_go_slow_or_drop() {
        let mut key = [0u8; MAX_KEY_LEN];
        assert_eq!(parse_query(&[], &mut key), Parse::Drop);
        assert_eq!(parse_query(&[0; 11], &mut key), Parse::Drop);
        let mut resp = query(b"\x01a\x00", 1, false);
        resp[2] |= 0x80;
        assert_eq!(parse_query(&resp, &mut key), Parse::Drop);
        // Compression pointer in the question.
        assert_eq!(
            parse_query(&query(b"\xc0\x0c", 1, false), &mut key),
            Parse::Slow
        );
        // Label over 63.
        let mut long = vec![64u8];
        long.extend_from_slice(&[b'a'; 64]);
        long.push(0);
        assert_eq!(parse_query(&query(&long, 1, false), &mut key), Parse::Slow);
        // Truncated question.
        let q = query(b"\x03abc\x00", 1, false);
        assert_eq!(parse_query(&q[..q.len() - 1], &mut key), Parse::Slow);
        // QDCOUNT 0.
        let mut q0 = query(b"\x01a\x00", 1, false);
        q0[5] = 0;
        assert_eq!(parse_query(&q0, &mut key), Parse::Slow);
    }

    #[test]
    fn header_only_error() {
        let mut out = [0u8; 512];
        let n = write_response(
            &mut out,
            7,
            0x0100,
            &[],
            None,
            Body {
                rcode: rcode::FORMERR,
                ..Default::default()
            },
            512,
        );
        assert_eq!(n, 12);
        assert_eq!(&out[..12], &[0, 7, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
