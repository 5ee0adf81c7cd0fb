//! Shared test harness: an in-process dockns on an ephemeral loopback port, DNS client helpers
//! over UDP and TCP, and fake upstream servers on loopback whose behaviour each test chooses.
//!
//! Nothing here ever talks to a non-loopback address.
#![allow(dead_code)]

use dockns::config::{Config, Overrides};
use dockns::server::Server;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long a test waits for any reply before failing.
pub const WAIT: Duration = Duration::from_secs(5);

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

/// Parses a TOML config with the listener forced to 127.0.0.1:0.
pub fn config(toml: &str) -> Config {
    Config::from_toml(
        toml,
        &Overrides {
            listen: vec!["127.0.0.1:0".into()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("test config invalid: {e}"))
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

/// The demo network used by most tests (like config/demo.toml, plus a big replica set).
pub fn demo_toml(upstreams: &[SocketAddr], extra_server: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    let mut s = format!(
        r#"
[server]
ttl = 5
domain = "docker"
{extra_server}

[upstream]
servers = [{}]
timeout_ms = 300
budget_ms = 900

[[network]]
name = "demo"
subnet = "10.89.0.0/16"

[[network.container]]
name = "db"
ipv4 = ["10.89.0.2"]
ipv6 = ["fd00:89::2"]
aliases = ["postgres"]

[[network.container]]
name = "web"
ipv4 = ["10.89.0.3"]
aliases = ["www"]
"#,
        ups.join(", ")
    );
    for i in 1..=3 {
        s.push_str(&format!(
            "\n[[network.container]]\nname = \"api-{i}\"\nipv4 = [\"10.89.0.1{i}\"]\naliases = [\"api\"]\n"
        ));
    }
    for i in 0..40 {
        s.push_str(&format!(
            "\n[[network.container]]\nname = \"many-{i}\"\nipv4 = [\"10.89.1.{}\"]\naliases = [\"many\"]\n",
            i + 1
        ));
    }
    s.push_str(
        "\n[[network]]\nname = \"backoffice\"\ninternal = true\n\n[[network.container]]\nname = \"vault\"\nipv4 = [\"10.90.0.2\"]\n",
    );
    s
}

/// Encodes a query with ID `id`, RD set, optional EDNS payload size.
pub fn query_bytes(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("test name"),
        qtype,
    ));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode query")
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

/// The IPv4 answers, in order.
pub fn v4(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// How a fake upstream behaves.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer every question with one A record.
    Answer(Ipv4Addr),
    /// Never answer.
    Silent,
    /// Answer with this response code and no records.
    Rcode(ResponseCode),
    /// Over UDP answer with TC set and no records; over TCP answer with `n` A records.
    TruncateUdp(usize),
    /// First send a reply with a wrong ID, then a reply with the wrong question, then the
    /// real answer.
    WrongThenRight(Ipv4Addr),
}

/// A fake DNS server on 127.0.0.1 (UDP and TCP on one port).
pub struct FakeUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Questions received (UDP + TCP).
    pub hits: Arc<AtomicUsize>,
    /// Questions received over TCP.
    pub tcp_hits: Arc<AtomicUsize>,
    /// (query ID, source port) of every UDP question.
    pub seen: Arc<Mutex<Vec<(u16, u16)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn reply_for(q: &Message, b: &Behaviour, tcp: bool) -> Vec<Vec<u8>> {
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_queries(q.queries.clone());
    if let Some(e) = &q.edns {
        let mut ne = Edns::new();
        ne.set_max_payload(e.max_payload());
        r.set_edns(ne);
    }
    let name = q
        .queries
        .first()
        .map(|x| x.name().clone())
        .unwrap_or_else(Name::root);
    let rec = |ip: Ipv4Addr| Record::from_rdata(name.clone(), 60, RData::A(A(ip)));
    match b {
        Behaviour::Answer(ip) => {
            r.add_answer(rec(*ip));
        }
        Behaviour::Silent => return vec![],
        Behaviour::Rcode(rc) => r.metadata.response_code = *rc,
        Behaviour::TruncateUdp(n) => {
            if tcp {
                for i in 0..*n {
                    r.add_answer(rec(Ipv4Addr::new(192, 0, 2, i as u8)));
                }
            } else {
                r.metadata.truncation = true;
            }
        }
        Behaviour::WrongThenRight(ip) => {
            r.add_answer(rec(*ip));
            let mut wrong_id = r.clone();
            wrong_id.metadata.id = q.metadata.id.wrapping_add(1);
            wrong_id.answers = vec![rec(Ipv4Addr::new(6, 6, 6, 6))];
            let mut wrong_q = r.clone();
            wrong_q.queries = vec![Query::query(
                Name::from_ascii("evil.example.").expect("name"),
                RecordType::A,
            )];
            wrong_q.answers = vec![Record::from_rdata(
                Name::from_ascii("evil.example.").expect("name"),
                60,
                RData::A(A(Ipv4Addr::new(6, 6, 6, 7))),
            )];
            return vec![
                wrong_id.to_vec().expect("enc"),
                wrong_q.to_vec().expect("enc"),
                r.to_vec().expect("enc"),
            ];
        }
    }
    vec![r.to_vec().expect("encode fake reply")]
}

/// Starts a fake upstream with the given behaviour.
pub async fn fake_upstream(b: Behaviour) -> FakeUpstream {
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind fake udp");
        let port = udp.local_addr().expect("addr").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let tcp_hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (h, s, b1) = (hits.clone(), seen.clone(), b.clone());
    let t1 = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, src)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            h.fetch_add(1, Ordering::SeqCst);
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            s.lock().unwrap().push((q.metadata.id, src.port()));
            for r in reply_for(&q, &b1, false) {
                let _ = udp.send_to(&r, src).await;
            }
        }
    });
    let (h, th, b2) = (hits.clone(), tcp_hits.clone(), b);
    let t2 = tokio::spawn(async move {
        loop {
            let Ok((mut st, _)) = tcp.accept().await else {
                continue;
            };
            let (h, th, b) = (h.clone(), th.clone(), b2.clone());
            tokio::spawn(async move {
                while let Ok(len) = st.read_u16().await {
                    let mut q = vec![0u8; usize::from(len)];
                    if st.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    th.fetch_add(1, Ordering::SeqCst);
                    let Ok(q) = Message::from_vec(&q) else { return };
                    for r in reply_for(&q, &b, true) {
                        let mut f = (r.len() as u16).to_be_bytes().to_vec();
                        f.extend_from_slice(&r);
                        if st.write_all(&f).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    FakeUpstream {
        addr,
        hits,
        tcp_hits,
        seen,
        tasks: vec![t1, t2],
    }
}
