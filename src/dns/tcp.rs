//! DNS over TCP: length-prefixed messages, several per connection, answered as they come.
//!
//! Each connection is one task that reads a 2-byte length and the message (with an idle timeout
//! between messages and a read timeout within one), answers local names in place and hands
//! upstream questions to tasks that write their reply when it arrives (replies may come out of
//! order, as RFC 7766 allows). Connections, per-connection in-flight forwards and write time are
//! all bounded, so a slow or hostile client costs one connection slot and nothing else.

use super::answer::{self, Action};
use super::guard::{Admission, Guard};
use super::udp::canonical;
use crate::forward::Forwarder;
use crate::model::SnapshotHandle;
use crate::stats::{log_reply, since, stamp, AnswerSource, WorkerStats};
use crate::wire::{rcode, MAX_MESSAGE};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex, Semaphore};

/// Time allowed to receive the rest of a message once its length arrived, and to write a reply.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// On shutdown, how long a connection waits for its in-flight forwards before closing.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_millis(1500);
/// Forwarded questions one connection may have in flight before reading pauses.
const PER_CONN_INFLIGHT: usize = 64;

/// Shared by every connection of one listener.
pub struct TcpContext {
    /// Address the listener is bound to; `None` for a wildcard bind.
    pub local: Option<IpAddr>,
    /// Current tables.
    pub snapshot: SnapshotHandle,
    /// Upstream pool.
    pub forwarder: Arc<Forwarder>,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Close connections idle this long.
    pub idle_timeout: Duration,
    /// Connection slots (shared by every TCP listener).
    pub connections: Arc<Semaphore>,
    /// Access control and forward rate limits.
    pub guard: Arc<Guard>,
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
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(16 * 1024, rd);
    let wr = Arc::new(Mutex::new(BufWriter::with_capacity(16 * 1024, wr)));
    let inflight = Arc::new(Semaphore::new(PER_CONN_INFLIGHT));
    let mut pkt = vec![0u8; MAX_MESSAGE];
    let mut out = vec![0u8; MAX_MESSAGE + 2];
    let mut stopping = false;
    loop {
        let len = tokio::select! {
            _ = stop.changed() => {
                stopping = true;
                break;
            }
            r = tokio::time::timeout(ctx.idle_timeout, rd.read_u16()) => match r {
                Ok(Ok(len)) => usize::from(len),
                _ => break, // idle, EOF or reset
            },
        };
        if len == 0 {
            break;
        }
        let body = &mut pkt[..len];
        match tokio::time::timeout(IO_TIMEOUT, rd.read_exact(body)).await {
            Ok(Ok(_)) => {}
            _ => break, // half a message then silence, or a reset mid-message
        }
        let t0 = stamp();
        let action = {
            let snap = ctx.snapshot.load();
            match ctx.guard.screen(&snap, client, body, &mut out[2..], true) {
                Some(refused) => refused,
                None => {
                    let local = ctx.guard.scope_local(client, ctx.local);
                    answer::handle(&snap, client, local, body, &mut out[2..], true)
                }
            }
        };
        // Flush only when no further query is already waiting in the read buffer, so pipelined
        // queries get their replies in batches.
        let more = rd.buffer().len() >= 2;
        match action {
            Action::Reply(n, outcome) => {
                ctx.stats.record(outcome, true);
                let reply = &out[2..n + 2];
                ctx.stats
                    .answered(true, AnswerSource::Local, reply, since(t0));
                log_reply(peer, true, AnswerSource::Local, reply);
                out[..2].copy_from_slice(&(n as u16).to_be_bytes());
                if !write_frame(&wr, &out[..n + 2], !more).await {
                    break;
                }
            }
            Action::Drop => ctx.stats.dropped(),
            Action::Forward => {
                // Over the in-flight bound: REFUSED; over the client's rate: SERVFAIL (see guard).
                let mut limited_rcode = rcode::REFUSED;
                let permit = if ctx.guard.allow_forward(&ctx.snapshot.load(), client) {
                    let p = ctx.forwarder.try_acquire();
                    if p.is_none() {
                        ctx.stats.refused();
                    }
                    p
                } else {
                    ctx.stats.rate_limited();
                    limited_rcode = Guard::OVER_RATE_RCODE;
                    None
                };
                let Some(permit) = permit else {
                    let n = answer::error_response(body, limited_rcode, &mut out[2..], true);
                    if n > 0 {
                        let reply = &out[2..n + 2];
                        ctx.stats
                            .answered(true, AnswerSource::Local, reply, since(t0));
                        log_reply(peer, true, AnswerSource::Local, reply);
                    }
                    out[..2].copy_from_slice(&(n as u16).to_be_bytes());
                    if n > 0 && !write_frame(&wr, &out[..n + 2], !more).await {
                        break;
                    }
                    continue;
                };
                ctx.stats.forwarded();
                // Flush what is buffered before waiting for the upstream.
                if !write_frame(&wr, &[], true).await {
                    break;
                }
                let Ok(conn_permit) = inflight.clone().acquire_owned().await else {
                    break;
                };
                let q = body.to_vec();
                let servers = ctx.snapshot.load().client_servers(client).cloned();
                let fwd = ctx.forwarder.clone();
                let wr = wr.clone();
                let stats = ctx.stats.clone();
                tokio::spawn(async move {
                    let (resp, source) = fwd.resolve_traced(&q, true, servers.as_ref()).await;
                    if !resp.is_empty() {
                        stats.answered(true, source, &resp, since(t0));
                        log_reply(peer, true, source, &resp);
                        let mut frame = Vec::with_capacity(resp.len() + 2);
                        frame.extend_from_slice(&(resp.len() as u16).to_be_bytes());
                        frame.extend_from_slice(&resp);
                        write_frame(&wr, &frame, true).await;
                    }
                    drop(conn_permit);
                    drop(permit);
                });
            }
        }
    }
    // Let in-flight forwards on this connection finish (each is bounded by the upstream budget,
    // and by SHUTDOWN_DRAIN when the server stops), then flush and close.
    let all = inflight.acquire_many(PER_CONN_INFLIGHT as u32);
    if stopping {
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, all).await;
    } else {
        let _ = all.await;
    }
    let mut w = wr.lock().await;
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    })
    .await;
}
