//! Upstream health: which servers are dead, and the background probe that revives them.
//!
//! A server is dead after [`DEAD_AFTER`] failed tries in a row (timeouts, I/O errors; a try
//! that only received garbage ends in a timeout); any answer, even SERVFAIL or REFUSED, resets
//! the count. So a single lost packet costs that one question a retry on the next server, but
//! later questions still go to the first server. A dead server gets no client traffic while
//! another server of the set is alive (when all are dead, all are tried as a last resort).
//! Instead one probe task per dead server sends a cheap query (`. NS`, dockns's own upstream
//! query, over UDP, to that server only) every [`PROBE_INTERVAL`]; the first matching response
//! of any rcode marks it alive again and ends the task. This module never touches client
//! queries and never forwards them.

use super::{reply, try_udp, Exchange, Forwarder, TryError, Upstream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Failed tries in a row after which a server counts as dead. More than one, so that one lost
/// UDP datagram does not move every later question to the next server.
pub const DEAD_AFTER: u32 = 3;
/// Time between health probes of a dead server.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Health of one upstream (lock-free).
#[derive(Debug, Default)]
pub(crate) struct Health {
    dead: AtomicBool,
    failures: AtomicU32,
}

impl Health {
    /// Whether the server is skipped.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Records an answer: the server is alive.
    pub(crate) fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.dead.store(false, Ordering::Relaxed);
    }

    /// Records a failed try. Returns true exactly once per death: when this failure made the
    /// server dead (the caller then starts the probe).
    pub(crate) fn failure(&self) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        n >= DEAD_AFTER && !self.dead.swap(true, Ordering::Relaxed)
    }
}

/// The probe's question: `. NS IN`.
const PROBE_QUESTION: &[u8] = &[0, 0, 2, 0, 1];

/// The probe query for `id`: dockns's own upstream query for `. NS`.
fn probe_packet(id: u16) -> Vec<u8> {
    let mut p = vec![0u8; reply::upstream_query_len(PROBE_QUESTION)];
    let n = reply::write_upstream_query(&mut p, id, PROBE_QUESTION, false, false);
    p.truncate(n);
    p
}

/// Probes `up` every [`PROBE_INTERVAL`] until it answers (then marks it alive) or the
/// forwarder is gone.
pub(crate) async fn probe_until_alive(fwd: Weak<Forwarder>, up: Arc<Upstream>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(f) = fwd.upgrade() else { return };
        let timeout = f.timeout;
        drop(f);
        let id: u16 = rand::random();
        let pkt = probe_packet(id);
        let ex = Exchange {
            id,
            query: &pkt,
            question: PROBE_QUESTION,
            ttl_cap: reply::MAX_TTL,
            up: &up,
        };
        let res = tokio::time::timeout(timeout, try_udp(&ex)).await;
        if matches!(res, Ok(Ok(_)) | Ok(Err(TryError::Rcode))) {
            up.health.success();
            tracing::info!(upstream = %up.addr, "upstream answers its health probe again; back in use");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dies_after_consecutive_failures_and_reports_once() {
        let h = Health::default();
        const { assert!(DEAD_AFTER > 1, "one lost packet must not kill a server") };
        for _ in 1..DEAD_AFTER {
            assert!(!h.failure());
            assert!(!h.is_dead());
        }
        assert!(
            h.failure(),
            "DEAD_AFTER failures in a row: dead, start the probe"
        );
        assert!(h.is_dead());
        assert!(!h.failure(), "already dead: no second probe");
        h.success();
        assert!(!h.is_dead());
        // A success in between resets the count.
        for _ in 1..DEAD_AFTER {
            h.failure();
        }
        h.success();
        assert!(!h.failure());
        assert!(!h.is_dead());
    }

    #[test]
    fn probe_packet_is_a_root_ns_query() {
        let p = probe_packet(7);
        assert_eq!(&p[12..17], PROBE_QUESTION);
        assert_eq!(&p[2..4], &[0x01, 0x00]);
    }
}
