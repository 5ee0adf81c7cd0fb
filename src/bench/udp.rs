//! The UDP side of `dockns bench`: one thread drives several connected, non-blocking sockets
//! with batched `sendmmsg`/`recvmmsg` (so the kernel sees several source ports and a
//! SO_REUSEPORT server spreads them over its workers), matches replies by ID, and waits in
//! `poll` only when it has nothing to send and nothing to read. It allocates nothing per query.

use super::load::{self, record, QueryCycle, Transport};
use super::{BenchConfig, Outstanding, Share, ThreadResult};
use crate::mmsg::MsgBatch;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Instant;

const SEND_BATCH: usize = 32;
const RECV_BATCH: usize = 64;

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

/// The UDP channels of one generator thread.
struct Udp {
    socks: Vec<Sock>,
    pfds: Vec<libc::pollfd>,
    sendb: MsgBatch,
    recvb: MsgBatch,
}

impl Transport for Udp {
    const BATCH: usize = SEND_BATCH;

    fn outstanding(&mut self, channel: usize) -> &mut Outstanding {
        &mut self.socks[channel].out
    }

    fn channels(&self) -> usize {
        self.socks.len()
    }

    fn send(&mut self, channel: usize, n: usize, now: u64, queries: &mut QueryCycle) -> usize {
        let s = &mut self.socks[channel];
        let mut ids = [0u16; SEND_BATCH];
        let mut k = 0;
        for id_slot in ids.iter_mut().take(n) {
            let Some(id) = s.out.take(now) else { break };
            *id_slot = id;
            let q = queries.next_query();
            let len = q.len().min(512);
            let buf = self.sendb.buf_mut(k);
            buf[..len].copy_from_slice(&q[..len]);
            buf[0..2].copy_from_slice(&id.to_be_bytes());
            self.sendb.set_len(k, len);
            k += 1;
        }
        let m = self.sendb.send(s.sock.as_raw_fd(), 0, k, 0).unwrap_or(0);
        for &id in ids[m..k].iter().rev() {
            s.out.untake(id);
        }
        m
    }

    fn pump(
        &mut self,
        res: &mut ThreadResult,
        ns: &dyn Fn() -> u64,
        _sending: bool,
    ) -> Result<bool, String> {
        let mut busy = false;
        for s in self.socks.iter_mut() {
            let fd = s.sock.as_raw_fd();
            while let Ok(n) = self.recvb.recv(fd, RECV_BATCH, libc::MSG_DONTWAIT) {
                if n == 0 {
                    break;
                }
                busy = true;
                let now = ns();
                for i in 0..n {
                    record(res, &mut s.out, self.recvb.packet(i), now);
                }
                if n < RECV_BATCH {
                    break;
                }
            }
        }
        Ok(busy)
    }

    fn wait(&mut self) {
        // SAFETY: pfds is a valid array of pollfd for its whole length.
        unsafe {
            libc::poll(self.pfds.as_mut_ptr(), self.pfds.len() as libc::nfds_t, 1);
        }
    }
}

/// One generator thread over UDP.
pub(crate) fn run_thread(
    cfg: &BenchConfig,
    share: Share,
    start: Instant,
) -> Result<ThreadResult, String> {
    let socks = (0..cfg.sockets)
        .map(|_| {
            Ok(Sock {
                sock: open(cfg.server)?,
                out: Outstanding::new(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let pfds = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut udp = Udp {
        socks,
        pfds,
        sendb: MsgBatch::new(SEND_BATCH, 512, false),
        recvb: MsgBatch::new(RECV_BATCH, 512, false),
    };
    load::run(&mut udp, cfg, share, start)
}
