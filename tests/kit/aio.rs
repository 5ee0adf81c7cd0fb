//! The async side of the kit, for `#[tokio::test]`s: dockns started on the test's own runtime
//! (listening on 127.0.0.1 port 0) and UDP/TCP clients on tokio sockets. Messages are built and
//! read by [`super::dns`]; the fake upstream is [`super::upstream`].
//!
//! It must not block the runtime it runs on (every wait is a tokio timeout) and must not use a
//! non-loopback upstream.

pub use super::dns::{parse, query_bytes, query_msg, v4, WAIT};
pub use super::server::{config, demo_toml};
pub use super::upstream::{Behavior, FakeUpstream, ANSWER_IP};
use dockns::server::Server;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Starts a fake upstream (its threads serve it; the test's runtime is not involved).
pub async fn fake_upstream(b: Behavior) -> FakeUpstream {
    FakeUpstream::start(b)
}

/// A dockns running inside the test process.
pub struct TestServer {
    /// UDP and TCP address (same port).
    pub addr: SocketAddr,
    /// The server, for inspection and reloads.
    pub server: Server,
}

impl TestServer {
    /// Stops the listeners.
    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// Starts a dockns from TOML (listener forced to 127.0.0.1:0). The config must name loopback
/// upstreams (or none) — tests never reach the machine's resolver.
pub async fn start(toml: &str) -> TestServer {
    let cfg = config(toml);
    assert!(
        cfg.upstreams.iter().all(|u| u.ip().is_loopback()),
        "test configs must only use loopback upstreams"
    );
    let server = Server::start(cfg).unwrap_or_else(|e| panic!("server did not start: {e}"));
    let addr = server.bound()[0];
    TestServer { addr, server }
}

/// Sends raw bytes over UDP and waits up to `wait` for one reply.
pub async fn udp_raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    sock.send_to(bytes, addr).await.expect("send");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            buf.truncate(n);
            Some(buf)
        }
        _ => None,
    }
}

/// Sends raw bytes over a new TCP connection and reads one framed reply.
pub async fn tcp_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("tcp connect");
    tcp_send(&mut s, bytes).await;
    tcp_recv(&mut s).await.expect("tcp reply")
}

/// Writes one framed message.
pub async fn tcp_send(s: &mut TcpStream, bytes: &[u8]) {
    let mut f = (bytes.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(bytes);
    s.write_all(&f).await.expect("tcp write");
}

/// Reads one framed message (None on EOF/timeout).
pub async fn tcp_recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let fut = async {
        let len = s.read_u16().await.ok()?;
        let mut b = vec![0u8; usize::from(len)];
        s.read_exact(&mut b).await.ok()?;
        Some(b)
    };
    tokio::time::timeout(WAIT, fut).await.ok().flatten()
}

/// Asks over UDP and decodes the reply.
pub async fn ask(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let q = query_bytes(0x4242, name, qtype, None);
    let r = udp_raw(addr, &q, WAIT)
        .await
        .unwrap_or_else(|| panic!("no UDP reply for {name} {qtype}"));
    Message::from_vec(&r).expect("decode reply")
}

/// Asks over TCP and decodes the reply.
pub async fn ask_tcp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let q = query_bytes(0x4343, name, qtype, None);
    Message::from_vec(&tcp_raw(addr, &q).await).expect("decode reply")
}
