//! Accounting for replies: the one place that counts a reply, logs it and decides REFUSED or
//! SERVFAIL for a question that may not be forwarded now (as hickory-server's
//! ReportingResponseHandler wraps every response). UDP and TCP both report through here.
//!
//! A [`Reporter`] only counts and logs; it never sends bytes and never decides an answer from
//! the tables (that is `answer`). On the hot path it costs a few uncontended atomic adds and one
//! cached log-level check: no allocation, no lock.

use super::answer::{self, Outcome};
use super::guard::Guard;
use crate::forward::Forwarder;
use crate::model::Snapshot;
use crate::stats::{log_reply, since, AnswerSource, Stamp, WorkerStats};
use crate::wire::rcode;
use std::net::{IpAddr, SocketAddr};
use tokio::sync::OwnedSemaphorePermit;

/// Counts and logs the replies of one transport into one set of counters.
#[derive(Clone, Copy)]
pub struct Reporter<'a> {
    stats: &'a WorkerStats,
    tcp: bool,
}

/// Whether a question may go upstream now.
pub enum ForwardAdmission {
    /// Yes: hold the permit (a slot in the forwarder's in-flight bound) until it is answered.
    Go(OwnedSemaphorePermit),
    /// No: the error reply is in `out[..n]` (`n == 0`: nothing to send).
    Refused(usize),
}

impl<'a> Reporter<'a> {
    /// Reports into `stats`, for replies over TCP when `tcp`.
    #[inline]
    pub fn new(stats: &'a WorkerStats, tcp: bool) -> Reporter<'a> {
        Reporter { stats, tcp }
    }

    /// A reply dockns wrote itself (tables, error responses), about to be sent to `peer`.
    #[inline]
    pub fn local(&self, peer: SocketAddr, outcome: Outcome, reply: &[u8], t0: Stamp) {
        self.stats.record(outcome, self.tcp);
        self.sent(peer, AnswerSource::Local, reply, t0);
    }

    /// A forwarded question answered from the cache, about to be sent to `peer`.
    #[inline]
    pub fn cache_hit(&self, peer: SocketAddr, reply: &[u8], t0: Stamp) {
        self.stats.forwarded();
        self.sent(peer, AnswerSource::Cache, reply, t0);
    }

    /// Any reply about to be sent to `peer`: counted by qtype, rcode, source and latency (from
    /// `t0`, when the query arrived), and logged when the query log is on.
    #[inline]
    pub fn sent(&self, peer: SocketAddr, source: AnswerSource, reply: &[u8], t0: Stamp) {
        self.stats.answered(self.tcp, source, reply, since(t0));
        log_reply(peer, self.tcp, source, reply);
    }

    /// A packet dropped without a reply.
    #[inline]
    pub fn dropped(&self) {
        self.stats.dropped();
    }

    /// Decides whether the query `pkt` from `client` may go upstream now. Over the client's
    /// forward rate (`guard`'s verdict against `snap`): SERVFAIL ([`Guard::OVER_RATE_RCODE`]);
    /// over the forwarder's in-flight bound: REFUSED. Either error reply is written into `out`,
    /// counted and logged here; an admitted question is counted as forwarded.
    #[allow(clippy::too_many_arguments)]
    pub fn admit_forward(
        &self,
        (guard, snap): (&Guard, &Snapshot),
        forwarder: &Forwarder,
        (client, peer): (IpAddr, SocketAddr),
        pkt: &[u8],
        out: &mut [u8],
        t0: Stamp,
    ) -> ForwardAdmission {
        let code = if !guard.allow_forward(snap, client) {
            self.stats.rate_limited();
            Guard::OVER_RATE_RCODE
        } else if let Some(permit) = forwarder.try_acquire() {
            self.stats.forwarded();
            return ForwardAdmission::Go(permit);
        } else {
            self.stats.refused();
            rcode::REFUSED
        };
        let n = answer::error_response(pkt, code, out, self.tcp);
        if n > 0 {
            self.sent(peer, AnswerSource::Local, &out[..n], t0);
        }
        ForwardAdmission::Refused(n)
    }
}
