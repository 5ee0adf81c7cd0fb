//! Forwarding policy on bytes: what dockns sends upstream, what it accepts back, and the reply it
//! writes for each client. Pure functions: no I/O, no clock, no lock; they never panic on any
//! input (fuzzed through `forward::upstream_reply`), and the client-reply writer allocates
//! nothing, so the cache-hit path on the UDP workers can call it.
//!
//! * [`write_upstream_query`]: dockns's own query, never the client's bytes: a fresh ID, RD=1,
//!   CD as the client's, Z and AD clear, the client's question, and dockns's own OPT (UDP size
//!   [`UPSTREAM_EDNS_SIZE`], version 0, DO as the client's, no options: the client's COOKIE, ECS
//!   or padding never leave dockns). EDNS is sent whether or not the client used it, so one
//!   cached answer serves both kinds of client.
//! * [`judge`]: whether bytes from an upstream are the answer to what was sent: the ID, QR=1,
//!   opcode QUERY, exactly one question whose type and class bytes are equal and whose name is
//!   equal ignoring ASCII case (or exactly, for callers that randomise the case, "0x20"), then a
//!   structural walk: every record the header counts is present and whole, names are well
//!   formed with backward compression pointers only, at most one OPT (in the additional
//!   section, owned by the root), and no byte after the last record. Anything else is
//!   [`Judgement::Ignore`] (not ours) or [`Judgement::Malformed`] (ours but broken: counted and
//!   dropped). SERVFAIL, REFUSED, FORMERR, NOTIMP and extended rcodes dockns cannot have caused
//!   are [`Judgement::Failed`]: the next server is asked.
//! * [`Answer`]: an accepted reply normalised for storage: header, question, and the records
//!   before the upstream's OPT (the OPT and anything after it, such as a TSIG, are dropped), with
//!   the offset and TTL of every record, the full (extended) rcode, and how long it may be cached
//!   (RFC 2308 for negative answers).
//! * [`write_client_reply`]: the reply a client gets, built by dockns for that client: its ID,
//!   its question bytes (letter case included), QR=1, opcode QUERY, AA=0, RA=1, RD and CD copied
//!   from the client, AD only when the upstream set it and the client asked with DO or AD
//!   (RFC 6840 §5.7), the upstream's rcode, the upstream's records with TTLs aged or capped,
//!   and, when the client sent EDNS, dockns's own OPT (size [`wire::EDNS_UDP_SIZE`], DO copied,
//!   extended rcode, no options). A reply over the client's UDP limit becomes header, question
//!   and OPT with TC set (RFC 6891 §6.1.1: the OPT stays).

use crate::wire::{self, EdnsInfo, HEADER_LEN, TYPE_OPT, TYPE_SOA};

/// UDP payload size dockns advertises to upstreams (DNS Flag Day 2020).
pub const UPSTREAM_EDNS_SIZE: u16 = 1232;
/// TTL of an answer served stale (RFC 8767 §4: 30 seconds).
pub const STALE_TTL: u32 = 30;
/// Longest TTL honoured, seconds (longer ones are capped when stored).
pub const MAX_TTL: u32 = 86_400;

const OPT_LEN: usize = 11;

const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const AD: u16 = 0x0020;
const CD: u16 = 0x0010;

/// The parts of a client's query a forwarded reply depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientQuery<'a> {
    /// Query ID.
    pub id: u16,
    /// The query's raw flags word.
    pub flags: u16,
    /// Encoded question section as the client wrote it (name, type, class).
    pub question: &'a [u8],
    /// EDNS, when the client sent an OPT record.
    pub edns: Option<EdnsInfo>,
}

