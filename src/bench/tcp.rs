//! The TCP side of `dockns bench`: each thread keeps several persistent non-blocking
//! connections, pipelines length-prefixed queries on each (up to the window, or at the open
//! loop's rate), reads replies in whatever order they come and matches them by ID. A connection
//! the server closes is reopened; the queries it carried count as timeouts.

use super::load::{self, record, QueryCycle, Transport};
use super::{BenchConfig, Outstanding, Share, ThreadResult};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SEND_BATCH: usize = 64;

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

    /// Reads what is there and records every complete reply; false when the connection
    /// failed or the server closed it.
    fn read_replies(&mut self, res: &mut ThreadResult, ns: &dyn Fn() -> u64) -> (bool, bool) {
        let (mut ok, mut busy) = (true, false);
        while ok && self.rlen < self.rbuf.len() {
            match self.stream.read(&mut self.rbuf[self.rlen..]) {
                Ok(0) => ok = false,
                Ok(n) => {
                    self.rlen += n;
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
        while self.rlen - at >= 2 {
            let len = usize::from(u16::from_be_bytes([self.rbuf[at], self.rbuf[at + 1]]));
            if self.rlen - at - 2 < len {
                break;
            }
            record(res, &mut self.out, &self.rbuf[at + 2..at + 2 + len], now);
            at += 2 + len;
        }
        self.rbuf.copy_within(at..self.rlen, 0);
        self.rlen -= at;
        (ok, busy)
    }
}

/// The TCP connections of one generator thread.
struct Tcp {
    server: SocketAddr,
    conns: Vec<Conn>,
    pfds: Vec<libc::pollfd>,
}

impl Transport for Tcp {
    const BATCH: usize = SEND_BATCH;

    fn outstanding(&mut self, channel: usize) -> &mut Outstanding {
        &mut self.conns[channel].out
    }

    fn channels(&self) -> usize {
        self.conns.len()
    }

    fn send(&mut self, channel: usize, n: usize, now: u64, queries: &mut QueryCycle) -> usize {
        let c = &mut self.conns[channel];
        let mut sent = 0;
        for _ in 0..n {
            let Some(id) = c.out.take(now) else { break };
            let q = queries.next_query();
            c.wbuf.extend_from_slice(&(q.len() as u16).to_be_bytes());
            let at = c.wbuf.len();
            c.wbuf.extend_from_slice(q);
            c.wbuf[at..at + 2].copy_from_slice(&id.to_be_bytes());
            sent += 1;
        }
        sent
    }

    fn pump(
        &mut self,
        res: &mut ThreadResult,
        ns: &dyn Fn() -> u64,
        sending: bool,
    ) -> Result<bool, String> {
        let mut busy = false;
        for c in self.conns.iter_mut() {
            let (ok, moved) = if c.flush() {
                c.read_replies(res, ns)
            } else {
                (false, false)
            };
            busy |= moved;
            if !ok {
                res.timeouts += c.out.expire_all();
                if sending {
                    *c = Conn::open(self.server)?;
                } else {
                    c.wbuf.clear();
                    c.woff = 0;
                }
            }
        }
        Ok(busy)
    }

    fn wait(&mut self) {
        self.pfds.clear();
        for c in &self.conns {
            let mut events = libc::POLLIN;
            if c.woff < c.wbuf.len() {
                events |= libc::POLLOUT;
            }
            self.pfds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        // SAFETY: pfds is a valid array of pollfd for its whole length.
        unsafe {
            libc::poll(self.pfds.as_mut_ptr(), self.pfds.len() as libc::nfds_t, 1);
        }
    }
}

/// One generator thread over TCP.
pub(crate) fn run_thread(
    cfg: &BenchConfig,
    share: Share,
    start: Instant,
) -> Result<ThreadResult, String> {
    let conns = (0..cfg.sockets)
        .map(|_| Conn::open(cfg.server))
        .collect::<Result<Vec<_>, String>>()?;
    let mut tcp = Tcp {
        server: cfg.server,
        pfds: Vec::with_capacity(conns.len()),
        conns,
    };
    load::run(&mut tcp, cfg, share, start)
}
