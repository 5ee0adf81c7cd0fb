//! DNS over TCP: the connection loop. Several messages per connection, answered as they come.
//!
//! Each connection is one task that reads bytes into a [`FrameReader`] (`framing.rs` cuts the
//! length-prefixed messages out; an idle timeout applies between messages and a read timeout
//! within one), answers local names in place and hands upstream questions to tasks that write
//! their reply when it arrives (replies may come out of order, as RFC 7766 allows). Every reply
//! is counted and logged through `report.rs`. Connections, per-connection in-flight forwards and
//! write time are all bounded, so a slow or hostile client costs one connection slot and
//! nothing else.

use super::answer::{self, Action};
use super::framing::{prefix, FrameReader, Next, PREFIX};
use super::guard::{Admission, Guard};
use super::report::{ForwardAdmission, Reporter};
use super::udp::canonical;
use crate::forward::Forwarder;
use crate::model::SnapshotHandle;
use crate::stats::{stamp, Stamp, Stats, WorkerStats};
use crate::wire::MAX_MESSAGE;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex, OwnedSemaphorePermit, Semaphore};

/// Time allowed to receive the rest of a message once its length arrived, and to write a reply.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// On shutdown, how long a connection waits for its in-flight forwards before closing.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_millis(1500);
/// Forwarded questions one connection may have in flight before reading pauses.
const PER_CONN_INFLIGHT: usize = 64;
/// Bytes read ahead of the current message (pipelined queries come in one read).
const READ_AHEAD: usize = 16 * 1024;

/// Shared by every connection of one listener.
pub struct TcpContext {
    /// Address the listener is bound to; `None` for a wildcard bind.
    pub local: Option<IpAddr>,
    /// Current tables.
    pub snapshot: SnapshotHandle,
    /// Upstream pool.
    pub forwarder: Arc<Forwarder>,
    /// This listener's TCP counters.
    pub stats: Arc<WorkerStats>,
    /// Where `stats` is registered: retired there once the listener and all its connections
    /// are gone.
    pub registry: Arc<Stats>,
    /// Close connections idle this long.
    pub idle_timeout: Duration,
    /// Connection slots (shared by every TCP listener).
    pub connections: Arc<Semaphore>,
    /// Access control and forward rate limits.
    pub guard: Arc<Guard>,
}

impl Drop for TcpContext {
    fn drop(&mut self) {
        self.registry.retire(&self.stats);
    }
}