impl ClientQuery<'_> {
    /// The client's DO bit (false without EDNS).
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The client's CD bit.
    pub fn checking_disabled(&self) -> bool {
        self.flags & CD != 0
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Length of dockns's upstream query for `question`.
pub fn upstream_query_len(question: &[u8]) -> usize {
    HEADER_LEN + question.len() + OPT_LEN
}

/// Writes dockns's own upstream query (see the module docs) into `out`; returns its length, or
/// 0 when `out` is too small. `question` is the encoded question section to ask (the client's,
/// or a case-randomised copy of it).
pub fn write_upstream_query(
    out: &mut [u8],
    id: u16,
    question: &[u8],
    dnssec_ok: bool,
    checking_disabled: bool,
) -> usize {
    let n = upstream_query_len(question);
    if out.len() < n {
        return 0;
    }
    let flags = RD | if checking_disabled { CD } else { 0 };
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    out[HEADER_LEN..HEADER_LEN + question.len()].copy_from_slice(question);
    let size = UPSTREAM_EDNS_SIZE.to_be_bytes();
    out[HEADER_LEN + question.len()..n].copy_from_slice(&[
        0,
        0,
        41,
        size[0],
        size[1],
        0,
        0,
        if dnssec_ok { 0x80 } else { 0 },
        0,
        0,
        0,
    ]);
    n
}

/// [`write_upstream_query`] for a client's query, into a new vector.
pub fn upstream_query(id: u16, q: &ClientQuery<'_>) -> Vec<u8> {
    let mut out = vec![0u8; upstream_query_len(q.question)];
    let n = write_upstream_query(
        &mut out,
        id,
        q.question,
        q.dnssec_ok(),
        q.checking_disabled(),
    );
    out.truncate(n);
    out
}

/// What bytes from an upstream are, for the query that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Not the answer to this query (too short, other ID, not a response, other question):
    /// keep waiting, as for a spoofed or late packet.
    Ignore,
    /// The answer by ID and question, but broken (bad counts, bad names, trailing bytes,
    /// misplaced OPT): dropped and counted; keep waiting.
    Malformed,
    /// The server failed (SERVFAIL, REFUSED, FORMERR, NOTIMP, an unexpected extended rcode):
    /// ask the next one.
    Failed(u16),
    /// The answer.
    Accept(Answer),
}

/// An accepted upstream reply, normalised for the client and for the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Header, question and the kept records (no OPT). The header's counts are the kept ones;
    /// its flags are the upstream's (AD, TC and the low rcode bits are read from them).
    pub msg: Vec<u8>,
    /// Offset in `msg` of every record's TTL field, and the TTL stored there (capped).
    pub ttls: Vec<(u16, u32)>,
    /// The full rcode (extended bits from the upstream's OPT).
    pub rcode: u16,
    /// How long it may be cached, seconds; `None`: not at all (TC, errors, negative answers
    /// without an SOA, zero TTLs).
    pub life: Option<u32>,
}

/// Skips an owner name at `at`, checking labels and that a compression pointer points before
/// the name; returns the offset after it.
fn skip_name(b: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    let mut total = 0usize;
    loop {
        let len = *b.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => {
                total += 1 + usize::from(len);
                if total > 254 {
                    return None;
                }
                at += 1 + usize::from(len);
            }
            0xC0 => {
                let lo = *b.get(at + 1)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3F, lo]));
                return (target < start).then_some(at + 2);
            }
            _ => return None,
        }
    }
}

fn rcode_fails(rcode: u16) -> bool {
    // SERVFAIL, REFUSED, FORMERR (the server cannot read dockns's own well-formed query, e.g.
    // no EDNS), NOTIMP, and extended rcodes (BADVERS, BADCOOKIE...) dockns's version-0,
    // cookie-less query cannot have earned.
    matches!(rcode, 1 | 2 | 4 | 5) || rcode > 15
}

