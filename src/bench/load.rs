//! The load loop of `dockns bench`, shared by both transports: it decides how many queries to
//! send now and on which channel (closed loop: keep each channel's window full; open loop: keep
//! up with the rate, skipping a backlog over 100 ms instead of bursting it), lets the transport
//! move bytes, expires queries past the timeout and ends after the last reply or timeout. It
//! does no I/O itself (the [`Transport`] does) and allocates nothing per query.

use super::{BenchConfig, Outstanding, Share, ThreadResult};
use std::time::Instant;

/// How often in-flight queries are checked against the timeout.
const EXPIRE_EVERY_NS: u64 = 10_000_000;

/// The queries, used round robin from a thread's own offset.
pub(crate) struct QueryCycle<'a> {
    list: &'a [Vec<u8>],
    next: usize,
}

impl<'a> QueryCycle<'a> {
    pub(crate) fn new(list: &'a [Vec<u8>], offset: usize) -> QueryCycle<'a> {
        QueryCycle {
            list,
            next: offset % list.len().max(1),
        }
    }

    /// The next encoded query (ID 0).
    #[inline]
    pub(crate) fn next_query(&mut self) -> &'a [u8] {
        let q = &self.list[self.next];
        self.next += 1;
        if self.next == self.list.len() {
            self.next = 0;
        }
        q
    }
}

/// One way of carrying queries: several channels (UDP sockets or TCP connections), each with
/// its own outstanding IDs.
pub(crate) trait Transport {
    /// Most queries handed to one channel per round.
    const BATCH: usize;
    /// The channels' outstanding queries.
    fn outstanding(&mut self, channel: usize) -> &mut Outstanding;
    /// Number of channels.
    fn channels(&self) -> usize;
    /// Sends (or queues) up to `n` queries on `channel` at `now`; returns how many went.
    fn send(&mut self, channel: usize, n: usize, now: u64, queries: &mut QueryCycle) -> usize;
    /// Moves whatever is ready on every channel and records each reply in `res`; `ns` reads
    /// the clock. Returns whether anything moved. `sending` false: a broken channel is not
    /// reopened.
    fn pump(
        &mut self,
        res: &mut ThreadResult,
        ns: &dyn Fn() -> u64,
        sending: bool,
    ) -> Result<bool, String>;
    /// Waits (at most 1 ms) until a channel is ready.
    fn wait(&mut self);
}

/// Records one reply `p` that arrived at `now` on a channel with outstanding queries `out`.
#[inline]
pub(crate) fn record(res: &mut ThreadResult, out: &mut Outstanding, p: &[u8], now: u64) {
    if p.len() < 12 || p[2] & 0x80 == 0 {
        res.unexpected += 1;
        return;
    }
    match out.complete(u16::from_be_bytes([p[0], p[1]]), now) {
        Some(lat) => {
            res.responses += 1;
            res.rcodes[usize::from(p[3] & 0x0F)] += 1;
            res.hist.saturating_record(lat.max(1));
        }
        None => res.unexpected += 1,
    }
}

/// The open loop's schedule: how many sends are due.
struct Pace {
    rate: Option<f64>,
    scheduled: u64,
}

impl Pace {
    /// Sends due at `now` (ns); a backlog over 100 ms is counted as lagged and skipped.
    fn budget(&mut self, now: u64, res: &mut ThreadResult) -> usize {
        let Some(rate) = self.rate else {
            return usize::MAX;
        };
        let target = ((now as f64 / 1e9) * rate) as u64;
        let behind = target.saturating_sub(self.scheduled);
        let max_behind = (rate * 0.1).max(1.0) as u64;
        if behind > max_behind {
            res.lagged += behind - max_behind;
            self.scheduled += behind - max_behind;
        }
        target.saturating_sub(self.scheduled) as usize
    }
}

/// One round of sends over every channel, starting at channel `first`; returns whether any
/// query went.
fn send_round<T: Transport>(
    t: &mut T,
    share: &Share,
    pace: &mut Pace,
    res: &mut ThreadResult,
    queries: &mut QueryCycle,
    (now, first): (u64, usize),
) -> bool {
    let mut budget = pace.budget(now, res);
    let mut busy = false;
    let channels = t.channels();
    for k in 0..channels {
        if budget == 0 {
            break;
        }
        let i = (first + k) % channels;
        let inflight = t.outstanding(i).inflight;
        let room = match share.rate {
            None => share.window.saturating_sub(inflight),
            Some(_) => 65536 - inflight,
        };
        let left = (share.count - res.sent).min(usize::MAX as u64) as usize;
        let n = room.min(budget).min(T::BATCH).min(left);
        if n == 0 {
            if share.rate.is_some() && room == 0 {
                res.lagged += 1;
                pace.scheduled += 1;
                budget -= 1;
            }
            continue;
        }
        let m = t.send(i, n, now, queries);
        res.sent += m as u64;
        pace.scheduled += m as u64;
        budget = budget.saturating_sub(m);
        busy |= m > 0;
    }
    busy
}

/// Runs one generator thread's share of the load over transport `t`.
pub(crate) fn run<T: Transport>(
    t: &mut T,
    cfg: &BenchConfig,
    share: Share,
    start: Instant,
) -> Result<ThreadResult, String> {
    let mut res = ThreadResult::new();
    let mut queries = QueryCycle::new(&cfg.queries, share.offset);
    let deadline = cfg.duration.map_or(u64::MAX, |d| d.as_nanos() as u64);
    let timeout = cfg.timeout.as_nanos() as u64;
    let ns = || start.elapsed().as_nanos() as u64;
    let mut pace = Pace {
        rate: share.rate,
        scheduled: 0,
    };
    let (mut sending, mut rr, mut last_expire) = (true, 0usize, 0u64);
    loop {
        let now = ns();
        if sending && (now >= deadline || res.sent >= share.count) {
            sending = false;
            res.send_ns = now;
        }
        let mut busy = false;
        if sending {
            busy = send_round(t, &share, &mut pace, &mut res, &mut queries, (now, rr));
            rr = rr.wrapping_add(1);
        }
        busy |= t.pump(&mut res, &ns, sending)?;
        let now = ns();
        if now.saturating_sub(last_expire) >= EXPIRE_EVERY_NS {
            last_expire = now;
            let cutoff = now.saturating_sub(timeout);
            for i in 0..t.channels() {
                res.timeouts += t.outstanding(i).expire(cutoff);
            }
        }
        if !sending {
            let inflight: usize = (0..t.channels()).map(|i| t.outstanding(i).inflight).sum();
            if inflight == 0 {
                break;
            }
            if now >= res.send_ns.saturating_add(timeout) {
                for i in 0..t.channels() {
                    res.timeouts += t.outstanding(i).expire_all();
                }
                break;
            }
        }
        if !busy {
            // Nothing to send and nothing arrived: wait for a reply (or the next send time).
            t.wait();
        }
    }
    if res.send_ns == 0 {
        res.send_ns = ns();
    }
    Ok(res)
}
