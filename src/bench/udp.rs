//! The UDP side of `dockns bench`: one thread drives several connected, non-blocking sockets
//! with batched `sendmmsg`/`recvmmsg` (so the kernel sees several source ports and a
//! SO_REUSEPORT server spreads them over its workers), matches replies by ID, and waits in
//! `poll` only when it has nothing to send and nothing to read. It allocates nothing per query.

use super::{BenchConfig, Outstanding, Share, ThreadResult};
use crate::mmsg::MsgBatch;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Instant;

const SEND_BATCH: usize = 32;
const RECV_BATCH: usize = 64;
const EXPIRE_EVERY_NS: u64 = 10_000_000;

struct Sock {
    sock: UdpSocket,
    out: Outstanding,
}

fn open(server: SocketAddr) -> Result<UdpSocket, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&bind.into())
        .and_then(|_| s.connect(&server.into()))
        .and_then(|_| s.set_nonblocking(true))
        .map_err(|e| format!("cannot use a UDP socket towards {server}: {e}"))?;
    Ok(s.into())
}

/// One generator thread over UDP.
pub(crate) fn run_thread(
    cfg: &BenchConfig,
    share: Share,
    start: Instant,
) -> Result<ThreadResult, String> {
    let mut socks = (0..cfg.sockets)
        .map(|_| {
            Ok(Sock {
                sock: open(cfg.server)?,
                out: Outstanding::new(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut res = ThreadResult::new();
    let mut sendb = MsgBatch::new(SEND_BATCH, 512, false);
    let mut recvb = MsgBatch::new(RECV_BATCH, 512, false);
    let queries = &cfg.queries;
    let mut next_q = share.offset % queries.len();
    let deadline = cfg.duration.map_or(u64::MAX, |d| d.as_nanos() as u64);
    let timeout = cfg.timeout.as_nanos() as u64;
    let ns = || start.elapsed().as_nanos() as u64;
    let mut sending = true;
    let mut scheduled: u64 = 0;
    let mut rr = 0usize;
    let mut last_expire = 0u64;
    loop {
        let now = ns();
        if sending && (now >= deadline || res.sent >= share.count) {
            sending = false;
            res.send_ns = now;
        }
        let mut busy = false;
        if sending {
            // How many to send now, and on which sockets.
            let mut budget = match share.rate {
                None => usize::MAX,
                Some(rate) => {
                    let target = ((now as f64 / 1e9) * rate) as u64;
                    let behind = target.saturating_sub(scheduled);
                    // More than 100 ms behind: skip the backlog instead of bursting it.
                    let max_behind = (rate * 0.1).max(1.0) as u64;
                    if behind > max_behind {
                        res.lagged += behind - max_behind;
                        scheduled += behind - max_behind;
                    }
                    target.saturating_sub(scheduled) as usize
                }
            };
            for k in 0..socks.len() {
                if budget == 0 {
                    break;
                }
                let i = (rr + k) % socks.len();
                let s = &mut socks[i];
                let room = match share.rate {
                    None => share.window.saturating_sub(s.out.inflight),
                    Some(_) => 65536 - s.out.inflight,
                };
                let left = share.count - res.sent;
                let n = room.min(budget).min(SEND_BATCH).min(left as usize);
                if n == 0 {
                    if share.rate.is_some() && room == 0 {
                        res.lagged += 1;
                        scheduled += 1;
                        budget -= 1;
                    }
                    continue;
                }
                let mut ids = [0u16; SEND_BATCH];
                let mut k2 = 0;
                for id_slot in ids.iter_mut().take(n) {
                    let Some(id) = s.out.take(now) else { break };
                    *id_slot = id;
                    let q = &queries[next_q];
                    next_q += 1;
                    if next_q == queries.len() {
                        next_q = 0;
                    }
                    let len = q.len().min(512);
                    let buf = sendb.buf_mut(k2);
                    buf[..len].copy_from_slice(&q[..len]);
                    buf[0..2].copy_from_slice(&id.to_be_bytes());
                    sendb.set_len(k2, len);
                    k2 += 1;
                }
                let m = sendb.send(s.sock.as_raw_fd(), 0, k2, 0).unwrap_or(0);
                for &id in ids[m..k2].iter().rev() {
                    s.out.untake(id);
                }
                res.sent += m as u64;
                if share.rate.is_some() {
                    scheduled += m as u64;
                }
                budget = budget.saturating_sub(m);
                busy |= m > 0;
            }
            rr = rr.wrapping_add(1);
        }
        // Receive whatever is there on every socket.
        for s in socks.iter_mut() {
            while let Ok(n) = recvb.recv(s.sock.as_raw_fd(), RECV_BATCH, libc::MSG_DONTWAIT) {
                if n == 0 {
                    break;
                }
                busy = true;
                let now = ns();
                for i in 0..n {
                    let p = recvb.packet(i);
                    if p.len() < 12 || p[2] & 0x80 == 0 {
                        res.unexpected += 1;
                        continue;
                    }
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    match s.out.complete(id, now) {
                        Some(lat) => {
                            res.responses += 1;
                            res.rcodes[usize::from(p[3] & 0x0F)] += 1;
                            res.hist.saturating_record(lat.max(1));
                        }
                        None => res.unexpected += 1,
                    }
                }
                if n < RECV_BATCH {
                    break;
                }
            }
        }
        let now = ns();
        if now.saturating_sub(last_expire) >= EXPIRE_EVERY_NS {
            last_expire = now;
            let cutoff = now.saturating_sub(timeout);
            for s in socks.iter_mut() {
                res.timeouts += s.out.expire(cutoff);
            }
        }
        if !sending {
            let inflight: usize = socks.iter().map(|s| s.out.inflight).sum();
            if inflight == 0 {
                break;
            }
            if now >= res.send_ns.saturating_add(timeout) {
                for s in socks.iter_mut() {
                    res.timeouts += s.out.expire_all();
                }
                break;
            }
        }
        if !busy {
            // Nothing to send and nothing arrived: wait for a reply (or the next send time).
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