/// Checks the header and the question of `resp` against what was sent; `Err` carries the
/// judgement when that already decides (not a reply to this query, or a bare failure).
#[inline]
fn check_question(
    sent_id: u16,
    sent_question: &[u8],
    resp: &[u8],
    case_exact: bool,
) -> Result<u16, Judgement> {
    let qlen = sent_question.len();
    if resp.len() < HEADER_LEN || be16(resp, 0) != sent_id {
        return Err(Judgement::Ignore);
    }
    let flags = be16(resp, 2);
    if flags & QR == 0 || (flags >> 11) & 0xF != 0 {
        return Err(Judgement::Ignore);
    }
    let qd = be16(resp, 4);
    if qd == 0 {
        // Some servers answer a query they cannot handle with no question at all.
        let rcode = flags & 0xF;
        let bare = be16(resp, 6) == 0 && be16(resp, 8) == 0 && resp.len() == HEADER_LEN;
        return Err(if bare && rcode_fails(rcode) {
            Judgement::Failed(rcode)
        } else {
            Judgement::Ignore
        });
    }
    if qd != 1 || qlen < 5 || resp.len() < HEADER_LEN + qlen {
        return Err(Judgement::Ignore);
    }
    let got = &resp[HEADER_LEN..HEADER_LEN + qlen];
    let (name, tail) = sent_question.split_at(qlen - 4);
    let same_name = if case_exact {
        &got[..qlen - 4] == name
    } else {
        got[..qlen - 4].eq_ignore_ascii_case(name)
    };
    if !same_name || &got[qlen - 4..] != tail {
        return Err(Judgement::Ignore);
    }
    Ok(flags)
}

/// What a walk over a reply's records found.
struct Records {
    /// Offset and capped value of every kept record's TTL.
    ttls: Vec<(u16, u32)>,
    /// Where the OPT record starts (the kept part ends there), if there is one.
    kept_end: Option<usize>,
    /// Additional records kept (those before the OPT).
    kept_ar: usize,
    /// The upper rcode bits from the OPT, shifted into place.
    ext: u16,
    /// Smallest kept TTL.
    min_ttl: u32,
    /// The negative-caching TTL of an SOA in the authority section (RFC 2308 §5).
    soa_ttl: Option<u32>,
}

/// Walks the `an + ns + ar` records from `at` to the end of `resp`; `None` when they are
/// malformed (bad names, overruns, a misplaced or second OPT, trailing bytes).
#[inline]
fn walk_records(
    resp: &[u8],
    mut at: usize,
    (an, ns, ar): (usize, usize, usize),
    ttl_cap: u32,
) -> Option<Records> {
    let mut r = Records {
        ttls: Vec::new(),
        kept_end: None,
        kept_ar: ar,
        ext: 0,
        min_ttl: u32::MAX,
        soa_ttl: None,
    };
    for i in 0..an + ns + ar {
        let owner = at;
        at = skip_name(resp, at)?;
        if at + 10 > resp.len() {
            return None;
        }
        let rtype = be16(resp, at);
        let ttl = be32(resp, at + 4);
        let rdlen = usize::from(be16(resp, at + 8));
        let rdata = at + 10;
        if rdata + rdlen > resp.len() {
            return None;
        }
        if rtype == TYPE_OPT {
            // One OPT, in the additional section, owned by the root (RFC 6891 §6.1.1).
            if i < an + ns || r.kept_end.is_some() || resp[owner] != 0 {
                return None;
            }
            r.kept_end = Some(owner);
            r.kept_ar = i - an - ns;
            r.ext = u16::from(resp[at + 4]) << 4;
        } else if r.kept_end.is_none() {
            // A TTL with the top bit set counts as zero (RFC 2181 §8).
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl }.min(ttl_cap);
            r.ttls.push(((at + 4) as u16, ttl));
            r.min_ttl = r.min_ttl.min(ttl);
            if rtype == TYPE_SOA && i >= an && i < an + ns && rdlen >= 22 {
                let minimum = be32(resp, rdata + rdlen - 4);
                r.soa_ttl = Some(ttl.min(minimum));
            }
        }
        at = rdata + rdlen;
    }
    (at == resp.len() && resp.len() <= wire::MAX_MESSAGE).then_some(r)
}

