//! Answering one query from a snapshot: the fast path, with the slow path as its fallback.
//!
//! [`handle`] takes the raw packet and writes the response into the caller's buffer. It decides
//! local answer, NODATA, NXDOMAIN, error, forward or drop; it never allocates on the fast path
//! (an ordinary query for a local name) and never blocks. Forwarding itself is the caller's job.

use crate::model::{Resolution, Snapshot, Unanswered, REVERSE_AUTHORITY_LEN};
pub use crate::stats::Outcome;
pub use crate::wire::error_response;
use crate::wire::slow::{parse_slow, SlowParse};
use crate::wire::{self, rcode, Body, EdnsInfo, Parse, MAX_KEY_LEN};
use std::net::IpAddr;

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `out[..n]` back.
    Reply(usize, Outcome),
    /// Ask upstream (the packet is a valid query).
    Forward,
    /// Say nothing.
    Drop,
}

/// Answers one packet. `local` is the address the query arrived on, when known.
#[inline]
pub fn handle(
    snap: &Snapshot,
    client: IpAddr,
    local: Option<IpAddr>,
    pkt: &[u8],
    out: &mut [u8],
    tcp: bool,
) -> Action {
    let mut key = [0u8; MAX_KEY_LEN];
    match wire::parse_query(pkt, &mut key) {
        Parse::Query(q) => respond(
            snap,
            client,
            local,
            Query {
                id: q.id,
                flags: q.flags,
                question: &pkt[wire::HEADER_LEN..q.qend],
                key: &key[..q.key_len],
                qtype: q.qtype,
                qclass: q.qclass,
                edns: q.edns,
            },
            out,
            tcp,
        ),
        Parse::Drop => Action::Drop,
        Parse::Slow => handle_slow(snap, client, local, pkt, out, tcp),
    }
}

/// The slow path on its own (also used by tests to compare with the fast path).
pub fn handle_slow(
    snap: &Snapshot,
    client: IpAddr,
    local: Option<IpAddr>,
    pkt: &[u8],
    out: &mut [u8],
    tcp: bool,
) -> Action {
    match parse_slow(pkt) {
        SlowParse::Drop => Action::Drop,
        SlowParse::Error {
            id,
            flags,
            rcode,
            question,
            edns,
        } => {
            let n = wire::write_response(
                out,
                id,
                flags,
                &question,
                edns,
                Body {
                    rcode,
                    no_recursion: !snap.settings.recursion,
                    ..Default::default()
                },
                wire::response_limit(edns, tcp),
            );
            Action::Reply(n, Outcome::Error)
        }
        SlowParse::Query(n) => respond(
            snap,
            client,
            local,
            Query {
                id: n.id,
                flags: n.flags,
                question: &n.question,
                key: &n.key,
                qtype: n.qtype,
                qclass: n.qclass,
                edns: n.edns,
            },
            out,
            tcp,
        ),
    }
}

/// A parsed query, whichever parser produced it.
struct Query<'a> {
    id: u16,
    flags: u16,
    question: &'a [u8],
    key: &'a [u8],
    qtype: u16,
    qclass: u16,
    edns: Option<EdnsInfo>,
}

#[inline]
fn respond(
    snap: &Snapshot,
    client: IpAddr,
    local: Option<IpAddr>,
    q: Query<'_>,
    out: &mut [u8],
    tcp: bool,
) -> Action {
    let limit = wire::response_limit(q.edns, tcp);
    let no_recursion = !snap.settings.recursion;
    // Errors decided from the header and question alone: EDNS version, then meta qtypes.
    let early = if q.edns.is_some_and(|e| e.version != 0) {
        Some(rcode::BADVERS)
    } else {
        meta_qtype_rcode(q.qtype, tcp)
    };
    if let Some(code) = early {
        let body = Body {
            rcode: code,
            no_recursion,
            ..Default::default()
        };
        let n = wire::write_response(out, q.id, q.flags, q.question, q.edns, body, limit);
        return Action::Reply(n, Outcome::Error);
    }
    let view = snap.view_for(client, local);
    let mut body = match from_tables(snap, client, view, &q, out, limit) {
        Ok(body) => body,
        Err(done) => return done,
    };
    body.no_recursion = no_recursion;
    let outcome = if matches!(body.rcode, rcode::REFUSED | rcode::SERVFAIL) {
        Outcome::Error
    } else {
        Outcome::Local
    };
    let n = wire::write_response(out, q.id, q.flags, q.question, q.edns, body, limit);
    Action::Reply(n, outcome)
}

