//! Upstream health: which servers are dead, and the background probe that revives them.
//!
//! A server is dead after [`DEAD_AFTER`] failed tries in a row (timeout, I/O error, or only
//! garbage received); an answer of any kind resets the count. A dead server gets no client
//! traffic while another server is alive (when all are dead, all are tried as a last resort). Instead one probe task per dead server sends a cheap query (`. NS`, over UDP, to that
//! server only) every [`PROBE_INTERVAL`]; the first matching response of any rcode marks it alive
//! again and ends the task. This module never touches client queries and never forwards them.

use super::{try_udp, Forwarder, QuestionRef, TryError};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Weak;
use std::time::Duration;

/// Failed tries in a row after which a server counts as dead.
pub const DEAD_AFTER: u32 = 1;
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

/// The probe query: `. NS`, recursion desired, no EDNS.
fn probe_packet() -> Vec<u8> {
    let id: u16 = rand::random();
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]);
    p
}

/// Probes upstream `idx` every [`PROBE_INTERVAL`] until it answers (then marks it alive) or the
/// forwarder is gone.
pub(crate) async fn probe_until_alive(fwd: Weak<Forwarder>, idx: usize) {
    let pkt = probe_packet();
    let Some(q) = QuestionRef::read(&pkt) else {
        return;
    };
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(f) = fwd.upgrade() else { return };
        let Some(up) = f.upstreams.get(idx) else {
            return;
        };
        let (addr, timeout) = (up.addr, f.timeout);
        drop(f);
        let res = tokio::time::timeout(timeout, try_udp(addr, &pkt, &q)).await;
        if matches!(res, Ok(Ok(_)) | Ok(Err(TryError::Rcode))) {
            let Some(f) = fwd.upgrade() else { return };
            if let Some(up) = f.upstreams.get(idx) {
                up.health.success();
                tracing::info!(upstream = %up.addr, "upstream answers its health probe again; back in use");
            }
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
        assert_eq!(DEAD_AFTER, 1);
        assert!(h.failure(), "one failure: dead, start the probe");
        assert!(h.is_dead());
        assert!(!h.failure(), "already dead: no second probe");
        h.success();
        assert!(!h.is_dead());
    }

    #[test]
    fn probe_packet_is_a_root_ns_query() {
        let p = probe_packet();
        assert!(QuestionRef::read(&p).is_some());
        assert_eq!(&p[12..], &[0, 0, 2, 0, 1]);
    }
}