/// Judges `resp`, received for a query sent with ID `sent_id` and question section
/// `sent_question` (see the module docs). `case_exact`: the name must match byte for byte (use
/// when the question's case was randomised). TTLs are capped at `ttl_cap` (and [`MAX_TTL`]).
pub fn judge(
    sent_id: u16,
    sent_question: &[u8],
    resp: &[u8],
    case_exact: bool,
    ttl_cap: u32,
) -> Judgement {
    let flags = match check_question(sent_id, sent_question, resp, case_exact) {
        Ok(flags) => flags,
        Err(j) => return j,
    };
    let an = usize::from(be16(resp, 6));
    let counts = (an, usize::from(be16(resp, 8)), usize::from(be16(resp, 10)));
    let start = HEADER_LEN + sent_question.len();
    let Some(r) = walk_records(resp, start, counts, ttl_cap.min(MAX_TTL)) else {
        return Judgement::Malformed;
    };
    let rcode = r.ext | (flags & 0xF);
    if rcode_fails(rcode) {
        return Judgement::Failed(rcode);
    }
    let end = r.kept_end.unwrap_or(resp.len());
    let mut msg = resp[..end].to_vec();
    msg[10..12].copy_from_slice(&(r.kept_ar as u16).to_be_bytes());
    let life = if flags & TC != 0 {
        None
    } else if rcode == 0 && an > 0 {
        Some(r.min_ttl)
    } else if rcode == 0 || rcode == 3 {
        // Negative answer: only with an SOA (RFC 2308 §5), and no longer than any record it
        // carries (a CNAME before the NXDOMAIN).
        r.soa_ttl.map(|t| t.min(r.min_ttl))
    } else {
        None
    };
    Judgement::Accept(Answer {
        msg,
        ttls: r.ttls,
        rcode,
        life: life.filter(|&l| l > 0),
    })
}

/// How the TTLs of a reply are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// As stored, less `age` seconds (an answer from the cache ages).
    Aged(u32),
    /// Every TTL set to this (an answer served stale, RFC 8767).
    Fixed(u32),
}

/// Writes the reply for client `q` from the normalised upstream answer `a` into `out` (see the
/// module docs); returns its length. `limit` is the client's (e.g.
/// [`wire::response_limit`]); over it the reply is header, question and OPT with TC set.
/// Returns 0 when `out` cannot hold even that, or when `a` does not fit `q` (another question
/// length, inconsistent offsets): the caller then answers SERVFAIL.
pub fn write_client_reply(
    out: &mut [u8],
    q: &ClientQuery<'_>,
    a: AnswerRef<'_>,
    ttl: Ttl,
    limit: usize,
) -> usize {
    let qlen = q.question.len();
    let msg = a.msg;
    if msg.len() < HEADER_LEN + qlen || qlen < 5 || be16(msg, 4) != 1 {
        return 0;
    }
    let up_flags = be16(msg, 2);
    let mut rcode = a.rcode;
    let opt_len = if q.edns.is_some() { OPT_LEN } else { 0 };
    if q.edns.is_none() && rcode > 15 {
        rcode = wire::rcode::SERVFAIL;
    }
    let limit = limit.min(out.len()).min(wire::MAX_MESSAGE);
    let full = msg.len() + opt_len;
    let (mut flags, len, an, ns, ar) = if full <= limit {
        out[..msg.len()].copy_from_slice(msg);
        let body = HEADER_LEN + qlen;
        for &(at, t) in a.ttls {
            let at = usize::from(at);
            if at < body || at + 4 > msg.len() {
                return 0;
            }
            let v = match ttl {
                Ttl::Aged(age) => t.saturating_sub(age),
                Ttl::Fixed(v) => v,
            };
            out[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        (
            up_flags & TC,
            msg.len(),
            be16(msg, 6),
            be16(msg, 8),
            be16(msg, 10),
        )
    } else if HEADER_LEN + qlen + opt_len <= limit {
        (TC, HEADER_LEN + qlen, 0, 0, 0)
    } else {
        return 0;
    };
    out[HEADER_LEN..HEADER_LEN + qlen].copy_from_slice(q.question);
    let mut pos = len;
    let mut ar = ar;
    if let Some(e) = q.edns {
        let size = wire::EDNS_UDP_SIZE.to_be_bytes();
        out[pos..pos + OPT_LEN].copy_from_slice(&[
            0,
            0,
            41,
            size[0],
            size[1],
            (rcode >> 4) as u8,
            0,
            if e.dnssec_ok { 0x80 } else { 0 },
            0,
            0,
            0,
        ]);
        pos += OPT_LEN;
        ar = ar.saturating_add(1);
    }
    flags |= QR | RA | (q.flags & (RD | CD)) | (rcode & 0xF);
    if up_flags & AD != 0 && (q.dnssec_ok() || q.flags & AD != 0) {
        flags |= AD;
    }
    debug_assert_eq!(flags & AA, 0);
    out[0..2].copy_from_slice(&q.id.to_be_bytes());
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&an.to_be_bytes());
    out[8..10].copy_from_slice(&ns.to_be_bytes());
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    pos
}

/// A borrowed [`Answer`] (what the cache keeps, without the allocation).
#[derive(Clone, Copy, Debug)]
pub struct AnswerRef<'a> {
    /// See [`Answer::msg`].
    pub msg: &'a [u8],
    /// See [`Answer::ttls`].
    pub ttls: &'a [(u16, u32)],
    /// See [`Answer::rcode`].
    pub rcode: u16,
}

