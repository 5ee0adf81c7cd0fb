//! The TCP side of `dockns bench`: each thread keeps several persistent non-blocking
//! connections, pipelines length-prefixed queries on each (up to the window, or at the open
//! loop's rate), reads replies in whatever order they come and matches them by ID. A connection
//! the server closes is reopened; the queries it carried count as timeouts.

use super::{BenchConfig, Outstanding, Share, ThreadResult};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SEND_BATCH: usize = 64;
const EXPIRE_EVERY_NS: u64 = 10_000_000;

struct Conn {
    stream: TcpStream,
    out: Outstanding,
    rbuf: Vec<u8>,
    rlen: usize,
    wbuf: Vec<u8>,
    woff: usize,
}

fn connect(server: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&server, Duration::from_secs(5)).map_err(|e| {
        format!("cannot connect to {server} over TCP: {e}; is the server listening on TCP?")
    })?;
    let _ = s.set_nodelay(true);
    s.set_nonblocking(true)
        .map_err(|e| format!("cannot make a TCP socket non-blocking: {e}"))?;
    Ok(s)
}

impl Conn {
    fn open(server: SocketAddr) -> Result<Conn, String> {
        Ok(Conn {
            stream: connect(server)?,
            out: Outstanding::new(),
            rbuf: vec![0u8; 128 * 1024],
            rlen: 0,
            wbuf: Vec::with_capacity(64 * 1024),
            woff: 0,
        })
    }

    /// Writes what is pending; false when the connection failed.
    fn flush(&mut self) -> bool {
        while self.woff < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.woff..]) {
                Ok(0) => return false,
                Ok(n) => self.woff += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.woff == self.wbuf.len() {
            self.wbuf.clear();
            self.woff = 0;
        }
        true
    }
}

/// One generator thread over TCP.
pub(crate) fn run_thread(
    cfg: &BenchConfig,
    share: Share,
    start: Instant,
) -> Result<ThreadResult, String> {
    let mut conns = (0..cfg.sockets)
        .map(|_| Conn::open(cfg.server))
        .collect::<Result<Vec<_>, String>>()?;
    let mut res = ThreadResult::new();
    let queries = &cfg.queries;
    let mut next_q = share.offset % queries.len();
    let deadline = cfg.duration.map_or(u64::MAX, |d| d.as_nanos() as u64);
    let timeout = cfg.timeout.as_nanos() as u64;
    let ns = || start.elapsed().as_nanos() as u64;
    let mut sending = true;
    let mut scheduled: u64 = 0;
    let mut last_expire = 0u64;
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(conns.len());
    loop {
        let now = ns();
        if sending && (now >= deadline || res.sent >= share.count) {
            sending = false;
            res.send_ns = now;
        }
        let mut busy = false;
        let mut budget = match share.rate {
            None => usize::MAX,
            Some(rate) => {
                let target = ((now as f64 / 1e9) * rate) as u64;
                let behind = target.saturating_sub(scheduled);
                let max_behind = (rate * 0.1).max(1.0) as u64;
                if behind > max_behind {
                    res.lagged += behind - max_behind;
                    scheduled += behind - max_behind;
                }
                target.saturating_sub(scheduled) as usize
            }
        };
        for c in conns.iter_mut() {
            if sending && budget > 0 {
                let room = match share.rate {
                    None => share.window.saturating_sub(c.out.inflight),
                    Some(_) => 65536 - c.out.inflight,
                };
                let n = room
                    .min(budget)
                    .min(SEND_BATCH)
                    .min((share.count - res.sent) as usize);
                for _ in 0..n {
                    let Some(id) = c.out.take(now) else { break };
                    let q = &queries[next_q];
                    next_q = (next_q + 1) % queries.len();
                    c.wbuf.extend_from_slice(&(q.len() as u16).to_be_bytes());
                    let at = c.wbuf.len();
                    c.wbuf.extend_from_slice(q);
                    c.wbuf[at..at + 2].copy_from_slice(&id.to_be_bytes());
                    res.sent += 1;
                    scheduled += 1;
                    budget -= 1;
                    busy = true;
                }
            }
            let mut ok = c.flush();
            // Read what is there.
            while ok {
                if c.rlen == c.rbuf.len() {
                    break;
                }
                match c.stream.read(&mut c.rbuf[c.rlen..]) {
                    Ok(0) => ok = false,
                    Ok(n) => {
                        c.rlen += n;
                        busy = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => ok = false,
                }
            }
            // Complete frames.
            let now = ns();
            let mut at = 0;
            while c.rlen - at >= 2 {
                let len = usize::from(u16::from_be_bytes([c.rbuf[at], c.rbuf[at + 1]]));
                if c.rlen - at - 2 < len {
                    break;
                }
                let p = &c.rbuf[at + 2..at + 2 + len];
                at += 2 + len;
                if p.len() < 12 || p[2] & 0x80 == 0 {
                    res.unexpected += 1;
                    continue;
                }
                match c.out.complete(u16::from_be_bytes([p[0], p[1]]), now) {
                    Some(lat) => {
                        res.responses += 1;
                        res.rcodes[usize::from(p[3] & 0x0F)] += 1;
                        res.hist.saturating_record(lat.max(1));
                    }
                    None => res.unexpected += 1,
                }
            }
            c.rbuf.copy_within(at..c.rlen, 0);
            c.rlen -= at;
            if !ok {
                res.timeouts += c.out.expire_all();
                if sending {
                    *c = Conn::open(cfg.server)?;
                } else {
                    c.wbuf.clear();
                    c.woff = 0;
                }
            }
        }
        let now = ns();
        if now.saturating_sub(last_expire) >= EXPIRE_EVERY_NS {
            last_expire = now;
            let cutoff = now.saturating_sub(timeout);
            for c in conns.iter_mut() {
                res.timeouts += c.out.expire(cutoff);
            }
        }
        if !sending {
            let inflight: usize = conns.iter().map(|c| c.out.inflight).sum();
            if inflight == 0 {
                break;
            }
            if now >= res.send_ns.saturating_add(timeout) {
                for c in conns.iter_mut() {
                    res.timeouts += c.out.expire_all();
                }
                break;
            }
        }
        if !busy {
            pfds.clear();
            for c in &conns {
                let mut events = libc::POLLIN;
                if c.woff < c.wbuf.len() {
                    events |= libc::POLLOUT;
                }
                pfds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events,
                    revents: 0,
                });
            }
            // SAFETY: pfds is a valid array of pollfd for its whole length.
            unsafe {
                libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1);
            }
        }
    }
    if res.send_ns == 0 {
        res.send_ns = ns();
    }
    Ok(res)
}
