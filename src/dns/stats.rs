//! Query counters, kept per worker (one cache line each, relaxed atomics, no sharing between
//! workers) and summed only when someone reads them, so counting costs the hot path nothing
//! measurable.

use super::answer::Outcome;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One worker's counters.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    udp_local: AtomicU64,
    tcp_local: AtomicU64,
    errors: AtomicU64,
    forwarded: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
}

/// Summed counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Answered from the tables over UDP.
    pub udp_local: u64,
    /// Answered from the tables over TCP.
    pub tcp_local: u64,
    /// Error responses (FORMERR, NOTIMP, BADVERS).
    pub errors: u64,
    /// Handed to the forwarder.
    pub forwarded: u64,
    /// Refused because the in-flight bound was reached.
    pub refused: u64,
    /// Dropped without an answer (not a query).
    pub dropped: u64,
}

impl WorkerStats {
    /// Counts one reply.
    #[inline]
    pub fn record(&self, outcome: Outcome, tcp: bool) {
        let c = match (outcome, tcp) {
            (Outcome::Local, false) => &self.udp_local,
            (Outcome::Local, true) => &self.tcp_local,
            (Outcome::Error, _) => &self.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one forwarded question.
    #[inline]
    pub fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one REFUSED for lack of capacity.
    #[inline]
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one dropped packet.
    #[inline]
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// All workers' counters.
#[derive(Debug, Default)]
pub struct Stats {
    workers: Mutex<Vec<Arc<WorkerStats>>>,
}

impl Stats {
    /// Registers a new worker and returns its counters.
    pub fn worker(&self) -> Arc<WorkerStats> {
        let w = Arc::new(WorkerStats::default());
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w.clone());
        w
    }

    /// Sums every worker's counters (including stopped workers').
    pub fn totals(&self) -> Totals {
        let ws = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = Totals::default();
        for w in ws.iter() {
            t.udp_local += w.udp_local.load(Ordering::Relaxed);
            t.tcp_local += w.tcp_local.load(Ordering::Relaxed);
            t.errors += w.errors.load(Ordering::Relaxed);
            t.forwarded += w.forwarded.load(Ordering::Relaxed);
            t.refused += w.refused.load(Ordering::Relaxed);
            t.dropped += w.dropped.load(Ordering::Relaxed);
        }
        t
    }
}