impl Answer {
    /// Borrows it.
    pub fn as_ref(&self) -> AnswerRef<'_> {
        AnswerRef {
            msg: &self.msg,
            ttls: &self.ttls,
            rcode: self.rcode,
        }
    }
}

/// [`write_client_reply`] into a new vector (for the async paths); empty when it cannot be
/// written.
pub fn client_reply(q: &ClientQuery<'_>, a: AnswerRef<'_>, ttl: Ttl, limit: usize) -> Vec<u8> {
    let mut out = vec![0u8; (a.msg.len() + OPT_LEN).max(HEADER_LEN + q.question.len() + OPT_LEN)];
    let n = write_client_reply(&mut out, q, a, ttl, limit);
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUESTION: &[u8] = b"\x03WwW\x07example\x00\x00\x01\x00\x01";

    fn client(edns: Option<(u16, bool)>, flags: u16) -> ClientQuery<'static> {
        ClientQuery {
            id: 0x1234,
            flags,
            question: QUESTION,
            edns: edns.map(|(udp_size, dnssec_ok)| EdnsInfo {
                udp_size,
                dnssec_ok,
                version: 0,
            }),
        }
    }

    /// An upstream reply to `upstream_query(0xBEEF, ..)` with `n` A records (TTL 300), an
    /// upstream OPT carrying a COOKIE option, flags AA=1 RA=0.
    fn upstream_reply(n: u8) -> Vec<u8> {
        let mut r = vec![0xBE, 0xEF, 0x85, 0x00, 0, 1, 0, n, 0, 0, 0, 1];
        r.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
        for i in 0..n {
            r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 1, 0x2C, 0, 4, 192, 0, 2, i]);
        }
        // OPT: size 4096, DO, COOKIE option of 16 bytes.
        r.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 20, 0, 10, 0, 16]);
        r.extend_from_slice(&[0xAA; 16]);
        r
    }

    fn accept(r: &[u8]) -> Answer {
        match judge(0xBEEF, QUESTION, r, false, MAX_TTL) {
            Judgement::Accept(a) => a,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn upstream_query_is_dockns_own() {
        let q = client(Some((8192, true)), CD | 0x0040 | AD);
        let u = upstream_query(0xBEEF, &q);
        assert_eq!(&u[0..2], &[0xBE, 0xEF]);
        assert_eq!(be16(&u, 2), RD | CD, "RD=1, CD copied, Z and AD clear");
        assert_eq!(&u[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&u[12..12 + QUESTION.len()], QUESTION);
        assert_eq!(
            &u[12 + QUESTION.len()..],
            &[0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0],
            "size 1232, DO copied, no options"
        );
        let plain = upstream_query(1, &client(None, RD));
        assert_eq!(be16(&plain, 2), RD);
        assert_eq!(plain[plain.len() - 4], 0, "no DO without client EDNS");
        assert_eq!(
            write_upstream_query(&mut [0u8; 10], 1, QUESTION, false, false),
            0
        );
    }

    #[test]
    fn client_reply_has_dockns_header_and_opt() {
        let a = accept(&upstream_reply(2));
        assert_eq!(a.life, Some(300));
        let q = client(Some((4096, true)), RD | CD);
        let r = client_reply(&q, a.as_ref(), Ttl::Aged(10), 1232);
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(
            be16(&r, 2),
            QR | RD | RA | CD,
            "AA=0, RA=1, RD and CD copied"
        );
        assert_eq!(&r[12..12 + QUESTION.len()], QUESTION, "client's case");
        assert_eq!(&r[4..12], &[0, 1, 0, 2, 0, 0, 0, 1]);
        let opt = &r[r.len() - 11..];
        assert_eq!(opt, &[0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0], "own OPT");
        assert_eq!(be32(&r, 12 + QUESTION.len() + 6), 290, "TTL aged");
        // No EDNS from the client: no OPT, no DO.
        let r = client_reply(&client(None, 0), a.as_ref(), Ttl::Fixed(30), 512);
        assert_eq!(be16(&r, 10), 0);
        assert_eq!(be16(&r, 2), QR | RA);
        assert_eq!(be32(&r, 12 + QUESTION.len() + 6), 30, "stale TTL");
    }

    #[test]
    fn truncated_reply_keeps_the_opt() {
        let a = accept(&upstream_reply(80));
        let q = client(Some((1232, false)), RD);
        let r = client_reply(&q, a.as_ref(), Ttl::Aged(0), 1232);
        assert_eq!(r.len(), 12 + QUESTION.len() + 11);
        assert_ne!(be16(&r, 2) & TC, 0);
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&r[r.len() - 11..r.len() - 8], &[0, 0, 41]);
        let full = client_reply(&q, a.as_ref(), Ttl::Aged(0), wire::MAX_MESSAGE);
        assert_eq!(be16(&full, 6), 80);
    }

    #[test]
    fn judge_is_exact() {
        let good = upstream_reply(1);
        assert!(matches!(
            judge(0xBEEF, QUESTION, &good, false, MAX_TTL),
            Judgement::Accept(_)
        ));
        assert_eq!(
            judge(0xBEEF, QUESTION, &good, true, MAX_TTL),
            Judgement::Ignore,
            "0x20: exact case required"
        );
        assert_eq!(
            judge(0xBEEE, QUESTION, &good, false, MAX_TTL),
            Judgement::Ignore
        );
        // qtype 65 question, qtype 97 ('a' vs 'A' folded) reply.
        let q65 = b"\x03www\x07example\x00\x00\x41\x00\x01";
        let mut r = good.clone();
        r[12 + QUESTION.len() - 3] = 0x61;
        assert_eq!(judge(0xBEEF, q65, &r, false, MAX_TTL), Judgement::Ignore);
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            judge(0xBEEF, QUESTION, &trailing, false, MAX_TTL),
            Judgement::Malformed
        );
        let mut short = good.clone();
        short[7] = 2; // ANCOUNT says 2, one present
        assert_eq!(
            judge(0xBEEF, QUESTION, &short, false, MAX_TTL),
            Judgement::Malformed
        );
        let mut fail = good.clone();
        fail[3] = 0x02;
        assert_eq!(
            judge(0xBEEF, QUESTION, &fail, false, MAX_TTL),
            Judgement::Failed(2)
        );
        // Extended rcode BADCOOKIE (23) through the OPT: a failure, not an answer.
        let mut bad = good.clone();
        let opt = bad.len() - 16 - 15;
        bad[opt + 5] = 1;
        bad[3] = 7;
        assert_eq!(
            judge(0xBEEF, QUESTION, &bad, false, MAX_TTL),
            Judgement::Failed(23)
        );
    }

    #[test]
    fn negative_life_is_the_smallest_of_soa_and_records() {
        // NXDOMAIN after a CNAME (TTL 10); SOA TTL 3600, MINIMUM 300: cached 10 s.
        let mut r = vec![0xBE, 0xEF, 0x81, 0x83, 0, 1, 0, 1, 0, 1, 0, 0];
        r.extend_from_slice(QUESTION);
        r.extend_from_slice(&[0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 10, 0, 2, 0xC0, 0x10]);
        r.extend_from_slice(&[0, 0, 6, 0, 1, 0, 0, 0x0E, 0x10, 0, 22, 0, 0]);
        r.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 1, 0x2C,
        ]);
        let a = accept(&r);
        assert_eq!((a.rcode, a.life), (3, Some(10)));
        // Without the CNAME: min(SOA TTL, MINIMUM) = 300 (RFC 2308 §5).
        let mut r = vec![0xBE, 0xEF, 0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0];
        r.extend_from_slice(QUESTION);
        r.extend_from_slice(&[0, 0, 6, 0, 1, 0, 0, 0x0E, 0x10, 0, 22, 0, 0]);
        r.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 1, 0x2C,
        ]);
        assert_eq!(accept(&r).life, Some(300));
    }

    #[test]
    fn ad_only_for_clients_that_asked_for_it() {
        let mut r = upstream_reply(1);
        r[3] |= 0x20; // AD from the upstream
        let a = accept(&r);
        let plain = client_reply(&client(None, RD), a.as_ref(), Ttl::Aged(0), 512);
        assert_eq!(
            be16(&plain, 2) & AD,
            0,
            "no AD for a client that asked neither DO nor AD"
        );
        let with_do = client_reply(
            &client(Some((1232, true)), RD),
            a.as_ref(),
            Ttl::Aged(0),
            1232,
        );
        assert_eq!(be16(&with_do, 2) & AD, AD);
        let with_ad = client_reply(&client(None, RD | AD), a.as_ref(), Ttl::Aged(0), 512);
        assert_eq!(be16(&with_ad, 2) & AD, AD);
    }

    #[test]
    fn ttls_are_capped() {
        let Judgement::Accept(a) = judge(0xBEEF, QUESTION, &upstream_reply(1), false, 5) else {
            panic!()
        };
        assert_eq!(a.life, Some(5));
        let r = client_reply(&client(None, RD), a.as_ref(), Ttl::Aged(0), 512);
        assert_eq!(be32(&r, 12 + QUESTION.len() + 6), 5);
    }

    #[test]
    fn client_reply_never_panics_on_any_stored_bytes() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let len = rng.random_range(0..200);
            let msg: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let ttls: Vec<(u16, u32)> = (0..rng.random_range(0..4))
                .map(|_| (rng.random_range(0..260), rng.random()))
                .collect();
            let a = AnswerRef {
                msg: &msg,
                ttls: &ttls,
                rcode: rng.random(),
            };
            let mut out = vec![0u8; rng.random_range(0..300)];
            let edns = rng.random::<bool>().then_some((rng.random(), rng.random()));
            let q = client(edns, rng.random());
            let limit = rng.random_range(0..2000);
            let n = write_client_reply(&mut out, &q, a, Ttl::Aged(rng.random()), limit);
            assert!(n <= out.len() && n <= limit);
        }
    }

    #[test]
    fn never_panics_on_junk() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let base = upstream_reply(3);
        for _ in 0..20_000 {
            let mut r = base.clone();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..r.len());
                r[i] = rng.random();
            }
            r.truncate(rng.random_range(0..=r.len()));
            if let Judgement::Accept(a) = judge(0xBEEF, QUESTION, &r, false, MAX_TTL) {
                let mut out = [0u8; 1232];
                let n = write_client_reply(
                    &mut out,
                    &client(Some((1232, true)), RD),
                    a.as_ref(),
                    Ttl::Aged(3),
                    1232,
                );
                assert!(n >= 12 + QUESTION.len());
            }
        }
    }
}