/// Accepts connections until `stop` turns true.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<TcpContext>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
                        // Over the limit: close at once; the client may retry.
                        drop(stream);
                        continue;
                    };
                    let ctx = ctx.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        serve_conn(stream, peer, ctx, stop).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::debug!("tcp accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

async fn write_frame(w: &Mutex<BufWriter<OwnedWriteHalf>>, frame: &[u8], flush: bool) -> bool {
    let mut w = w.lock().await;
    let res = tokio::time::timeout(IO_TIMEOUT, async {
        w.write_all(frame).await?;
        if flush {
            w.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    matches!(res, Ok(Ok(())))
}

/// Why a connection stopped reading.
#[derive(PartialEq, Eq)]
enum Closed {
    /// The client is done, idle, or misbehaved.
    Client,
    /// The listener is stopping.
    Stopping,
}

/// One connection's state.
struct Conn {
    ctx: Arc<TcpContext>,
    peer: SocketAddr,
    client: IpAddr,
    wr: Arc<Mutex<BufWriter<OwnedWriteHalf>>>,
    inflight: Arc<Semaphore>,
    /// Reply buffer: prefix, then the message.
    out: Box<[u8]>,
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<TcpContext>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let client = canonical(peer.ip());
    if ctx.guard.admit(&ctx.snapshot.load(), client) == Admission::Drop {
        return; // not ours to serve, and told to stay silent: close at once
    }
    let (mut rd, wr) = stream.into_split();
    let mut frames = FrameReader::new(READ_AHEAD);
    let mut conn = Conn {
        ctx,
        peer,
        client,
        wr: Arc::new(Mutex::new(BufWriter::with_capacity(16 * 1024, wr))),
        inflight: Arc::new(Semaphore::new(PER_CONN_INFLIGHT)),
        out: vec![0u8; PREFIX + MAX_MESSAGE].into_boxed_slice(),
    };
    let closed = loop {
        match frames.next_frame() {
            Next::Message(m) => {
                let more = frames.more_buffered();
                if !conn.answer(&frames.bytes()[m], more).await {
                    break Closed::Client;
                }
            }
            Next::Empty => break Closed::Client,
            Next::NeedMore => {
                if let Err(why) = read_more(&mut rd, &mut frames, &conn.ctx, &mut stop).await {
                    break why;
                }
            }
        }
    };
    conn.close(closed == Closed::Stopping).await;
}

/// Reads what the client sent next: within the idle timeout between messages, within
/// [`IO_TIMEOUT`] in the middle of one.
async fn read_more(
    rd: &mut OwnedReadHalf,
    frames: &mut FrameReader,
    ctx: &TcpContext,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Closed> {
    let limit = if frames.mid_message() {
        IO_TIMEOUT
    } else {
        ctx.idle_timeout
    };
    let read = tokio::time::timeout(limit, rd.read(frames.read_space()));
    let n = tokio::select! {
        _ = stop.changed() => return Err(Closed::Stopping),
        r = read => match r {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err(Closed::Client), // idle, EOF, reset, or half a message then silence
        },
    };
    frames.filled(n);
    Ok(())
}

impl Conn {
    /// Answers one message; false when the connection must close (a write failed).
    async fn answer(&mut self, body: &[u8], more: bool) -> bool {
        let t0 = stamp();
        let ctx = &*self.ctx;
        let snap = ctx.snapshot.load();
        let action = {
            let out = &mut self.out[PREFIX..];
            match ctx.guard.screen(&snap, self.client, body, out, true) {
                Some(refused) => refused,
                None => {
                    let local = ctx.guard.scope_local(self.client, ctx.local);
                    answer::handle(&snap, self.client, local, body, out, true)
                }
            }
        };
        let report = Reporter::new(&ctx.stats, true);
        let n = match action {
            Action::Reply(n, outcome) => {
                report.local(self.peer, outcome, &self.out[PREFIX..PREFIX + n], t0);
                n
            }
            Action::Drop => {
                report.dropped();
                return true;
            }
            Action::Forward => {
                let admitted = report.admit_forward(
                    (&ctx.guard, &snap),
                    &ctx.forwarder,
                    (self.client, self.peer),
                    body,
                    &mut self.out[PREFIX..],
                    t0,
                );
                match admitted {
                    ForwardAdmission::Refused(0) => return true,
                    ForwardAdmission::Refused(n) => n,
                    ForwardAdmission::Go(permit) => {
                        drop(snap);
                        return self.forward(body, permit, t0).await;
                    }
                }
            }
        };
        drop(snap); // not held across the write
                    // Flush only when no further query is already waiting in the read buffer, so pipelined
                    // queries get their replies in batches.
        self.out[..PREFIX].copy_from_slice(&prefix(n));
        write_frame(&self.wr, &self.out[..PREFIX + n], !more).await
    }

    /// Hands a question to a task that writes the upstream's reply when it comes; waits while
    /// the connection has [`PER_CONN_INFLIGHT`] of them. False when the connection must close.
    async fn forward(&self, body: &[u8], permit: OwnedSemaphorePermit, t0: Stamp) -> bool {
        // Flush what is buffered before waiting for the upstream.
        if !write_frame(&self.wr, &[], true).await {
            return false;
        }
        let Ok(conn_permit) = self.inflight.clone().acquire_owned().await else {
            return false;
        };
        let q = body.to_vec();
        let ctx = self.ctx.clone();
        let servers = ctx.snapshot.load().client_servers(self.client).cloned();
        let (wr, peer) = (self.wr.clone(), self.peer);
        tokio::spawn(async move {
            let (resp, source) = ctx
                .forwarder
                .resolve_traced(&q, true, servers.as_ref())
                .await;
            if !resp.is_empty() {
                Reporter::new(&ctx.stats, true).sent(peer, source, &resp, t0);
                let mut frame = Vec::with_capacity(resp.len() + PREFIX);
                frame.extend_from_slice(&prefix(resp.len()));
                frame.extend_from_slice(&resp);
                write_frame(&wr, &frame, true).await;
            }
            drop(conn_permit);
            drop(permit);
        });
        true
    }

    /// Lets in-flight forwards on this connection finish (each is bounded by the upstream
    /// budget, and by [`SHUTDOWN_DRAIN`] when the server stops), then flushes and closes.
    async fn close(self, stopping: bool) {
        let all = self.inflight.acquire_many(PER_CONN_INFLIGHT as u32);
        if stopping {
            let _ = tokio::time::timeout(SHUTDOWN_DRAIN, all).await;
        } else {
            let _ = all.await;
        }
        let mut w = self.wr.lock().await;
        let _ = tokio::time::timeout(IO_TIMEOUT, async {
            let _ = w.flush().await;
            let _ = w.shutdown().await;
        })
        .await;
    }
}