/// The body of the answer the tables give, or the action already taken when the answer is
/// written elsewhere (forwarded or kept home by [`unanswered`], a reverse zone's negative
/// answer).
#[inline(always)]
fn from_tables<'s>(
    snap: &'s Snapshot,
    client: IpAddr,
    view: &'s crate::model::View,
    q: &Query<'_>,
    out: &mut [u8],
    limit: usize,
) -> Result<Body<'s>, Action> {
    let no_recursion = !snap.settings.recursion;
    let rcode_only = |rcode| Body {
        rcode,
        ..Default::default()
    };
    Ok(match snap.resolve(view, q.key, q.qtype, q.qclass) {
        // Authoritative only (`recursion = false`): nothing that is not local is answered.
        Resolution::Forward if no_recursion => rcode_only(rcode::REFUSED),
        Resolution::NxDomain { soa: false } if !view.forward && no_recursion => {
            rcode_only(rcode::REFUSED)
        }
        // Not in the tables: forwarded, unless the client's upstream rules keep it home.
        Resolution::Forward => return Err(unanswered(snap, client, view, q, out, limit)),
        // Not in the tables of a client that sees internal networks only: its own DNS servers
        // on those networks, else SERVFAIL at once (current Docker).
        Resolution::NxDomain { soa: false } if !view.forward => {
            return Err(unanswered(snap, client, view, q, out, limit))
        }
        Resolution::Reverse { nxdomain, zone_at } => {
            return Err(reply_reverse(snap, q, nxdomain, zone_at, out, limit))
        }
        Resolution::Refused => rcode_only(rcode::REFUSED),
        Resolution::ServFail => rcode_only(rcode::SERVFAIL),
        Resolution::Answer { set, entry } => Body {
            rcode: rcode::NOERROR,
            authoritative: true,
            answers: Some((set, entry.map_or(0, |e| e.next_rotation(set.count())))),
            ..Default::default()
        },
        Resolution::NoData { soa } => Body {
            rcode: rcode::NOERROR,
            authoritative: true,
            authority: if soa { snap.soa_authority() } else { &[] },
            ..Default::default()
        },
        Resolution::NxDomain { soa } => Body {
            rcode: rcode::NXDOMAIN,
            authoritative: soa,
            authority: if soa { snap.soa_authority() } else { &[] },
            ..Default::default()
        },
    })
}

/// QTYPEs answered the same way for every name, never forwarded: zone transfers (dockns
/// serves none: AXFR over TCP and IXFR are REFUSED, AXFR over UDP is FORMERR as RFC 5936
/// §4.2 leaves it undefined), OPT and type 0 as a question (FORMERR, RFC 6891 §6.1.1),
/// TKEY/TSIG/MAILB/MAILA (NOTIMP).
#[inline]
fn meta_qtype_rcode(qtype: u16, tcp: bool) -> Option<u16> {
    // One comparison for the ordinary types (A, AAAA, …) on the hot path.
    if qtype < 249 && qtype != 0 && qtype != 41 {
        return None;
    }
    match qtype {
        252 if tcp => Some(rcode::REFUSED),
        252 => Some(rcode::FORMERR),
        251 => Some(rcode::REFUSED),
        0 | 41 => Some(rcode::FORMERR),
        249 | 250 | 253 | 254 => Some(rcode::NOTIMP),
        _ => None,
    }
}

/// A negative answer from the reverse zone of a served subnet, with that zone's SOA
/// (RFC 6303). Kept out of `respond` so the common path carries no extra buffer.
#[inline(never)]
fn reply_reverse(
    snap: &Snapshot,
    q: &Query<'_>,
    nxdomain: bool,
    zone_at: u16,
    out: &mut [u8],
    limit: usize,
) -> Action {
    let mut soa = [0u8; REVERSE_AUTHORITY_LEN];
    let len = snap.reverse_authority(zone_at, &mut soa);
    let body = Body {
        rcode: if nxdomain {
            rcode::NXDOMAIN
        } else {
            rcode::NOERROR
        },
        authoritative: true,
        answers: None,
        authority: &soa[..len],
        no_recursion: !snap.settings.recursion,
    };
    let n = wire::write_response(out, q.id, q.flags, q.question, q.edns, body, limit);
    Action::Reply(n, Outcome::Local)
}

/// A question the tables do not answer: forwarded, or kept home with NXDOMAIN or SERVFAIL as
/// [`Snapshot::unanswered`] decides (per-container upstreams, internal networks, Docker's
/// resolver as upstream).
#[inline]
fn unanswered(
    snap: &Snapshot,
    client: IpAddr,
    view: &crate::model::View,
    q: &Query<'_>,
    out: &mut [u8],
    limit: usize,
) -> Action {
    let (rcode, outcome) = match snap.unanswered(client, view, q.key) {
        Unanswered::Forward => return Action::Forward,
        Unanswered::NxDomain => (rcode::NXDOMAIN, Outcome::Local),
        Unanswered::ServFail => (rcode::SERVFAIL, Outcome::Error),
    };
    let body = Body {
        rcode,
        ..Default::default()
    };
    let n = wire::write_response(out, q.id, q.flags, q.question, q.edns, body, limit);
    Action::Reply(n, outcome)
}
